"""The SetFit baseline, for real: setfit trains a tiny random BERT saved from the bench's own backbone."""
from __future__ import annotations

import json

import pytest

from metalora.config import BackboneConfig
from metalora.errors import ConfigError

setfit = pytest.importorskip("setfit", reason="the SetFit baseline needs the `setfit` extra (in .[test])")

from metalora.bench import arsc as bench_arsc  # noqa: E402
from metalora.bench.setfit_runner import SetFitRunner, SetFitSettings  # noqa: E402
from tests.test_bench import make_arsc  # noqa: E402

POS = ["great lovely product works", "excellent value very happy", "perfect fit would buy again", "love it great gift"]
NEG = ["broken junk returned it", "awful waste of money", "terrible quality fell apart", "bad smell broke in days"]


@pytest.fixture
def arsc_dir(tmp_path):
    return make_arsc(tmp_path / "arsc")


@pytest.fixture
def runner(tmp_path):
    return SetFitRunner(BackboneConfig(name="tiny-bert", max_length=16), tmp_path / "work",
                        SetFitSettings(num_iterations=2, num_epochs=1, batch_size=8))


def test_setfit_fits_its_support_set_and_maps_labels_back(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # setfit's default output folder is ./checkpoints: nothing may land in the cwd
    texts, labels = POS + NEG, [1] * 4 + [0] * 4
    res = runner.run(texts, labels, 2, texts, labels, seed=0)
    assert res.metrics["accuracy"] == 1.0  # separable support, scored on itself: a swapped class column gives 0
    assert res.metrics["macro_f1"] == 1.0 and res.seconds > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_setfit_starts_every_run_from_the_pretrained_body(runner, monkeypatch):
    """The body each run starts training from is the pretrained one, not the body the last run trained."""
    import torch

    starts, ends = [], []
    real_train = setfit.Trainer.train

    def spy(self, *args, **kwargs):
        def weights():
            return {k: v.detach().clone() for k, v in self.model.model_body.state_dict().items()}

        starts.append(weights())
        result = real_train(self, *args, **kwargs)
        ends.append(weights())
        return result

    monkeypatch.setattr(setfit.Trainer, "train", spy)
    texts, labels = POS + NEG, [1] * 4 + [0] * 4
    a = runner.run(texts, labels, 2, POS[:2] + NEG[:2], [1, 1, 0, 0], seed=3)
    b = runner.run(texts, labels, 2, POS[:2] + NEG[:2], [1, 1, 0, 0], seed=3)
    assert len(starts) == len(ends) == 2
    moved = [k for k in starts[0] if not torch.equal(starts[0][k], ends[0][k])]
    assert moved, "the first run must change the body, or this test proves nothing"
    for k, v in starts[0].items():
        assert torch.equal(starts[1][k], v), k  # run 2 starts where run 1 started, not where it ended
    assert a.metrics == b.metrics


def test_setfit_truncates_at_the_backbones_max_length(runner):
    model = runner.load()
    assert model.model_body.max_seq_length == 16  # not the 512-position limit of the saved folder
    features = model.model_body.tokenize([" ".join(["word"] * 100)])
    assert features["input_ids"].shape[1] == 16


@pytest.mark.parametrize("field,flag", [("num_iterations", "--setfit-iterations"), ("num_epochs", "--setfit-epochs")])
def test_setfit_settings_name_the_flag(field, flag):
    with pytest.raises(ConfigError, match=flag):
        SetFitSettings(**{field: 0})


def test_bench_runs_setfit_beside_the_other_methods(arsc_dir, tmp_path):
    opts = bench_arsc.BenchOptions(methods=["frozen-lr", "setfit"], out=tmp_path / "o", shots=2, seeds=(0, 1),
                                   backbone="tiny-bert", curve_steps=(), progress=False,
                                   setfit=SetFitSettings(num_iterations=2))
    r = bench_arsc.run_arsc(arsc_dir, ["tgt.t2"], "all", "train", opts)
    assert list(r["methods"]) == ["frozen-lr", "setfit"] and not any("setfit" in n for n in r["notes"])
    m = r["methods"]["setfit"]
    assert m["adapt"]["trainer"] == "setfit" and m["adapt"]["num_iterations"] == 2
    runs = m["tasks"]["arsc/tgt.t2"]["runs"]
    assert [x["seed"] for x in runs] == [0, 1] and all(0.0 <= x["accuracy"] <= 1.0 and x["seconds"] > 0 for x in runs)
    saved = json.loads((tmp_path / "o" / "report.json").read_text())
    assert "| setfit |" in (tmp_path / "o" / "report.md").read_text() and "setfit" in saved["methods"]
