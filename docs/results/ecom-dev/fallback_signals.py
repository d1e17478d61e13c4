"""Per (target, seed): the fallback check's numbers under an init, on the bench's own support draws."""
import json, sys
import torch
from metalora.api import load_init
from metalora.bench.suite import suite_targets, card_sources, parse_patterns
from metalora import fallback

init_dir, targets, out = sys.argv[1], sys.argv[2], sys.argv[3]
model, init = load_init(init_dir)
tasks = suite_targets(parse_patterns(targets), "arsc/*=dev,train", card_sources())
rows = []
for t in tasks:
    for seed in range(5):
        sup = t.support(5, seed)
        enc = model.encode(sup["text"])
        chk = fallback.check(model, init.lora, enc, torch.tensor(sup["label"]), t.num_labels)
        rows.append({"task": t.name, "family": t.family, "seed": seed, **chk.to_dict()})
    print(t.name, rows[-1]["init"], rows[-1]["plain"], flush=True)
json.dump(rows, open(out, "w"), indent=1)
