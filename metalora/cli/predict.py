"""`metalora predict`: label texts with one or several saved adapters on one backbone; JSON lines out."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys

EPILOG = """\
examples:
  metalora predict --adapter adapters/kitchen "the lid cracked in a week"
  metalora predict --adapter adapters/kitchen --adapter org/garden-topics --scenario garden "needs full sun"
  metalora predict --adapter adapters/kitchen --adapter adapters/garden --input requests.jsonl > results.jsonl

--input FILE.jsonl holds one JSON object per line, e.g. {"scenario": "kitchen", "text": "...", "id": 7}
("scenario" may be left out when one adapter is loaded; "id" is echoed back). stdout gets one JSON line
per input line, in order: {"line", "scenario", "text", "label", "probabilities"}, or {"line", "error"} for a
line that cannot be served (bad JSON, empty text, unknown scenario); the other lines are still served, and
the command then exits 2 naming the failed lines.
"""

CHUNK = 1024  # input lines predicted together (bounded memory for large files)


def register(sub) -> None:
    p = sub.add_parser("predict", help="Predict labels and probabilities for texts with one or several saved adapters.",
                       description="Print one JSON line per text: its scenario, the predicted label and the probability of "
                                   "every label. Several --adapter flags load every adapter on ONE backbone; a batch that "
                                   "mixes scenarios runs in one forward pass (peft's mixed-batch LoRA inference).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", required=True, action="append", metavar="ADAPTER",
                   help="Adapter folder, Hub repo id, or hf://ORG/NAME@REVISION (pulled on demand). Repeat it to load "
                        "several adapters for the same backbone; each serves the scenario named in its metalora.json.")
    p.add_argument("texts", nargs="*", help="Texts to label. With none, reads one text per line from --file or standard input.")
    p.add_argument("--file", help="File with one text per line (blank lines skipped).")
    p.add_argument("--scenario", help="Scenario of the texts given as arguments, --file or standard input (needed when "
                                      "several adapters are loaded).")
    p.add_argument("--input", metavar="FILE.jsonl",
                   help="JSON-lines requests, one {\"scenario\": ..., \"text\": ...} object per line ('-' for standard "
                        "input); scenarios may mix freely. Not combined with texts or --file.")
    p.add_argument("--batch-size", type=int, default=64, help="Texts per forward pass (default 64).")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from metalora.api import load_adapters
    from metalora.errors import DataError

    if args.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.input:
        if args.texts or args.file:
            raise DataError("--input reads texts and scenarios from a JSON-lines file; do not also pass texts or --file")
        lines = _open_lines(args.input)
        model = load_adapters(args.adapter)
        return _serve_jsonl(model, lines, args.input, args.batch_size)

    texts = _plain_texts(args)
    model = load_adapters(args.adapter)
    pred = model.predict(texts, scenario=args.scenario, batch_size=args.batch_size)
    for text, row in zip(texts, pred.rows()):
        print(json.dumps({"scenario": row["scenario"], "text": text, "label": row["label"],
                          "probabilities": {n: round(p, 6) for n, p in row["probabilities"].items()}}))
    return 0


def _plain_texts(args: argparse.Namespace) -> list[str]:
    from metalora.errors import DataError

    texts = list(args.texts)
    if not texts:
        if args.file:
            try:
                with open(args.file, encoding="utf-8", errors="replace") as fh:
                    texts = [line.rstrip("\n") for line in fh if line.strip()]
            except FileNotFoundError:
                raise DataError(f"--file {args.file} does not exist") from None
        else:
            texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise DataError("no texts to predict: pass them as arguments, with --file, with --input, or on standard input")
    return texts


def _open_lines(path: str):
    from metalora.errors import DataError

    if path == "-":
        return contextlib.nullcontext(sys.stdin)  # read, never closed
    try:
        return open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise DataError(f"--input {path} does not exist") from None


def _parse(line: str) -> tuple[dict | None, str | None]:
    """(request, None) or (None, why the line cannot be served)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object with \"text\" and \"scenario\", got a {type(obj).__name__}"
    text = obj.get("text")
    if not isinstance(text, str):
        return None, "\"text\" is missing or not a string"
    if not text.strip():
        return None, "\"text\" is empty"
    scenario = obj.get("scenario")
    if scenario is not None and not isinstance(scenario, str):
        return None, "\"scenario\" must be a string"
    return obj, None


def _serve_jsonl(model, lines, source: str, batch_size: int) -> int:
    """Serve every line that can be served; report each one that cannot, by line number, in place."""
    from metalora.errors import DataError

    failed, served = [], 0
    chunk: list[tuple[int, dict | None, str | None]] = []

    def flush() -> None:
        nonlocal served
        todo = []  # (line, request, error, scenario)
        for n, obj, err in chunk:
            scenario = None
            if err is None:
                try:
                    scenario = model.resolve_scenarios(obj.get("scenario"), 1)[0]
                except DataError as exc:  # unknown scenario, or none given with several adapters
                    err = str(exc).removeprefix("text 0: ")
            todo.append((n, obj, err, scenario))
        ok = [(n, obj, sc) for n, obj, err, sc in todo if err is None]
        rows = {}
        if ok:
            pred = model.predict([o["text"] for _, o, _ in ok], scenario=[sc for _, _, sc in ok], batch_size=batch_size)
            rows = {n: r for (n, _, _), r in zip(ok, pred.rows())}
        for n, obj, err, _ in todo:
            if err is None:
                r = rows[n]
                out = {"line": n, "scenario": r["scenario"], "text": obj["text"], "label": r["label"],
                       "probabilities": {k: round(p, 6) for k, p in r["probabilities"].items()}}
                served += 1
            else:
                out = {"line": n, "error": err}
                failed.append(n)
            if isinstance(obj, dict) and "id" in obj:
                out["id"] = obj["id"]
            print(json.dumps(out))
        sys.stdout.flush()
        chunk.clear()

    with lines as stream:
        for n, line in enumerate(stream, start=1):
            if not line.strip():
                continue  # a blank line is not a request
            obj, err = _parse(line)
            chunk.append((n, obj, err))
            if len(chunk) >= CHUNK:
                flush()
        flush()
    if not failed and not served:
        raise DataError(f"--input {source} holds no requests (every line is blank)")
    if failed:
        shown = ("line " if len(failed) == 1 else "lines ") + ", ".join(map(str, failed[:10])) + (", ..." if len(failed) > 10 else "")
        raise DataError(f"{len(failed)} of {len(failed) + served} lines of {source} could not be served ({shown}); "
                        "each has an \"error\" field in the output, the other lines were served")
    return 0
