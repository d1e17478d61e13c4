"""The `metalora` command line: one module per subcommand, each exposing `register(subparsers)`.

A subcommand module defines `register(subparsers)` that adds its parser and sets
`func=run` on it. `MetaloraError`s are printed as one clear line (exit code 2);
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from metalora import __version__
from metalora.errors import MetaloraError

# Order here is the order in `metalora --help`.
SUBCOMMANDS = [
    "scenarios",
    "adapt",
    "evaluate",
    "predict",
    "meta_train",
    "library",
    "bench",
    "push",
    "pull",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metalora",
        description="Adapt a foundation model to a new e-commerce scenario from a few labelled examples.",
    )
    parser.add_argument("--version", action="version", version=f"metalora {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"metalora.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"metalora.cli.{name}":
                continue  # subcommand not shipped in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        result = args.func(args)
    except MetaloraError as exc:
        # one line, also for messages that list several problems on indented lines
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        message = f"{lines[0]} {'; '.join(lines[1:])}" if len(lines) > 1 else "".join(lines)
        print(f"metalora {args.command}: error: {message}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
