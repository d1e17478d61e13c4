"""`metalora bench serve`: many scenarios on one backbone vs one model per adapter.

For 1, 10 and 50 adapters (`--adapters`) of one backbone, each setting is measured in a fresh Python
process (so its peak memory is its own):

- one backbone (`metalora.api.load_adapters`): texts/s over a batch job whose texts cycle through every
  loaded scenario, predicted as mixed batches (peft's `adapter_names`, one forward per batch), grouped
  by scenario (`mixed=False`), and with every text sent to one adapter (a single adapter's cost, timed
  in turn with the others in the same process, so a neighbour's load cannot skew the ratio).
- one model per adapter (`metalora.api.load_adapter` once per adapter, the alternative a user has
  without multi-adapter serving): the same texts, each adapter's share through its own model.

Reported: texts/s (median over `--repeats` timed passes after a warm-up, with the worst pass and the
spread), resident memory after loading and peak memory, memory added per adapter, and the two
targets: 50 adapters within 1.3x the (peak) memory of one, and mixed-batch throughput within 1.5x of a
single adapter's. Adapters are real saved
folders with random, non-zero LoRA weights and heads of 2-5 labels (the values do not change the cost);
texts are the synthetic suite's reviews and listings. Peak memory on a CPU is the process's peak
resident set (ru_maxrss, imports included); on CUDA the allocator's peak.
"""
from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch

from metalora import __version__
from metalora.errors import ConfigError

TEXT_SCENARIOS = ("synthetic/sentiment/beauty", "synthetic/category/marketplace_jp", "synthetic/purchase/pet_owners",
                  "synthetic/fraud/refund_abuse", "synthetic/sentiment/garden_t3")
MEMORY_TARGET = 1.3  # 50 adapters within 1.3x the memory of one
THROUGHPUT_TARGET = 1.5  # mixed-batch texts/s within 1.5x of a single adapter's


# -- inputs ------------------------------------------------------------------------------------------
def make_adapters(backbone: str, n: int, folder: Path, r: int = 8, top_layers: int | None = None) -> list[Path]:
    """`n` saved adapter folders on `backbone`: random non-zero LoRA weights, heads of 2-5 labels."""
    from metalora.adapter_io import save_folder
    from metalora.backbones import load_backbone
    from metalora.config import BackboneConfig, LoraSettings
    from metalora.model import SCALE_KEY, LoraClassifier

    model = LoraClassifier(load_backbone(BackboneConfig(name=backbone)), LoraSettings(r=r, top_layers=top_layers))
    g = torch.Generator().manual_seed(0)
    folders = []
    for i in range(n):
        labels = [f"label{j}" for j in range(2 + i % 4)]
        params = {k: torch.randn(v.shape, generator=g) * 0.02 for k, v in model.default_lora.items()}
        params["head.weight"] = torch.randn(len(labels), model.backbone.hidden_size, generator=g)
        params["head.bias"] = torch.zeros(len(labels))
        params[SCALE_KEY] = torch.tensor(2.0)
        meta = {"kind": "adapter", "scenario": {"name": f"scenario{i:02d}", "family": "bench", "label_names": labels}}
        folders.append(save_folder(folder / f"adapter{i:02d}", model, params, meta))
    return folders


def bench_texts(n: int) -> list[str]:
    from metalora.scenarios import get_scenario

    pool: list[str] = []
    for name in TEXT_SCENARIOS:
        pool += list(get_scenario(name).load("test")["text"])
    if not pool:
        raise ConfigError("no texts found in the synthetic scenarios")
    return [pool[i % len(pool)] for i in range(n)]


# -- one measurement (runs in its own process) ---------------------------------------------------------
def _peak_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    """Resident memory now (Linux /proc), or the peak where /proc is missing."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return _peak_mb()
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _interleaved(fns: dict, repeats: int) -> dict[str, list[float]]:
    """One warm-up of each, then `repeats` rounds that time each in turn: a neighbour's load on a shared
    machine then slows every variant alike, so their ratio holds even when the absolute figures move."""
    for fn in fns.values():
        fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[key].append(time.perf_counter() - t0)
    return out


def measure(mode: str, folders: Sequence[str], texts: Sequence[str], batch_size: int, repeats: int) -> dict:
    """texts/s and memory of serving `texts` (scenarios cycling over the adapters) one way.

    shared: `mixed` (every batch mixes scenarios), `grouped` (one scenario per forward) and `single`
    (every text to the first adapter: what one adapter alone costs, measured in the same process);
    separate: one model per adapter, each adapter's share through its own model."""
    from metalora.api import load_adapter, load_adapters

    n = len(folders)
    t0 = time.perf_counter()
    if mode == "separate":
        models = [load_adapter(f) for f in folders]
        names = [m.metadata["scenario"]["name"] for m in models]
        params = [p for m in models for p in m.model.parameters()] + [m.params[k] for m in models for k in ("head.weight", "head.bias")]
    else:
        multi = load_adapters(list(folders))
        names = list(multi.scenarios)
        params = list(multi.model.parameters()) + [a.head[k] for a in multi.adapters.values() for k in ("head.weight", "head.bias")]
    result: dict = {"mode": mode, "adapters": n, "texts": len(texts), "load_seconds": time.perf_counter() - t0,
                    "rss_after_load_mb": _rss_mb(), "parameters": sum(p.numel() for p in params),
                    "parameter_mb": sum(p.numel() * p.element_size() for p in params) / 2**20}
    scenario = [names[i % n] for i in range(len(texts))]
    if mode == "separate":
        shares = [[t for t, s in zip(texts, scenario) if s == name] for name in names]

        def run() -> None:
            for model, share in zip(models, shares):
                if share:
                    model.predict(share, batch_size=batch_size)

        runs = _interleaved({"separate": run}, repeats)
    else:
        runs = _interleaved({
            "single": lambda: multi.predict(texts, scenario=names[0], batch_size=batch_size),
            "mixed": lambda: multi.predict(texts, scenario=scenario, batch_size=batch_size),
            "grouped": lambda: multi.predict(texts, scenario=scenario, batch_size=batch_size, mixed=False),
        }, repeats)
    for key, secs in runs.items():
        rates = [len(texts) / s for s in secs]
        result[key] = {"texts_per_s": statistics.median(rates), "worst_texts_per_s": min(rates),
                       "spread_texts_per_s": max(rates) - min(rates), "seconds": secs}
    if mode != "separate":
        # per round: single-adapter seconds over mixed seconds is (mixed texts/s) / (single texts/s)
        result["mixed_vs_single"] = statistics.median(m / s for m, s in zip(runs["mixed"], runs["single"]))
    result["peak_mb"] = _peak_mb()
    return result


def _child(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    res = measure(spec["mode"], spec["folders"], spec["texts"], spec["batch_size"], spec["repeats"])
    print("RESULT " + json.dumps(res), flush=True)


def measure_in_subprocess(mode: str, folders: Sequence[Path], texts: Sequence[str], batch_size: int, repeats: int,
                          workdir: Path, timeout: int = 3600) -> dict:
    spec = workdir / f"{mode}-{len(folders)}.json"
    spec.write_text(json.dumps({"mode": mode, "folders": [str(f) for f in folders], "texts": list(texts),
                                "batch_size": batch_size, "repeats": repeats, "threads": torch.get_num_threads()}))
    code = "import sys; from metalora.bench.serve import _child; _child(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"bench serve: measuring {mode} with {len(folders)} adapters failed: {tail[0]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


# -- the bench -----------------------------------------------------------------------------------------
def run_serve(backbone: str, out: Path, counts: Sequence[int] = (1, 10, 50), texts: int = 512, batch_size: int = 64,
              repeats: int = 3, r: int = 8, top_layers: int | None = None, separate: bool = True,
              isolate: bool = True) -> dict:
    """Measure every count both ways; write serve.json, serve.md and serve.png to `out`."""
    counts = sorted(set(counts))
    if not counts or counts[0] < 1:
        raise ConfigError(f"--adapters: expected positive counts, got {counts}")
    if texts < 1 or batch_size < 1 or repeats < 1:
        raise ConfigError("--texts, --batch-size and --repeats must be >= 1")
    report: dict = {"benchmark": "serve", "metalora_version": __version__, "torch": torch.__version__,
                    "device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
                    "backbone": backbone, "lora": {"r": r, "top_layers": top_layers}, "texts": texts,
                    "batch_size": batch_size, "repeats": repeats, "isolated_processes": isolate, "runs": {}}
    sample = bench_texts(texts)
    with tempfile.TemporaryDirectory(prefix="metalora-serve-") as tmp:
        work = Path(tmp)
        print(f"bench serve: writing {counts[-1]} adapters on {backbone}", file=sys.stderr)
        folders = make_adapters(backbone, counts[-1], work / "adapters", r=r, top_layers=top_layers)
        from metalora.backbones import load_backbone
        from metalora.config import BackboneConfig

        tok = load_backbone(BackboneConfig(name=backbone)).tokenizer
        lengths = [min(len(ids), 128) for ids in tok(sample, truncation=True, max_length=128)["input_ids"]]
        report["mean_tokens"] = statistics.mean(lengths)
        for mode in ("shared", "separate") if separate else ("shared",):
            for n in counts:
                print(f"bench serve: {mode}, {n} adapter(s)", file=sys.stderr)
                args = (mode, folders[:n], sample, batch_size, repeats)
                res = measure_in_subprocess(*args, workdir=work) if isolate else measure(*args)
                report["runs"][f"{mode}-{n}"] = res
    report["summary"] = summarize(report, counts)
    paths = write(report, Path(out))
    print(serve_markdown(report))
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
    return report


def summarize(report: dict, counts: Sequence[int]) -> dict:
    runs = report["runs"]
    lo, hi = counts[0], counts[-1]
    one, many = runs[f"shared-{lo}"], runs[f"shared-{hi}"]
    per = (lambda key, mode: (runs[f"{mode}-{hi}"][key] - runs[f"{mode}-{lo}"][key]) / (hi - lo)
           if hi > lo and f"{mode}-{hi}" in runs and f"{mode}-{lo}" in runs else None)
    out = {"from": lo, "to": hi,
           "memory_ratio": many["peak_mb"] / one["peak_mb"],
           "rss_after_load_ratio": many["rss_after_load_mb"] / one["rss_after_load_mb"],
           # the target: a single adapter's texts/s over mixed-batch texts/s, both timed in the hi-adapter process
           "throughput_ratio": many["mixed_vs_single"],
           "throughput_ratio_across_processes": one["mixed"]["texts_per_s"] / many["mixed"]["texts_per_s"],
           "shared_mb_per_adapter": per("rss_after_load_mb", "shared"),
           "shared_peak_mb_per_adapter": per("peak_mb", "shared"),
           "shared_parameter_mb_per_adapter": per("parameter_mb", "shared"),
           # safetensors weights are memory-mapped: a separate model's pages count once its forward has
           # touched them, so its cost shows in the peak, not right after loading
           "separate_mb_per_adapter": per("peak_mb", "separate"),
           "separate_parameter_mb_per_adapter": per("parameter_mb", "separate")}
    out["memory_target_met"] = out["memory_ratio"] <= MEMORY_TARGET
    out["throughput_target_met"] = out["throughput_ratio"] <= THROUGHPUT_TARGET
    return out


def _f(x, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def serve_markdown(report: dict) -> str:
    runs, s = report["runs"], report["summary"]
    counts = sorted({r["adapters"] for r in runs.values()})
    lines = [f"# metalora bench serve: {report['backbone']}", "",
             f"metalora {report['metalora_version']}, torch {report['torch']}, {report['device']}, {report['threads']} thread(s); "
             f"{report['texts']} texts (mean {report.get('mean_tokens', 0):.0f} tokens), batch {report['batch_size']}, "
             f"LoRA r={report['lora']['r']} on {'the top ' + str(report['lora']['top_layers']) if report['lora']['top_layers'] else 'all'} "
             f"layer(s). texts/s: median of {report['repeats']} passes (worst, spread), the variants of one process timed "
             "in turn; memory: resident after loading / peak (each setting in its own process).", "",
             "| adapters | one backbone: mixed batches texts/s | grouped by scenario | every text to one adapter "
             "| MB after load / peak | one model per adapter: texts/s | MB after load / peak |",
             "|---|---|---|---|---|---|---|"]

    def rate(entry: dict | None) -> str:
        if not entry:
            return "n/a"
        return f"{entry['texts_per_s']:.1f} (worst {entry['worst_texts_per_s']:.1f}, ± {entry['spread_texts_per_s']:.1f})"

    def mem(entry: dict | None) -> str:
        return "n/a" if not entry else f"{entry['rss_after_load_mb']:.0f} / {entry['peak_mb']:.0f}"

    for n in counts:
        sh, sep = runs.get(f"shared-{n}"), runs.get(f"separate-{n}")
        lines.append(f"| {n} | {rate(sh and sh.get('mixed'))} | {rate(sh and sh.get('grouped'))} | {rate(sh and sh.get('single'))} "
                     f"| {mem(sh)} | {rate(sep and sep.get('separate'))} | {mem(sep)} |")
    ok = {True: "met", False: "NOT met"}
    lines += ["",
              f"- memory added per adapter: one backbone {_f(s['shared_mb_per_adapter'], 2)} MB resident after loading, "
              f"{_f(s.get('shared_peak_mb_per_adapter'), 2)} MB at the peak (its tensors: {_f(s['shared_parameter_mb_per_adapter'], 2)} MB); "
              f"one model per adapter {_f(s['separate_mb_per_adapter'], 1)} MB at the peak (its tensors: "
              f"{_f(s.get('separate_parameter_mb_per_adapter'), 1)} MB; memory-mapped weights count once a forward touches them)",
              f"- peak memory, {s['to']} adapters vs {s['from']} on one backbone: {s['memory_ratio']:.3f}x "
              f"(after loading: {s['rss_after_load_ratio']:.3f}x; target <= {MEMORY_TARGET}x: {ok[s['memory_target_met']]})",
              f"- a single adapter's texts/s over {s['to']}-adapter mixed-batch texts/s (same process, timed in turn): "
              f"{s['throughput_ratio']:.3f}x (target <= {THROUGHPUT_TARGET}x: {ok[s['throughput_target_met']]}); "
              f"across processes ({s['from']}-adapter process vs {s['to']}): {s['throughput_ratio_across_processes']:.3f}x"]
    return "\n".join(lines) + "\n"


def serve_png(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    counts = sorted({r["adapters"] for r in runs.values()})
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for mode, key, label in (("shared", "mixed", "one backbone, mixed"), ("shared", "grouped", "one backbone, grouped"),
                             ("shared", "single", "one backbone, one adapter"), ("separate", "separate", "one model per adapter")):
        xs = [n for n in counts if f"{mode}-{n}" in runs]
        if xs:
            a.plot(xs, [runs[f"{mode}-{n}"][key]["texts_per_s"] for n in xs], marker="o", label=label)
    for mode, label in (("shared", "one backbone"), ("separate", "one model per adapter")):
        xs = [n for n in counts if f"{mode}-{n}" in runs]
        if xs:
            line = b.plot(xs, [runs[f"{mode}-{n}"]["rss_after_load_mb"] for n in xs], marker="o", label=f"{label}, after load")
            b.plot(xs, [runs[f"{mode}-{n}"]["peak_mb"] for n in xs], marker="x", linestyle="--", color=line[0].get_color(),
                   label=f"{label}, peak")
    a.set_xlabel("adapters")
    a.set_ylabel("texts/s")
    a.legend(fontsize=8)
    b.set_xlabel("adapters")
    b.set_ylabel("MB")
    b.legend(fontsize=8)
    fig.suptitle(f"metalora bench serve: {report['backbone']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(report: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "serve.json", "md": out / "serve.md", "png": out / "serve.png"}
    paths["json"].write_text(json.dumps(report, indent=2), encoding="utf-8")
    paths["md"].write_text(serve_markdown(report), encoding="utf-8")
    serve_png(report, paths["png"])
    return paths


# -- command line (`metalora bench serve`) ------------------------------------------------------------
def register(bsub) -> None:
    p = bsub.add_parser("serve", help="Many adapters on one backbone (mixed batches) vs one model per adapter: texts/s and memory.",
                        description="For each adapter count, in a fresh process: texts/s of a batch job mixing every loaded "
                                    "scenario and peak memory, on one backbone (metalora.api.load_adapters) and with one "
                                    "model per adapter. Writes serve.json, serve.md and serve.png.")
    p.add_argument("--backbone", default="minilm", help="Backbone the adapters are made for (default minilm).")
    p.add_argument("--out", default="runs/bench-serve", help="Output folder (default runs/bench-serve).")
    p.add_argument("--adapters", default="1,10,50", help="Adapter counts to measure, comma-separated (default 1,10,50).")
    p.add_argument("--texts", type=int, default=512, help="Texts in the batch job (default 512); their scenarios cycle over the adapters.")
    p.add_argument("--batch-size", type=int, default=64, help="Texts per forward pass (default 64).")
    p.add_argument("--repeats", type=int, default=3, help="Timed passes over the texts after one warm-up (default 3).")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank of the generated adapters (default 8).")
    p.add_argument("--top-layers", type=int, default=None, help="LoRA on the top N layers only (default: all layers, the costliest).")
    p.add_argument("--no-separate", action="store_true", help="Skip the one-model-per-adapter measurements (they need a backbone per adapter in memory).")
    p.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    from metalora.bench.speed import parse_ints

    run_serve(args.backbone, Path(args.out), counts=parse_ints(args.adapters, "--adapters"), texts=args.texts,
              batch_size=args.batch_size, repeats=args.repeats, r=args.lora_r, top_layers=args.top_layers,
              separate=not args.no_separate)
    return 0
