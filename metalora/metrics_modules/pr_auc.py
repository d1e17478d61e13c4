# Local `evaluate` metric script shipped with metalora (loaded offline via evaluate.load(<this file>)).
# Self-contained on purpose: evaluate copies this single file into its modules cache.
import datasets
import evaluate
import numpy as np
from sklearn.metrics import average_precision_score

_DESCRIPTION = (
    "PR-AUC: average precision of the positive class (label id 1) in a binary task "
    "(sklearn.metrics.average_precision_score). NaN when the references hold no positive."
)

_KWARGS_DESCRIPTION = """
Args:
    references (list of int): true label ids (0/1).
    prediction_scores (list of float): probability of the positive class (id 1) per example
        (a list of 2-element probability rows is accepted too; column 1 is used).
    sample_weight (list of float): optional per-example weights.
Returns:
    pr_auc (float)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PrAuc(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {"prediction_scores": datasets.Value("float64"), "references": datasets.Value("int64")}
                ),
                datasets.Features(
                    {
                        "prediction_scores": datasets.Sequence(datasets.Value("float64")),
                        "references": datasets.Value("int64"),
                    }
                ),
            ],
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.average_precision_score.html"
            ],
        )

    def _compute(self, references, prediction_scores, sample_weight=None):
        y = (np.asarray(references, dtype=np.int64) == 1).astype(np.int64)
        scores = np.asarray(prediction_scores, dtype=np.float64)
        if scores.ndim == 2:
            if scores.shape[1] != 2:
                raise ValueError(f"pr_auc is binary: expected 2 probability columns, got {scores.shape[1]}")
            scores = scores[:, 1]
        if not y.any():
            return {"pr_auc": float("nan")}
        return {"pr_auc": float(average_precision_score(y, scores, sample_weight=sample_weight))}
