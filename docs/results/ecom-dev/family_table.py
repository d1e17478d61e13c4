"""Markdown: per family, accuracy (± spread over seeds of the family mean) / macro-F1, worst run, p10, runs < majority."""
import json, sys
import numpy as np

FAMS = ["sentiment", "categorisation", "purchase", "fraud"]

def rows(spec):
    label, path, method = spec.split("=", 1)[0], *spec.split("=", 1)[1].rsplit(":", 1)
    r = json.load(open(path))
    out = {}
    for fam in FAMS:
        tasks = [t for t in r["targets"] if r["families"][t] == fam]
        if not tasks:
            continue
        tv = r["methods"][method]["tasks"]
        seeds = sorted({x["seed"] for t in tasks for x in tv[t]["runs"]})
        per_seed = [np.mean([next((x["accuracy"] for x in tv[t]["runs"] if x["seed"] == s), tv[t]["runs"][0]["accuracy"]) for t in tasks]) for s in seeds]
        accs = [x["accuracy"] for t in tasks for x in tv[t]["runs"]]
        below = sum(x["accuracy"] < r["majority"][t] for t in tasks for x in tv[t]["runs"])
        f = r["methods"][method]["families"][fam]
        out[fam] = (f["accuracy"]["mean"], float(np.std(per_seed)), f["macro_f1"]["mean"], min(accs), float(np.percentile(accs, 10)), below, len(accs))
    return label, out

specs = [rows(s) for s in sys.argv[1:]]
print("| init / method | " + " | ".join(f"{f} acc ± seeds / F1 (worst, p10, < majority)" for f in FAMS) + " | mean over families acc / F1 |")
print("|---" * (len(FAMS) + 2) + "|")
for label, out in specs:
    cells = []
    for f in FAMS:
        if f in out:
            a, s, m, w, p, b, n = out[f]
            cells.append(f"{a:.3f} ± {s:.3f} / {m:.3f} ({w:.3f}, {p:.3f}, {b}/{n})")
        else:
            cells.append("")
    fams = [out[f] for f in FAMS if f in out]
    mean = f"{np.mean([x[0] for x in fams]):.3f} / {np.mean([x[2] for x in fams]):.3f}" if len(fams) == len(FAMS) else ""
    print(f"| {label} | " + " | ".join(cells) + f" | {mean} |")
