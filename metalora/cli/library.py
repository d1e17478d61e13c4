"""`metalora library index|list|select|fit-selector`: an adapter library for model selection."""
from __future__ import annotations

import argparse
import json
import sys

EPILOG = """\
examples:
  metalora library index adapters/ --hub my-org/kitchen --hub my-org/garden
  metalora library list adapters/
  metalora library select adapters/ synthetic/sentiment/toys --shots 5 --seed 0
  metalora library select adapters/ synthetic/sentiment/toys --compose blends/toys
  metalora library fit-selector adapters/ --scenarios 'synthetic/sentiment/*'
  metalora adapt synthetic/sentiment/toys --init library:adapters/top1 --out adapters-new/toys
"""


def register(sub) -> None:
    p = sub.add_parser("library", help="Index an adapter library, list it, select or compose for a new scenario.",
                       description="A library is a folder of adapter and meta-init folders (plus Hub repos recorded in its "
                                   "library.json). It always holds peft's default LoRA init as the entry peft-default.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    lsub = p.add_subparsers(dest="library_command", metavar="ACTION")

    i = lsub.add_parser("index", help="Index (or re-index) a library folder and its Hub sources; cached in the folder.")
    i.add_argument("path", help="Library folder (one sub-folder per adapter or meta-init).")
    i.add_argument("--hub", action="append", default=[], metavar="ORG/NAME[@REV]", help="Add a Hub repo (repeatable); recorded in library.json.")
    i.add_argument("--hub-author", help="Add every Hub repo of this author (listed through huggingface_hub; needs the Hub).")
    i.add_argument("--hub-tag", action="append", default=[], help="With --hub-author or alone: only repos with this tag (repeatable).")
    i.add_argument("--backbone", help="The library's backbone (default: its meta-init's, else the most common among entries).")
    i.add_argument("--refresh", action="store_true", help="Ignore the cached index and recompute every signature.")
    i.set_defaults(func=run_index)

    ls = lsub.add_parser("list", help="List the entries of an indexed library.")
    ls.add_argument("path", help="Library folder.")
    ls.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    ls.set_defaults(func=run_list)

    s = lsub.add_parser("select", help="Rank the library for a scenario's support set (and optionally blend its best entries).")
    s.add_argument("path", help="Library folder.")
    s.add_argument("scenario", help="Scenario name (see `metalora scenarios`) or a card path.")
    s.add_argument("--shots", type=int, default=5, help="Support examples per class (default 5).")
    s.add_argument("--seed", type=int, default=0, help="Seed of the support sample (default 0).")
    s.add_argument("--support-split", default="train", help="Split the support set comes from (default train).")
    s.add_argument("-k", type=int, default=5, help="How many ranked entries to print (default 5).")
    s.add_argument("--by", default="auto", choices=("auto", "learned", "zero_step", "few_steps", "signature"),
                   help="The signal that ranks: auto = the learned selector when fitted, else zero_step (default auto).")
    s.add_argument("--few-steps", type=int, default=5, help="Adaptation steps of the few_steps signal (default 5).")
    s.add_argument("--compose", metavar="OUT", help="Also blend the best entries (LoraHub weights searched on the support set) and save the blend to OUT.")
    s.add_argument("--compose-k", type=int, default=3, help="Entries in the blend besides the meta-inits (default 3).")
    s.add_argument("--budget", type=int, default=40, help="Objective evaluations of the blend's weight search (default 40).")
    s.add_argument("--json", action="store_true", help="Print the selection as JSON.")
    s.set_defaults(func=run_select)

    f = lsub.add_parser("fit-selector", help="Train the learned selector across training scenarios; saved as library_selector.json.")
    f.add_argument("path", help="Library folder.")
    f.add_argument("--scenarios", required=True, nargs="+", help="Training scenarios: names or glob patterns.")
    f.add_argument("--exclude", nargs="*", default=[], help="Patterns removed from --scenarios (e.g. held-out targets).")
    f.add_argument("--shots", type=int, default=5, help="Support examples per class (default 5).")
    f.add_argument("--seeds", type=int, nargs="+", default=[0], help="Support draws per scenario (default 0).")
    f.add_argument("--query-split", default="test", help="Split the held-out accuracy is measured on (default test).")
    f.add_argument("--query-size", type=int, default=64, help="Held-out examples per scenario (default 64).")
    f.add_argument("--candidates", type=int, help="Adapt only the best N adapters by zero-step (plus meta-inits and the default); default all.")
    f.add_argument("--steps", type=int, help="Adaptation steps for every candidate (default: each entry's own).")
    f.set_defaults(func=run_fit)
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


def _open(path, **kw):
    from metalora.library import AdapterLibrary

    return AdapterLibrary(path, **kw)


def _print_notes(lib) -> None:
    for note in lib.notes:
        print(f"note: {note}", file=sys.stderr)


def run_index(args: argparse.Namespace) -> int:
    import warnings

    from metalora.library import LibraryWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LibraryWarning)  # printed below as notes
        lib = _open(args.path, hub=args.hub, hub_author=args.hub_author, hub_tags=args.hub_tag, backbone=args.backbone,
                    refresh=args.refresh)
    _print_notes(lib)
    lib.check_not_empty()
    lib.save_config()
    kinds = {k: sum(e.kind == k for e in lib.entries) for k in ("adapter", "meta-init")}
    print(f"indexed {args.path}: {kinds['adapter']} adapters, {kinds['meta-init']} meta-inits and peft's default init "
          f"(backbone {lib.base_model}; {sum(e.signature is not None for e in lib.entries)} with a data signature)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    import warnings

    from metalora.library import LibraryWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LibraryWarning)
        lib = _open(args.path)
    _print_notes(lib)
    rows = lib.describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<32} {'kind':<9} {'scenario':<36} {'score':>6}  sig  lora")
    for r in rows:
        score = f"{r['score']:.3f}" if r["score"] is not None else "-"
        print(f"{r['name']:<32} {r['kind']:<9} {r['scenario']:<36} {score:>6}  {'yes' if r['signature'] else 'no ':<3}  {r['lora']}")
    print(f"{len(rows)} entries" + (" (selector fitted)" if lib.selector is not None else ""))
    return 0


def run_select(args: argparse.Namespace) -> int:
    import warnings

    from metalora.library import LibraryWarning, Support
    from metalora.scenarios import get_scenario, sample_support

    sc = get_scenario(args.scenario)
    ds = sample_support(sc.load(args.support_split), args.shots, args.seed, sc.num_labels,
                        where=f"scenario {sc.name} split {args.support_split}")
    support = Support.from_dataset(ds, sc.num_labels, sc.label_names)
    if args.compose:
        from metalora.adapter_io import check_target

        check_target(args.compose, False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LibraryWarning)
        lib = _open(args.path)
        sel = lib.select(support, k=len(lib.entries), by=args.by, few_steps=args.few_steps, seed=args.seed)
        # the blend takes its ingredients from this ranking (no second scoring pass)
        blend = (lib.compose(support, k=args.compose_k, budget=args.budget, seed=args.seed,
                             ranking=[r.entry for r in sel.ranking]) if args.compose else None)
        sel.ranking = sel.ranking[:args.k]
    _print_notes(lib)
    if args.json:
        out = sel.to_json()
        if blend is not None:
            out["compose"] = blend.lineage()["blend"]
        print(json.dumps(out, indent=2))
    else:
        print(f"{'rank':<4} {'entry':<32} {'kind':<9} " + " ".join(f"{k:>8}" for k in ("zs_loss", "zs_acc", "sig_cos", "fs_loss", "learned")))
        for i, r in enumerate(sel.ranking, 1):
            vals = " ".join(f"{r.scores[k]:>8.3f}" if r.scores.get(k) is not None else f"{'-':>8}"
                            for k in ("zs_loss", "zs_acc", "sig_cos", "fs_loss", "learned"))
            print(f"{i:<4} {r.name:<32} {r.entry.kind:<9} {vals}")
        print(f"{sel.describe()} ({sel.entries_scored} entries scored in {sel.seconds:.2f}s, "
              f"{sel.seconds_per_entry * 1000:.0f} ms per entry)")
    if blend is not None:
        path = blend.save(args.compose)
        print(f"{blend.describe()} -> {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def run_fit(args: argparse.Namespace) -> int:
    import warnings

    from metalora.library import LibraryWarning
    from metalora.meta.episodes import select_scenarios

    scenarios = select_scenarios(args.scenarios, args.exclude, False, "--scenarios")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LibraryWarning)
        lib = _open(args.path)
        sel = lib.fit_selector(scenarios, shots=args.shots, seeds=args.seeds, query_split=args.query_split,
                               query_size=args.query_size, candidates=args.candidates, steps=args.steps, progress=True)
    _print_notes(lib)
    t = sel.trained_on
    print(f"fitted the selector on {t['scenarios_fitted']} support sets ({t['pairs']} entry pairs): its picks scored "
          f"{t['train_pick_accuracy']:.3f} on held-out examples vs {t['train_best_accuracy']:.3f} for the best entry and "
          f"{t['train_mean_accuracy']:.3f} for a random one -> {args.path}/library_selector.json")
    return 0
