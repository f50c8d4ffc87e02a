"""Decision thresholds for turning per-class scores into binary predictions.

The rule is the one of the CT-CLIP / BrgSA evaluation protocol: per class, scan the sorted unique scores ``t`` with the
prediction ``score > t`` and keep the ``t`` closest to the ROC corner, i.e. minimising
``sqrt((1 - TPR)^2 + FPR^2)``; among equally close thresholds the largest wins.
"""

from __future__ import annotations

import numpy as np

__all__ = ["roc_corner_threshold", "choose_thresholds"]


def roc_corner_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The official threshold of one class: the unique score ``t`` closest to the ROC corner with ``score > t``.

    Args:
        scores: ``(N,)`` scores of one class, finite.
        positive: ``(N,)`` booleans, True for positive samples. Both classes must be present.

    Returns:
        The chosen threshold (one of the input scores); predict positive when ``score > threshold``.

    Raises:
        ValueError: the labels hold no positives or no negatives (the ROC curve is undefined).

    Example::

        >>> # t=0.1 and t=0.4 are both at distance 0.5 from the corner; the larger wins.
        >>> roc_corner_threshold(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True]))
        0.4
    """
    positive = np.asarray(positive, dtype=bool)
    pos_scores = np.sort(scores[positive])
    neg_scores = np.sort(scores[~positive])
    if pos_scores.size == 0 or neg_scores.size == 0:
        raise ValueError("a threshold needs both positive and negative samples")
    candidates = np.unique(scores)  # (U,) ascending
    # Samples strictly above each candidate: total minus those at or below it.
    tpr = (pos_scores.size - np.searchsorted(pos_scores, candidates, side="right")) / pos_scores.size
    fpr = (neg_scores.size - np.searchsorted(neg_scores, candidates, side="right")) / neg_scores.size
    distance = np.sqrt((1.0 - tpr) ** 2 + fpr**2)  # (U,)
    best = np.flatnonzero(distance == distance.min())[-1]  # ascending candidates: the last tie is the largest t
    return float(candidates[best])


def choose_thresholds(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Official per-class thresholds (:func:`roc_corner_threshold`) for a multi-label score matrix.

    Choose them on one split and pass them as ``thresholds`` to :func:`datasets.metrics.evaluate_multilabel` on
    another to avoid the optimism of tuning on the evaluated data.

    Args:
        scores: ``(N, C)`` finite scores.
        labels: ``(N, C)`` with 1 (positive), 0 (negative) or NaN (not labelled, ignored for that class).

    Returns:
        ``(C,)`` thresholds; NaN for a class whose labelled samples lack positives or negatives.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    thresholds = np.full(scores.shape[1], np.nan)
    for c in range(scores.shape[1]):
        labelled = ~np.isnan(labels[:, c])
        positive = labels[labelled, c] == 1
        if positive.any() and not positive.all():
            thresholds[c] = roc_corner_threshold(scores[labelled, c], positive)
    return thresholds
