"""Binary classification metrics under sample weights, vectorised over many weightings at once.

A bootstrap resample is a vector of counts (how often each sample was drawn), so every resample of a metric is the
metric under integer sample weights. The kernels here take a ``(B, N)`` weight matrix and return one value per
weighting (and class), equal to scikit-learn's metric on the explicitly resampled data, ties included.
"""

from __future__ import annotations

import numpy as np

__all__ = ["weighted_auroc_auprc", "threshold_metrics"]


def weighted_auroc_auprc(
    scores: np.ndarray, positive: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and average precision of one class for each weighting.

    AUROC is the Mann-Whitney statistic (tied scores count one half); average precision is scikit-learn's step-wise
    area under the precision-recall curve, one step per unique score.

    Args:
        scores: ``(N,)`` scores.
        positive: ``(N,)`` booleans, True for positive samples.
        weights: ``(B, N)`` non-negative sample weights.

    Returns:
        ``(auroc, average_precision)``, each ``(B,)``; NaN where a weighting leaves no positive (or, for AUROC, no
        negative) weight.
    """
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]  # (N,) ascending
    new_group = np.r_[True, ranked[1:] != ranked[:-1]]
    starts = np.flatnonzero(new_group)  # (U,) first sorted index of each tie group
    group = np.cumsum(new_group) - 1  # (N,) tie group of each sorted sample
    first = starts[group]  # (N,) start of each sample's group
    last = np.r_[starts[1:], len(ranked)][group]  # (N,) end (exclusive) of each sample's group
    sorted_w = weights[:, order]  # (B, N)
    pos_w = np.where(positive[order], sorted_w, 0.0)
    neg_w = np.subtract(sorted_w, pos_w, out=sorted_w)
    pos_cum = np.zeros((len(weights), len(ranked) + 1))  # (B, N + 1): weight before each sorted index
    neg_cum = np.zeros_like(pos_cum)
    np.cumsum(pos_w, axis=1, out=pos_cum[:, 1:])
    np.cumsum(neg_w, axis=1, out=neg_cum[:, 1:])
    total_pos, total_neg = pos_cum[:, -1], neg_cum[:, -1]  # (B,)
    neg_below = neg_cum[:, first]  # (B, N) negative weight strictly below each sample's score
    neg_tied = neg_cum[:, last] - neg_below
    concordant = (pos_w * (neg_below + 0.5 * neg_tied)).sum(axis=1)
    auroc = _ratio(concordant, total_pos * total_neg, empty=np.nan)
    # At a sample's score the predicted positives are its tie group and everything above it.
    tp = total_pos[:, None] - pos_cum[:, first]  # (B, N)
    predicted = tp + total_neg[:, None] - neg_below
    precision = _ratio(tp, predicted)
    average_precision = _ratio((pos_w * precision).sum(axis=1), total_pos, empty=np.nan)
    return auroc, average_precision


def threshold_metrics(
    predicted: np.ndarray, positive: np.ndarray, labelled: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """Thresholded metrics of fixed binary predictions for each weighting, all classes at once.

    Definitions follow scikit-learn with ``zero_division=0``: precision, recall and F1 of the positive class, the
    support-weighted mean of the positive- and negative-class F1 (``f1_score(average="weighted")``, the figure the
    CT-RATE literature reports as "F1") and their plain mean (``average="macro"``), and accuracy.

    Args:
        predicted: ``(N, C)`` booleans, the predictions.
        positive: ``(N, C)`` booleans, the labels.
        labelled: ``(N, C)`` booleans, False where a label is missing (the entry is ignored for that class).
        weights: ``(B, N)`` non-negative sample weights.

    Returns:
        Dict of ``(B, C)`` arrays: ``f1_weighted``, ``f1_positive``, ``f1_macro``, ``accuracy``, ``precision``,
        ``recall``. Entries with no labelled weight are NaN.
    """
    hit = predicted & labelled
    miss = ~predicted & labelled
    tp = weights @ (hit & positive).astype(np.float64)  # (B, C)
    fp = weights @ (hit & ~positive).astype(np.float64)
    fn = weights @ (miss & positive).astype(np.float64)
    tn = weights @ (miss & ~positive).astype(np.float64)
    total = tp + fp + fn + tn
    f1_positive = _ratio(2 * tp, 2 * tp + fp + fn)
    f1_negative = _ratio(2 * tn, 2 * tn + fp + fn)
    return {
        "f1_weighted": _ratio((tp + fn) * f1_positive + (tn + fp) * f1_negative, total, empty=np.nan),
        "f1_positive": f1_positive,
        "f1_macro": (f1_positive + f1_negative) / 2,
        "accuracy": _ratio(tp + tn, total, empty=np.nan),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
    }


def _ratio(numerator: np.ndarray, denominator: np.ndarray, empty: float = 0.0) -> np.ndarray:
    """Element-wise ``numerator / denominator`` with ``empty`` where the denominator is 0."""
    return np.divide(numerator, denominator, out=np.full(np.shape(numerator), empty), where=denominator > 0)
