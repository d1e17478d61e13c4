"""Property tests for metalora.meta.algorithms: MAML, first-order MAML, Reptile and Meta-SGD.

Every reference here is computed independently of the code under test: a tiny linear model with a
closed-form MSE gradient (hand SGD, no autograd), central finite differences in float64, or plain
autograd on detached copies. The last group runs every algorithm on a real tiny peft model.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from metalora.meta.algorithms import ALGORITHMS, episode_gradient, inner_loop, sgd_step

D64 = torch.float64


# -- a closed-form model: y_hat = x @ w + b, loss = mean((y_hat - y)^2) ------------------------------
def mse_loss(params, batch):
    x, y = batch
    return ((x @ params["w"] + params["b"] - y) ** 2).mean()


def mse_grad(params, batch):
    """The analytic gradient of `mse_loss`, no autograd."""
    x, y = batch
    r = x @ params["w"] + params["b"] - y
    scale = 2.0 / r.numel()
    return {"w": scale * x.T @ r, "b": scale * r.sum(0)}


def hand_adapt(params, batch, steps, lr):
    """Plain SGD with the analytic gradient; `lr` a float or a dict of per-element rates."""
    p = {k: v.detach().clone() for k, v in params.items()}
    for _ in range(steps):
        g = mse_grad(p, batch)
        p = {k: p[k] - (lr[k] if isinstance(lr, dict) else lr) * g[k] for k in p}
    return p


def make_task(seed=0, n=6, d=3, k=2, dtype=D64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=dtype)
    y = torch.randn(n, k, generator=gen, dtype=dtype)
    return x, y


def make_params(seed=100, d=3, k=2, dtype=D64, requires_grad=True):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(d, k, generator=gen, dtype=dtype)
    b = torch.randn(k, generator=gen, dtype=dtype)
    return {"w": w.requires_grad_(requires_grad), "b": b.requires_grad_(requires_grad)}


def identity(m):
    return dict(m)


def central_fd(f, tensors, h=1e-6):
    """Central finite differences of scalar f(dict) w.r.t. every element of every tensor in `tensors`."""
    base = {k: v.detach().clone() for k, v in tensors.items()}
    out = {}
    for name, t in base.items():
        g = torch.zeros_like(t)
        flat = g.view(-1)
        for i in range(t.numel()):
            plus = {k: v.clone() for k, v in base.items()}
            minus = {k: v.clone() for k, v in base.items()}
            plus[name].view(-1)[i] += h
            minus[name].view(-1)[i] -= h
            flat[i] = (f(plus) - f(minus)) / (2 * h)
        out[name] = g
    return out


# -- 1. the inner step is plain SGD ---------------------------------------------------------------
def test_sgd_step_and_none_grads():
    p = {"a": torch.tensor([1.0, 2.0]), "c": torch.tensor([5.0])}
    out = sgd_step(p, {"a": torch.tensor([0.5, -1.0]), "c": None}, 0.1)
    assert_close(out["a"], torch.tensor([0.95, 2.1]))
    assert out["c"] is p["c"]  # no gradient: left as is
    rates = {"a": torch.tensor([0.1, 2.0]), "c": torch.tensor([1.0])}
    out = sgd_step(p, {"a": torch.tensor([0.5, -1.0])}, rates)
    assert_close(out["a"], torch.tensor([1.0 - 0.05, 2.0 + 2.0]))


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_inner_loop_equals_hand_sgd(steps):
    task = make_task()
    params = make_params()
    lr = 0.07
    for create_graph in (False, True):
        adapted, losses = inner_loop(mse_loss, params, task, steps, lr, create_graph=create_graph)
        ref = hand_adapt(params, task, steps, lr)
        assert set(adapted) == {"w", "b"}
        for k in ref:
            assert_close(adapted[k], ref[k], rtol=1e-12, atol=1e-12)
        # the support losses are those before each step
        p, ref_losses = {k: v.detach() for k, v in params.items()}, []
        for _ in range(steps):
            ref_losses.append(float(mse_loss(p, task)))
            p = hand_adapt(p, task, 1, lr)
        assert losses == pytest.approx(ref_losses, rel=1e-12)
    # inputs are never modified in place
    assert_close(params["w"], make_params()["w"], rtol=0, atol=0)


def test_one_step_is_p_minus_lr_grad_explicitly():
    task = make_task(seed=3)
    params = make_params(seed=4)
    lr = 0.3
    adapted, _ = inner_loop(mse_loss, params, task, 1, lr, create_graph=False)
    g = mse_grad({k: v.detach() for k, v in params.items()}, task)
    for k in params:
        assert_close(adapted[k], params[k].detach() - lr * g[k], rtol=1e-12, atol=1e-12)
    # and a different lr gives a different point (the lr is really used)
    other, _ = inner_loop(mse_loss, params, task, 1, 2 * lr, create_graph=False)
    assert not torch.allclose(other["w"], adapted["w"])


def test_inner_loop_meta_sgd_rates_are_elementwise():
    task = make_task(seed=5)
    params = make_params(seed=6)
    gen = torch.Generator().manual_seed(7)
    rates = {k: 0.01 + 0.5 * torch.rand(v.shape, generator=gen, dtype=D64) for k, v in params.items()}
    for steps in (1, 2):
        adapted, _ = inner_loop(mse_loss, params, task, steps, rates, create_graph=True)
        ref = hand_adapt(params, task, steps, rates)
        for k in ref:
            assert_close(adapted[k], ref[k], rtol=1e-12, atol=1e-12)
    # a scalar rate equal to the mean rate gives a different answer: the rates are not averaged
    mean_rate = float(torch.cat([r.flatten() for r in rates.values()]).mean())
    scalar, _ = inner_loop(mse_loss, params, task, 1, mean_rate, create_graph=False)
    elementwise, _ = inner_loop(mse_loss, params, task, 1, rates, create_graph=False)
    assert not torch.allclose(scalar["w"], elementwise["w"])


def test_inner_loop_trainable_subset():
    task = make_task()
    params = make_params()
    adapted, _ = inner_loop(mse_loss, params, task, 2, 0.1, create_graph=False, trainable=("w",))
    assert adapted["b"] is params["b"]
    # reference: SGD on w only, b fixed
    p = {k: v.detach().clone() for k, v in params.items()}
    for _ in range(2):
        p["w"] = p["w"] - 0.1 * mse_grad(p, task)["w"]
    assert_close(adapted["w"], p["w"], rtol=1e-12, atol=1e-12)


# -- 2. first-order MAML ------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 3])
def test_fomaml_gradient_is_query_gradient_at_adapted_point(steps):
    support, query = make_task(seed=1), make_task(seed=2)
    meta = make_params(seed=10)
    lr = 0.1
    res = episode_gradient("fomaml", meta, identity, mse_loss, support, query, steps, lr)
    # independent reference: adapt detached copies with plain autograd, then grad of the query loss
    p = {k: v.detach().clone().requires_grad_(True) for k, v in meta.items()}
    for _ in range(steps):
        grads = torch.autograd.grad(mse_loss(p, support), list(p.values()))
        p = {k: (v - lr * g).detach().requires_grad_(True) for (k, v), g in zip(p.items(), grads)}
    q = mse_loss(p, query)
    ref = dict(zip(p, torch.autograd.grad(q, list(p.values()))))
    assert set(res.grads) == {"w", "b"}
    for k in ref:
        assert_close(res.grads[k], ref[k], rtol=1e-12, atol=1e-12)
    assert res.query_loss == pytest.approx(float(q.detach()), rel=1e-12)
    assert len(res.support_losses) == steps
    # and it is the analytic query gradient at the hand-adapted point
    analytic = mse_grad(hand_adapt(meta, support, steps, lr), query)
    for k in analytic:
        assert_close(res.grads[k], analytic[k], rtol=1e-10, atol=1e-12)


# -- 3. second-order MAML ----------------------------------------------------------------------------
def _maml_objective(support, query, steps, lr):
    return lambda init: float(mse_loss(hand_adapt(init, support, steps, lr), query))


@pytest.mark.parametrize("steps", [1, 2])
def test_maml_gradient_matches_finite_differences(steps):
    support, query = make_task(seed=11), make_task(seed=12)
    meta = make_params(seed=13)
    lr = 0.2
    res = episode_gradient("maml", meta, identity, mse_loss, support, query, steps, lr)
    fd = central_fd(_maml_objective(support, query, steps, lr), meta)
    for k in fd:
        assert_close(res.grads[k], fd[k], rtol=1e-4, atol=1e-7)
    # the second-order term is really there: first-order MAML gives a clearly different gradient
    fo = episode_gradient("fomaml", meta, identity, mse_loss, support, query, steps, lr)
    diff = max(float((res.grads[k] - fo.grads[k]).abs().max()) for k in meta)
    scale = max(float(res.grads[k].abs().max()) for k in meta)
    assert diff > 1e-2 * scale
    # and the first-order gradient does NOT match the finite differences
    assert any(not torch.allclose(fo.grads[k], fd[k], rtol=1e-3, atol=1e-6) for k in fd)


def test_maml_gradient_flows_through_build():
    """A differentiable `build` (here: a head computed from the init) is differentiated through."""
    support, query = make_task(seed=21), make_task(seed=22)
    meta = {"w": make_params(seed=23)["w"]}
    lr, steps = 0.15, 2

    def build(m):
        return {"w": m["w"], "b": 0.5 * m["w"].sum(0)}  # the "head" b is a function of the init

    for algo in ("maml", "fomaml"):
        res = episode_gradient(algo, meta, build, mse_loss, support, query, steps, lr)
        assert set(res.grads) == {"w"}
        if algo == "maml":
            f = lambda init: float(mse_loss(hand_adapt(build(init), support, steps, lr), query))  # noqa: E731
            fd = central_fd(f, meta)
            assert_close(res.grads["w"], fd["w"], rtol=1e-4, atol=1e-7)
        else:
            # first order: d adapted / d start = I, so grad = J_build^T g_query(adapted)
            gq = mse_grad(hand_adapt(build(meta), support, steps, lr), query)
            ref = gq["w"] + 0.5 * gq["b"].unsqueeze(0).expand_as(gq["w"])
            assert_close(res.grads["w"], ref, rtol=1e-10, atol=1e-12)


# -- 4. Reptile -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 4])
def test_reptile_gradient_and_interpolation(steps):
    support, query = make_task(seed=31), make_task(seed=32)
    meta = make_params(seed=33)
    lr = 0.05
    res = episode_gradient("reptile", meta, identity, mse_loss, support, query, steps, lr)
    adapted = hand_adapt(meta, support, steps, lr)
    for k in meta:
        assert_close(res.grads[k], (meta[k].detach() - adapted[k]) / (lr * steps), rtol=1e-10, atol=1e-12)
    assert res.query_loss == pytest.approx(float(mse_loss(adapted, query)), rel=1e-10)
    assert len(res.support_losses) == steps
    # an outer SGD step with lr = inner_lr * steps * eps is init += eps (adapted - init)
    eps = 0.3
    outer = sgd_step({k: v.detach() for k, v in meta.items()}, res.grads, lr * steps * eps)
    for k in meta:
        assert_close(outer[k], meta[k].detach() + eps * (adapted[k] - meta[k].detach()), rtol=1e-10, atol=1e-12)
    # the meta tensors are untouched and got no .grad
    assert all(v.grad is None for v in meta.values())


def test_reptile_ignores_build_keys_outside_meta():
    support, query = make_task(seed=34), make_task(seed=35)
    meta = {"w": make_params(seed=36)["w"]}
    head = torch.randn(2, dtype=D64, generator=torch.Generator().manual_seed(37))

    def build(m):
        return {"w": m["w"], "b": head}

    res = episode_gradient("reptile", meta, build, mse_loss, support, query, 2, 0.1)
    assert set(res.grads) == {"w"}
    adapted = hand_adapt(build(meta), support, 2, 0.1)
    assert_close(res.grads["w"], (meta["w"].detach() - adapted["w"]) / 0.2, rtol=1e-10, atol=1e-12)


# -- 5. Meta-SGD ----------------------------------------------------------------------------------------
def _rates(params, seed=41):
    gen = torch.Generator().manual_seed(seed)
    return {k: (0.02 + 0.2 * torch.rand(v.shape, generator=gen, dtype=D64)).requires_grad_(True) for k, v in params.items()}


@pytest.mark.parametrize("steps", [1, 2])
def test_metasgd_gradients_match_finite_differences(steps):
    support, query = make_task(seed=42), make_task(seed=43)
    meta = make_params(seed=44)
    lrs = _rates(meta)
    res = episode_gradient("metasgd", meta, identity, mse_loss, support, query, steps, 0.5, lrs=lrs)
    assert set(res.grads) == {"w", "b", "lr.w", "lr.b"}

    def f_rates(r):
        return float(mse_loss(hand_adapt(meta, support, steps, r), query))

    def f_init(init):
        return float(mse_loss(hand_adapt(init, support, steps, {k: v.detach() for k, v in lrs.items()}), query))

    fd_r = central_fd(f_rates, lrs)
    fd_i = central_fd(f_init, meta)
    for k in meta:
        assert_close(res.grads[f"lr.{k}"], fd_r[k], rtol=1e-4, atol=1e-7)
        assert_close(res.grads[k], fd_i[k], rtol=1e-4, atol=1e-7)
    # the rates used are the learned ones, not inner_lr (0.5 here would give another loss)
    adapted = hand_adapt(meta, support, steps, {k: v.detach() for k, v in lrs.items()})
    assert res.query_loss == pytest.approx(float(mse_loss(adapted, query)), rel=1e-10)


def test_metasgd_first_order_one_step():
    support, query = make_task(seed=51), make_task(seed=52)
    meta = make_params(seed=53)
    lrs = _rates(meta, seed=54)
    res = episode_gradient("metasgd", meta, identity, mse_loss, support, query, 1, 0.5, lrs=lrs,
                           metasgd_second_order=False)
    g_support = mse_grad({k: v.detach() for k, v in meta.items()}, support)
    adapted = hand_adapt(meta, support, 1, lrs)
    g_query = mse_grad(adapted, query)
    for k in meta:
        assert_close(res.grads[f"lr.{k}"], -g_query[k] * g_support[k], rtol=1e-10, atol=1e-12)
        assert_close(res.grads[k], g_query[k], rtol=1e-10, atol=1e-12)  # first order w.r.t. the init
    # the second-order variant differs (so the flag really changes something)
    so = episode_gradient("metasgd", meta, identity, mse_loss, support, query, 1, 0.5, lrs=lrs)
    assert not torch.allclose(so.grads["w"], res.grads["w"])


def test_metasgd_keys_without_rates_use_inner_lr():
    support, query = make_task(seed=55), make_task(seed=56)
    meta = make_params(seed=57)
    lrs = {"w": _rates(meta)["w"]}
    res = episode_gradient("metasgd", meta, identity, mse_loss, support, query, 2, 0.1, lrs=lrs)
    assert set(res.grads) == {"w", "b", "lr.w"}
    rates = {"w": lrs["w"].detach(), "b": torch.full((2,), 0.1, dtype=D64)}
    adapted = hand_adapt(meta, support, 2, rates)
    assert res.query_loss == pytest.approx(float(mse_loss(adapted, query)), rel=1e-10)


# -- 7. argument errors -----------------------------------------------------------------------------
def test_unknown_algorithm_and_missing_rates_raise():
    support, query = make_task(), make_task(seed=1)
    meta = make_params()
    with pytest.raises(ValueError, match="unknown algorithm"):
        episode_gradient("anil", meta, identity, mse_loss, support, query, 1, 0.1)
    with pytest.raises(ValueError, match="lrs"):
        episode_gradient("metasgd", meta, identity, mse_loss, support, query, 1, 0.1)
    assert ALGORITHMS == ("maml", "fomaml", "reptile", "metasgd")


# -- 6. a real tiny peft model --------------------------------------------------------------------------
TEXTS = [
    "great movie, loved it", "wonderful acting and story", "a delight from start to end",
    "terrible plot, boring", "awful, i walked out", "the worst film this year",
]
LABELS = [1, 1, 1, 0, 0, 0]
SUPPORT_IDX, QUERY_IDX = [0, 1, 3, 4], [2, 5, 0, 3]


def _classifier(dtype=torch.float32):
    from metalora.backbones import load_backbone
    from metalora.config import LoraSettings
    from metalora.model import LoraClassifier

    clf = LoraClassifier(load_backbone("tiny-bert"), LoraSettings(r=4, top_layers=2))
    if dtype != torch.float32:
        clf = clf.to(dtype)
    return clf


def _episode(clf):
    from metalora.model import head_logits, prototype_head

    enc = clf.encode(TEXTS)
    labels = torch.tensor(LABELS)
    support = (enc.select(SUPPORT_IDX), labels[SUPPORT_IDX])
    query = (enc.select(QUERY_IDX), labels[QUERY_IDX])

    def build(meta):
        feats = clf.features(meta, support[0])
        w, b = prototype_head(feats, support[1], 2)
        return {**meta, "head.weight": w, "head.bias": b}

    def loss_fn(params, batch):
        return F.cross_entropy(head_logits(params, clf.features(params, batch[0])), batch[1])

    return build, loss_fn, support, query


def _perturbed_meta(clf, seed=0, scale=0.3):
    """The module's LoRA init with B moved off zero (else no gradient reaches A), as leaves."""
    gen = torch.Generator().manual_seed(seed)
    meta = {}
    for k, v in clf.lora_params().items():
        if "lora_B" in k:
            v = v + scale * torch.randn(v.shape, generator=gen, dtype=v.dtype)
        meta[k] = v.requires_grad_(True)
    return meta


@pytest.fixture(scope="module")
def tiny_clf():
    return _classifier()


def test_real_model_every_algorithm_is_functional_and_finite(tiny_clf):
    clf = tiny_clf
    frozen_before = {k: v.detach().clone() for k, v in clf.state_dict().items() if "lora_" not in k}
    lora_before = clf.lora_params()
    assert frozen_before and lora_before
    assert all(not p.requires_grad for n, p in clf.named_parameters() if "lora_" not in n)
    build, loss_fn, support, query = _episode(clf)
    meta = _perturbed_meta(clf)
    names = set(clf.lora_names)
    assert set(meta) == names
    results = {}
    for algo in ALGORITHMS:
        lrs = {k: torch.full_like(v, 0.05).requires_grad_(True) for k, v in meta.items()} if algo == "metasgd" else None
        res = episode_gradient(algo, meta, build, loss_fn, support, query, steps=2, inner_lr=0.05, lrs=lrs)
        results[algo] = res
        lora_grads = {k: g for k, g in res.grads.items() if k in names}
        assert set(lora_grads) == names, algo
        for k, g in lora_grads.items():
            assert g.shape == meta[k].shape, (algo, k)
            assert torch.isfinite(g).all(), (algo, k)
        assert any(float(g.abs().max()) > 0 for k, g in lora_grads.items() if "lora_A" in k), algo
        assert any(float(g.abs().max()) > 0 for k, g in lora_grads.items() if "lora_B" in k), algo
        if algo == "metasgd":
            rate_grads = {k: g for k, g in res.grads.items() if k.startswith("lr.")}
            assert set(rate_grads) == {f"lr.{k}" for k in names}
            assert all(torch.isfinite(g).all() for g in rate_grads.values())
            assert any(float(g.abs().max()) > 0 for g in rate_grads.values())
        assert len(res.support_losses) == 2 and all(map(torch.isfinite, map(torch.tensor, res.support_losses)))
        assert torch.isfinite(torch.tensor(res.query_loss))
        # the module itself is never touched: frozen weights bit-identical, its LoRA unchanged
        after = clf.state_dict()
        for k, v in frozen_before.items():
            assert torch.equal(after[k], v), (algo, k)
        for k, v in clf.lora_params().items():
            assert torch.equal(v, lora_before[k]), (algo, k)
        assert all(p.grad is None for p in clf.parameters()), algo
        assert all(v.grad is None for v in meta.values()), algo
    # maml and fomaml agree on the query loss (same forward), differ in gradient
    assert results["maml"].query_loss == pytest.approx(results["fomaml"].query_loss, rel=1e-5)
    diff = max(float((results["maml"].grads[k] - results["fomaml"].grads[k]).abs().max()) for k in names)
    assert diff > 0


def test_real_model_fomaml_matches_detached_reference(tiny_clf):
    """First-order MAML on the peft model: independent reference with plain autograd."""
    clf = tiny_clf
    build, loss_fn, support, query = _episode(clf)
    meta = _perturbed_meta(clf, seed=1)
    steps, lr = 2, 0.05
    res = episode_gradient("fomaml", meta, build, loss_fn, support, query, steps, lr)
    # reference: adapt detached copies of build(meta); the init's gradient is the query gradient at
    # the adapted point, pulled back through build (the head depends on the init)
    start = build(meta)
    p = {k: v.detach().clone().requires_grad_(True) for k, v in start.items()}
    for _ in range(steps):
        grads = torch.autograd.grad(loss_fn(p, support), list(p.values()))
        p = {k: (v - lr * g).detach().requires_grad_(True) for (k, v), g in zip(p.items(), grads)}
    gq = torch.autograd.grad(loss_fn(p, query), list(p.values()))
    ref = torch.autograd.grad(list(start.values()), list(meta.values()), grad_outputs=list(gq))
    for k, r in zip(meta, ref):
        assert_close(res.grads[k], r, rtol=1e-4, atol=1e-6)


def test_real_model_maml_matches_finite_differences_float64():
    clf = _classifier(torch.float64)
    assert next(clf.parameters()).dtype == D64
    assert clf.base.config._attn_implementation == "eager"
    build, loss_fn, support, query = _episode(clf)
    assert support[0].hidden.dtype == D64
    meta = _perturbed_meta(clf, seed=2)
    steps, lr = 2, 0.1
    try:
        res = episode_gradient("maml", meta, build, loss_fn, support, query, steps, lr)
    except RuntimeError as exc:  # pragma: no cover - only if attention lacks double backward
        msg = str(exc).lower()
        if "double backward" not in msg and "not implemented" not in msg:
            raise  # anything else (e.g. a freed graph) is a real failure, not a reason to skip
        pytest.skip(f"double backward through the tiny BERT's attention is not supported here: {exc}")

    def objective(m):
        m = {k: v.detach().requires_grad_(True) for k, v in m.items()}
        adapted, _ = inner_loop(loss_fn, build(m), support, steps, lr, create_graph=False)
        with torch.no_grad():
            return float(loss_fn(adapted, query))

    assert res.query_loss == pytest.approx(objective(meta), rel=1e-12)
    fo = episode_gradient("fomaml", meta, build, loss_fn, support, query, steps, lr)
    checked = 0
    for kind in ("lora_A", "lora_B"):
        # the element with the largest gradient of one A and one B tensor (keeps the relative check meaningful)
        name = next(k for k in meta if kind in k and float(res.grads[k].abs().max()) > 0)
        i = int(res.grads[name].abs().argmax())
        h = 1e-6
        plus = {k: v.detach().clone() for k, v in meta.items()}
        minus = {k: v.detach().clone() for k, v in meta.items()}
        plus[name].view(-1)[i] += h
        minus[name].view(-1)[i] -= h
        fd = (objective(plus) - objective(minus)) / (2 * h)
        got = float(res.grads[name].view(-1)[i])
        assert got == pytest.approx(fd, rel=1e-4, abs=1e-8), (name, i)
        # the first-order gradient is off by more than the tolerance on at least one of them
        checked += abs(float(fo.grads[name].view(-1)[i]) - fd) > 1e-4 * abs(fd)
    assert checked >= 1
