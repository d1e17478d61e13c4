"""The meta-training outer loop, written explicitly on Accelerate's pieces.

Each outer step takes a global meta-batch of `meta_batch * grad_accum` episodes; process r computes
the episodes i with i % world_size == r, sums their meta-gradients, and one all-reduce (sum) over the
processes, divided by the global count, gives every process the same averaged gradient. So 1 and N
processes compute the same update, up to the order of float additions.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from metalora import __version__
from metalora.adapter_io import atomic_folder, save_folder, to_peft_key
from metalora.backbones import load_backbone
from metalora.config import MetaTrainConfig, dump_config, to_dict
from metalora.errors import ConfigError, TrainingError
from metalora.heads import HeadBank, HeadChoice, build_bank, choice_grid, is_plain, pick_choice
from metalora.meta.algorithms import episode_gradient, inner_loop
from metalora.meta.checkpoint import remove_partial, save_checkpoint
from metalora.meta.checkpoint import resume as resume_checkpoint
from metalora.meta.episodes import Episode, EpisodeSampler, ExampleCache, select_scenarios
from metalora.label_words import scenario_words, start_params as label_word_head
from metalora.memory import release_free_memory
from metalora.model import HEAD_KEYS, PRIOR_KEY, SCALE_KEY, LoraClassifier, Params, prototype_head


@dataclass
class MetaResult:
    init_dir: Path
    steps: int
    seconds: float
    episodes: int
    examples: int
    best_val: float | None
    history: list[dict]


def make_accelerator(cfg: MetaTrainConfig, cpu: bool = False):
    """The Accelerator a meta-training run uses; `cpu=True` is how several CPU processes are started
    (`accelerate launch --multi_gpu --num_processes N` + Accelerator(cpu=True) -> gloo, MULTI_CPU)."""
    from accelerate import Accelerator

    return Accelerator(
        cpu=cpu,
        mixed_precision=cfg.mixed_precision,
        log_with="tensorboard" if cfg.log_with == "tensorboard" else None,
        project_dir=str(Path(cfg.output_dir) / "logs"),
    )


class MetaTrainer:
    def __init__(self, cfg: MetaTrainConfig, accelerator=None, cards_dir=None, model: LoraClassifier | None = None):
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.cards_dir = cards_dir
        self.acc = accelerator or make_accelerator(cfg)
        # Validate the suite before loading any model (fast failure on bad input).
        self.train_scenarios = select_scenarios(cfg.scenarios, cfg.exclude, cfg.exclude_heldout, "scenarios", cards_dir)
        self.val_scenarios = select_scenarios(cfg.val_scenarios, (), False, "val_scenarios", cards_dir) if cfg.val_scenarios else []
        if cfg.algorithm != "multitask" and len(self.train_scenarios) < cfg.meta_batch:
            raise ConfigError(
                f"meta_batch={cfg.meta_batch} episodes per step but the suite has only {len(self.train_scenarios)} scenario(s) "
                f"({', '.join(s.name for s in self.train_scenarios)}); lower meta_batch or add scenarios"
            )
        global_batch = cfg.meta_batch * cfg.grad_accum
        if cfg.algorithm != "multitask" and global_batch < self.acc.num_processes:
            raise TrainingError(f"meta_batch x grad_accum = {global_batch} episodes cannot be shared by {self.acc.num_processes} processes; raise meta_batch")
        self.model = model or LoraClassifier(load_backbone(cfg.backbone), cfg.lora)
        if not self.model.backbone.quantized:  # a bitsandbytes backbone is placed at load time and refuses .to()
            self.model.to(self.acc.device)
        if cfg.algorithm == "maml" or (cfg.algorithm == "metasgd" and cfg.metasgd_second_order):
            self.model.enable_double_backward()
        # label-word scoring: every scenario's words, tokenised (and checked) before any training
        self.words = ({sc.name: scenario_words(self.model, sc) for sc in self.train_scenarios + self.val_scenarios}
                      if self.model.backbone.config.scoring == "label_words" else None)
        self.cache = ExampleCache(self.model, cfg.cache_mb)
        self.sampler = EpisodeSampler(self.train_scenarios, cfg.episodes, self.cache, cfg.seed, where="scenarios")
        self.val_sampler = (EpisodeSampler(self.val_scenarios, cfg.episodes, self.cache, cfg.seed + 1_000_003,
                                           split=cfg.val_split, where="val_scenarios", augment=False) if self.val_scenarios else None)
        self.label_names = {s.name: s.label_names for s in [*self.train_scenarios, *self.val_scenarios]}
        # the head bank under the init's current features, with the validated choice, and the step it belongs to
        self.bank: HeadBank | None = None
        self.bank_step: int | None = None
        self._init_meta()

    # -- meta-parameters -------------------------------------------------------------------------
    def _init_meta(self) -> None:
        cfg, dev = self.cfg, self.acc.device
        self.meta: Params = {k: v.clone().to(dev).requires_grad_(True) for k, v in self.model.default_lora.items()}
        self.meta[SCALE_KEY] = torch.tensor(math.log(cfg.logit_scale), device=dev, requires_grad=True)
        self.lrs: Params | None = None
        if cfg.algorithm == "metasgd":
            self.lrs = {k: torch.full_like(v, cfg.inner_lr).requires_grad_(True) for k, v in self.meta.items()}
            for k in HEAD_KEYS:
                self.lrs[k] = torch.tensor(cfg.inner_lr, device=dev, requires_grad=True)
        if cfg.head_prior:  # after the rates: u shapes the head once per episode, it has no inner-loop rate
            self.meta[PRIOR_KEY] = torch.zeros(self.model.backbone.hidden_size, device=dev, requires_grad=True)
        if cfg.algorithm == "multitask" and self.words is None:  # (label words need no per-scenario heads)
            g = torch.Generator().manual_seed(cfg.seed)
            for pool in self.sampler.pools:
                w = torch.randn(pool.num_labels, self.model.backbone.hidden_size, generator=g) * 0.01
                self.meta[f"heads.{pool.name}.weight"] = w.to(dev).requires_grad_(True)
                self.meta[f"heads.{pool.name}.bias"] = torch.zeros(pool.num_labels, device=dev, requires_grad=True)
        self.names = list(self.meta) + ([f"lr.{k}" for k in self.lrs] if self.lrs else [])
        self.tensors = list(self.meta.values()) + (list(self.lrs.values()) if self.lrs else [])
        optimizer = torch.optim.Adam(self.tensors, lr=cfg.outer_lr)
        self.optimizer = self.acc.prepare(optimizer)

    def lora(self) -> Params:
        return self.model.lora_only(self.meta)

    # -- one episode -----------------------------------------------------------------------------
    def _loss(self, params: Params, batch) -> Tensor:
        enc, y = batch
        return F.cross_entropy(self.model.logits(params, enc), y.to(self.acc.device))

    def _accuracy(self, params: Params, batch) -> float:
        enc, y = batch
        with torch.no_grad():
            return float((self.model.logits(params, enc).argmax(-1).cpu() == y).float().mean())

    def _episode_words(self, ep: Episode) -> Params:
        """The episode's label-word head: its scenario's words in the episode's (permuted) class order."""
        return label_word_head(self.words[ep.scenario][ep.classes], self.acc.device)

    def _build(self, ep: Episode):
        def build(meta: Params) -> Params:
            lora = self.model.lora_only(meta)
            if self.words is not None:  # (the scale rides along unused, so every algorithm sees each meta key)
                return {**lora, SCALE_KEY: meta[SCALE_KEY], **self._episode_words(ep)}
            feats = self.model.features(lora, ep.support)
            w, b = prototype_head(feats, ep.support_labels.to(feats.device), ep.num_labels, meta.get(PRIOR_KEY))
            return {**lora, SCALE_KEY: meta[SCALE_KEY], "head.weight": w, "head.bias": b}

        return build

    def episode_grads(self, ep: Episode):
        cfg = self.cfg
        support, query = (ep.support, ep.support_labels), (ep.query, ep.query_labels)
        if cfg.algorithm == "multitask":
            return self._multitask_grads(ep)
        meta = {k: v for k, v in self.meta.items() if not k.startswith("heads.")}
        return episode_gradient(cfg.algorithm, meta, self._build(ep), self._loss, support, query,
                                cfg.inner_steps, cfg.inner_lr, lrs=self.lrs, accuracy_fn=self._accuracy,
                                metasgd_second_order=cfg.metasgd_second_order)

    def _multitask_grads(self, ep: Episode):
        """Ordinary supervised training: the pooled examples through the scenario's own head."""
        from metalora.meta.algorithms import EpisodeResult

        classes = ep.classes
        lora = self.lora()
        if self.words is not None:  # ordinary language-model training on the label words
            params = {**lora, **self._episode_words(ep)}
        else:
            params = {**lora, SCALE_KEY: self.meta[SCALE_KEY],
                      "head.weight": self.meta[f"heads.{ep.scenario}.weight"][classes],
                      "head.bias": self.meta[f"heads.{ep.scenario}.bias"][classes]}
        enc_y = [(ep.support, ep.support_labels), (ep.query, ep.query_labels)]
        losses = [self._loss(params, b) for b in enc_y]
        loss = (losses[0] * len(ep.support) + losses[1] * len(ep.query)) / (len(ep.support) + len(ep.query))
        grads = torch.autograd.grad(loss, list(self.meta.values()), allow_unused=True)
        out = {k: (torch.zeros_like(v) if g is None else g) for (k, v), g in zip(self.meta.items(), grads)}
        return EpisodeResult(out, float(loss.detach()), [], self._accuracy(params, enc_y[1]))

    # -- validation ------------------------------------------------------------------------------
    def validate(self) -> dict[int, float]:
        """Mean query accuracy on fixed held-out episodes after each candidate number of inner steps.

        The candidates are `adapt_steps_choices` (plus inner_steps); one inner loop per episode serves
        them all, scored on the way. Choosing the adaptation budget here, on validation scenarios, is
        what lets an init say "use 0 steps" without ever looking at a target.
        """
        counts = sorted(set(self.cfg.adapt_steps_choices) | {self.cfg.inner_steps})
        accs: dict[int, list[float]] = {n: [] for n in counts}
        meta = {k: v.detach() for k, v in self.meta.items() if not k.startswith("heads.")}
        for i in range(self.cfg.val_episodes):
            ep = self.val_sampler.episode(0, i)
            with torch.no_grad():
                built = self._build(ep)(meta)
                if self.bank is not None:  # the head validate_head chose, instead of the plain prototypes
                    built["head.weight"], built["head.bias"] = self._bank_head(ep, meta, self.bank.choice)
            params = {k: v.detach().requires_grad_(v.is_floating_point()) for k, v in built.items()}
            rate = ({k: self.lrs[k].detach() if k in self.lrs else self.cfg.inner_lr for k in params}
                    if self.lrs else self.cfg.inner_lr)
            done = 0
            for n in counts:
                params, _ = inner_loop(self._loss, params, (ep.support, ep.support_labels), n - done, rate, create_graph=False)
                params = {k: v.detach().requires_grad_(v.is_floating_point()) for k, v in params.items()}
                done = n
                accs[n].append(self._accuracy(params, (ep.query, ep.query_labels)))
        return {n: float(sum(a) / len(a)) for n, a in accs.items()}

    # -- the head bank ---------------------------------------------------------------------------
    @torch.no_grad()
    def build_bank(self, choice: HeadChoice | None = None) -> HeadBank:
        """Every training scenario's class prototypes under the current LoRA weights (metalora.heads)."""
        lora = {k: v.detach() for k, v in self.lora().items()}
        pools = {p.name: p for p in self.sampler.pools}

        def featurize(name: str, idx: list[int]) -> torch.Tensor:
            pool = pools[name]
            parts = [self.model.features(lora, self.cache.get(pool.key, pool.texts, idx[i:i + 64])).cpu()
                     for i in range(0, len(idx), 64)]
            return torch.cat(parts)

        scenarios = [(p.name, self.label_names[p.name], p.labels.tolist()) for p in self.sampler.pools]
        return build_bank(scenarios, featurize, self.cfg.head.bank_examples, seed=self.cfg.seed, choice=choice)

    def _bank_head(self, ep: Episode, meta: Params, choice: HeadChoice, feats=None):
        names = self.label_names[ep.scenario]
        feats = feats if feats is not None else self.model.features(self.model.lora_only(meta), ep.support)
        w, b, _ = self.bank.build(feats, ep.support_labels.to(feats.device), ep.num_labels, [names[c] for c in ep.classes],
                                  float(meta[SCALE_KEY].exp()), meta.get(PRIOR_KEY), choice)
        return w, b

    def head_choices(self) -> list[HeadChoice]:
        h = self.cfg.head
        return choice_grid(h.shrinkage, h.temperature, h.class_prior, self.cfg.episodes.k_shot)

    @torch.no_grad()
    def validate_head(self) -> dict[HeadChoice, tuple[float, float]]:
        """Build the bank under the current init and score every head choice at 0 steps on the validation episodes.

        Returns each choice's (mean query accuracy, macro-F1 of each validation scenario's pooled queries averaged
        over the scenarios) and sets `self.bank` with the best
        choice: the best accuracy, or with head.criterion=accuracy_keep_f1 the best accuracy among choices
        whose macro-F1 is within f1_tolerance of the plain prototype head's (so a class prior cannot win by
        predicting the frequent class everywhere), or with accuracy_plus_f1 the best sum of the two. Ties go to
        the simpler head (plain prototypes first).
        """
        bank = self.build_bank()
        self.bank = bank
        choices = self.head_choices()
        plain = HeadChoice(0.0, self.cfg.episodes.k_shot, 0.0, 0.0)  # the floor of accuracy_keep_f1, scored in any case
        scored = choices if any(is_plain(c) for c in choices) else [plain, *choices]
        meta = {k: v.detach() for k, v in self.meta.items() if not k.startswith("heads.")}
        lora = self.model.lora_only(meta)
        accs: dict[HeadChoice, list[float]] = {c: [] for c in scored}
        # macro-F1 pools each validation scenario's queries over its episodes (in the scenario's own label ids), as a
        # test set does: a 16-example query set often lacks the rare class, and per-episode F1 would then reward a
        # head that never predicts it
        pooled: dict[HeadChoice, dict[str, tuple[list, list]]] = {c: {} for c in scored}
        for i in range(self.cfg.head.val_episodes or self.cfg.val_episodes):
            ep = self.val_sampler.episode(0, i)
            fs, fq = self.model.features(lora, ep.support), self.model.features(lora, ep.query)
            y = ep.query_labels.to(fq.device)
            ids = torch.tensor(ep.classes, device=fq.device)
            for c in scored:
                w, b = self._bank_head(ep, meta, c, fs)
                pred = (fq @ w.T + b).argmax(-1)
                accs[c].append(float((pred == y).float().mean()))
                p, t = pooled[c].setdefault(ep.scenario, ([], []))
                p.append(ids[pred].cpu())
                t.append(ids[y].cpu())
        n_labels = {s.name: s.num_labels for s in self.val_scenarios}
        means = {}
        for c in scored:
            f1 = [_macro_f1(torch.cat(p), torch.cat(t), n_labels[name]) for name, (p, t) in pooled[c].items()]
            means[c] = (sum(accs[c]) / len(accs[c]), sum(f1) / len(f1))
        self.bank = bank.with_choice(pick_choice(means, choices, self.cfg.head.criterion, self.cfg.head.f1_tolerance))
        return means

    def choose(self, by_steps: dict[int, float]) -> tuple[float, int | None]:
        """(the validation score, the adaptation steps it recommends; None = no choice configured)."""
        if not self.cfg.adapt_steps_choices:
            return by_steps[self.cfg.inner_steps], None
        best = max(by_steps[n] for n in self.cfg.adapt_steps_choices)
        return best, min(n for n in self.cfg.adapt_steps_choices if by_steps[n] == best)

    # -- the loop --------------------------------------------------------------------------------
    def train(self, resume: bool = True) -> MetaResult:
        from tqdm.auto import tqdm

        cfg, acc = self.cfg, self.acc
        ckpt_dir = self.out / "checkpoints"
        start_step, best_val, best_step, history = 0, None, None, []
        if resume and (found := resume_checkpoint(ckpt_dir, cfg, self.optimizer.optimizer, self.names)) is not None:
            last, tensors, state = found
            with torch.no_grad():
                for name, t in zip(self.names, self.tensors):
                    t.copy_(tensors[name].to(t.device))
            start_step, best_val, best_step = state["step"], state.get("best_val"), state.get("best_step")
            history = state.get("history", [])
            if acc.is_main_process:
                print(f"resuming from {last} (step {start_step})")
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_partial(self.out)  # left by a run killed while saving
            remove_partial(ckpt_dir)
            dump_config(cfg, self.out / "config.yaml")
        if cfg.log_with == "tensorboard":
            acc.init_trackers("meta_train", config={k: v for k, v in _flat(to_dict(cfg)).items() if isinstance(v, (int, float, str, bool))})

        world, rank = acc.num_processes, acc.process_index
        per_step = cfg.meta_batch * cfg.grad_accum
        my_indices = [i for i in range(per_step) if i % world == rank]
        episodes = examples = 0
        t0 = time.perf_counter()
        bar = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps, desc=f"meta-train ({cfg.algorithm})",
                   disable=not acc.is_local_main_process)
        for step in bar:
            total = {n: torch.zeros_like(t) for n, t in zip(self.names, self.tensors)}
            stats = torch.zeros(4, device=acc.device)  # query loss sum, query acc sum, episodes, non-finite count
            bad_scenario = None
            for i in my_indices:
                ep = self.sampler.episode(step, i)
                with acc.autocast():
                    res = self.episode_grads(ep)
                finite = math.isfinite(res.query_loss) and all(torch.isfinite(g).all() for g in res.grads.values())
                if not finite:
                    stats[3] += 1
                    bad_scenario = bad_scenario or ep.scenario
                    continue
                for k, g in res.grads.items():
                    total[k] += g.detach()
                stats[0] += res.query_loss
                stats[1] += res.query_accuracy or 0.0
                stats[2] += 1
                episodes += 1
                examples += len(ep.support) + len(ep.query)
            flat = torch.cat([t.reshape(-1) for t in total.values()] + [stats])
            flat = acc.reduce(flat, reduction="sum") if world > 1 else flat
            stats = flat[-4:]
            if stats[3] > 0:
                where = f" (scenario {bad_scenario})" if bad_scenario else " (on another process)"
                raise TrainingError(
                    f"meta-training hit a non-finite loss or gradient at step {step + 1}{where}; the last good checkpoint in "
                    f"{ckpt_dir} is kept. Lower outer_lr ({cfg.outer_lr}) or inner_lr ({cfg.inner_lr}) and start again with "
                    "--no-resume (a checkpoint resumes only under the config that wrote it)."
                )
            offset = 0
            for name, t in zip(self.names, self.tensors):
                n = t.numel()
                t.grad = (flat[offset:offset + n].view_as(t) / per_step).to(t.dtype)
                offset += n
            self.optimizer.step()
            self.optimizer.zero_grad()
            release_free_memory()  # the heap holes that this step's freed rows and temporaries left (metalora.memory)
            if self.lrs:
                with torch.no_grad():
                    for v in self.lrs.values():
                        v.clamp_(min=0.0)
            record = {"step": step + 1, "query_loss": float(stats[0] / stats[2]), "query_acc": float(stats[1] / stats[2])}
            done = step + 1
            if self.val_sampler and cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
                if cfg.head.bank:
                    head_scores = self.validate_head()
                    self.bank_step = done
                    record["head"] = self.bank.choice.to_dict()
                    record["val_by_head"] = {_choice_key(c): {"accuracy": round(a, 4), "macro_f1": round(f, 4)}
                                             for c, (a, f) in head_scores.items()}
                by_steps = self.validate()
                val, chosen = self.choose(by_steps)
                record["val_acc"] = val
                if len(by_steps) > 1:
                    record["val_acc_by_steps"] = {str(n): a for n, a in by_steps.items()}
                if chosen is not None:
                    record["adapt_steps"] = chosen
                if best_val is None or val > best_val:
                    best_val, best_step = val, done
                    if acc.is_main_process:
                        self.save_init(self.out / "best-init", step=done, val=val, adapt_steps=chosen)
            history.append(record)
            scalars = {k: v for k, v in record.items() if k not in ("step", "val_acc_by_steps", "head", "val_by_head")}
            scalars.update({f"val_acc_{n}_steps": a for n, a in record.get("val_acc_by_steps", {}).items()})
            acc.log(scalars, step=done)
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k in ("query_loss", "query_acc", "val_acc")})
            if cfg.checkpoint_every and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
                if acc.is_main_process:
                    save_checkpoint(ckpt_dir, done, dict(zip(self.names, self.tensors)), self.optimizer.optimizer, self.names, cfg,
                                    {"best_val": best_val, "best_step": best_step, "history": history})
                acc.wait_for_everyone()
        seconds = time.perf_counter() - t0
        init_dir = self.out / "meta-init"
        if acc.is_main_process:
            last = history[-1] if history else {}
            final = self.save_init(self.out / "final-init", step=cfg.steps, val=last.get("val_acc"), adapt_steps=last.get("adapt_steps"))
            source = self.out / "best-init" if (self.out / "best-init").is_dir() else final
            _copy_folder(source, init_dir)
            if cfg.budget.by_family:  # on the kept init, with the real adaptation loop (metalora/meta/budget.py)
                from metalora.meta.budget import choose_budget

                choose_budget(init_dir, cfg, self.cards_dir, model=self.model)
            if cfg.feature_stats:  # for adapt's calibrate augmentation, under the saved init's own weights
                from metalora.augment.calibration import compute_feature_stats, save_feature_stats
                from metalora.adapter_io import load_params

                stats = compute_feature_stats(self.model, load_params(init_dir, self.model), self.train_scenarios,
                                              cfg.episodes.split, cfg.feature_stats, cfg.seed)
                save_feature_stats(stats, init_dir)
            (self.out / "history.json").write_text(json.dumps(history, indent=1), encoding="utf-8")
        acc.wait_for_everyone()
        acc.end_training()  # last: it also tears down the process group
        return MetaResult(init_dir, cfg.steps, seconds, episodes, examples, best_val, history)

    def save_init(self, path: Path, step: int, val: float | None, adapt_steps: int | None = None) -> Path:
        cfg = self.cfg
        extra = {SCALE_KEY: self.meta[SCALE_KEY].detach()}
        if PRIOR_KEY in self.meta:
            extra[PRIOR_KEY] = self.meta[PRIOR_KEY].detach()
        if self.lrs:
            for k, v in self.lrs.items():
                key = k if k in (*HEAD_KEYS, SCALE_KEY) else to_peft_key(k)
                extra[f"lr.{key}"] = v.detach()
        if adapt_steps is None:
            adapt_steps = cfg.adapt_steps if cfg.adapt_steps is not None else max(cfg.inner_steps, 1)
        bank = None
        if cfg.head.bank:
            # the bank must be built under the weights being saved; without a validation at this step the
            # choice is the configured one (one value each: the config refuses several without validation)
            if self.bank is None or self.bank_step != step:
                self.bank = self.build_bank(self.bank.choice if self.bank is not None else self.head_choices()[0])
                self.bank_step = step
            bank = self.bank
            extra.update(bank.tensors())
        meta = {
            "metalora_version": __version__,
            "kind": "meta-init",
            "meta": {"algorithm": cfg.algorithm, "suite": [s.name for s in self.train_scenarios], "steps": step,
                     "val_scenarios": [s.name for s in self.val_scenarios], "val_acc": val, "config": to_dict(cfg)},
            # What validation measured: SGD at inner_lr (for the multitask baseline too, so both inits are
            # adapted the way their own validation chose).
            "adapt": {"optimizer": "sgd", "lr": cfg.inner_lr, "head_lr": cfg.inner_lr, "steps": adapt_steps},
            "lineage": {"init": None},
            "metrics": {"val_acc": val} if val is not None else {},
        }
        if bank is not None:
            meta["head"] = bank.meta()
        return save_folder(path, self.model, self.lora(), meta, overwrite=True, init_tensors=extra)


def _copy_folder(src: Path, dst: Path) -> None:
    import shutil

    atomic_folder(dst, lambda tmp: shutil.copytree(src, tmp, dirs_exist_ok=True), overwrite=True)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _choice_key(c: HeadChoice) -> str:
    return f"shrink={c.shrinkage:g},temp={c.temperature:g},prior={c.class_prior:g}"


def _macro_f1(pred: Tensor, y: Tensor, num_labels: int) -> float:
    """Macro-F1 over the classes that occur in the labels or the predictions (as sklearn's default)."""
    f1 = []
    for k in range(num_labels):
        tp, fp, fn = [float(v) for v in (((pred == k) & (y == k)).sum(), ((pred == k) & (y != k)).sum(), ((pred != k) & (y == k)).sum())]
        if tp + fp + fn > 0:
            f1.append(2 * tp / (2 * tp + fp + fn))
    return sum(f1) / len(f1) if f1 else 0.0
