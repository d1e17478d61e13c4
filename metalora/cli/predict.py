"""`metalora predict`: label texts with a saved adapter; one JSON object per line."""
from __future__ import annotations

import argparse
import json
import sys


def register(sub) -> None:
    p = sub.add_parser("predict", help="Predict labels and probabilities for texts with a saved adapter.",
                       description="Print one JSON line per text: the text, the predicted label and the probability of every label.")
    p.add_argument("--adapter", required=True, help="Adapter folder, Hub repo id, or hf://ORG/NAME@REVISION (pulled on demand).")
    p.add_argument("texts", nargs="*", help="Texts to label. With none, reads one text per line from --file or standard input.")
    p.add_argument("--file", help="File with one text per line.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from metalora.api import load_adapter
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
        raise DataError("no texts to predict: pass them as arguments, with --file, or on standard input")
    model = load_adapter(args.adapter)
    pred = model.predict(texts)
    for text, label, probs in zip(texts, pred.labels, pred.probabilities):
        print(json.dumps({"text": text, "label": label,
                          "probabilities": {n: round(float(p), 6) for n, p in zip(model.label_names, probs)}}))
    return 0
