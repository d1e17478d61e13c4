"""What `fallback: auto` would have given on ECOM-dev, from runs already made (no new adaptation).

The init check is a function of the support set alone, so per (target, seed) the guarded run is the
meta-init run where the check keeps the init and the vanilla run (same seed, hence the same support draw)
where it falls back. `bench --fallback` does the same live; this join reuses the two reports.

    python docs/results/ecom-dev/fallback_join.py fallback_signals.json meta-budget/report.json:meta vanilla/report.json:vanilla [MARGIN]
"""
import json
import sys
from collections import defaultdict

import numpy as np


def runs(spec):
    path, method = spec.rsplit(":", 1)
    r = json.load(open(path))
    return {(t, x["seed"]): x["accuracy"] for t, v in r["methods"][method]["tasks"].items() for x in v["runs"]}


signals, kept, plain = json.load(open(sys.argv[1])), runs(sys.argv[2]), runs(sys.argv[3])
margin = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
by_family = defaultdict(lambda: {"n": 0, "fell_back": 0, "init": [], "guarded": [], "plain": []})
for s in signals:
    key = (s["task"], s["seed"])
    if key not in kept or key not in plain:
        continue
    back = s["plain"]["loo_loss"] + margin < s["init"]["loo_loss"]
    f = by_family[s["family"]]
    f["n"] += 1
    f["fell_back"] += back
    f["init"].append(kept[key])
    f["plain"].append(plain[key])
    f["guarded"].append(plain[key] if back else kept[key])
print(f"margin {margin:g}")
print("| family | runs fell back | init alone | with the init check | vanilla |")
print("|---|---|---|---|---|")
for fam, f in by_family.items():
    cell = lambda xs: f"{np.mean(xs):.3f} (worst {min(xs):.3f})"
    print(f"| {fam} | {f['fell_back']}/{f['n']} | {cell(f['init'])} | {cell(f['guarded'])} | {cell(f['plain'])} |")
