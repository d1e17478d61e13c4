"""Few-shot comparison benches: ARSC (from any folder in the ARSC layout) and the synthetic held-out suite.

Both go through `compare(targets, training, options)`: a list of target tasks (each knows where its
support set and its test set come from) and the training scenarios for the inits that must be
trained (`meta`, `multitask`). Every check on the inputs runs before any training.

ARSC layout: `<domain>.<t2|t4|t5>.<train|dev|test>`, lines `text<TAB>1|-1`. Training on ARSC data
from an arbitrary `--data-dir` works by writing a one-card folder (an `arsc` card whose data_dir is
that folder) and handing it to `MetaTrainer(cards_dir=...)`, so `metalora.meta` needs no change.
"""
from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence


from metalora import __version__
from metalora.bench.methods import (
    CURVE_METHODS, RunResult, frozen_features, meta_adapt_config, parse_methods, run_frozen_lr, run_lora,
    setfit_available,
)
from metalora.bench.setfit_runner import SetFitRunner, SetFitSettings
from metalora.bench.report import mean_curve, summarize, summary_table, task_entry, write_comparison
from metalora.cards import ScenarioCard
from metalora.config import AdaptConfig, BackboneConfig, MetaTrainConfig, load_config
from metalora.errors import ConfigError, DataError
from metalora.scenarios import Scenario, arsc_domains, arsc_file, sample_support

THRESHOLDS = ("t2", "t4", "t5")


# -- targets -----------------------------------------------------------------------------------------


@dataclass
class TargetTask:
    """One target: its scenario (labels, splits), where the support set comes from, and the rule."""

    name: str
    scenario: Scenario
    support_split: str
    fixed_if_exact: bool = False  # ARSC: a .train file with exactly 2 x shots lines is the support set

    @property
    def num_labels(self) -> int:
        return self.scenario.num_labels

    def is_fixed(self, shots: int) -> bool:
        return self.fixed_if_exact and len(self.scenario.load(self.support_split)) == self.num_labels * shots

    def support(self, shots: int, seed: int):
        """The support set for `seed`: the fixed file as is, or `shots` per class sampled with `seed`."""
        ds = self.scenario.load(self.support_split)
        if self.is_fixed(shots):
            return ds
        return sample_support(ds, shots, seed, self.num_labels, where=f"{self.name} ({self.support_split} split)")

    def test(self):
        return self.scenario.load("test")


@dataclass
class Training:
    """Where `meta` / `multitask` inits are trained: scenario names or patterns, resolved in `cards_dir`."""

    scenarios: tuple[str, ...]
    cards_dir: Path | None = None
    exclude: tuple[str, ...] = ()
    exclude_heldout: bool = True
    describe: dict = field(default_factory=dict)  # domains used / skipped, for the report
    # scenarios outside training that validation may use (never a target): validating on domains the
    # init never trained on is what makes the adaptation budget it chooses transfer to new domains
    val_pool: tuple[str, ...] = ()


def arsc_card(data_dir: Path, domains: Sequence[str] | None = None) -> ScenarioCard:
    """The ARSC card with its data folder replaced by `data_dir`."""
    from metalora.cards import default_cards_dir, load_card

    base = load_card(default_cards_dir() / "arsc.md")
    src = replace(base.source, data_dir=Path(data_dir).resolve(), domains=tuple(domains) if domains else base.source.domains,
                  thresholds=THRESHOLDS)
    return replace(base, source=src)


def _task(card: ScenarioCard, domain: str, thr: str, support_split: str) -> TargetTask:
    sc = Scenario(card, f"{card.name}/{domain}.{thr}", (domain, thr))
    return TargetTask(sc.name, sc, support_split, fixed_if_exact=(support_split == "train"))


def arsc_targets(data_dir: Path, targets: Sequence[str], support_split: str) -> list[TargetTask]:
    """`music` -> its t2/t4/t5 tasks (those with files); `music.t2` -> that task. Missing files are errors."""
    data_dir = Path(data_dir)
    if support_split not in ("train", "dev"):
        raise ConfigError(f"--support-split must be train or dev, got {support_split!r}")
    available = arsc_domains(data_dir)
    if not targets:
        raise ConfigError("--targets: name at least one target domain (e.g. music,camera_photo)")
    card = arsc_card(data_dir)
    tasks: list[TargetTask] = []
    for spec in targets:
        domain, _, thr = spec.partition(".")
        if thr and thr not in THRESHOLDS:
            raise ConfigError(f"--targets: {spec!r} has unknown threshold {thr!r}; use one of {', '.join(THRESHOLDS)}")
        if domain not in available:
            raise DataError(f"--targets: no files for domain {domain!r} in {data_dir} (domains there: {', '.join(available) or 'none'})")
        thrs = [thr] if thr else [t for t in THRESHOLDS if any(arsc_file(data_dir, domain, t, s).is_file() for s in ("train", "dev", "test"))]
        for t in thrs:
            for split in (support_split, "test"):
                path = arsc_file(data_dir, domain, t, split)
                if not path.is_file():
                    raise DataError(f"target {domain}.{t}: file {path} is missing (needed for the {'support set' if split != 'test' else 'evaluation'})")
            tasks.append(_task(card, domain, t, support_split))
    names = [t.name for t in tasks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"--targets: {', '.join(dup)} listed twice")
    return tasks


def _smallest_class(path: Path) -> int:
    counts = {"1": 0, "-1": 0}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            label = line.rstrip("\n").rpartition("\t")[2].strip()
            if label in counts:
                counts[label] += 1
    return min(counts.values())


def arsc_training(data_dir: Path, train_domains: str | Sequence[str], targets: Sequence[TargetTask],
                  cards_dir: Path, min_per_class: int = 0, val_split: str = "dev") -> Training:
    """Training tasks: every (domain, threshold) of the training domains that has a .train file.

    With `all`, a domain whose .train files cannot fill one episode (a class with fewer than
    `min_per_class` examples, e.g. tools_hardware) is skipped and named in the report. The tasks of
    the remaining non-target domains that have a `val_split` file form the validation pool.
    """
    data_dir = Path(data_dir)
    available = arsc_domains(data_dir)
    target_domains = sorted({t.scenario.arsc_task[0] for t in targets})
    explicit = not (isinstance(train_domains, str) and train_domains == "all")
    if explicit:
        wanted = [d.strip() for d in (train_domains.split(",") if isinstance(train_domains, str) else train_domains) if d.strip()]
        leak = [d for d in wanted if d in target_domains]
        if leak:
            raise ConfigError(f"--train-domains: {', '.join(leak)} {'is' if len(leak) == 1 else 'are'} also a target; "
                              "training on a target domain leaks its data into the comparison")
        missing = [d for d in wanted if d not in available]
        if missing:
            raise DataError(f"--train-domains: no files for {', '.join(missing)} in {data_dir}")
    else:
        wanted = [d for d in available if d not in target_domains]
    used, skipped, names = [], {}, []
    for d in wanted:
        thrs = [t for t in THRESHOLDS if arsc_file(data_dir, d, t, "train").is_file()]
        if not thrs:
            if explicit:
                raise DataError(f"--train-domains: domain {d!r} has no .train file in {data_dir}; it cannot be trained on")
            skipped[d] = "no .train file"
            continue
        if not explicit and min_per_class:
            small = min(_smallest_class(arsc_file(data_dir, d, t, "train")) for t in thrs)
            if small < min_per_class:
                skipped[d] = f"a class with {small} .train examples, fewer than one episode needs ({min_per_class})"
                continue
        used.append(d)
        names += [f"arsc/{d}.{t}" for t in thrs]
    val_tasks = [(d, t) for d in available if d not in target_domains and d not in used
                 for t in THRESHOLDS if arsc_file(data_dir, d, t, val_split).is_file()]
    return Training(tuple(names), cards_dir=cards_dir, exclude_heldout=False,
                    val_pool=tuple(f"arsc/{d}.{t}" for d, t in val_tasks),
                    describe={"data_dir": str(data_dir.resolve()), "domains": used, "skipped": skipped, "scenarios": names,
                              "val_domains": sorted({d for d, _ in val_tasks})})


def write_arsc_cards(data_dir: Path, domains: Sequence[str], folder: Path) -> Path:
    """A one-card folder: the ARSC card pointing at `data_dir`, restricted to `domains`."""
    from metalora.cards import default_cards_dir

    folder.mkdir(parents=True, exist_ok=True)
    text = (default_cards_dir() / "arsc.md").read_text(encoding="utf-8")
    import re

    text = re.sub(r"(?m)^(\s*data_dir:).*$", lambda m: f"{m.group(1)} {Path(data_dir).resolve()}", text, count=1)
    text = re.sub(r"(?m)^(\s*domains:).*$", lambda m: f"{m.group(1)} [{', '.join(domains)}]" if domains else f"{m.group(1)} all",
                  text, count=1)
    (folder / "arsc.md").write_text(text, encoding="utf-8")
    return folder


def synthetic_targets() -> list[TargetTask]:
    from metalora.scenarios import get_scenario
    from metalora.synthetic import heldout_names

    return [TargetTask(f"synthetic/{n}", get_scenario(f"synthetic/{n}"), "train") for n in heldout_names()]


def synthetic_training() -> Training:
    from metalora.synthetic import train_names

    return Training(("synthetic/*",), None, exclude_heldout=True,
                    describe={"domains": None, "scenarios": [f"synthetic/{n}" for n in train_names()]})


# -- options ------------------------------------------------------------------------------------------


@dataclass
class BenchOptions:
    methods: list[str]
    out: Path
    shots: int = 5
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    backbone: str | None = None
    steps: int | None = None
    lr: float | None = None
    curve_steps: tuple[int, ...] = (0, 1, 2, 5, 10, 25, 50)
    meta_init: str | None = None
    meta_config: str | None = None
    meta_overrides: tuple[str, ...] = ()
    multitask_init: str | None = None
    benchmark: str = "arsc"
    progress: bool = True
    setfit: SetFitSettings = field(default_factory=SetFitSettings)
    extra: dict = field(default_factory=dict)  # copied into the report (data_dir, ...)


def parse_curve_steps(spec: str | None) -> tuple[int, ...]:
    if spec is None or spec.strip().lower() in ("", "none", "off"):
        return ()
    try:
        steps = tuple(sorted({int(s) for s in spec.split(",") if s.strip()}))
    except ValueError:
        raise ConfigError(f"--curve-steps: expected comma-separated integers like 0,1,2,5,10, got {spec!r}") from None
    if any(s < 0 for s in steps):
        raise ConfigError(f"--curve-steps: steps must be >= 0, got {spec!r}")
    return steps


def _train_config(opts: BenchOptions, training: Training, algorithm: str | None, output_dir: Path) -> MetaTrainConfig:
    """The YAML config (or defaults) with the bench's training scenarios, backbone and output folder."""
    base = load_config(MetaTrainConfig, opts.meta_config, list(opts.meta_overrides))
    algorithm = algorithm or base.algorithm
    # the class-prior direction belongs to the meta-learned head; the multitask baseline has its own heads
    cfg = replace(base, algorithm=algorithm, head_prior=base.head_prior and algorithm != "multitask",
                  scenarios=training.scenarios, exclude=training.exclude,
                  exclude_heldout=training.exclude_heldout, output_dir=str(output_dir))
    if opts.backbone:
        cfg = replace(cfg, backbone=replace(cfg.backbone, name=opts.backbone))
    if cfg.val_scenarios:  # validate on training scenarios or the validation pool, never on a target
        import fnmatch

        pool = list(training.describe.get("scenarios") or []) + list(training.val_pool)
        keep = [s for s in pool if any(fnmatch.fnmatchcase(s, p) for p in cfg.val_scenarios)]
        cfg = replace(cfg, val_scenarios=tuple(keep))
    return cfg


def _model_key(model) -> tuple:
    return (model.backbone.config, model.settings)


# -- the comparison -----------------------------------------------------------------------------------


def compare(targets: list[TargetTask], training: Training, opts: BenchOptions) -> dict:
    """Run every method on every target x seed; write report.json / report.md / curve.png; return the report."""
    from tqdm.auto import tqdm

    from metalora.api import load_init
    from metalora.backbones import load_backbone
    from metalora.model import LoraClassifier

    methods = parse_methods(opts.methods)
    notes: list[str] = []
    if "setfit" in methods and not setfit_available():
        methods.remove("setfit")
        notes.append("setfit skipped: the `setfit` package is not installed (pip install setfit)")
    if not methods:
        raise ConfigError("--methods: nothing left to run")
    if opts.shots < 1:
        raise ConfigError(f"--shots must be >= 1, got {opts.shots}")
    if not opts.seeds:
        raise ConfigError("--seeds: give at least one seed")
    if opts.steps is not None and opts.steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {opts.steps}")
    leak = {t.name for t in targets} & set(training.describe.get("scenarios") or [])
    if leak:
        raise ConfigError(f"target(s) {', '.join(sorted(leak))} are also training scenarios (leak)")

    # 1. data checks: every support set of every seed, and every test set, before any training
    supports: dict[tuple[str, int], object] = {}
    fixed: dict[str, bool] = {}
    tests = {}
    for t in targets:
        fixed[t.name] = t.is_fixed(opts.shots)
        for seed in opts.seeds:
            supports[(t.name, seed)] = t.support(opts.shots, seed)
        tests[t.name] = t.test()
        if len(tests[t.name]) == 0:
            raise DataError(f"{t.name}: the test split is empty")
    if any(fixed.values()):
        notes.append("fixed support files used as is (seeds vary adaptation only): "
                     + ", ".join(n for n, f in fixed.items() if f))

    # 2. inits to train: build both trainers first (they validate the suite), then train
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    needs = {"meta": "meta" in methods and not opts.meta_init,
             "multitask": "multitask" in methods and not opts.multitask_init}
    if needs["meta"] and not opts.meta_config:
        notes.append("meta: no --meta-init or --meta-config; meta-trained with MetaTrainConfig defaults")
    trainers = {}
    configs = {}
    if any(needs.values()):
        from metalora.meta.trainer import MetaTrainer

        if needs["meta"]:
            configs["meta"] = _train_config(opts, training, None, out / "meta-train")
            if configs["meta"].algorithm == "multitask":
                raise ConfigError("--meta-config: algorithm is multitask; the meta method needs fomaml, maml, reptile or metasgd")
        if needs["multitask"]:
            configs["multitask"] = _train_config(opts, training, "multitask", out / "multitask-train")
        shared = None
        for name, cfg in configs.items():
            if shared is None or _model_key(shared) != (cfg.backbone, cfg.lora):
                shared = LoraClassifier(load_backbone(cfg.backbone), cfg.lora)
            trainers[name] = MetaTrainer(cfg, cards_dir=training.cards_dir, model=shared)
    meta_training: dict = {}
    init_dirs = {"meta": opts.meta_init, "multitask": opts.multitask_init}
    for name, trainer in trainers.items():
        print(f"training the {name} init on {len(trainer.train_scenarios)} scenarios ({configs[name].algorithm}, {configs[name].steps} steps)",
              file=sys.stderr)
        res = trainer.train()
        init_dirs[name] = str(res.init_dir)
        meta_training[name] = {"algorithm": configs[name].algorithm, "seconds": res.seconds, "episodes": res.episodes,
                               "examples": res.examples, "steps": res.steps, "init": str(res.init_dir),
                               "scenarios": [s.name for s in trainer.train_scenarios],
                               "val_scenarios": [s.name for s in trainer.val_scenarios]}
    del trainers

    # 3. models and inits; one classifier per distinct (backbone, LoRA settings)
    models: dict[tuple, LoraClassifier] = {}

    def intern(model):
        return models.setdefault(_model_key(model), model)

    inits = {}
    for name in ("meta", "multitask"):
        if name in methods:
            model, init = load_init(init_dirs[name])
            if opts.backbone and name in (("meta",) if opts.meta_init else ()) + (("multitask",) if opts.multitask_init else ()):
                if model.backbone.config.name != opts.backbone:
                    raise ConfigError(f"--{name}-init was trained on backbone {model.backbone.config.name!r}, not --backbone {opts.backbone!r}")
            inits[name] = (intern(model), init)
            meta_training.setdefault(name, {"init": str(init_dirs[name]), "seconds": None, "given": True})
    if inits:
        ref = next(iter(inits.values()))[0]
    else:
        bcfg = BackboneConfig(name=opts.backbone or "minilm")
        lora = load_config(MetaTrainConfig, opts.meta_config).lora if opts.meta_config else MetaTrainConfig().lora
        ref = intern(LoraClassifier(load_backbone(bcfg), lora))
    backbone_name = ref.backbone.config.name

    base = AdaptConfig(backbone=ref.backbone.config)
    plain = replace(base, **{k: v for k, v in (("steps", opts.steps), ("lr", opts.lr)) if v is not None})
    setups: dict[str, tuple] = {}  # method -> (model, init, AdaptConfig)
    from metalora.adapt import Init

    for m in methods:
        if m == "meta":
            model, init = inits["meta"]
            setups[m] = (model, init, meta_adapt_config(base, init, opts.steps))
        elif m == "multitask":
            model, init = inits["multitask"]
            setups[m] = (model, Init(lora=init.lora, logit_scale=init.logit_scale), meta_adapt_config(base, init, opts.steps))
        elif m == "vanilla":
            setups[m] = (ref, Init(lora=ref.default_lora), plain)
        elif m in ("frozen-lr", "setfit"):
            setups[m] = (ref, None, None)
    setfit_dir = tempfile.TemporaryDirectory(prefix="metalora-bench-setfit-") if "setfit" in methods else None
    setfit = SetFitRunner(ref.backbone.config, Path(setfit_dir.name), opts.setfit) if setfit_dir else None

    if not torch_cuda():
        notes.append("peak_mb on a CPU is the process's peak resident memory so far (ru_maxrss), an upper bound per run")

    # 4. the runs
    runs: dict[str, dict[str, list]] = {m: {t.name: [] for t in targets} for m in methods}
    curves: dict[str, list] = {m: [] for m in methods}
    bar = tqdm(total=len(targets) * len(opts.seeds), desc=f"bench {opts.benchmark}", disable=not opts.progress)
    for t in targets:
        test = tests[t.name]
        test_y = list(test["label"])
        test_enc = {}
        frozen_test = None
        for seed in opts.seeds:
            sup = supports[(t.name, seed)]
            sup_y = list(sup["label"])
            sup_enc = {}
            for m in methods:
                model, init, cfg = setups[m]
                bar.set_postfix_str(f"{t.name} seed {seed} {m}")
                if m == "setfit":
                    res = setfit.run(sup["text"], sup_y, t.num_labels, test["text"], test_y, seed)
                    runs[m][t.name].append({"seed": seed, **res.row()})
                    continue
                key = _model_key(model)
                if key not in test_enc:
                    test_enc[key] = model.encode(test["text"])
                if key not in sup_enc:
                    sup_enc[key] = model.encode(sup["text"])
                if m == "frozen-lr":
                    if frozen_test is None:
                        frozen_test = frozen_features(model, test_enc[key])
                    res: RunResult = run_frozen_lr(model, sup_enc[key], sup_y, t.num_labels, frozen_test, test_y, seed)
                else:
                    res = run_lora(model, init, replace(cfg, seed=seed), sup_enc[key], sup_y, t.num_labels, test_enc[key], test_y,
                                   opts.curve_steps if m in CURVE_METHODS else (), where=f"{t.name} seed {seed} ({m})")
                runs[m][t.name].append({"seed": seed, **res.row()})
                if res.curve:
                    curves[m].append(res.curve)
            bar.update(1)
    bar.close()
    if setfit_dir is not None:
        setfit_dir.cleanup()

    report = {
        "benchmark": opts.benchmark,
        "metalora_version": __version__,
        "backbone": backbone_name,
        "shots": opts.shots,
        "support_split": targets[0].support_split if targets else None,
        "seeds": list(opts.seeds),
        "steps": opts.steps,
        "lr": opts.lr,
        "curve_steps": list(opts.curve_steps),
        "targets": [t.name for t in targets],
        "fixed_support": fixed,
        "training": training.describe,
        "meta_training": meta_training,
        "notes": notes,
        **opts.extra,
        "methods": {},
    }
    for m in methods:
        tasks = {name: task_entry(rs) for name, rs in runs[m].items()}
        _, _, cfg = setups[m]
        report["methods"][m] = {
            "adapt": ({"optimizer": cfg.optimizer, "steps": cfg.steps, "lr": cfg.lr, "head_lr": cfg.head_lr,
                       "batch_size": cfg.batch_size} if cfg else
                      opts.setfit.describe(ref.backbone.config.max_length) if m == "setfit" else
                      {"classifier": "sklearn LogisticRegression", "features": "frozen backbone"}),
            "tasks": tasks,
            "summary": summarize(tasks),
            "curve": mean_curve(curves[m]),
        }
    paths = write_comparison(report, out)
    print(summary_table(report))
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
    return report


def run_arsc(data_dir: str | Path, targets: Sequence[str], train_domains: str | Sequence[str], support_split: str,
             opts: BenchOptions) -> dict:
    data_dir = Path(data_dir)
    parse_methods(opts.methods)
    tasks = arsc_targets(data_dir, targets, support_split)
    needs_training = ("meta" in opts.methods and not opts.meta_init) or ("multitask" in opts.methods and not opts.multitask_init)
    with tempfile.TemporaryDirectory(prefix="metalora-bench-cards-") as tmp:
        train_cfg = load_config(MetaTrainConfig, opts.meta_config, list(opts.meta_overrides))
        episodes, val_split = train_cfg.episodes, train_cfg.val_split
        need = episodes.k_shot + (-(-episodes.query_size // 2) if episodes.query_balance == "balanced" else 1)
        training = arsc_training(data_dir, train_domains, tasks, Path(tmp), min_per_class=need if needs_training else 0,
                                 val_split=val_split)
        if needs_training:
            if not training.scenarios:
                raise DataError(f"no training domain with a .train file in {data_dir}; cannot train the meta / multitask inits")
            write_arsc_cards(data_dir, list(training.describe["domains"]) + training.describe["val_domains"], Path(tmp))
            print(f"training domains ({len(training.describe['domains'])}): {', '.join(training.describe['domains'])}"
                  + (f"; skipped: {', '.join(f'{d} ({w})' for d, w in training.describe['skipped'].items())}" if training.describe["skipped"] else ""),
                  file=sys.stderr)
        opts.extra.setdefault("data_dir", str(data_dir.resolve()))
        opts.benchmark = "arsc"
        return compare(tasks, training, opts)


def run_synthetic(opts: BenchOptions) -> dict:
    opts.benchmark = "synthetic"
    return compare(synthetic_targets(), synthetic_training(), opts)


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
