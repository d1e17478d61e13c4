# Local `evaluate` metric script shipped with metalora (loaded offline via evaluate.load(<this file>)).
# Self-contained on purpose: evaluate copies this single file into its modules cache.
import datasets
import evaluate
import numpy as np
from sklearn.metrics import f1_score

_DESCRIPTION = (
    "Macro F1: unweighted mean of per-label F1 (sklearn.metrics.f1_score, average='macro'). "
    "A label that appears in neither predictions nor references has an undefined F1 and is left out "
    "of the mean (zero_division=nan) instead of counting as 0."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted label ids.
    references (list of int): true label ids.
    labels (list of int): the label ids to average over (e.g. range(num_labels)). Defaults to the
        labels present in predictions or references.
    zero_division: value for a label with no predictions and no references; the default nan leaves
        such labels out of the mean. Pass 0 to count them as 0 (sklearn's historical behaviour).
    sample_weight (list of float): optional per-example weights.
Returns:
    macro_f1 (float)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MacroF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(self, predictions, references, labels=None, zero_division=np.nan, sample_weight=None):
        if len(references) == 0:
            return {"macro_f1": float("nan")}
        score = f1_score(
            np.asarray(references),
            np.asarray(predictions),
            labels=None if labels is None else list(labels),
            average="macro",
            zero_division=zero_division,
            sample_weight=sample_weight,
        )
        return {"macro_f1": float(score)}
