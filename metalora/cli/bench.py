"""`metalora bench`: compare meta-learned inits with the baselines (arsc, suite, synthetic) and measure speed."""
from __future__ import annotations

import argparse

METHODS_HELP = ("Comma-separated methods: meta (the meta-learned init), vanilla (peft's default LoRA init), multitask "
                "(pooled ordinary training on the training domains), frozen-lr (frozen backbone + logistic regression), "
                "setfit (SetFit fine-tuning of the same backbone, 20 pair iterations and 1 epoch by default; skipped with a note "
                "when the setfit package is missing: pip install metalora[setfit]), select (the entry of an adapter library built from "
                "the training scenarios that the learned selector ranks first for each support set, adapted at its kind's budget) "
                "and compose (a LoraHub blend of the library's best entries and the meta-init).")
SAMPLING_HELP = ("How each seed's support set is drawn: `random` (shots per class, uniformly; default) or `borderline` (a stress "
                 "test: from each class's least typical examples, those a logistic regression on the frozen backbone's features, "
                 "cross-validated on the support split, finds least like their own label; see --borderline-fraction).")


def _add_comparison_flags(p: argparse.ArgumentParser, default_methods: str) -> None:
    p.add_argument("--out", required=True, help="Folder for report.json, report.md and curve.png (and trained inits).")
    p.add_argument("--methods", default=default_methods, help=METHODS_HELP + f" Default: {default_methods}.")
    p.add_argument("--shots", type=int, default=5, help="Support examples per class (default 5).")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="Seeds: one support sample and one adaptation run per seed (default 0 1 2 3 4).")
    p.add_argument("--backbone", help="Backbone short name (minilm, tiny-bert, ...), Hub id or folder. Default: the meta-init's, else the meta config's, else minilm.")
    p.add_argument("--steps", type=int, help="Adaptation steps for every method (default: AdaptConfig's 30 for vanilla; for meta and multitask, the steps their init recommends, chosen on its validation scenarios).")
    p.add_argument("--lr", type=float, help="LoRA learning rate of vanilla adaptation (default 1e-3); the meta and multitask inits keep the SGD rate their validation used.")
    p.add_argument("--curve-steps", default="0,1,2,5,10,25,50", help="Adaptation steps at which test accuracy is recorded for the curve (comma-separated; `none` to skip). Default 0,1,2,5,10,25,50.")
    p.add_argument("--meta-init", help="The meta-init to evaluate (folder or Hub id). Without it, one is meta-trained on the training data with --meta-config.")
    p.add_argument("--meta-config", help="YAML MetaTrainConfig used to meta-train the meta init (and, with algorithm=multitask, the multitask init); its scenarios are replaced by the training domains.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="Override a field of the meta-training config, e.g. --set steps=50 (repeatable).")
    p.add_argument("--multitask-init", help="A trained multitask init (folder or Hub id); without it one is trained on the same training data.")
    p.add_argument("--setfit-iterations", type=int, default=20, help="SetFit: pairs generated per support example (default 20).")
    p.add_argument("--setfit-epochs", type=int, default=1, help="SetFit: epochs over the pairs (default 1).")
    p.add_argument("--support-sampling", default="random", choices=("random", "borderline"), help=SAMPLING_HELP)
    p.add_argument("--borderline-fraction", type=float, default=0.25, help="Borderline sampling: the share of each class's examples, least typical first, that supports are drawn from (default 0.25).")
    p.add_argument("--max-overlap", type=float, default=0.01, help="A target whose test texts occur in the training data more often than this share is refused; below it the shared texts are left out of scoring and named (default 0.01).")
    p.add_argument("--library", help="select / compose: the adapter library folder; built there from the training scenarios "
                                     "when empty (one adapter each, plus the meta-init and a learned selector), reused by later runs. "
                                     "Default: OUT/library.")
    p.add_argument("--library-shots", type=int, default=32, help="select / compose: examples per class each library adapter is adapted on (default 32).")
    p.add_argument("--selector-candidates", type=int, default=10, help="select: adapters per training scenario the learned selector adapts to learn from, besides the inits (default 10).")
    p.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    p.add_argument("--augment", help="Augmentation ablation: comma-separated settings, each none, a support augmentation (support, "
                   "feature, dropout, swap, neighbours, paraphrase, calibrate, mixup), a task augmentation of meta-training (task = "
                   "MLTI interpolation, task-merge, task-vary) or several joined with +. Each becomes a row meta+SETTING beside meta "
                   "(added to --methods if missing) on the same support sets and seeds, with its paired difference to meta; a task "
                   "setting meta-trains its own init with --meta-config plus that augmentation.")
    p.add_argument("--fallback", action="store_true",
                   help="Add rows meta+fallback (and multitask+fallback) beside meta (multitask): the same runs, except that "
                        "where the plain backbone separates the support set better than the init (metalora.fallback's "
                        "leave-one-out check) the run falls back to vanilla's peft default LoRA and 30 AdamW steps.")
    p.add_argument("--augment-set", dest="augment_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="Override an AugmentConfig field for the ablation, e.g. --augment-set calibrate_samples=50 (repeatable).")


def register(sub) -> None:
    p = sub.add_parser("bench", help="Benchmark meta-learned inits against baselines (arsc, suite, synthetic) and measure speed.",
                       description="Few-shot comparisons on ARSC, on any scenario cards (suite) or the synthetic held-out suite, and speed measurements. Each writes report.json, report.md and a PNG to --out.")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCH")

    a = bsub.add_parser("arsc", help="Few-shot ARSC comparison from a folder of <domain>.<t2|t4|t5>.<train|dev|test> files.",
                        description="Adapt every method to each target task from --shots examples per class (per seed) and score it on the whole .test file.")
    a.add_argument("--data-dir", required=True, help="Folder in the ARSC layout: <domain>.<t2|t4|t5>.<train|dev|test>, lines `text<TAB>1|-1`.")
    a.add_argument("--targets", required=True, help="Comma-separated target domains (each expands to its t2/t4/t5 tasks) or tasks like music.t2.")
    a.add_argument("--train-domains", default="all", help="Domains the meta and multitask inits train on: `all` (every non-target domain with .train files) or a comma-separated list (a target there is refused as a leak).")
    a.add_argument("--support-split", default="dev", choices=("train", "dev"), help="Where the support set comes from: dev (sampled per seed), or train (used as is when it holds exactly 2 x shots lines, else sampled per seed). Default dev. The .test file is only ever scored.")
    _add_comparison_flags(a, "meta,vanilla,multitask,frozen-lr")
    a.set_defaults(func=run_arsc)

    su = bsub.add_parser("suite", help="The comparison on any scenario cards: targets and training scenarios by name pattern.",
                         description="Adapt every method to each target scenario from --shots examples per class of its --support-split "
                                     "(per seed), score it on its whole test split, and report per task and per family. Targets that a "
                                     "training or validation pattern also matches, inits that recorded a target, and targets whose test "
                                     "texts occur in the training data are refused.")
    su.add_argument("--cards", action="append", default=[], metavar="PATH", help="A card file or folder added to data_cards/ (repeatable).")
    su.add_argument("--targets", required=True, help="Comma-separated scenario names or glob patterns, e.g. 'clothing/*/Blouses,arsc/music.*'.")
    su.add_argument("--train", help="Comma-separated patterns the meta / multitask inits train on, replacing the meta config's scenarios (its exclude still applies).")
    su.add_argument("--val", help="Comma-separated patterns for validation episodes (never a target). Default: the meta config's val_scenarios.")
    su.add_argument("--support-split", default="train", help="Split each support set is drawn from: a split name, plus comma-separated PATTERN=SPLIT overrides (first match wins), e.g. 'arsc/*=dev,train' for ECOM-dev. Default train. Scores always come from test.")
    _add_comparison_flags(su, "meta,vanilla,multitask,frozen-lr")
    su.set_defaults(func=run_suite)

    s = bsub.add_parser("synthetic", help="The same comparison on the built-in synthetic suite's held-out scenarios.",
                        description="Support sets from each held-out scenario's train split (--shots per class per seed), scores on its test split; inits trained on the non-held-out synthetic scenarios.")
    _add_comparison_flags(s, "meta,vanilla,multitask,frozen-lr")
    s.set_defaults(func=run_synthetic)

    sp = bsub.add_parser("speed", help="Examples/s of plain peft training vs meta-steps, adaptation cost by shots, 1 vs N processes.",
                         description="Measured on each --backbone and on tiny-bert, in one run. Writes speed.json, speed.md and speed.png.")
    sp.add_argument("--backbone", default="minilm", help="Backbone(s) to measure besides tiny-bert, comma-separated for rows side by side, e.g. minilm,mpnet (default minilm).")
    sp.add_argument("--out", default="runs/bench-speed", help="Output folder (default runs/bench-speed).")
    sp.add_argument("--shots", default="5,20,100", help="Support sizes (per class) for the adaptation-cost measurement (default 5,20,100).")
    sp.add_argument("--repeats", type=int, default=3, help="Timed repetitions of each step (after one warm-up; default 3).")
    sp.add_argument("--processes", default="1", help="Process counts for the meta-training throughput measurement, e.g. 1,2 (2 runs accelerate's CPU launcher; slow). Default 1.")
    sp.add_argument("--meta-steps", type=int, default=3, help="Outer steps in the process-count measurement (default 3).")
    sp.set_defaults(func=run_speed)

    from metalora.bench.serve import register as register_serve  # noqa: E402 - `bench serve` keeps its parser beside its code

    register_serve(bsub)
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


def _options(args, benchmark: str):
    from pathlib import Path

    from metalora.augment.ablation import parse_settings
    from metalora.bench.compare import BenchOptions, parse_curve_steps
    from metalora.bench.methods import parse_methods
    from metalora.bench.setfit_runner import SetFitSettings

    methods = parse_methods(args.methods)
    if args.augment and "meta" not in methods:
        methods.insert(0, "meta")  # the ablation's baseline row; the presets must know it needs a meta init
    return BenchOptions(
        methods=methods, out=Path(args.out), shots=args.shots, seeds=tuple(args.seeds),
        backbone=args.backbone, steps=args.steps, lr=args.lr, curve_steps=parse_curve_steps(args.curve_steps),
        meta_init=args.meta_init, meta_config=args.meta_config, meta_overrides=tuple(args.overrides),
        multitask_init=args.multitask_init, benchmark=benchmark, progress=not args.no_progress,
        setfit=SetFitSettings(num_iterations=args.setfit_iterations, num_epochs=args.setfit_epochs),
        support_sampling=args.support_sampling, borderline_fraction=args.borderline_fraction, max_overlap=args.max_overlap,
        library=args.library, library_shots=args.library_shots, selector_candidates=args.selector_candidates,
        augment=tuple(parse_settings(args.augment)) if args.augment else (), augment_overrides=tuple(args.augment_overrides),
        fallback=args.fallback,
    )


def run_arsc(args: argparse.Namespace) -> int:
    from metalora.bench.arsc import run_arsc as run

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    run(args.data_dir, targets, args.train_domains, args.support_split, _options(args, "arsc"))
    return 0


def run_suite(args: argparse.Namespace) -> int:
    from metalora.bench.suite import parse_patterns, run_suite as run

    run(parse_patterns(args.targets), _options(args, "suite"), train=parse_patterns(args.train), val=parse_patterns(args.val),
        cards=args.cards, support_split=args.support_split)
    return 0


def run_synthetic(args: argparse.Namespace) -> int:
    from metalora.bench.suite import run_synthetic as run

    run(_options(args, "synthetic"))
    return 0


def run_speed(args: argparse.Namespace) -> int:
    from pathlib import Path

    from metalora.bench.speed import parse_ints, run_speed as run

    run(args.backbone, Path(args.out), shots=parse_ints(args.shots, "--shots"), repeats=args.repeats,
        processes=parse_ints(args.processes, "--processes"), meta_steps=args.meta_steps)
    return 0
