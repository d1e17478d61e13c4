"""`metalora scenarios`: list and validate every scenario card, with what each table card kept and dropped."""
from __future__ import annotations

import argparse
import fnmatch
import sys


def register(sub) -> None:
    p = sub.add_parser("scenarios", help="List and validate the scenario cards.",
                       description="Parse every card in data_cards/ (or --cards), expand multi-scenario cards (ARSC, and "
                                   "table cards: one scenario per scenario_column value) and print one line per scenario: "
                                   "name, family, task type, split sizes and, for table cards, each kept class with its "
                                   "row count and the classes dropped below min_per_class. Scenarios skipped for having "
                                   "fewer than two classes, and the rows each table card left out, are noted on stderr. "
                                   "Exits 2 on the first invalid card, naming the file and field.")
    p.add_argument("patterns", nargs="*", metavar="PATTERN",
                   help="Only scenarios matching one of these globs (`*` also matches `/`), e.g. 'fashion/*/Bags'.")
    p.add_argument("--cards", help="Folder of scenario cards (default: the project's data_cards/).")
    p.add_argument("--load", action="store_true", help="Also load every split of every scenario and check columns and labels (slower).")
    p.set_defaults(func=run)


def _labels(sc) -> str:
    if sc.info is None:
        return "/".join(sc.label_names)
    text = ", ".join(f"{name}={n}" for name, n in sc.info.label_counts)
    if sc.info.dropped_classes:
        floor = sc.card.min_per_class or 1
        text += f"  (dropped, under {floor} rows: " + ", ".join(f"{name}={n}" for name, n in sc.info.dropped_classes) + ")"
    return text


def run(args: argparse.Namespace) -> int:
    from metalora.cards import discover_cards
    from metalora.scenarios import expand, skipped
    from metalora.tables import expand_table

    def wanted(name: str) -> bool:
        return not args.patterns or any(fnmatch.fnmatchcase(name, p) for p in args.patterns)

    cards = discover_cards(args.cards)
    seen: dict[str, object] = {}
    total = n_skipped = 0
    for card in cards:
        for sc in expand(card):
            if sc.name in seen and seen[sc.name].resolve() == card.path.resolve():
                continue
            if sc.name in seen:  # the same check as all_scenarios, without expanding twice
                from metalora.errors import DataError

                raise DataError(f"scenario name {sc.name!r} comes from two cards, {seen[sc.name]} and {card.path}; "
                                "change metalora.name in one of them")
            seen[sc.name] = card.path
            if not wanted(sc.name):
                continue
            total += 1
            line = f"{sc.name:<44} {card.family:<15} {card.task_type:<14}"
            if args.load or sc.info is not None:
                sizes = dict(sc.info.split_sizes) if sc.info is not None else {}
                if args.load:
                    sizes = {s: len(sc.load(s)) for s in sc.splits()}
                line += " " + " ".join(f"{s}={n}" for s, n in sizes.items())
            print(f"{line}  {_labels(sc)}")
        if card.is_table:
            exp = expand_table(card)
            hits = [sk for sk in skipped(card) if wanted(sk.name)]
            n_skipped += len(hits)
            if args.patterns:  # asked about these scenarios: say why each one is missing
                for sk in hits:
                    print(f"skipped {sk.name}: {sk.reason}", file=sys.stderr)
            if not args.patterns or hits or any(wanted(n) for n in exp.parts):
                left_out = ", ".join(f"{why} {n}" for why, n in exp.dropped_rows.items())
                names = ", ".join(sk.name.rpartition("/")[2] for sk in exp.skipped)
                print(f"card {card.name} ({card.path.name}): {exp.table_rows} table rows -> {len(exp.parts)} scenarios; "
                      f"rows left out: {left_out or 'none'}"
                      + (f"; skipped (fewer than two classes with min_per_class rows; name them to see why): {names}"
                         if names else ""), file=sys.stderr)
    if args.patterns and not total and not n_skipped:
        from metalora.errors import DataError

        raise DataError(f"no scenario matches {' '.join(args.patterns)}; run `metalora scenarios` to list them all")
    print(f"{len(cards)} cards, {total} scenarios, all valid")
    return 0
