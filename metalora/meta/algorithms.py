"""MAML, first-order MAML, Reptile and Meta-SGD over a dict of tensors, without copying modules.

The functional core is `inner_loop`: SGD steps on a support loss, where the updated tensors are new
tensors computed from the old ones (never in-place), so the query loss stays a differentiable function
of the starting point. What separates the algorithms is only how much of that graph is kept and what
the outer gradient is:

- MAML (Finn, Abbeel & Levine, ICML 2017, arXiv:1703.03400): keep the inner gradients' graph
  (`create_graph=True`), differentiate the query loss w.r.t. the init (second order).
- First-order MAML (same paper, section 5.2): inner gradients are constants; the query gradient at
  the adapted point is used as the init's gradient.
- Reptile (Nichol, Achiam & Schulman 2018, arXiv:1803.02999): no query loss; the outer "gradient" is
  (init - adapted) / (inner_lr * steps), so an outer SGD step with lr = inner_lr * steps * eps is
  Reptile's interpolation init += eps (adapted - init).
- Meta-SGD (Li, Zhou, Chen & Li 2017, arXiv:1707.09835): per-tensor-element inner learning rates
  are meta-parameters too; the inner step is p - alpha * g and the outer gradient reaches alpha.

The task head is part of the adapted tensors but is *built* per episode from the support set (see
`episode_params`), as Proto-MAML does (Triantafillou et al., ICLR 2020, arXiv:1903.03096), so the
init transfers to label sets it never saw. Gradients through the prototype construction reach the
LoRA init in every algorithm but Reptile.

`loss_fn(params, batch) -> scalar` is any function of the tensors: the trainer passes
`LoraClassifier.logits` + cross-entropy, tests pass tiny closed-form models.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

Params = dict[str, Tensor]
LossFn = Callable[[Params, Any], Tensor]

ALGORITHMS = ("maml", "fomaml", "reptile", "metasgd")


def sgd_step(params: Params, grads: dict[str, Tensor | None], lr: float | Params) -> Params:
    """p - lr * g for every tensor (lr a float, or a dict of per-element rates as in Meta-SGD)."""
    out = {}
    for name, p in params.items():
        g = grads.get(name)
        if g is None:
            out[name] = p
            continue
        rate = lr[name] if isinstance(lr, dict) else lr
        out[name] = p - rate * g
    return out


def inner_loop(loss_fn: LossFn, params: Params, support: Any, steps: int, lr: float | Params,
               create_graph: bool, trainable: tuple[str, ...] | None = None) -> tuple[Params, list[float]]:
    """`steps` SGD steps on the support loss; returns the adapted tensors and the support losses.

    With `create_graph=False` the gradients are detached (first order) but the returned tensors still
    depend on `params` through the identity path, which is exactly first-order MAML's gradient.
    """
    # integer entries (a label-word head's token ids) are inputs, not weights
    names = tuple(trainable) if trainable is not None else tuple(k for k, v in params.items() if v.is_floating_point())
    losses = []
    for _ in range(steps):
        # Fresh aliases, so each tensor is an independent variable of this step's loss: without them
        # the gradient w.r.t. the LoRA init would also flow through a head built from it (a partial
        # vs total derivative), unlike `adapt` and Reptile. The aliases stay differentiable in `params`.
        params = {k: v.view_as(v) if k in names else v for k, v in params.items()}
        loss = loss_fn(params, support)
        losses.append(float(loss.detach()))
        wrt = [params[n] for n in names]
        grads = torch.autograd.grad(loss, wrt, create_graph=create_graph, allow_unused=True)
        if not create_graph:
            grads = [None if g is None else g.detach() for g in grads]
        params = sgd_step(params, dict(zip(names, grads)), lr)
    return params, losses


@dataclass(frozen=True)
class EpisodeResult:
    grads: Params  # gradient of the outer objective w.r.t. each meta-parameter
    query_loss: float
    support_losses: list[float]
    query_accuracy: float | None = None


def episode_gradient(
    algorithm: str,
    meta: Params,
    build: Callable[[Params], Params],
    loss_fn: LossFn,
    support: Any,
    query: Any,
    steps: int,
    inner_lr: float,
    lrs: Params | None = None,
    accuracy_fn: Callable[[Params, Any], float] | None = None,
    metasgd_second_order: bool = True,
) -> EpisodeResult:
    """One task's contribution to the meta-gradient.

    `meta` are leaf tensors (requires_grad): the init; `lrs` are Meta-SGD's learned rates (leaves
    too; first-order Meta-SGD still trains them, since the adapted point is linear in the rates). `build(meta)` returns the episode's starting tensors (the
    init plus a head built from the support set); it must be differentiable in `meta`.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; one of {ALGORITHMS}")
    start = build(meta)
    if algorithm == "reptile":
        detached = {k: v.detach().requires_grad_(v.is_floating_point()) for k, v in start.items()}
        adapted, losses = inner_loop(loss_fn, detached, support, steps, inner_lr, create_graph=False)
        denom = inner_lr * max(steps, 1)
        grads = {k: (meta[k].detach() - adapted[k].detach()) / denom for k in meta}
        with torch.no_grad():
            q = loss_fn(adapted, query)
        acc = accuracy_fn(adapted, query) if accuracy_fn else None
        return EpisodeResult(grads, float(q), losses, acc)

    second_order = algorithm == "maml" or (algorithm == "metasgd" and metasgd_second_order)
    if algorithm == "metasgd":
        if lrs is None:
            raise ValueError("metasgd needs learned rates `lrs`")
        rate: float | Params = {k: lrs[k] if k in lrs else inner_lr for k in start}
    else:
        rate = inner_lr
    adapted, losses = inner_loop(loss_fn, start, support, steps, rate, create_graph=second_order)
    q = loss_fn(adapted, query)
    wrt = list(meta.values()) + (list(lrs.values()) if algorithm == "metasgd" else [])
    g = torch.autograd.grad(q, wrt, allow_unused=True)
    keys = list(meta) + ([f"lr.{k}" for k in lrs] if algorithm == "metasgd" else [])
    grads = {k: (torch.zeros_like(t) if gi is None else gi) for k, t, gi in zip(keys, wrt, g)}
    acc = accuracy_fn({k: v.detach() for k, v in adapted.items()}, query) if accuracy_fn else None
    return EpisodeResult(grads, float(q.detach()), losses, acc)
