"""`metalora evaluate`: score a saved adapter on a scenario split."""
from __future__ import annotations

import argparse

from metalora.cli._common import print_metrics


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="Evaluate a saved adapter on a scenario split.",
                       description="Load an adapter (folder or Hub repo id) and print the scenario card's metrics on a split.")
    p.add_argument("adapter", help="Adapter folder, Hub repo id, or hf://ORG/NAME@REVISION.")
    p.add_argument("scenario", help="Scenario name or card path; its label names must match the adapter's.")
    p.add_argument("--split", default="test", help="Split to evaluate on (default test).")
    p.add_argument("--json", action="store_true", help="Print the metrics as JSON.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from metalora.api import load_adapter
    from metalora.errors import DataError
    from metalora.scenarios import get_scenario

    sc = get_scenario(args.scenario)
    model = load_adapter(args.adapter)
    if tuple(model.label_names) != tuple(sc.label_names):
        raise DataError(f"adapter labels {list(model.label_names)} differ from scenario {sc.name}'s {list(sc.label_names)}")
    metrics = model.evaluate(sc, args.split)
    if not args.json:
        print(f"{sc.name} ({args.split}, {len(sc.load(args.split))} examples):")
    print_metrics(metrics, args.json)
    return 0
