"""`metalora adapt`: fit LoRA + head to one scenario from a few examples and save the adapter."""
from __future__ import annotations

import argparse

from metalora.cli._common import add_adapt_flags, adapt_config, print_metrics


def register(sub) -> None:
    p = sub.add_parser("adapt", help="Adapt a backbone (or a meta-init) to one scenario and save the adapter.",
                       description="Sample K examples per class from the scenario's support split, fine-tune LoRA + a prototype-initialised head, evaluate on the test split and save a plain peft adapter folder with metalora's metadata.")
    p.add_argument("scenario", help="Scenario name (see `metalora scenarios`) or the path of a card.")
    p.add_argument("--out", required=True, help="Folder to write the adapter to (must not exist or be empty, unless --overwrite).")
    p.add_argument("--init", help="Start from this meta-init or adapter: a local folder, a Hub repo id, or hf://ORG/NAME@REVISION; "
                   "or library:PATH[/top1|/compose]: the entry of the adapter library in PATH that selection ranks first for "
                   "this support set (top1, the default) or a LoraHub blend of its best entries (compose). Default: peft's LoRA init.")
    p.add_argument("--shots", type=int, default=5, help="Support examples per class (default 5).")
    p.add_argument("--full", action="store_true", help="Use the whole support split instead of --shots per class.")
    p.add_argument("--support-split", default="train", help="Split the support set comes from (default train).")
    p.add_argument("--eval-split", default="test", help="Split to evaluate on after adapting; `none` to skip (default test).")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing adapter folder (atomically, only once the new one is complete).")
    add_adapt_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from metalora.adapter_io import check_target
    from metalora.api import adapt
    from metalora.scenarios import get_scenario

    check_target(args.out, args.overwrite)  # before any long work
    base = None
    sc = get_scenario(args.scenario)
    init = args.init
    if init and init.startswith("library:"):
        init = _library_start(args, sc)
    elif init:
        from metalora.adapter_io import AdapterFolder

        init = AdapterFolder.open(init)  # read (or pulled) once, then passed on
    if init:
        from metalora.api import init_adapt_defaults

        base = init_adapt_defaults(init, sc.family)  # the init's own inner loop (its budget for this family), unless overridden
    cfg = adapt_config(args, base)
    eval_split = None if args.eval_split == "none" else args.eval_split
    model = adapt(sc, init=init, config=cfg, shots=None if args.full else args.shots,
                  support_split=args.support_split, evaluate_split=eval_split, progress=True)
    path = model.save(args.out, overwrite=args.overwrite)
    print(f"adapted {sc.name} in {model.metadata['adapt']['seconds']:.1f}s -> {path}")
    fallback = model.metadata["adapt"].get("fallback")
    if fallback:
        print(f"init check: {fallback['reason']}")
    head = model.metadata["adapt"].get("head") or {}
    if head.get("route") == "bank":
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(head.get("top_bank_entries", {}).items())[:3])
        print(f"head: support prototypes shrunk toward the init's head bank (closest training scenarios: {top})")
    elif head.get("reason") and "no bank entry" in head["reason"]:
        print(f"head: plain support prototypes ({head['reason']})")
    if model.metadata.get("metrics"):
        print(f"metrics on {eval_split}:")
        print_metrics(model.metadata["metrics"])
    return 0


def _library_start(args: argparse.Namespace, sc):
    """Select (or compose) from the library on the same support set adaptation will use."""
    from metalora.library import Support, start_from
    from metalora.scenarios import sample_support

    seed = adapt_config(args).seed
    ds = sc.load(args.support_split)
    if not args.full:
        ds = sample_support(ds, args.shots, seed, sc.num_labels, where=f"scenario {sc.name} split {args.support_split}")
    start = start_from(args.init, Support.from_dataset(ds, sc.num_labels, sc.label_names), seed=seed)
    print(f"library: {start.describe()}")
    return start
