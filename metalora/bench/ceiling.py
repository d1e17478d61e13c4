"""How far is an init's few-shot ARSC accuracy from what its features allow at all?

For each target task, under the init's LoRA weights and with no adaptation step:
- `proto`: the prototype head from the bench's own support sets (same split, shots and seeds), scored
  on `.test`, with the init's class-prior direction when it has one (`proto_no_prior` without it);
- `probe`: a logistic regression on every labelled example of the support split (hundreds for
  ARSC-dev), scored on `.test`; the best of four regularisation strengths, picked on `.test`, so
  optimistic on purpose.
The probe bounds any linear head on these features, so a gap between a quality target and the probe
says the features (the init, the backbone) must change, not the few-shot head.

With `--transductive`, two heads that also read the unlabelled `.test` texts (never their labels), to
measure whether the target's unlabelled reviews close the gap without new features:
- `em_prior`: the prototype head with the test set's class prior estimated by EM (Saerens et al.,
  "Adjusting the outputs of a classifier to new a priori probabilities", Neural Computation 2002): the
  support is balanced by construction, ARSC's test sets are not;
- `soft_kmeans`: prototypes refined once with the unlabelled texts weighted by their posteriors (Ren et
  al., "Meta-learning for semi-supervised few-shot classification", ICLR 2018).

    python -m metalora.bench.ceiling runs/minilm_fomaml_arsc_dev/meta-init           # the meta-init
    python -m metalora.bench.ceiling runs/minilm_fomaml_arsc_dev/meta-init --base    # plain MiniLM
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from metalora.api import load_init
from metalora.bench.arsc import arsc_targets
from metalora.model import prototype_head

ARSC_DEV_TARGETS = ("music", "camera_photo", "health_personal_care", "toys_games")


def em_class_prior(logits: torch.Tensor, iters: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """The class prior of unlabelled examples, from posteriors computed under a uniform prior (Saerens 2002)."""
    prior = torch.full((logits.shape[1],), 1.0 / logits.shape[1], dtype=logits.dtype)
    for _ in range(iters):
        new = torch.softmax(logits + prior.log(), dim=1).mean(0)
        if (new - prior).abs().max() < tol:
            return new
        prior = new
    return prior


def soft_kmeans_prototypes(support: torch.Tensor, labels: torch.Tensor, unlabelled: torch.Tensor, num_labels: int,
                           scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One soft k-means step (Ren et al. 2018): support counts fully, each unlabelled example by its posterior."""
    w, b = prototype_head(support, labels, num_labels)
    resp = torch.softmax(scale * (unlabelled @ w.T + b), dim=1)  # [U, C]
    onehot = torch.nn.functional.one_hot(labels, num_labels).to(support.dtype)
    protos = (onehot.T @ support + resp.T @ unlabelled) / (onehot.sum(0) + resp.sum(0)).clamp_min(1e-8).unsqueeze(1)
    return 2.0 * protos, -(protos * protos).sum(1)


def ceiling(init_dir: str | Path, data_dir: str | Path, targets: Sequence[str] = ARSC_DEV_TARGETS, support_split: str = "dev",
            shots: int = 5, seeds: Sequence[int] = (0, 1, 2, 3, 4), base: bool = False,
            transductive: bool = False) -> list[dict]:
    from sklearn.linear_model import LogisticRegression

    model, init = load_init(init_dir)
    lora = model.default_lora if base else init.lora
    prior = None if base else init.head_prior
    scale = float(init.logit_scale.exp())

    @torch.no_grad()
    def feats(texts) -> torch.Tensor:
        return torch.cat([model.features(lora, b) for b in model.encode(list(texts)).batches(64)])

    rows = []
    for task in arsc_targets(Path(data_dir), list(targets), support_split):
        pool, test = task.scenario.load(support_split), task.test()
        ft, yt = feats(test["text"]), torch.tensor(test["label"])
        proto, plain, em, skm = [], [], [], []
        for seed in seeds:
            sup = task.support(shots, seed)
            fs, ys = feats(sup["text"]), torch.tensor(sup["label"])
            for u, out in ((prior, proto), (None, plain)):
                w, b = prototype_head(fs, ys, task.num_labels, u)
                out.append(float(((ft @ w.T + b).argmax(1) == yt).float().mean()))
            if transductive:
                w, b = prototype_head(fs, ys, task.num_labels)
                logits = scale * (ft @ w.T + b)
                em.append(float(((logits + em_class_prior(logits).log()).argmax(1) == yt).float().mean()))
                w, b = soft_kmeans_prototypes(fs, ys, ft, task.num_labels, scale)
                skm.append(float(((ft @ w.T + b).argmax(1) == yt).float().mean()))
        fp, yp = feats(pool["text"]).numpy(), np.asarray(pool["label"])
        probe = max(LogisticRegression(C=c, max_iter=2000).fit(fp, yp).score(ft.numpy(), yt.numpy()) for c in (0.1, 1.0, 10.0, 100.0))
        counts = np.bincount(yt.numpy(), minlength=task.num_labels)
        row = {"task": task.name, "proto": float(np.mean(proto)), "proto_no_prior": float(np.mean(plain)),
               "probe": float(probe), "probe_examples": len(pool), "majority": float(counts.max() / counts.sum())}
        if transductive:
            row.update(em_prior=float(np.mean(em)), soft_kmeans=float(np.mean(skm)))
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m metalora.bench.ceiling", description=__doc__.splitlines()[0])
    p.add_argument("init", help="an init folder (a meta-init or a multitask init)")
    p.add_argument("--base", action="store_true", help="the plain backbone (LoRA B = 0) instead of the init's weights")
    p.add_argument("--data-dir", default="../shared/data/arsc", help="the ARSC folder")
    p.add_argument("--targets", default=",".join(ARSC_DEV_TARGETS), help="comma-separated target domains or tasks")
    p.add_argument("--support-split", default="dev", help="where support sets (and the probe's labels) come from")
    p.add_argument("--shots", type=int, default=5, help="support examples per class")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="support-set seeds")
    p.add_argument("--transductive", action="store_true", help="add em_prior and soft_kmeans: heads that also read the unlabelled test texts")
    a = p.parse_args(argv)
    rows = ceiling(a.init, a.data_dir, a.targets.split(","), a.support_split, a.shots, a.seeds, a.base, a.transductive)
    cols = ("proto", "proto_no_prior", "probe", "majority") + (("em_prior", "soft_kmeans") if a.transductive else ())
    print(f"| task | {' | '.join(cols)} | probe labels |\n|---|{'---|' * (len(cols) + 1)}")
    for r in rows:
        print(f"| {r['task']} | {' | '.join(f'{r[c]:.3f}' for c in cols)} | {r['probe_examples']} |")
    print(f"| mean | {' | '.join(f'{np.mean([r[c] for r in rows]):.3f}' for c in cols)} | |")
    return rows


if __name__ == "__main__":
    main()
