# Local `evaluate` metric script shipped with metalora (loaded offline via evaluate.load(<this file>)).
# Self-contained on purpose: evaluate copies this single file into its modules cache.
import datasets
import evaluate
import numpy as np
from sklearn.metrics import roc_auc_score

_DESCRIPTION = (
    "Area under the ROC curve (sklearn.metrics.roc_auc_score). Binary: prediction_scores is the "
    "probability of the positive class (label id 1). Multiclass: prediction_scores are full "
    "probability rows and the score is the one-vs-rest macro average. NaN (not an error) when the "
    "references hold fewer than two classes."
)

_KWARGS_DESCRIPTION = """
Args:
    references (list of int): true label ids.
    prediction_scores: binary - list of float, the positive-class (id 1) probability per example
        (a list of 2-element probability rows is accepted too; column 1 is used);
        multiclass - list of probability rows, one column per label id.
    labels (list of int): multiclass only, the label id of each column. Defaults to range(n_columns).
    sample_weight (list of float): optional per-example weights.
Returns:
    auroc (float): NaN when fewer than two classes occur in the references. In the multiclass case
        the macro mean runs over the classes that occur in the references (a class that never
        occurs has no defined one-vs-rest AUROC); with every class present it equals
        roc_auc_score(..., multi_class="ovr", average="macro").
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Auroc(evaluate.Metric):
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
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.roc_auc_score.html"],
        )

    def _compute(self, references, prediction_scores, labels=None, sample_weight=None):
        y = np.asarray(references, dtype=np.int64)
        scores = np.asarray(prediction_scores, dtype=np.float64)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if len(np.unique(y)) < 2:
            return {"auroc": float("nan")}
        if scores.ndim == 2 and scores.shape[1] == 2 and (labels is None or list(labels) == [0, 1]):
            scores = scores[:, 1]
        if scores.ndim == 1:
            return {"auroc": float(roc_auc_score((y == 1).astype(np.int64), scores, sample_weight=w))}
        labels = np.arange(scores.shape[1]) if labels is None else np.asarray(list(labels))
        if len(labels) != scores.shape[1]:
            raise ValueError(f"auroc: {len(labels)} labels given for {scores.shape[1]} score columns")
        per_class = []
        for column, label in enumerate(labels):
            positive = y == label
            if positive.all() or not positive.any():
                continue  # one-vs-rest AUROC undefined for this class
            per_class.append(roc_auc_score(positive.astype(np.int64), scores[:, column], sample_weight=w))
        return {"auroc": float(np.mean(per_class)) if per_class else float("nan")}
