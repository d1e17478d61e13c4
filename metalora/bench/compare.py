"""The one comparison loop every few-shot bench runs: `bench arsc`, `bench suite` and `bench synthetic`
are presets that only say which targets and which training scenarios.

`compare(targets, training, options)` takes target tasks (each knows where its support sets and its
test set come from) and the training scenarios of the inits that must be trained (`meta`,
`multitask`). Every check on the inputs runs before any training, and the evaluation is honest by
construction: a target that training also uses, an init that recorded a target among its training or
validation scenarios, or a target whose test texts occur in the training data is refused (a few
incidental duplicates are dropped from the test set and named instead).

Cost discipline: a task's test set is tokenised (and pushed through the frozen prefix) once per
distinct classifier; for an init adapted with 0 steps its test features are computed once and each
support draw only builds a head, so 20 draws cost little more than one.
"""
from __future__ import annotations

import fnmatch
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from metalora import __version__
from metalora.bench.guards import (
    check_init_scenarios,
    norm_text,
    overlap_with_training,
    training_data,
)
from metalora.bench.methods import (
    CURVE_METHODS,
    LORA_METHODS,
    RunResult,
    frozen_features,
    lora_features,
    meta_adapt_config,
    parse_methods,
    run_frozen_lr,
    run_lora,
    seeded_default_lora,
    setfit_available,
)
from metalora.bench.report import (
    family_summaries,
    mean_curve,
    method_tail,
    summarize,
    summary_table,
    task_entry,
    write_comparison,
)
from metalora.bench.setfit_runner import SetFitRunner, SetFitSettings
from metalora.bench.support import borderline_indices, check_sampling, typicality
from metalora.config import AdaptConfig, BackboneConfig, MetaTrainConfig, load_config
from metalora.errors import ConfigError, DataError
from metalora.label_words import scenario_words
from metalora.library.bench import LIBRARY_METHODS
from metalora.scenarios import Scenario, sample_support

# -- targets and training -------------------------------------------------------------------------------


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

    @property
    def family(self) -> str:
        return self.scenario.family

    def pool(self):
        return self.scenario.load(self.support_split)

    def is_fixed(self, shots: int) -> bool:
        return self.fixed_if_exact and len(self.pool()) == self.num_labels * shots

    def support(self, shots: int, seed: int):
        """The support set for `seed`: the fixed file as is, or `shots` per class sampled with `seed`."""
        ds = self.pool()
        if self.is_fixed(shots):
            return ds
        return sample_support(ds, shots, seed, self.num_labels, where=f"{self.name} ({self.support_split} split)")

    def test(self):
        return self.scenario.load("test")


@dataclass
class Training:
    """Where `meta` / `multitask` inits are trained: scenario names or patterns, resolved in `cards_dir`."""

    scenarios: tuple[str, ...]
    cards_dir: Path | Sequence[Path] | None = None
    exclude: tuple[str, ...] = ()
    exclude_heldout: bool = True
    describe: dict = field(default_factory=dict)  # domains / scenarios used and skipped, for the report
    # scenarios outside training that validation may use (never a target): validating on scenarios the
    # init never trained on is what makes the adaptation budget it chooses transfer to new scenarios
    val_pool: tuple[str, ...] = ()
    val_scenarios: tuple[str, ...] | None = None  # replaces the meta config's val_scenarios (bench suite --val)


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
    support_sampling: str = "random"
    borderline_fraction: float = 0.25
    max_overlap: float = 0.01  # a target whose test texts occur in training more often than this is refused
    library: str | None = None  # select / compose: the adapter library folder (built there when empty, reused after)
    library_shots: int = 32  # select / compose: examples per class each library adapter was adapted on
    selector_candidates: int | None = 10  # select: adapters per training scenario the learned selector adapts (+ inits)
    augment: tuple = ()  # metalora.augment.ablation.Setting rows beside `meta` (bench --augment)
    augment_overrides: tuple[str, ...] = ()  # AugmentConfig fields for those rows (bench --augment-set)
    fallback: bool = False  # rows `meta+fallback` / `multitask+fallback`: the init check of metalora.fallback (bench --fallback)
    extra: dict = field(default_factory=dict)  # copied into the report (data_dir, ...)

    @property
    def needs_training(self) -> bool:
        """Whether the run trains an init: meta / multitask without a given one, or a task-augmentation row."""
        return (("meta" in self.methods and not self.meta_init) or ("multitask" in self.methods and not self.multitask_init)
                or any(st.task for st in self.augment))


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
    if training.val_scenarios is not None:
        cfg = replace(cfg, val_scenarios=training.val_scenarios)
    if cfg.val_scenarios:  # validate on training scenarios or the validation pool, never on a target
        pool = list(training.describe.get("scenarios") or []) + list(training.val_pool)
        keep = [s for s in pool if any(fnmatch.fnmatchcase(s, p) for p in cfg.val_scenarios)]
        cfg = replace(cfg, val_scenarios=tuple(keep))
    return cfg


def _model_key(model) -> tuple:
    return (model.backbone.config, model.settings)


# -- the comparison -------------------------------------------------------------------------------------


def _supports(targets: Sequence[TargetTask], opts: BenchOptions, ref_model) -> dict[tuple[str, int], object]:
    """Every support set of every seed, drawn before any training (so a bad draw fails fast)."""
    out = {}
    for t in targets:
        if opts.support_sampling == "borderline" and not t.is_fixed(opts.shots):
            pool = t.pool()
            labels = np.asarray(pool["label"])
            feats = frozen_features(ref_model, ref_model.encode(pool["text"]))
            typical = typicality(feats, labels)
            for seed in opts.seeds:
                idx = borderline_indices(typical, labels, opts.shots, seed, t.num_labels, opts.borderline_fraction,
                                         where=f"{t.name} ({t.support_split} split)")
                out[(t.name, seed)] = pool.select(idx)
        else:
            for seed in opts.seeds:
                out[(t.name, seed)] = t.support(opts.shots, seed)
    return out


def compare(targets: list[TargetTask], training: Training, opts: BenchOptions) -> dict:
    """Run every method on every target x seed; write report.json / report.md / curve.png; return the report."""
    from tqdm.auto import tqdm

    from metalora.adapt import Init
    from metalora.api import load_init
    from metalora.backbones import load_backbone
    from metalora.model import LoraClassifier

    methods = parse_methods(opts.methods)
    check_sampling(opts.support_sampling, opts.borderline_fraction)
    notes: list[str] = []
    # the augmentation ablation: each --augment setting is a row `meta+<setting>` beside `meta`
    augmented = {st.row: st for st in opts.augment if st.row != "meta"}
    if opts.augment:
        from metalora.config import AugmentConfig

        aug_base = load_config(AugmentConfig, None, list(opts.augment_overrides))
        if "meta" not in methods:
            methods.insert(0, "meta")
        methods += list(augmented)
    # the init check: each trained-init row gets a twin that falls back to vanilla where the support set says so
    guarded = {f"{m}+fallback": m for m in ("meta", "multitask") if opts.fallback and m in methods}
    methods += list(guarded)
    if opts.fallback and not guarded:
        raise ConfigError("--fallback: it checks a trained init; add meta or multitask to --methods")
    if "setfit" in methods and not setfit_available():
        methods.remove("setfit")
        notes.append("setfit skipped: the `setfit` package is not installed (pip install setfit)")
    if not methods:
        raise ConfigError("--methods: nothing left to run")
    if opts.shots < 1:
        raise ConfigError(f"--shots must be >= 1, got {opts.shots}")
    if not opts.seeds:
        raise ConfigError("--seeds: give at least one seed")
    if len(set(opts.seeds)) != len(opts.seeds):
        raise ConfigError(f"--seeds: {list(opts.seeds)} repeats a seed")
    if opts.steps is not None and opts.steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {opts.steps}")
    leak = {t.name for t in targets} & set(training.describe.get("scenarios") or [])
    if leak:
        raise ConfigError(f"target(s) {', '.join(sorted(leak))} are also training scenarios (leak)")

    # 1. data checks before any training: test sets, given inits, overlap with the training data
    tests = {}
    for t in targets:
        tests[t.name] = t.test()
        if len(tests[t.name]) == 0:
            raise DataError(f"{t.name}: the test split is empty")
    given = {}
    for name, path in (("meta", opts.meta_init), ("multitask", opts.multitask_init)):
        if name in methods and path:
            from metalora.api import init_metadata

            given[name] = init_metadata(path)
            check_init_scenarios(given[name], targets, f"--{name}-init")
    needs = {"meta": "meta" in methods and not opts.meta_init,
             "multitask": "multitask" in methods and not opts.multitask_init}
    configs: dict[str, MetaTrainConfig] = {}
    out = Path(opts.out)
    if needs["meta"]:
        configs["meta"] = _train_config(opts, training, None, out / "meta-train")
        if configs["meta"].algorithm == "multitask":
            raise ConfigError("--meta-config: algorithm is multitask; the meta method needs fomaml, maml, reptile or metasgd")
        if not opts.meta_config:
            notes.append("meta: no --meta-init or --meta-config; meta-trained with MetaTrainConfig defaults")
    if needs["multitask"]:
        configs["multitask"] = _train_config(opts, training, "multitask", out / "multitask-train")
    for row, st in augmented.items():
        if st.task:  # a task augmentation meta-trains its own init: the meta config plus that augmentation
            cfg = _train_config(opts, training, None, out / f"{row.replace('+', '_')}-train")
            configs[row] = replace(cfg, episodes=replace(cfg.episodes, **dict(st.task)))
    dropped = overlap_with_training(targets, training_data(configs, given, training, notes), opts.max_overlap)
    for name, texts in dropped.items():
        notes.append(f"{name}: {len(texts)} test text(s) also occur in the training data and are not scored "
                     f"(e.g. {next(iter(sorted(texts)))[:60]!r})")
        keep = [i for i, x in enumerate(tests[name]["text"]) if norm_text(x) not in texts]
        tests[name] = tests[name].select(keep)

    # 2. the classifier every baseline shares (also the "plain model" of borderline sampling)
    out.mkdir(parents=True, exist_ok=True)
    models: dict[tuple, LoraClassifier] = {}

    def intern(model):
        return models.setdefault(_model_key(model), model)

    if configs:
        cfg0 = next(iter(configs.values()))
        ref = intern(LoraClassifier(load_backbone(cfg0.backbone), cfg0.lora))
    else:
        ref = None

    # 3. inits to train, then load every init
    trainers = {}
    if configs:
        from metalora.meta.trainer import MetaTrainer

        for name, cfg in configs.items():
            shared = models.get((cfg.backbone, cfg.lora)) or intern(LoraClassifier(load_backbone(cfg.backbone), cfg.lora))
            trainers[name] = MetaTrainer(cfg, cards_dir=training.cards_dir, model=shared)
    meta_training: dict = {}
    init_dirs = {"meta": opts.meta_init, "multitask": opts.multitask_init}
    for name, trainer in trainers.items():
        print(f"training the {name} init on {len(trainer.train_scenarios)} scenarios ({configs[name].algorithm}, "
              f"{configs[name].steps} steps)", file=sys.stderr)
        res = trainer.train()
        init_dirs[name] = str(res.init_dir)
        meta_training[name] = {"algorithm": configs[name].algorithm, "seconds": res.seconds, "episodes": res.episodes,
                               "examples": res.examples, "steps": res.steps, "init": str(res.init_dir),
                               "scenarios": [s.name for s in trainer.train_scenarios],
                               "val_scenarios": [s.name for s in trainer.val_scenarios]}
    del trainers

    inits = {}
    for name in ("meta", "multitask", *(r for r, st in augmented.items() if st.task)):
        if name in methods:
            model, init = load_init(init_dirs[name])
            if name in given and opts.backbone and model.backbone.config.name != opts.backbone:
                raise ConfigError(f"--{name}-init was trained on backbone {model.backbone.config.name!r}, not --backbone {opts.backbone!r}")
            inits[name] = (intern(model), init)
            meta_training.setdefault(name, {"init": str(init_dirs[name]), "seconds": None, "given": True})
    if ref is None:
        if inits:
            ref = next(iter(inits.values()))[0]
        else:
            given_cfg = load_config(MetaTrainConfig, opts.meta_config, list(opts.meta_overrides)) if opts.meta_config else None
            bcfg = given_cfg.backbone if given_cfg else BackboneConfig(name=opts.backbone or "minilm")  # scoring, prompt too
            if opts.backbone:
                bcfg = replace(bcfg, name=opts.backbone)
            ref = intern(LoraClassifier(load_backbone(bcfg), given_cfg.lora if given_cfg else MetaTrainConfig().lora))
    backbone_name = ref.backbone.config.name

    # 4. support sets (borderline draws read the plain backbone's features)
    supports = _supports(targets, opts, ref)
    fixed = {t.name: t.is_fixed(opts.shots) for t in targets}

    stats_seconds = {}
    for row, st in augmented.items():  # a calibrate row needs its init's training-class statistics
        model, init = inits[row] if st.task else inits["meta"]
        if "calibrate" in st.support and init.feature_stats is None:
            from metalora.augment.calibration import suite_stats

            t0 = time.perf_counter()
            init.feature_stats = suite_stats(model, init, training.cards_dir)
            stats_seconds[row if st.task else "meta"] = time.perf_counter() - t0
    if stats_seconds:
        notes.append("feature statistics for calibrate computed here (100 training examples per class, under each init's "
                     "weights; not written to the init): " + ", ".join(f"{k} {v:.0f}s" for k, v in stats_seconds.items()))

    base = AdaptConfig(backbone=ref.backbone.config)
    plain = replace(base, **{k: v for k, v in (("steps", opts.steps), ("lr", opts.lr)) if v is not None})
    setups: dict[str, tuple] = {}  # method -> (model, init, AdaptConfig)
    trained: dict[str, Init] = {}  # rows adapting a trained init -> that init (its per-family budget is read per target)
    for m in methods:
        if m == "meta":
            model, init = inits["meta"]
            setups[m] = (model, init, meta_adapt_config(base, init, opts.steps))
            trained[m] = init
        elif m == "multitask":
            model, init = inits["multitask"]
            setups[m] = (model, Init(lora=init.lora, logit_scale=init.logit_scale, head_bank=init.head_bank),
                         meta_adapt_config(base, init, opts.steps))
            trained[m] = init
        elif m == "vanilla":
            setups[m] = (ref, None, plain)  # peft's default init, drawn with each run's seed
        elif m == "zero-shot":  # label words under the plain decoder, no step: needs no support set at all
            if ref.backbone.config.scoring != "label_words":
                raise ConfigError("--methods zero-shot scores label words with a decoder's LM head; set backbone.scoring=label_words "
                                  "in the meta config (e.g. recipes/configs/smollm2_fomaml_arsc_dev.yaml)")
            setups[m] = (ref, Init(lora=ref.default_lora), replace(plain, steps=0))
        elif m in ("frozen-lr", "setfit"):
            setups[m] = (ref, None, None)
        elif m in LIBRARY_METHODS:
            setups[m] = (None, None, None)
        elif m in guarded:
            model, init, cfg = setups[guarded[m]]
            setups[m] = (model, init, replace(cfg, fallback="auto"))
            trained[m] = trained[guarded[m]]
        elif m in augmented:
            model, init = inits[m] if augmented[m].task else inits["meta"]
            cfg = meta_adapt_config(base, init, opts.steps)
            setups[m] = (model, init, replace(cfg, augment=replace(aug_base, methods=augmented[m].support)))
            trained[m] = init
    library = None
    if any(m in LIBRARY_METHODS for m in methods):  # built (or reused) before any target is touched
        from metalora.library.bench import prepare

        meta_cfg = setups["meta"][2] if "meta" in setups else None
        library = prepare(training, opts, init_dirs.get("meta"), meta_cfg, plain, notes)
    text_augs: dict = {}
    if augmented:
        from metalora.augment.text import TextAugmenter

        for m, st in augmented.items():  # built once, outside the timed part (the neighbour table: ~1 s)
            text_augs[m] = TextAugmenter(setups[m][2].augment, setups[m][0].backbone) if st.text else None
    setfit_dir = tempfile.TemporaryDirectory(prefix="metalora-bench-setfit-") if "setfit" in methods else None
    setfit = SetFitRunner(ref.backbone.config, Path(setfit_dir.name), opts.setfit) if setfit_dir else None

    def deterministic(m: str, n_support: int) -> bool:
        """Same result for every seed once the support is fixed: nothing random is left to vary."""
        if m == "frozen-lr":
            return True
        if m in augmented and augmented[m].support:
            return False  # the augmentation draws with each seed
        if m not in ("meta", "multitask", *augmented):
            return False
        cfg = setups[m][2]
        return cfg.head_init == "prototype" and (cfg.steps == 0 or cfg.batch_size >= n_support)

    if any(fixed.values()):
        once = [m for m in methods if deterministic(m, opts.shots * max(t.num_labels for t in targets))]
        notes.append("fixed support files used as is: " + ", ".join(n for n, f in fixed.items() if f) + ". There, seeds vary "
                     "vanilla's LoRA init and SetFit's pairs; " + (", ".join(once) + " have nothing random left and run once"
                                                                  if once else "every method varies"))
    if "zero-shot" in methods:
        notes.append("zero-shot: the decoder's label-word scores with no adaptation step; no support set enters, so it runs once per task")
    notes.append("vanilla starts from peft's default LoRA init (A random, B zero) drawn with each run's seed")
    if not torch_cuda():
        notes.append("peak_mb on a CPU is the process's peak resident memory so far (ru_maxrss), an upper bound per run")

    def plain_run(t: TargetTask, seed: int, sup, sup_enc: dict, test, test_y, test_enc: dict) -> RunResult:
        """vanilla's run on this support draw (peft's default LoRA drawn with the seed), computed once."""
        if (t.name, seed) not in plain_runs:
            key = _model_key(ref)
            if key not in test_enc:
                test_enc[key] = ref.encode(test["text"])
            if key not in sup_enc:
                sup_enc[key] = ref.encode(sup["text"])
            plain_runs[(t.name, seed)] = run_lora(
                ref, Init(lora=seeded_default_lora(ref, seed)), replace(plain, seed=seed), sup_enc[key], list(sup["label"]),
                t.num_labels, test_enc[key], test_y, where=f"{t.name} seed {seed} (vanilla)",
                label_words=scenario_words(ref, t.scenario), label_names=t.scenario.label_names)
        return plain_runs[(t.name, seed)]

    def guarded_run(m: str, t: TargetTask, seed: int, sup, sup_enc: dict, test, test_y, test_enc: dict) -> dict:
        """`M+fallback`: M's own run where its init passes metalora.fallback's check, vanilla's where it does not."""
        from metalora.fallback import check

        model, init, cfg = setups[m]
        cfg = family_config(cfg, trained[m], t.family, opts.steps)
        key = _model_key(model)
        if key not in sup_enc:
            sup_enc[key] = model.encode(sup["text"])
        t0 = time.perf_counter()
        chk = check(model, init.lora, sup_enc[key], list(sup["label"]), t.num_labels, cfg.fallback_margin)
        check_s = time.perf_counter() - t0
        if chk.fell_back:
            row = {"seed": seed, **plain_run(t, seed, sup, sup_enc, test, test_y, test_enc).row()}
        else:  # the base row of this seed ran just before (methods list it first); a deterministic fixed support ran once
            row = dict(runs[guarded[m]][t.name][-1], seed=seed)
        row["seconds"] += check_s
        return {**row, "fell_back": chk.fell_back, "check": {"init": chk.init.to_dict(), "plain": chk.plain.to_dict()}}

    # 5. the runs
    runs: dict[str, dict[str, list]] = {m: {t.name: [] for t in targets} for m in methods}
    plain_runs: dict[tuple[str, int], RunResult] = {}  # vanilla's result per (task, seed), shared with fallback rows
    curves: dict[str, list] = {m: [] for m in methods}
    bar = tqdm(total=len(targets) * len(opts.seeds), desc=f"bench {opts.benchmark}", disable=not opts.progress)
    for t in targets:
        test = tests[t.name]
        test_y = list(test["label"])
        test_enc: dict = {}
        test_feats: dict = {}  # method -> test features under its init (0-step methods)
        frozen_test = None
        for seed in opts.seeds:
            sup = supports[(t.name, seed)]
            sup_y = list(sup["label"])
            sup_enc = {}
            for m in methods:
                if seed != opts.seeds[0] and (m == "zero-shot" or (fixed[t.name] and deterministic(m, len(sup)))):
                    continue
                model, init, cfg = setups[m]
                if m in trained:  # the init's budget for this target's family (metalora/meta/budget.py)
                    cfg = family_config(cfg, trained[m], t.family, opts.steps)
                bar.set_postfix_str(f"{t.name} seed {seed} {m}")
                if m == "setfit":
                    res = setfit.run(sup["text"], sup_y, t.num_labels, test["text"], test_y, seed)
                    runs[m][t.name].append({"seed": seed, **res.row()})
                    continue
                if m in guarded:  # the base row's run where the init passes the check, else vanilla's run
                    runs[m][t.name].append(guarded_run(m, t, seed, sup, sup_enc, test, test_y, test_enc))
                    continue
                if m in LIBRARY_METHODS:
                    res, info = library.run(m, sup, t.num_labels, t.scenario.label_names, test["text"], test_y, seed,
                                            where=f"{t.name} seed {seed} ({m})")
                    runs[m][t.name].append({"seed": seed, **res.row(), **info})
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
                    start = init if init is not None else Init(lora=seeded_default_lora(model, seed))
                    curve = opts.curve_steps if m in CURVE_METHODS else ()
                    feats, words = None, scenario_words(model, t.scenario)
                    if (m in LORA_METHODS or m in augmented) and cfg.steps == 0 and not curve and words is None:
                        fkey = id(init) if init is not None else m  # rows adapting one init share its test features
                        if fkey not in test_feats:
                            test_feats[fkey] = lora_features(model, start.lora, test_enc[key])
                        feats = test_feats[fkey]
                    enc, enc_y, extra_s = sup_enc[key], sup_y, 0.0
                    if text_augs.get(m):  # the augmented support texts, timed with the adaptation
                        t0 = time.perf_counter()
                        texts, enc_y = text_augs[m](list(sup["text"]), sup_y, seed)
                        enc = model.encode(texts)
                        extra_s = time.perf_counter() - t0
                    res = run_lora(model, start, replace(cfg, seed=seed), enc, enc_y, t.num_labels, test_enc[key],
                                   test_y, curve, where=f"{t.name} seed {seed} ({m})", test_features=feats, label_words=words,
                                   label_names=t.scenario.label_names)
                    res.seconds += extra_s
                runs[m][t.name].append({"seed": seed, **res.row()})
                if m == "vanilla" and not res.curve:
                    plain_runs[(t.name, seed)] = res
                if res.curve:
                    curves[m].append(res.curve)
            bar.update(1)
    bar.close()
    if setfit_dir is not None:
        setfit_dir.cleanup()

    majority = {t.name: float(np.bincount(np.asarray(tests[t.name]["label"]), minlength=t.num_labels).max() / len(tests[t.name]))
                for t in targets}
    families = {t.name: t.family for t in targets}
    report = {
        "benchmark": opts.benchmark,
        "metalora_version": __version__,
        "backbone": backbone_name,
        "shots": opts.shots,
        "support_split": ",".join(sorted({t.support_split for t in targets})) if targets else None,
        "support_splits": {t.name: t.support_split for t in targets},
        "support_sampling": opts.support_sampling,
        "seeds": list(opts.seeds),
        "steps": opts.steps,
        "lr": opts.lr,
        "curve_steps": list(opts.curve_steps),
        "targets": [t.name for t in targets],
        "families": families,
        "majority": majority,
        "test_examples": {t.name: len(tests[t.name]) for t in targets},
        "fixed_support": fixed,
        "training": training.describe,
        "meta_training": meta_training,
        "notes": notes,
        **opts.extra,
        "methods": {},
    }
    if opts.support_sampling == "borderline":
        report["borderline_fraction"] = opts.borderline_fraction
    if opts.augment:
        from metalora.augment.ablation import paired

        report["augment"] = {"settings": {st.name: st.row for st in opts.augment}, "baseline": "meta",
                             "overrides": list(opts.augment_overrides),
                             "rows": {r: {"support": list(st.support), "episodes": dict(st.task)} for r, st in augmented.items()},
                             "paired": paired(runs, list(augmented), families), "feature_stats_seconds": stats_seconds}
    for m in methods:
        tasks = {name: task_entry(rs, majority[name]) for name, rs in runs[m].items()}
        _, _, cfg = setups[m]
        fams = family_summaries(tasks, families)
        report["methods"][m] = {
            "adapt": ({"optimizer": cfg.optimizer, "steps": cfg.steps, "lr": cfg.lr, "head_lr": cfg.head_lr,
                       "batch_size": cfg.batch_size, **({"augment": list(cfg.augment.methods)} if cfg.augment.methods else {})}
                      if cfg else
                      library.describe(m) if m in LIBRARY_METHODS else
                      opts.setfit.describe(ref.backbone.config.max_length) if m == "setfit" else
                      {"classifier": "sklearn LogisticRegression", "features": "frozen backbone"}),
            "tasks": tasks,
            "summary": summarize(tasks),
            "tail": method_tail(tasks),
            "families": fams,
            "over_families": {k: float(np.mean([f[k]["mean"] for f in fams.values()])) for k in ("accuracy", "macro_f1")},
            "curve": mean_curve(curves[m]),
        }
        if m in LIBRARY_METHODS:
            report["methods"][m]["library"] = library.report(m)
        if m in trained and (trained[m].meta or {}).get("adapt_by_family"):
            report["methods"][m]["adapt"]["by_family"] = trained[m].meta["adapt_by_family"]
        if m in guarded:
            report["methods"][m]["adapt"]["fallback"] = "auto"
            report["methods"][m]["fallback"] = fallback_counts(runs[m], families)
    paths = write_comparison(report, out)
    print(summary_table(report))
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
    return report


def family_config(cfg: AdaptConfig, init: Init, family: str, steps: int | None) -> AdaptConfig:
    """`cfg` with the training settings of `init`'s budget for `family` (where it chose one per family)."""
    by_family = (init.meta or {}).get("adapt_by_family") or {}
    if family not in by_family:
        return cfg
    fam = meta_adapt_config(cfg, init, steps, family)
    return replace(cfg, optimizer=fam.optimizer, lr=fam.lr, head_lr=fam.head_lr, steps=fam.steps)


def fallback_counts(runs: dict[str, list], families: dict[str, str]) -> dict:
    """How often the init check fell back to vanilla: over all runs and per family."""
    per: dict[str, list[int]] = {}
    for name, rs in runs.items():
        c = per.setdefault(families[name], [0, 0])
        c[0] += sum(bool(r.get("fell_back")) for r in rs)
        c[1] += len(rs)
    total = [sum(v[0] for v in per.values()), sum(v[1] for v in per.values())]
    return {"fell_back": total[0], "runs": total[1], "families": {f: {"fell_back": a, "runs": b} for f, (a, b) in sorted(per.items())}}


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
