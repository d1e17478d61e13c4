"""40 steps of the mpnet ARSC-dev recipe without validation (cache_mb=300): resident memory with the trainer's
per-step malloc_trim (`trim`) and without it (`off`). Run from the repository root; ~20 min at 1 thread."""
import sys, time
import metalora.meta.trainer as T
if sys.argv[1] == "off":
    T.release_free_memory = lambda: False
from metalora.config import MetaTrainConfig, load_config
cfg = load_config(MetaTrainConfig, "recipes/configs/mpnet_fomaml_arsc_dev.yaml",
                  ["steps=40", "eval_every=1000", "checkpoint_every=1000", "val_scenarios=[]", "head.bank=false", "adapt_steps_choices=[]",
                   "cache_mb=300", f"output_dir=/tmp/realfrag-{sys.argv[1]}", "log_with=none"])
t0 = time.time()
tr = T.MetaTrainer(cfg)
tr.train(resume=False)
rss = lambda k: int([l for l in open('/proc/self/status') if l.startswith(k)][0].split()[1]) / 1024
print(f"mode={sys.argv[1]} seconds={time.time()-t0:.0f} cache_mb={tr.cache.bytes/2**20:.0f} "
      f"evictions={tr.cache.evictions} rss_mb={rss('VmRSS'):.0f} peak_mb={rss('VmHWM'):.0f}", flush=True)
