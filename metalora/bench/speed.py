"""`metalora bench speed`: what a meta-step costs next to a plain peft training step, what adaptation
costs by support size, and meta-training throughput on 1 vs N processes.

- plain step: `peft.get_peft_model` over the backbone's AutoModel (same LoRA settings as the meta-init),
  a linear head, full forward + backward through every layer, one AdamW step; the examples are the
  support + query examples of the same episodes the meta-steps use (tokenised once, outside the timer).
- first-order meta-step: `MetaTrainer.episode_grads(episode)` (fomaml) + one outer optimizer step.
- second-order meta-step: the same with algorithm `maml`.
  Ratio = (meta-step seconds per example) / (plain-step seconds per example).
- adaptation: `metalora.adapt.adapt` (AdaptConfig defaults) from peft's init on a synthetic held-out
  scenario with 5 / 20 / 100 shots per class: wall seconds (encoding included) and peak memory.
- processes: `MetaTrainer.train()` for a few outer steps in this process, and under
  `accelerate.debug_launcher` with N CPU processes (`Accelerator(cpu=True)`): episodes per second.
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from metalora import __version__
from metalora.errors import ConfigError

SCENARIO_PATTERNS = ("synthetic/sentiment/*",)
ADAPT_SCENARIO = "synthetic/sentiment/beauty"


def parse_ints(spec: str, flag: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(s) for s in str(spec).split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated integers, got {spec!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise ConfigError(f"{flag}: expected positive integers, got {spec!r}")
    return vals


def _meta_config(backbone: str, algorithm: str, out: Path, steps: int = 1):
    from metalora.config import BackboneConfig, EpisodeConfig, MetaTrainConfig

    return MetaTrainConfig(backbone=BackboneConfig(name=backbone, max_length=64), algorithm=algorithm,
                           scenarios=SCENARIO_PATTERNS, episodes=EpisodeConfig(k_shot=5, query_size=16),
                           steps=steps, meta_batch=2, inner_steps=2, eval_every=0, checkpoint_every=0, log_with="none",
                           output_dir=str(out))


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (caches, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def step_costs(backbone: str, repeats: int, workdir: Path) -> dict:
    """Seconds per example of a plain peft step vs first- and second-order meta-steps, same episodes."""
    import torch.nn.functional as F
    from peft import get_peft_model

    from metalora.backbones import load_backbone
    from metalora.meta.trainer import MetaTrainer
    from metalora.model import LoraClassifier, lora_config

    cfg = _meta_config(backbone, "fomaml", workdir / "fo")
    model = LoraClassifier(load_backbone(cfg.backbone), cfg.lora)
    fo = MetaTrainer(cfg, model=model)
    episodes = [fo.sampler.episode(0, i) for i in range(repeats + 1)]
    n_examples = [len(e.support) + len(e.query) for e in episodes]
    per_ep = statistics.mean(n_examples)

    def meta_step(trainer, k=[0]):
        ep = episodes[k[0] % len(episodes)]
        k[0] += 1
        res = trainer.episode_grads(ep)
        for name, t in zip(trainer.names, trainer.tensors):
            t.grad = res.grads[name].detach()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()

    fo_s = _time(lambda: meta_step(fo), repeats)

    # plain peft: a fresh backbone, LoRA with the same settings, every layer run each step
    bb = load_backbone(cfg.backbone)
    peft_model = get_peft_model(bb.model, lora_config(bb, cfg.lora))
    peft_model.train()
    # the same examples, already tokenised by the episode sampler (ids + mask); labels are the episode's
    num_labels = max(e.num_labels for e in episodes)
    head = torch.nn.Linear(bb.hidden_size, num_labels)
    params = [p for p in peft_model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)

    def plain_step(k=[0]):
        i = k[0] % len(episodes)
        k[0] += 1
        ep = episodes[i]
        loss = 0.0
        for enc, y in ((ep.support, ep.support_labels), (ep.query, ep.query_labels)):
            h = peft_model(input_ids=enc.ids, attention_mask=enc.mask).last_hidden_state
            m = enc.mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
            loss = loss + F.cross_entropy(head(pooled), y, reduction="sum")
        loss = loss / (len(ep.support) + len(ep.query))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    plain_s = _time(plain_step, repeats)

    so = MetaTrainer(replace(cfg, algorithm="maml", output_dir=str(workdir / "so")), model=model)
    so_s = _time(lambda: meta_step(so), repeats)
    per = lambda s: s / per_ep  # noqa: E731
    return {
        "examples_per_step": per_ep,
        "lora": {"r": cfg.lora.r, "top_layers": cfg.lora.top_layers},
        "inner_steps": cfg.inner_steps,
        "plain_peft": {"seconds_per_step": plain_s, "examples_per_s": per_ep / plain_s},
        "meta_first_order": {"seconds_per_step": fo_s, "examples_per_s": per_ep / fo_s, "ratio_vs_plain": per(fo_s) / per(plain_s)},
        "meta_second_order": {"seconds_per_step": so_s, "examples_per_s": per_ep / so_s, "ratio_vs_plain": per(so_s) / per(plain_s)},
    }


def adaptation_costs(backbone: str, shots: Sequence[int]) -> dict:
    from metalora.adapt import Init, Timer, adapt
    from metalora.api import build_classifier
    from metalora.config import AdaptConfig, BackboneConfig, LoraSettings
    from metalora.scenarios import get_scenario, sample_support

    sc = get_scenario(ADAPT_SCENARIO)
    ds = sc.load("train")
    cfg = AdaptConfig(backbone=BackboneConfig(name=backbone, max_length=64))
    model = build_classifier(cfg.backbone, LoraSettings(top_layers=2))
    out = {}
    for k in shots:
        sup = sample_support(ds, k, 0, sc.num_labels, where=f"{sc.name} (train split)")
        with Timer() as t:
            enc = model.encode(sup["text"])
            adapt(model, enc, torch.tensor(sup["label"]), sc.num_labels, Init(lora=model.default_lora), cfg)
        out[str(k)] = {"examples": len(sup), "seconds": t.seconds, "peak_mb": t.peak_mb, "steps": cfg.steps}
    return {"scenario": sc.name, "shots": out}


def _launched(cfg_dict: dict, result_path: str) -> None:
    """Runs in each process under accelerate's debug launcher."""
    from accelerate import Accelerator

    from metalora.config import MetaTrainConfig, from_dict
    from metalora.meta.trainer import MetaTrainer

    acc = Accelerator(cpu=True)
    res = MetaTrainer(from_dict(MetaTrainConfig, cfg_dict), accelerator=acc).train(resume=False)
    total = torch.tensor(float(res.episodes))
    total = acc.reduce(total, reduction="sum")
    if acc.is_main_process:
        Path(result_path).write_text(json.dumps({"seconds": res.seconds, "episodes": float(total)}))


def process_throughput(backbone: str, processes: Sequence[int], steps: int, workdir: Path, timeout: int = 600) -> dict:
    from metalora.config import to_dict
    from metalora.meta.trainer import MetaTrainer

    out = {}
    for n in processes:
        cfg = replace(_meta_config(backbone, "fomaml", workdir / f"proc{n}", steps=steps), meta_batch=max(2, n * 2))
        if n == 1:
            res = MetaTrainer(cfg).train(resume=False)
            seconds, episodes = res.seconds, res.episodes
        else:
            # A fresh interpreter runs accelerate's CPU launcher: forking this process, whose torch thread
            # pools are already running, can deadlock the children.
            import subprocess

            result = workdir / f"proc{n}.json"
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / f"proc{n}.cfg.json").write_text(json.dumps(to_dict(cfg)))
            code = ("import json, sys; from accelerate import debug_launcher; from metalora.bench.speed import _launched; "
                    f"debug_launcher(_launched, args=(json.load(open(sys.argv[1])), sys.argv[2]), num_processes={n})")
            try:
                proc = subprocess.run([sys.executable, "-c", code, str(workdir / f"proc{n}.cfg.json"), str(result)],
                                      capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                out[str(n)] = {"error": f"timed out after {timeout}s"}
                continue
            if proc.returncode != 0 or not result.is_file():
                out[str(n)] = {"error": (proc.stderr or "").strip().splitlines()[-1:] or ["failed"]}
                continue
            data = json.loads(result.read_text())
            seconds, episodes = data["seconds"], data["episodes"]
        out[str(n)] = {"seconds": seconds, "episodes": episodes, "episodes_per_s": episodes / seconds if seconds else None,
                       "steps": steps, "meta_batch": cfg.meta_batch}
    return out


def run_speed(backbone: str | Sequence[str], out: Path, shots: Sequence[int] = (5, 20, 100), repeats: int = 3,
              processes: Sequence[int] = (1,), meta_steps: int = 3) -> dict:
    """Every backbone in one run (one process, the same thread count), so their ratios sit side by side
    in one table rather than in reports from different days or loads."""
    from metalora.backbones import load_backbone  # noqa: F401  (fail fast on an unknown backbone name)
    from metalora.config import BackboneConfig

    names = [b.strip() for b in backbone.split(",")] if isinstance(backbone, str) else list(backbone)
    if not names or any(not b for b in names):
        raise ConfigError(f"--backbone: expected one name or a comma-separated list like minilm,mpnet, got {backbone!r}")
    if repeats < 1 or meta_steps < 1:
        raise ConfigError("--repeats and --meta-steps must be >= 1")
    for b in names:
        load_backbone(BackboneConfig(name=b))
    backbones = list(dict.fromkeys([*names, "tiny-bert"]))
    report: dict = {"benchmark": "speed", "metalora_version": __version__, "torch": torch.__version__,
                    "device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
                    "repeats": repeats, "backbones": {}}
    with tempfile.TemporaryDirectory(prefix="metalora-speed-") as tmp:
        for b in backbones:
            print(f"speed: {b}", file=sys.stderr)
            work = Path(tmp) / b.replace("/", "_")
            report["backbones"][b] = {
                "steps": step_costs(b, repeats, work),
                "adaptation": adaptation_costs(b, shots),
                "processes": process_throughput(b, processes, meta_steps, work),
            }
    from metalora.bench.report import write_speed

    paths = write_speed(report, Path(out))
    print(speed_table(report))
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
    return report


def speed_table(report: dict) -> str:
    from metalora.bench.report import speed_markdown

    return speed_markdown(report)
