"""Frozen config dataclasses, and the one place where YAML files and `key=value` overrides become them.

Defaults live once, in the dataclass fields; each field's `help` doubles as documentation and CLI
help. Validation happens in `__post_init__` through `_Checks`, which collects every problem and raises
them together, each naming the field. A YAML file that a person wrote may not contain unknown keys:
a typo must never silently fall back to a default.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metalora.errors import ConfigError


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


class _Checks:
    """Collects validation failures so that a user sees all of them at once."""

    def __init__(self, owner: str):
        self.owner = owner
        self.problems: list[str] = []

    def require(self, ok: bool, name: str, message: str) -> None:
        if not ok:
            self.problems.append(f"{self.owner}.{name}: {message}")

    def choice(self, value: Any, name: str, allowed: typing.Iterable[Any]) -> None:
        allowed = tuple(allowed)
        self.require(value in allowed, name, f"got {value!r}; allowed values are {', '.join(map(repr, allowed))}")

    def positive(self, value: float, name: str, allow_zero: bool = False) -> None:
        ok = value >= 0 if allow_zero else value > 0
        self.require(ok, name, f"got {value!r}; must be {'>= 0' if allow_zero else '> 0'}")

    def done(self) -> None:
        if self.problems:
            raise ConfigError("invalid config:\n  " + "\n  ".join(self.problems))


@dataclass(frozen=True)
class BackboneConfig:
    name: str = _help(
        "Backbone: a short name (`minilm`, `smollm2`, `tiny-bert`, `tiny-gpt2`, `tiny-llama`), a Hub model id or a local folder.",
        default="minilm",
    )
    revision: str | None = _help("Hub revision (branch, tag or commit) of the backbone; ignored for local folders.", default=None)
    max_length: int = _help("Tokens kept per example; longer texts are truncated.", default=128)
    truncation: str = _help(
        "Which tokens a too-long text keeps: `head` (the first max_length) or `head_tail` (the first "
        "`head_tokens` and the rest from the end, where reviews often give their verdict; Sun et al., 2019).",
        default="head",
    )
    head_tokens: int = _help("With truncation=head_tail: tokens kept from the start of a too-long text.", default=32)
    pooling: str = _help("How token states become one vector: `auto` (mean for encoders, last token for decoders), `mean`, `cls`, `last`.", default="auto")
    scoring: str = _help(
        "How a scenario is scored: `pooled` (pooled token states and a per-scenario head built from class prototypes) or "
        "`label_words` (decoders: each label's verbalizer word scored by the language-model head after `prompt`; "
        "works zero-shot, with no head).",
        default="pooled",
    )
    prompt: str | None = _help(
        "Template wrapped around every text, `{text}` marking where it goes; only the text is truncated. Empty: the "
        "text as is (pooled) or `{text}\\nAnswer:` (label_words).",
        default=None,
    )
    dtype: str = _help("Weights dtype for the frozen backbone: `float32`, `bfloat16`, `float16`.", default="float32")
    load_in_4bit: bool = _help("Quantise the frozen backbone to 4 bits (NF4, bf16 compute) with bitsandbytes (QLoRA); needs CUDA, falls back to float with a one-line warning otherwise.", default=False)
    load_in_8bit: bool = _help("Quantise the frozen backbone to 8 bits with bitsandbytes; needs CUDA, falls back to float with a one-line warning otherwise.", default=False)

    def __post_init__(self) -> None:
        c = _Checks("backbone")
        c.require(bool(self.name), "name", "must name a backbone, e.g. `minilm`")
        c.positive(self.max_length, "max_length")
        c.choice(self.truncation, "truncation", ("head", "head_tail"))
        c.require(self.truncation != "head_tail" or 0 <= self.head_tokens < self.max_length, "head_tokens",
                  f"got {self.head_tokens!r}; must be >= 0 and below max_length ({self.max_length}) so the tail keeps some tokens")
        c.choice(self.pooling, "pooling", ("auto", "mean", "cls", "last"))
        c.choice(self.scoring, "scoring", ("pooled", "label_words"))
        c.require(self.prompt is None or self.prompt.count("{text}") == 1, "prompt",
                  f"got {self.prompt!r}; must contain `{{text}}` exactly once (where the text goes)")
        c.choice(self.dtype, "dtype", ("float32", "bfloat16", "float16"))
        c.require(not (self.load_in_4bit and self.load_in_8bit), "load_in_8bit", "choose load_in_4bit or load_in_8bit, not both")
        c.done()


@dataclass(frozen=True)
class LoraSettings:
    r: int = _help("LoRA rank.", default=8)
    alpha: int = _help("LoRA alpha (the update is scaled by alpha / r).", default=16)
    dropout: float = _help("Dropout on the LoRA input; keep 0 for meta-learning so inner loops are deterministic.", default=0.0)
    target_modules: tuple[str, ...] | None = _help(
        "Module names that get LoRA; empty means the architecture's default (query/value for BERT, q/v for MPNet, q_proj/v_proj for Llama, c_attn for GPT-2).",
        default=None,
    )
    top_layers: int | None = _help(
        "Put LoRA on the top N transformer layers only. The frozen layers below are then computed once per example and cached (BERT, MPNet, Llama, GPT-2: metalora/prefix_cache.py), which makes training several times faster. Empty means all layers.",
        default=None,
    )

    def __post_init__(self) -> None:
        c = _Checks("lora")
        c.positive(self.r, "r")
        c.positive(self.alpha, "alpha")
        c.require(0.0 <= self.dropout < 1.0, "dropout", f"got {self.dropout!r}; must be in [0, 1)")
        if self.top_layers is not None:
            c.positive(self.top_layers, "top_layers")
        c.done()



# The support-set augmentations `adapt` knows (metalora/augment/), and the groups the bench and the CLI accept.
TEXT_AUGMENTATIONS = ("dropout", "swap", "neighbours", "paraphrase")
FEATURE_AUGMENTATIONS = ("calibrate", "mixup")
SUPPORT_AUGMENTATIONS = TEXT_AUGMENTATIONS + FEATURE_AUGMENTATIONS
AUGMENT_GROUPS = {"none": (), "support": ("dropout", "swap", "neighbours"), "feature": ("calibrate",)}


def expand_augmentations(names: typing.Iterable[str], field_name: str = "augment.methods") -> tuple[str, ...]:
    """Names and groups (`support` = the three text perturbations, `feature` = calibrate) -> method names.

    An unknown name is a ConfigError that lists every valid one."""
    out: list[str] = []
    for name in names:
        name = name.strip()
        if name in AUGMENT_GROUPS:
            out.extend(AUGMENT_GROUPS[name])
        elif name in SUPPORT_AUGMENTATIONS:
            out.append(name)
        else:
            close = difflib.get_close_matches(name, [*SUPPORT_AUGMENTATIONS, *AUGMENT_GROUPS], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            groups = ", ".join(f"{g} (= {'+'.join(m) or 'nothing'})" for g, m in AUGMENT_GROUPS.items())
            raise ConfigError(f"{field_name}: unknown augmentation {name!r}{hint}; valid: {', '.join(SUPPORT_AUGMENTATIONS)}, "
                              f"or the groups {groups}")
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class AugmentConfig:
    methods: tuple[str, ...] = _help(
        "Support-set augmentations: `dropout` (delete words), `swap` (swap neighbouring words), `neighbours` (replace words "
        "by their nearest neighbours in the backbone's own input-embedding space), `paraphrase` (paraphrases generated by "
        "the offline GPT backbone, extra `gpt`), `calibrate` (extra support features sampled from class distributions "
        "calibrated with the meta-init's training-scenario statistics; Yang et al., ICLR 2021), `mixup` (mixup of pooled "
        "representations in the adaptation loss; needs steps > 0). Groups: `support` = dropout+swap+neighbours, "
        "`feature` = calibrate. Empty: none.",
        default=(),
    )
    copies: int = _help("Perturbed copies of each support text per text augmentation (dropout, swap, neighbours, paraphrase).", default=2)
    word_p: float = _help("Fraction of a text's words that dropout, swap and neighbours touch (at least one).", default=0.1)
    neighbour_top_k: int = _help("neighbours: a replacement is drawn from this many nearest input-embedding neighbours.", default=5)
    calibrate_samples: int = _help("calibrate: features sampled per class (spread over the class's support examples).", default=20)
    calibrate_k: int = _help("calibrate: nearest training classes whose statistics calibrate each support example.", default=2)
    calibrate_alpha: float = _help("calibrate: variance added to the calibrated covariance (Yang et al.'s alpha), in units of "
                                   "the training classes' mean per-dimension variance.", default=0.2)
    mixup_alpha: float = _help("mixup: Beta(alpha, alpha) draws the mixing weight of two support examples' pooled features.", default=0.4)
    paraphrase_model: str = _help("paraphrase: the causal LM that writes paraphrases (`smollm2`, or `tiny-llama` for tests).", default="smollm2")
    paraphrase_max_new_tokens: int = _help("paraphrase: tokens generated per paraphrase at most.", default=64)

    def __post_init__(self) -> None:
        c = _Checks("augment")
        try:
            object.__setattr__(self, "methods", expand_augmentations(self.methods))
        except ConfigError as exc:
            c.problems.append(str(exc))
        for name in ("copies", "neighbour_top_k", "calibrate_samples", "calibrate_k", "paraphrase_max_new_tokens"):
            c.positive(getattr(self, name), name)
        c.require(0.0 < self.word_p <= 1.0, "word_p", f"got {self.word_p!r}; must be in (0, 1]")
        c.positive(self.calibrate_alpha, "calibrate_alpha", allow_zero=True)
        c.positive(self.mixup_alpha, "mixup_alpha")
        c.done()


@dataclass(frozen=True)
class AdaptConfig:
    backbone: BackboneConfig = _help("The frozen foundation model.", default_factory=lambda: BackboneConfig(name="minilm"))
    lora: LoraSettings = _help("LoRA settings (ignored when starting from an init, which brings its own).", default_factory=LoraSettings)
    steps: int = _help("Gradient steps on the support set.", default=30)
    lr: float = _help("Learning rate of the LoRA weights.", default=1e-3)
    head_lr: float = _help("Learning rate of the classification head.", default=1e-2)
    batch_size: int = _help("Support examples per step (the whole support set when it is smaller).", default=16)
    weight_decay: float = _help("AdamW weight decay.", default=0.0)
    optimizer: str = _help("`adamw`, or `sgd` (plain SGD, as in the meta-learned inner loop).", default="adamw")
    head_init: str = _help("`prototype`: head rows from support-set class means (Proto-MAML); `random`: a freshly initialised linear layer.", default="prototype")
    seed: int = _help("Seed for sampling and training.", default=0)
    eval_batch_size: int = _help("Batch size for evaluation and prediction.", default=64)
    augment: AugmentConfig = _help("Support-set augmentation (metalora/augment/); none by default.", default_factory=AugmentConfig)
    fallback: str = _help("`auto`: before adapting from a trained init, compare how well the init's features and the plain "
                          "backbone's separate the support set (leave-one-out prototype loss) and fall back to peft's default "
                          "LoRA with ordinary fine-tuning when the plain backbone does better (metalora/fallback.py); `off`: never.",
                          default="off")
    fallback_margin: float = _help("How much lower (nats) the plain backbone's leave-one-out loss must be before `fallback: auto` "
                                   "falls back.", default=0.0)

    def __post_init__(self) -> None:
        c = _Checks("adapt")
        c.choice(self.fallback, "fallback", ("off", "auto"))
        c.positive(self.fallback_margin, "fallback_margin", allow_zero=True)
        c.positive(self.steps, "steps", allow_zero=True)
        c.positive(self.lr, "lr", allow_zero=True)
        c.positive(self.head_lr, "head_lr", allow_zero=True)
        c.positive(self.batch_size, "batch_size")
        c.positive(self.eval_batch_size, "eval_batch_size")
        c.positive(self.weight_decay, "weight_decay", allow_zero=True)
        c.choice(self.optimizer, "optimizer", ("adamw", "sgd"))
        c.choice(self.head_init, "head_init", ("prototype", "random"))
        c.done()


# ---------------------------------------------------------------------------------------------
# YAML <-> dataclass


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(value: Any, tp: Any, where: str, source: str) -> Any:
    optional = tp is Any or _strip_optional(tp) is not tp
    tp = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        empty = " (an empty list is [])" if typing.get_origin(tp) is tuple else ""
        raise ConfigError(f"{source}: `{where}` cannot be null; give it a value{empty} or leave the key out for its default")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: `{where}` must be a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, source=source, prefix=f"{where}.")
    origin = typing.get_origin(tp)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: `{where}` must be a list, got {value!r}")
        (inner, *_rest) = typing.get_args(tp) or (Any,)
        return tuple(_coerce(v, inner, where, source) for v in value)
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: `{where}` must be true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{source}: `{where}` must be a number, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: `{where}` must be {'an integer' if tp is int else 'a number'}, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != out:
            raise ConfigError(f"{source}: `{where}` must be an integer, got {value!r}")
        return out
    if tp is str:
        return str(value)
    return value


def from_dict(cls: type, data: dict, source: str = "<dict>", prefix: str = "") -> Any:
    """Build a config dataclass from a mapping, refusing unknown keys (named with the file)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        msgs = []
        for key in unknown:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean `{prefix}{close[0]}`?)" if close else f" (known keys: {', '.join(names)})"
            msgs.append(f"unknown key `{prefix}{key}`{hint}")
        raise ConfigError(f"{source}: " + "; ".join(msgs))
    defaults = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        tp = _strip_optional(hints[k])
        f = defaults[k]
        if dataclasses.is_dataclass(tp) and isinstance(v, dict) and f.default_factory is not dataclasses.MISSING:
            # a partial mapping refines this class's own default (e.g. lora.r=4 keeps lora.top_layers)
            v = _merge(to_dict(f.default_factory()), v)
        kwargs[k] = _coerce(v, hints[k], f"{prefix}{k}", source)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def to_dict(cfg: Any) -> dict:
    """A plain, YAML/JSON-ready dict (tuples become lists)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(cfg)


def parse_overrides(overrides: typing.Iterable[str]) -> dict:
    """`a.b=1` strings -> nested dict; values are parsed as YAML scalars."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override `{item}` must look like key=value, e.g. steps=10 or lora.r=4")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a YAML file (see recipes/configs/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    return data


def load_config(cls: type, path: str | Path | None = None, overrides: typing.Iterable[str] = (), base: dict | None = None) -> Any:
    """YAML file (optional) -> `key=value` overrides -> validated frozen dataclass."""
    data = dict(base or {})
    source = "<defaults>"
    if path is not None:
        data = _merge(data, read_yaml(path))
        source = str(path)
    overrides = list(overrides)
    if overrides:
        data = _merge(data, parse_overrides(overrides))
        source = f"{source} + overrides" if path else "command-line overrides"
    return from_dict(cls, data, source=source)


def dump_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


@dataclass(frozen=True)
class EpisodeConfig:
    n_way: int | None = _help("Classes per episode; empty means all of the scenario's classes.", default=None)
    k_shot: int = _help("Support examples per class.", default=5)
    query_size: int = _help("Query examples per episode (with query_balance natural, fewer when a scenario has fewer left after the support).", default=16)
    query_balance: str = _help("`balanced`: equal query examples per class; `natural`: drawn with the scenario's own class balance (ARSC test sets are imbalanced).", default="balanced")
    weighting: str = _help("How scenarios are drawn: `uniform`, `size` (proportional to their number of examples), or `family` "
                           "(each family equally often, then uniformly within it, so a family cut into many scenarios does not "
                           "crowd out the others).", default="uniform")
    label_permutation: bool = _help("Shuffle the order of classes in every episode, so the init cannot memorise label identities.", default=True)
    split: str = _help("Split that episodes are drawn from.", default="train")
    # task augmentation (metalora/augment/tasks.py): training episodes only, never validation ones
    task_interpolation: float = _help(
        "Probability that a training episode is MLTI's interpolation of two scenarios' episodes (Yao et al., ICLR 2021): "
        "class c of the new task mixes class c of each, at the frozen prefix's hidden states (the input of the LoRA "
        "layers), with one Beta(interpolation_alpha) weight for support and query. Needs a backbone with a prefix cache.",
        default=0.0,
    )
    interpolation_alpha: float = _help("task_interpolation: the Beta(alpha, alpha) of the mixing weight.", default=0.5)
    k_shot_min: int | None = _help("Vary K: each training episode draws its shots uniformly from k_shot_min..k_shot (empty: always k_shot).", default=None)
    n_way_min: int | None = _help(
        "Vary N (splitting label sets): each training episode draws its number of classes uniformly from n_way_min up to "
        "n_way (or the scenario's class count), so a scenario's label set is also met in parts. Empty: fixed.",
        default=None,
    )
    merge_scenarios: float = _help(
        "Probability that a training episode merges the label sets of two scenarios of different groups (ARSC domain, "
        "else scenario) into one task with the classes (and the query sets) of both.",
        default=0.0,
    )

    @property
    def augments_tasks(self) -> bool:
        return bool(self.task_interpolation or self.merge_scenarios or self.k_shot_min is not None or self.n_way_min is not None)

    def __post_init__(self) -> None:
        c = _Checks("episodes")
        if self.n_way is not None:
            c.require(self.n_way >= 2, "n_way", f"got {self.n_way}; an episode needs at least 2 classes")
        c.positive(self.k_shot, "k_shot")
        for name in ("task_interpolation", "merge_scenarios"):
            c.require(0.0 <= getattr(self, name) <= 1.0, name, f"got {getattr(self, name)!r}; a probability in [0, 1]")
        c.positive(self.interpolation_alpha, "interpolation_alpha")
        if self.k_shot_min is not None:
            c.require(1 <= self.k_shot_min <= self.k_shot, "k_shot_min", f"got {self.k_shot_min!r}; must be in 1..k_shot ({self.k_shot})")
        if self.n_way_min is not None:
            c.require(self.n_way_min >= 2 and (self.n_way is None or self.n_way_min <= self.n_way), "n_way_min",
                      f"got {self.n_way_min!r}; must be >= 2 and at most n_way ({self.n_way})")
        c.positive(self.query_size, "query_size")
        c.choice(self.query_balance, "query_balance", ("balanced", "natural"))
        c.choice(self.weighting, "weighting", ("uniform", "size", "family"))
        c.done()


@dataclass(frozen=True)
class HeadBankConfig:
    bank: bool = _help(
        "Store a head bank in the init: every training scenario's class prototypes under the init's features and its class "
        "frequencies, keyed by label names. A target with the same label names then shrinks its support prototypes toward "
        "the bank heads that best explain its support set (see metalora/heads.py); other targets get plain prototypes.",
        default=False,
    )
    bank_examples: int = _help("Training examples per class behind each bank prototype.", default=64)
    shrinkage: tuple[float, ...] = _help(
        "Candidate weights of the bank's prior prototypes at episodes.k_shot examples per class (0 = plain support "
        "prototypes, 1 = the prior head alone); validation picks one. A single value is used as given.",
        default=(0.0, 0.25, 0.5, 0.75, 1.0),
    )
    temperature: tuple[float, ...] = _help(
        "Candidate temperatures of the support log-likelihood that weights the bank entries (0 = plain average).",
        default=(0.0, 1.0),
    )
    class_prior: tuple[float, ...] = _help(
        "Candidate strengths of the bank's log class frequency added to the logits (0 = none; 1 = Bayes' rule).",
        default=(0.0,),
    )
    val_episodes: int | None = _help(
        "Validation episodes that score the head choices (0 adaptation steps: forward passes only, so many are cheap); "
        "empty = val_episodes.",
        default=None,
    )
    criterion: str = _help(
        "What validation maximises when it picks the head: `accuracy`, or `accuracy_keep_f1` (the best accuracy among the "
        "choices whose mean macro-F1 is within f1_tolerance of the plain prototype head's, so a class prior cannot buy "
        "accuracy by predicting the frequent class everywhere), or `accuracy_plus_f1` (the best sum of the two).",
        default="accuracy",
    )
    f1_tolerance: float = _help("With criterion accuracy_keep_f1: how far below the plain head's macro-F1 a choice may be.",
                                default=0.01)

    def __post_init__(self) -> None:
        c = _Checks("head")
        c.positive(self.bank_examples, "bank_examples")
        if self.val_episodes is not None:
            c.positive(self.val_episodes, "val_episodes")
        for name in ("shrinkage", "temperature", "class_prior"):
            values = getattr(self, name)
            c.require(len(values) > 0, name, "list at least one value")
            for v in values:
                c.require(v >= 0 and (name != "shrinkage" or v <= 1), name,
                          f"got {v!r}; must be in [0, 1]" if name == "shrinkage" else f"got {v!r}; must be >= 0")
        c.choice(self.criterion, "criterion", ("accuracy", "accuracy_keep_f1", "accuracy_plus_f1"))
        c.positive(self.f1_tolerance, "f1_tolerance", allow_zero=True)
        c.done()


@dataclass(frozen=True)
class BudgetConfig:
    by_family: bool = _help(
        "After training, choose the adaptation budget per scenario family on the validation scenarios of each family (the "
        "kept init, the real adaptation loop) and record it (metalora/meta/budget.py); `adapt` then uses the budget of the "
        "scenario's family, and the best on average over families for a family validation never saw.", default=False)
    finetune_steps: tuple[int, ...] = _help(
        "Candidates beside the SGD step counts of adapt_steps_choices: ordinary fine-tuning from the init (AdaptConfig's AdamW "
        "rates) for these step counts, e.g. [30]. Scored only in the per-family choice.", default=())
    episodes: int = _help("Validation episodes per family for the per-family choice.", default=48)

    def __post_init__(self) -> None:
        c = _Checks("budget")
        for n in self.finetune_steps:
            c.positive(n, "finetune_steps")
        c.positive(self.episodes, "episodes")
        c.require(not self.finetune_steps or self.by_family, "finetune_steps", "are candidates of the per-family choice; set budget.by_family: true")
        c.done()


@dataclass(frozen=True)
class MetaTrainConfig:
    backbone: BackboneConfig = _help("The frozen foundation model.", default_factory=lambda: BackboneConfig(name="minilm"))
    lora: LoraSettings = _help("LoRA settings of the meta-init.", default_factory=lambda: LoraSettings(top_layers=2))
    algorithm: str = _help("`fomaml`, `maml` (second order), `reptile`, `metasgd`, or `multitask` (the pooled, ordinary-training baseline).", default="fomaml")
    metasgd_second_order: bool = _help("Meta-SGD through the inner gradients' graph (exact, slower); false trains the rates first-order.", default=False)
    scenarios: tuple[str, ...] = _help("Training scenarios: names or glob patterns (e.g. `synthetic/*`, `arsc/*`).", default=("synthetic/*",))
    exclude: tuple[str, ...] = _help("Names or glob patterns removed from `scenarios` (e.g. held-out domains).", default=())
    exclude_heldout: bool = _help("Drop scenarios whose card says heldout: true.", default=True)
    val_scenarios: tuple[str, ...] = _help("Scenarios for validation episodes (names or patterns); empty = no validation.", default=())
    val_split: str = _help("Split validation episodes are drawn from.", default="test")
    val_episodes: int = _help("Validation episodes (fixed seeds) per evaluation.", default=8)
    episodes: EpisodeConfig = _help("How episodes are sampled.", default_factory=EpisodeConfig)
    steps: int = _help("Outer (meta) steps.", default=200)
    meta_batch: int = _help("Episodes per outer step, over all processes together.", default=4)
    grad_accum: int = _help("Meta-batches whose gradients are accumulated before each outer update.", default=1)
    inner_steps: int = _help("SGD steps on the support set inside each episode.", default=3)
    inner_lr: float = _help("Learning rate of the inner SGD steps (initial value for Meta-SGD).", default=0.1)
    outer_lr: float = _help("Adam learning rate of the outer loop.", default=1e-3)
    logit_scale: float = _help("Initial temperature of the prototype head (learned during meta-training).", default=10.0)
    head_prior: bool = _help(
        "Also meta-learn a class-prior direction u: each class's head bias gets u . (its prototype), so classes that look like "
        "the frequent classes of training are favoured (learned from natural-balance query sets). fomaml, maml, metasgd.",
        default=False,
    )
    head: HeadBankConfig = _help("The head bank a meta-init stores and how its use is validated.", default_factory=HeadBankConfig)
    adapt_steps: int | None = _help("Adaptation steps recorded as the init's default for `metalora adapt` (empty: inner_steps).", default=None)
    adapt_steps_choices: tuple[int, ...] = _help(
        "Step counts every validation scores (SGD at inner_lr on the support set); the init records the best as its adaptation "
        "default, ties going to fewer steps, and the best init is kept by that best score. Chosen on val_scenarios, never on "
        "targets. Empty: adapt_steps as given.",
        default=(),
    )
    budget: BudgetConfig = _help("The adaptation budget chosen per family after training.", default_factory=BudgetConfig)
    eval_every: int = _help("Validate every N outer steps (0 = never).", default=50)
    cache_mb: float | None = _help(
        "Memory cap (MB) of the per-example cache of token ids and frozen-prefix states; the least recently drawn examples "
        "are dropped and recomputed when drawn again (same states, more time). Empty: no cap (fine for MiniLM; a base-size "
        "encoder's states take ~0.3 MB per example, so a long run on large pools needs one).",
        default=None,
    )
    checkpoint_every: int = _help("Write a resumable checkpoint every N outer steps (0 = never).", default=50)
    mixed_precision: str = _help("`no`, or `bf16` where the device supports it.", default="no")
    log_with: str = _help("`tensorboard` (logs under output_dir/logs) or `none`.", default="tensorboard")
    seed: int = _help("Seed of the episode stream; the same seed gives the same run on 1 or N processes.", default=0)
    output_dir: str = _help("Where checkpoints, logs and the meta-init (output_dir/meta-init) go.", default="runs/meta")
    feature_stats: int = _help(
        "Training examples per (scenario, class) whose features, under the finished init, give the class statistics "
        "saved with the meta-init for `adapt`'s calibrate augmentation (metalora/augment/calibration.py), e.g. 100. "
        "0: none (a pass over every training class costs minutes on a large suite; `bench --augment` computes them "
        "when a calibrate row needs them, `python -m metalora.augment.calibration INIT` adds them later).",
        default=0,
    )

    def __post_init__(self) -> None:
        c = _Checks("meta")
        c.choice(self.algorithm, "algorithm", ("fomaml", "maml", "reptile", "metasgd", "multitask"))
        c.require(len(self.scenarios) > 0, "scenarios", "list at least one scenario or pattern")
        for name in ("steps", "meta_batch", "grad_accum", "val_episodes"):
            c.positive(getattr(self, name), name)
        c.positive(self.inner_steps, "inner_steps", allow_zero=self.algorithm in ("fomaml", "maml", "multitask"))
        c.positive(self.inner_lr, "inner_lr")
        c.positive(self.outer_lr, "outer_lr")
        c.positive(self.logit_scale, "logit_scale")
        c.require(not self.head_prior or self.backbone.scoring == "pooled", "head_prior",
                  "shapes the prototype head; backbone.scoring=label_words has none")
        c.require(not self.head_prior or self.algorithm in ("fomaml", "maml", "metasgd"), "head_prior",
                  f"is learned through the head, which {self.algorithm} does not differentiate; use fomaml, maml or metasgd")
        c.positive(self.eval_every, "eval_every", allow_zero=True)
        c.positive(self.checkpoint_every, "checkpoint_every", allow_zero=True)
        if self.cache_mb is not None:
            c.positive(self.cache_mb, "cache_mb")
        if self.adapt_steps is not None:
            c.positive(self.adapt_steps, "adapt_steps", allow_zero=True)
        for n in self.adapt_steps_choices:
            c.positive(n, "adapt_steps_choices", allow_zero=True)
        c.require(not (self.adapt_steps_choices and self.adapt_steps is not None), "adapt_steps_choices",
                  "set adapt_steps or adapt_steps_choices, not both (the choice replaces adapt_steps)")
        c.require(not self.adapt_steps_choices or (bool(self.val_scenarios) and self.eval_every > 0), "adapt_steps_choices",
                  "choosing the adaptation steps needs validation episodes; set val_scenarios and eval_every > 0")
        c.require(not self.budget.by_family or bool(self.val_scenarios), "budget",
                  "by_family chooses the budget on each family's validation scenarios; set val_scenarios")
        several = any(len(getattr(self.head, n)) > 1 for n in ("shrinkage", "temperature", "class_prior"))
        c.require(not (self.head.bank and several) or (bool(self.val_scenarios) and self.eval_every > 0), "head",
                  "choosing among several head.shrinkage / temperature / class_prior values needs validation episodes; set "
                  "val_scenarios and eval_every > 0, or give one value each")
        c.choice(self.mixed_precision, "mixed_precision", ("no", "bf16"))
        c.choice(self.log_with, "log_with", ("tensorboard", "none"))
        c.positive(self.feature_stats, "feature_stats", allow_zero=True)
        c.require(not (self.algorithm == "multitask" and self.episodes.augments_tasks), "episodes",
                  "task augmentation (task_interpolation, merge_scenarios, k_shot_min, n_way_min) makes new tasks, which "
                  "the multitask baseline's per-scenario heads cannot serve; switch it off for algorithm multitask")
        c.done()
