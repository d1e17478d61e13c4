"""Per-adaptation cost of each support augmentation on ARSC-dev support sets (5 shots x 2 classes, MiniLM, 96 tokens
head+tail), 1 thread: text augmentation, encoding of the augmented support, calibrated sampling, and the 0-step
adaptation (head building). Mean and max over 4 support sets (music.t2 / toys_games.t5, seeds 0-1)."""
import json, sys, time
import numpy as np, torch
from metalora.adapt import adapt
from metalora.api import load_init
from metalora.augment.calibration import FeatureStats
from metalora.augment.text import TextAugmenter
from metalora.config import AdaptConfig, AugmentConfig
from metalora.scenarios import get_scenario, sample_support

model, init = load_init(sys.argv[1])
g = torch.Generator().manual_seed(0)
C, H = 84, model.backbone.hidden_size  # the ARSC-dev suite: 42 tasks x 2 classes
init.feature_stats = FeatureStats([f"c{i}" for i in range(C)], torch.randn(C, H, generator=g) * 0.05, torch.randn(C, H, 16, generator=g) * 0.01,
                                  torch.full((C,), 1e-3), torch.full((C,), 50), 0.0)
from metalora.augment import calibration
calibration.check_stats = lambda s, *a: s  # cost only: random statistics stand in for computed ones
import metalora.augment.support as sup_mod
sup_mod.check_stats = lambda s, *a: s
supports = []
for name in ("arsc/music.t2", "arsc/toys_games.t5"):
    ds = get_scenario(name).load("dev")
    for seed in (0, 1):
        supports.append(sample_support(ds, 5, seed, 2))
rows = {}
for setting, methods, copies in [("none", (), 1), ("dropout", ("dropout",), 2), ("swap", ("swap",), 2), ("neighbours", ("neighbours",), 2),
                                  ("support (copies=1)", ("support",), 1), ("support (copies=2)", ("support",), 2), ("calibrate", ("calibrate",), 1)]:
    aug = AugmentConfig(methods=methods, copies=copies)
    t0 = time.perf_counter(); ta = TextAugmenter(aug, model.backbone); build = time.perf_counter() - t0
    times = []
    for i, s in enumerate(supports):
        cfg = AdaptConfig(backbone=model.backbone.config, steps=0, optimizer="sgd", seed=i, augment=aug)
        t0 = time.perf_counter()
        texts, labels = ta(list(s["text"]), list(s["label"]), i) if ta else (list(s["text"]), list(s["label"]))
        t1 = time.perf_counter()
        enc = model.encode(texts)
        t2 = time.perf_counter()
        adapt(model, enc, torch.tensor(labels), 2, init, cfg)
        t3 = time.perf_counter()
        times.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0, len(texts)))
    a = np.array(times)
    rows[setting] = {"setup_s": round(build, 2), "augment_s": round(a[:, 0].mean(), 3), "encode_s": round(a[:, 1].mean(), 3),
                     "adapt_s": round(a[:, 2].mean(), 3), "total_s": round(a[:, 3].mean(), 3), "total_max_s": round(a[:, 3].max(), 3),
                     "examples": int(a[:, 4].mean())}
    print(setting, rows[setting], flush=True)
json.dump(rows, open(sys.argv[2], "w"), indent=1)
