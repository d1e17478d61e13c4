"""Cost (and a look at the output) of SmolLM2 paraphrases of one ARSC-dev support set (music.t2, seed 0: 10 reviews),
1 copy each, 48 new tokens at most, 1 thread."""
import json, sys, time
from metalora.augment.paraphrase import paraphraser
from metalora.scenarios import get_scenario, sample_support
t0 = time.perf_counter(); p = paraphraser("smollm2"); load = time.perf_counter() - t0
s = sample_support(get_scenario("arsc/music.t2").load("dev"), 5, 0, 2)
texts = list(s["text"])
t0 = time.perf_counter(); out = p(texts, 1, seed=0, max_new_tokens=48); gen = time.perf_counter() - t0
res = {"load_s": round(load, 1), "generate_s_10_texts": round(gen, 1), "pairs": [[a[:300], b[0]] for a, b in zip(texts, out)]}
json.dump(res, open(sys.argv[1], "w"), indent=1)
print(json.dumps(res, indent=1)[:3000])
