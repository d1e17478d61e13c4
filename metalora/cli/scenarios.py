"""`metalora scenarios`: list and validate every scenario card."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("scenarios", help="List and validate the scenario cards.",
                       description="Parse every card in data_cards/ (or --cards), expand multi-scenario cards (ARSC) and print one line per scenario. Exits 2 on the first invalid card, naming the file and field.")
    p.add_argument("--cards", help="Folder of scenario cards (default: the project's data_cards/).")
    p.add_argument("--load", action="store_true", help="Also load every split of every scenario and check columns and labels (slower).")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from metalora.cards import discover_cards
    from metalora.scenarios import expand

    cards = discover_cards(args.cards)
    total = 0
    for card in cards:
        scenarios = expand(card)
        for sc in scenarios:
            total += 1
            line = f"{sc.name:<44} {card.family:<15} {card.task_type:<14} {'/'.join(card.label_names)}"
            if args.load:
                sizes = {s: len(sc.load(s)) for s in sc.splits()}
                line += "  " + " ".join(f"{s}={n}" for s, n in sizes.items())
            print(line)
    print(f"{len(cards)} cards, {total} scenarios, all valid")
    return 0
