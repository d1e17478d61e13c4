"""`metalora bench`: few-shot comparisons (ARSC, synthetic) and speed measurements.

    from metalora.bench.arsc import BenchOptions, run_arsc, run_synthetic, compare
    from metalora.bench.speed import run_speed
"""
