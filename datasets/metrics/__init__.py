"""Multi-label classification metrics shared by every medvl model: one implementation, one meaning.

* :func:`evaluate_multilabel`: per-class AUROC, AUPRC, weighted/positive/macro F1, accuracy, precision, recall at
  per-class thresholds; macro means over classes that have both positives and negatives; bootstrap intervals.
* :func:`choose_thresholds`: the official CT-CLIP / BrgSA threshold rule (closest point to the ROC corner), to choose
  thresholds on one split and apply them on another.
* :func:`write_metrics`, :func:`format_table`: ``metrics.json`` (with input fingerprints), per-class CSV, text table.

Example::

    from datasets.metrics import choose_thresholds, evaluate_multilabel

    thresholds = choose_thresholds(val_scores, val_labels)  # (C,)
    result = evaluate_multilabel(test_scores, test_labels, class_names, thresholds=thresholds, n_resamples=5000)
    result.macro["auroc"], result.bootstrap["mean"]["f1_weighted"], result.excluded
"""

from datasets.metrics.bootstrap import SEEDINGS, bootstrap_metrics, resample_counts
from datasets.metrics.multilabel import METRICS, ClassResult, MultilabelResult, evaluate_multilabel
from datasets.metrics.report import METRICS_JSON, PER_CLASS_CSV, format_table, per_class_rows, write_metrics
from datasets.metrics.thresholds import choose_thresholds, roc_corner_threshold

__all__ = [
    "METRICS",
    "METRICS_JSON",
    "PER_CLASS_CSV",
    "SEEDINGS",
    "ClassResult",
    "MultilabelResult",
    "bootstrap_metrics",
    "choose_thresholds",
    "evaluate_multilabel",
    "format_table",
    "per_class_rows",
    "resample_counts",
    "roc_corner_threshold",
    "write_metrics",
]
