"""The meta-training cache's allocation pattern without a model: resident memory against live bytes.

Each step "encodes" 26 examples (a padded [26, 96, 768] batch), keeps each example's unpadded slice as
its own tensor (as ExampleCache does), allocates a step's transient activations, and evicts the least
recently added rows above the cap. Prints live MiB and the process's resident MiB.

    python docs/results/arsc-dev-mpnet/fragmentation.py --cap-mb 1000 --steps 600           # glibc default
    python docs/results/arsc-dev-mpnet/fragmentation.py --cap-mb 1000 --steps 600 --trim    # what the trainer does
    MALLOC_MMAP_THRESHOLD_=131072 python docs/results/arsc-dev-mpnet/fragmentation.py ...   # the rejected fix
"""
from __future__ import annotations

import argparse
import collections
import random

import torch

from metalora.memory import release_free_memory


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS")).split()[1]) / 1024


def run(cap_mb: float, steps: int, report_every: int = 100, trim: bool = False) -> list[tuple[int, float, float]]:
    torch.manual_seed(0)
    rng = random.Random(0)
    rows: collections.OrderedDict = collections.OrderedDict()
    live, cap, out = 0, cap_mb * 2**20, []
    for step in range(steps):
        batch = torch.randn(26, 96, 768)
        work = [torch.randn(26, 96, 3072) for _ in range(2)]
        for j in range(26):
            t = batch[j, :rng.randint(40, 96)].clone()
            rows[(step, j)] = t
            live += t.nelement() * t.element_size()
        while live > cap:
            _, old = rows.popitem(last=False)
            live -= old.nelement() * old.element_size()
        del work, batch
        if trim:
            release_free_memory()  # once per step, as MetaTrainer.train
        if (step + 1) % report_every == 0:
            out.append((step + 1, live / 2**20, rss_mb()))
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cap-mb", type=float, default=1000)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--trim", action="store_true", help="metalora.memory.release_free_memory() after every step")
    a = p.parse_args()
    for step, live, rss in run(a.cap_mb, a.steps, trim=a.trim):
        print(f"step {step}: live {live:.0f} MiB, resident {rss:.0f} MiB", flush=True)
