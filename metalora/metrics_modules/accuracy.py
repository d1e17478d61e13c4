# Local `evaluate` metric script shipped with metalora (loaded offline via evaluate.load(<this file>)).
# Self-contained on purpose: evaluate copies this single file into its modules cache.
import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score

_DESCRIPTION = "Accuracy: fraction of predictions equal to the references (sklearn.metrics.accuracy_score)."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted label ids.
    references (list of int): true label ids.
    normalize (bool): if False, return the number of correct predictions. Defaults to True.
    sample_weight (list of float): optional per-example weights.
Returns:
    accuracy (float)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        if len(references) == 0:
            return {"accuracy": float("nan")}
        score = accuracy_score(
            np.asarray(references), np.asarray(predictions), normalize=normalize, sample_weight=sample_weight
        )
        return {"accuracy": float(score)}
