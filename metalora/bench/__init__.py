"""`metalora bench`: few-shot comparisons and speed measurements.

    from metalora.bench.compare import BenchOptions, compare     # the one comparison loop
    from metalora.bench.arsc import run_arsc                       # presets over it
    from metalora.bench.suite import run_suite, run_synthetic
    from metalora.bench.speed import run_speed
"""
