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
    area under the precision-recall curve, one step per unique score. Both are sums over the positive samples of
    cumulative weights, found by binary search in the sorted scores, so the cost is a cumulative sum over each
    weighting plus work proportional to the positives.

    Args:
        scores: ``(N,)`` scores.
        positive: ``(N,)`` booleans, True for positive samples.
        weights: ``(B, N)`` non-negative sample weights.

    Returns:
        ``(auroc, average_precision)``, each ``(B,)``; NaN where a weighting leaves no positive (or, for AUROC, no
        negative) weight.
    """
    positive = np.asarray(positive, dtype=bool)
    pos_order = np.flatnonzero(positive)[np.argsort(scores[positive], kind="stable")]  # (P,) positives, ascending
    neg_order = np.flatnonzero(~positive)[np.argsort(scores[~positive], kind="stable")]  # (M,) negatives, ascending
    pos_scores, neg_scores = scores[pos_order], scores[neg_order]
    pos_w = weights[:, pos_order]  # (B, P)
    pos_cum = _cumulative(pos_w)  # (B, P + 1): positive weight of the first k positives
    neg_cum = _cumulative(weights[:, neg_order])  # (B, M + 1)
    total_pos, total_neg = pos_cum[:, -1], neg_cum[:, -1]  # (B,)
    neg_below = neg_cum[:, np.searchsorted(neg_scores, pos_scores, side="left")]  # (B, P) negatives scoring lower
    neg_tied = neg_cum[:, np.searchsorted(neg_scores, pos_scores, side="right")] - neg_below
    concordant = np.einsum("bp,bp->b", pos_w, neg_below + 0.5 * neg_tied)
    auroc = _ratio(concordant, total_pos * total_neg, empty=np.nan)
    # Thresholding at a positive's score predicts everything scoring at least as high.
    tp = total_pos[:, None] - pos_cum[:, np.searchsorted(pos_scores, pos_scores, side="left")]  # (B, P)
    predicted = tp + total_neg[:, None] - neg_below
    average_precision = _ratio(np.einsum("bp,bp->b", pos_w, _ratio(tp, predicted)), total_pos, empty=np.nan)
    return auroc, average_precision


def _cumulative(weights: np.ndarray) -> np.ndarray:
    """``(B, K + 1)`` running sums of ``(B, K)`` weights, starting at 0."""
    out = np.zeros((weights.shape[0], weights.shape[1] + 1))
    np.cumsum(weights, axis=1, out=out[:, 1:])
    return out


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
