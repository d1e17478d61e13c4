"""Config dataclasses and the YAML / `key=value` loader: defaults, precedence, and errors that name
the file and the key."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from metalora.config import (
    AdaptConfig,
    BackboneConfig,
    LoraSettings,
    MetaTrainConfig,
    dump_config,
    from_dict,
    load_config,
    parse_overrides,
    to_dict,
)
from metalora.errors import ConfigError, MetaloraError


def _yaml(tmp_path: Path, data, name: str = "adapt.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def test_defaults_and_frozen():
    cfg = AdaptConfig()
    assert cfg.backbone == BackboneConfig(name="minilm")
    assert cfg.lora == LoraSettings()
    assert (cfg.steps, cfg.optimizer, cfg.head_init) == (30, "adamw", "prototype")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 3  # type: ignore[misc]


def test_yaml_then_overrides(tmp_path):
    path = _yaml(tmp_path, {"steps": 7, "lr": 0.01, "backbone": {"name": "tiny-bert"}, "lora": {"r": 4, "target_modules": ["query"]}})
    cfg = load_config(AdaptConfig, path)
    assert cfg.steps == 7 and cfg.lr == 0.01
    assert cfg.backbone == BackboneConfig(name="tiny-bert")  # unspecified fields keep their defaults
    assert cfg.lora == LoraSettings(r=4, target_modules=("query",))
    # overrides win over the file, nested keys refine, YAML scalars are parsed
    cfg = load_config(AdaptConfig, path, ["steps=3", "lora.alpha=8", "backbone.max_length=64", "lora.target_modules=query,value"])
    assert (cfg.steps, cfg.lr) == (3, 0.01)
    assert cfg.lora == LoraSettings(r=4, alpha=8, target_modules=("query", "value"))
    assert cfg.backbone == BackboneConfig(name="tiny-bert", max_length=64)


def test_round_trip(tmp_path):
    cfg = AdaptConfig(backbone=BackboneConfig(name="tiny-gpt2", pooling="last"), lora=LoraSettings(r=2, top_layers=1, target_modules=("c_attn",)),
                      steps=4, optimizer="sgd", head_init="random", seed=3)
    assert from_dict(AdaptConfig, to_dict(cfg)) == cfg
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(AdaptConfig, tmp_path / "c.yaml") == cfg


def test_overrides_parse():
    assert parse_overrides(["a.b=1", "c=x", "d=", "e=[1, 2]"]) == {"a": {"b": 1}, "c": "x", "d": None, "e": [1, 2]}
    with pytest.raises(ConfigError, match="`steps` must look like key=value"):
        parse_overrides(["steps"])


def test_int_float_bool_coercion():
    assert from_dict(AdaptConfig, {"steps": "5", "lr": "1e-2", "seed": 2.0}) == AdaptConfig(steps=5, lr=0.01, seed=2)
    assert from_dict(BackboneConfig, {"load_in_4bit": "yes"}).load_in_4bit is True
    assert from_dict(BackboneConfig, {"load_in_4bit": False}).load_in_4bit is False


# -- bad input: every error is a ConfigError naming the file and the key --------------------------
def test_unknown_key_in_yaml_names_file_and_key(tmp_path):
    path = _yaml(tmp_path, {"stpes": 3})
    with pytest.raises(ConfigError) as err:
        load_config(AdaptConfig, path)
    msg = str(err.value)
    assert str(path) in msg and "`stpes`" in msg and "did you mean `steps`" in msg

    path = _yaml(tmp_path, {"lora": {"alhpa": 4}}, "nested.yaml")
    with pytest.raises(ConfigError) as err:
        load_config(AdaptConfig, path)
    msg = str(err.value)
    assert str(path) in msg and "`lora.alhpa`" in msg and "did you mean `lora.alpha`" in msg

    path = _yaml(tmp_path, {"lora": {"rank": 4}}, "far.yaml")  # nothing close: the known keys are listed
    with pytest.raises(ConfigError) as err:
        load_config(AdaptConfig, path)
    msg = str(err.value)
    assert str(path) in msg and "`lora.rank`" in msg and "known keys: r, alpha" in msg


def test_null_override_of_a_list_names_the_key():
    # was a TypeError from __post_init__ iterating None
    with pytest.raises(ConfigError, match=r"`adapt_steps_choices` cannot be null; give it a value \(an empty list is \[\]\)"):
        load_config(MetaTrainConfig, overrides=["adapt_steps_choices=null"])


def test_null_keeps_meaning_none_where_a_field_allows_it():
    assert load_config(MetaTrainConfig, overrides=["cache_mb=null"]).cache_mb is None


def test_unknown_key_in_override():
    with pytest.raises(ConfigError, match=r"command-line overrides: unknown key `backbone.nmae`"):
        load_config(AdaptConfig, overrides=["backbone.nmae=tiny-bert"])


@pytest.mark.parametrize(
    "data, key, words",
    [
        ({"steps": "many"}, "`steps`", "an integer"),
        ({"steps": 2.5}, "`steps`", "an integer"),
        ({"lr": [0.1]}, "`lr`", "a number"),
        ({"seed": True}, "`seed`", "a number"),
        ({"backbone": {"load_in_4bit": "maybe"}}, "`backbone.load_in_4bit`", "true or false"),
        ({"lora": 4}, "`lora`", "mapping of LoraSettings"),
        ({"lora": {"target_modules": 5}}, "`lora.target_modules`", "a list"),
        ({"steps": None}, "`steps`", "cannot be null"),
    ],
)
def test_wrong_type_names_file_and_key(tmp_path, data, key, words):
    path = _yaml(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(AdaptConfig, path)
    msg = str(err.value)
    assert str(path) in msg and key in msg and words in msg


@pytest.mark.parametrize(
    "data, field, words",
    [
        ({"optimizer": "adam"}, "adapt.optimizer", "'adamw', 'sgd'"),
        ({"head_init": "zeros"}, "adapt.head_init", "'prototype', 'random'"),
        ({"backbone": {"pooling": "max"}}, "backbone.pooling", "'auto', 'mean', 'cls', 'last'"),
        ({"backbone": {"dtype": "int8"}}, "backbone.dtype", "'float32'"),
        ({"steps": -1}, "adapt.steps", ">= 0"),
        ({"batch_size": 0}, "adapt.batch_size", "> 0"),
        ({"lora": {"dropout": 1.0}}, "lora.dropout", "[0, 1)"),
        ({"lora": {"top_layers": 0}}, "lora.top_layers", "> 0"),
    ],
)
def test_invalid_choice_or_value_names_file_and_field(tmp_path, data, field, words):
    path = _yaml(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(AdaptConfig, path)
    msg = str(err.value)
    assert str(path) in msg and f"{field}:" in msg and words in msg


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as err:
        AdaptConfig(steps=-1, optimizer="adam", head_init="zeros")
    msg = str(err.value)
    for field in ("adapt.steps", "adapt.optimizer", "adapt.head_init"):
        assert field in msg


def test_bad_files(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_config(AdaptConfig, missing)
    path = _yaml(tmp_path, "- steps: 3\n", "list.yaml")
    with pytest.raises(ConfigError) as err:
        load_config(AdaptConfig, path)
    assert str(path) in str(err.value) and "mapping" in str(err.value)
    path = _yaml(tmp_path, "steps: [1,\n", "broken.yaml")
    with pytest.raises(ConfigError) as err:
        load_config(AdaptConfig, path)
    assert str(path) in str(err.value) and "not valid YAML" in str(err.value)


def test_config_error_is_a_metalora_error():
    assert issubclass(ConfigError, MetaloraError) and issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    "data, words",
    [
        ({"adapt_steps_choices": [0, 2]}, "set val_scenarios"),
        ({"adapt_steps_choices": [0, 2], "val_scenarios": ["synthetic/x"], "eval_every": 0}, "eval_every > 0"),
        ({"adapt_steps_choices": [0, 2], "val_scenarios": ["synthetic/x"], "adapt_steps": 3}, "not both"),
        ({"adapt_steps_choices": [-1], "val_scenarios": ["synthetic/x"]}, ">= 0"),
    ],
)
def test_adapt_steps_choices_need_validation(tmp_path, data, words):
    path = _yaml(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(MetaTrainConfig, path)
    msg = str(err.value)
    assert str(path) in msg and "meta.adapt_steps_choices:" in msg and words in msg
