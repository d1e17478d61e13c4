"""The SetFit baseline of the bench (Tunstall et al., "Efficient Few-Shot Learning Without Prompts", 2022).

SetFit is the strongest widely used few-shot text classifier that needs no meta-training: it fine-tunes
the whole sentence-embedding body contrastively on pairs drawn from the support set, then fits a
logistic-regression head on the new embeddings. It shows what full fine-tuning of the same backbone buys
from 5 shots, at what cost, beside the LoRA inits.

Why its own module: `setfit` is an optional extra (`pip install metalora[setfit]`), slow to import, and
nothing else in the bench needs it.

Fair footing with the LoRA methods: the same backbone, loaded fresh (never the LoRA-injected copy the
other methods share), saved once to a scratch folder and reloaded for every run so each run starts from
the pretrained weights; the backbone's `max_length` (SetFit truncates plainly, keeping the first tokens);
the support texts exactly as the other methods see them. Defaults follow PRODUCT.md's reference run:
20 pair iterations, 1 epoch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from metalora.adapt import Timer
from metalora.bench.methods import METRICS, RunResult, scores
from metalora.config import BackboneConfig
from metalora.errors import ConfigError


@dataclass(frozen=True)
class SetFitSettings:
    num_iterations: int = 20  # pairs generated per support example (SetFit's own default)
    num_epochs: int = 1
    batch_size: int = 16

    def __post_init__(self) -> None:
        flags = {"num_iterations": "--setfit-iterations", "num_epochs": "--setfit-epochs", "batch_size": "setfit.batch_size"}
        for name, flag in flags.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{flag} (setfit.{name}) must be a positive integer, got {value!r}")

    def describe(self, max_length: int) -> dict:
        return {"trainer": "setfit", "num_iterations": self.num_iterations, "num_epochs": self.num_epochs,
                "batch_size": self.batch_size, "max_length": max_length, "head": "sklearn LogisticRegression"}


class SetFitRunner:
    """Trains one SetFit model per (task, seed) from a saved copy of the bench's backbone."""

    def __init__(self, backbone: BackboneConfig, workdir: Path, settings: SetFitSettings = SetFitSettings()):
        from metalora.backbones import load_backbone

        self.settings = settings
        self.max_length = backbone.max_length
        self.workdir = Path(workdir)
        self.body = self.workdir / "body"
        fresh = load_backbone(backbone)
        fresh.model.save_pretrained(str(self.body))
        fresh.tokenizer.save_pretrained(str(self.body))
        del fresh

    def load(self):
        """A fresh SetFit model on the saved body, truncating at the backbone's `max_length`.

        setfit's own `max_length` argument only reaches its end-to-end head training; the contrastive
        body training and prediction use the body's `max_seq_length`, which for a plain transformers
        folder is its position limit: on music.t2 (long reviews) one run trained for 190 s instead of 36 s at 96 tokens.
        """
        from setfit import SetFitModel

        model = SetFitModel.from_pretrained(str(self.body))
        model.model_body.max_seq_length = self.max_length
        return model

    def run(self, support_texts: Sequence[str], support_labels: Sequence[int], num_labels: int,
            test_texts: Sequence[str], test_labels: Sequence[int], seed: int = 0) -> RunResult:
        """Fine-tune on the support set; the reported seconds cover loading the body and training, not scoring."""
        from datasets import Dataset
        from setfit import Trainer, TrainingArguments

        s = self.settings
        with Timer() as timer:
            model = self.load()
            args = TrainingArguments(output_dir=str(self.workdir / "run"), num_iterations=s.num_iterations,
                                     num_epochs=s.num_epochs, batch_size=s.batch_size, max_length=self.max_length,
                                     seed=seed, save_strategy="no", logging_strategy="no", report_to="none",
                                     show_progress_bar=False)
            train = Dataset.from_dict({"text": list(support_texts), "label": [int(y) for y in support_labels]})
            trainer = Trainer(model=model, args=args, train_dataset=train)
            _quiet(trainer)
            trainer.train()
        found = np.asarray(model.predict_proba(list(test_texts), batch_size=64, as_numpy=True))
        probs = np.zeros((len(test_texts), num_labels))
        probs[:, np.asarray(model.model_head.classes_, dtype=int)] = found  # a head fitted on classes 0..C-1
        return RunResult(scores(METRICS, list(test_labels), probs, num_labels), timer.seconds, timer.peak_mb)


def _quiet(trainer) -> None:
    """Drop the inner trainer's progress bar and log printer: the bench draws its own bar, one line per run.

    setfit 1.x builds its sentence-transformers trainer with default arguments, so `show_progress_bar`
    does not reach transformers' ProgressCallback/PrinterCallback; a setfit without `st_trainer` is left as is.
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    inner = getattr(trainer, "st_trainer", None)
    if inner is not None:
        for cb in (ProgressCallback, PrinterCallback):
            inner.pop_callback(cb)
