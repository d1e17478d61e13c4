"""Selection cost on MiniLM (ARSC-dev LoRA settings): a library of N adapters, 5-shot support from arsc/music.t2 dev.
Usage: python cost.py OUT_JSON [N] [REPEATS]. Adapters carry random LoRA B weights (the cost of scoring an entry does
not depend on what it learned); each names an ARSC training task, so its data signature is real."""
import json, sys, time, shutil, statistics, warnings
from pathlib import Path
import torch
warnings.simplefilter("ignore")
torch.set_num_threads(1)
from metalora.adapt import adapt
from metalora.adapter_io import save_folder
from metalora.backbones import load_backbone
from metalora.config import AdaptConfig, BackboneConfig, LoraSettings
from metalora.library import AdapterLibrary, Support
from metalora.model import LoraClassifier, SCALE_KEY
from metalora.scenarios import get_scenario, sample_support

out, N, R = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 50, int(sys.argv[3]) if len(sys.argv) > 3 else 3
root = Path("/work/runs/library/cost-lib"); shutil.rmtree(root, ignore_errors=True); root.mkdir(parents=True)
bb = BackboneConfig(name="minilm", max_length=96, truncation="head_tail", head_tokens=32)
lora = LoraSettings(r=8, alpha=16, target_modules=("dense", "query", "value"), top_layers=3)
model = LoraClassifier(load_backbone(bb), lora)
domains = ["apparel", "automotive", "baby", "beauty", "cell_phones_service", "computer_video_games", "gourmet_food", "grocery",
           "jewelry_watches", "magazines", "office_products", "outdoor_living", "software", "sports_outdoors"]
tasks = [f"arsc/{d}.{t}" for d in domains for t in ("t2", "t4", "t5")]
g = torch.Generator().manual_seed(0)
t0 = time.perf_counter()
for i in range(N - 1):
    params = {k: (v if "lora_A" in k else torch.randn(v.shape, generator=g) * 0.02) for k, v in model.default_lora.items()}
    sc = tasks[i % len(tasks)]
    meta = {"kind": "adapter", "scenario": {"name": sc, "family": "sentiment", "label_names": ["negative", "positive"]},
            "support": {"split": "train", "shots": 16, "seed": i}, "adapt": {"optimizer": "sgd", "lr": 0.02, "head_lr": 0.02, "steps": 0},
            "lineage": {"init": None}, "metrics": {}}
    save_folder(root / f"a{i:03d}", model, params, meta)
save_folder(root / "meta-init", model, model.default_lora, {"kind": "meta-init", "meta": {"algorithm": "fomaml", "suite": tasks[:8]},
            "adapt": {"optimizer": "sgd", "lr": 0.02, "head_lr": 0.02, "steps": 0}, "lineage": {"init": None}, "metrics": {}},
            init_tensors={SCALE_KEY: torch.tensor(10.0).log()})
write_s = time.perf_counter() - t0
t0 = time.perf_counter(); lib = AdapterLibrary(root, backbone=bb); index_cold = time.perf_counter() - t0
t0 = time.perf_counter(); lib = AdapterLibrary(root, backbone=bb); index_warm = time.perf_counter() - t0
sc = get_scenario("arsc/music.t2")
res = {"N_entries": len(lib.entries), "write_s": write_s, "index_cold_s": index_cold, "index_warm_s": index_warm, "runs": []}
for r in range(R):
    ds = sample_support(sc.load("dev"), 5, r, 2, where="music.t2")
    sup = Support.from_dataset(ds, 2, sc.label_names)
    lib = AdapterLibrary(root, backbone=bb)  # fresh: LoRA weights read from disk inside the timing
    t0 = time.perf_counter(); sel = lib.select(sup, by="zero_step"); zs = time.perf_counter() - t0
    model_e, init = lib.init_for(sel.best.entry)
    cfg = AdaptConfig(backbone=bb, **lib.adapt_defaults(sel.best.entry))
    t1 = time.perf_counter(); adapt(model_e, model_e.encode(ds["text"]), torch.tensor(ds["label"]), 2, init, cfg); ad = time.perf_counter() - t1
    t0 = time.perf_counter(); sel2 = lib.select(sup, by="few_steps", few_steps=5); fs = time.perf_counter() - t0
    t0 = time.perf_counter(); blend = lib.compose(sup, k=3, budget=40); comp = time.perf_counter() - t0
    v = lib.entries[0]; mv, iv = lib.init_for(v)
    t1 = time.perf_counter(); adapt(mv, mv.encode(ds["text"]), torch.tensor(ds["label"]), 2, iv, AdaptConfig(backbone=bb)); vad = time.perf_counter() - t1
    res["runs"].append({"select_zero_step_s": zs, "per_entry_s": sel.seconds_per_entry, "entries_scored": sel.entries_scored,
                        "adapt_chosen_s": ad, "select_plus_adapt_s": zs + ad, "select_few_steps_s": fs,
                        "compose_s": comp, "adapt_vanilla_30_steps_s": vad, "select_plus_vanilla_adapt_s": zs + vad})
    print(res["runs"][-1], flush=True)
keys = res["runs"][0].keys()
res["summary"] = {k: {"mean": statistics.mean(r[k] for r in res["runs"]), "max": max(r[k] for r in res["runs"])} for k in keys}
out.write_text(json.dumps(res, indent=1)); print(json.dumps(res["summary"], indent=1)); print(res["index_cold_s"], res["index_warm_s"])
