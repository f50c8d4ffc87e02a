"""Per-class and macro metrics of multi-label scores: the one implementation every medvl evaluation calls.

Validation steps of the LightningModules, the ``zeroshot`` commands and the ``metrics`` commands all go through
:func:`evaluate_multilabel`, so a number means the same thing wherever it is printed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from datasets.errors import InputError
from datasets.metrics.bootstrap import SEEDINGS, bootstrap_metrics
from datasets.metrics.thresholds import choose_thresholds

__all__ = ["METRICS", "ClassResult", "MultilabelResult", "evaluate_multilabel"]

METRICS = ("auroc", "auprc", "f1_weighted", "f1_positive", "f1_macro", "accuracy", "precision", "recall")
"""Metric names, in report order. ``f1_weighted`` is the support-weighted F1 over the two classes (what CT-CLIP, fVLM
and BrgSA call "F1"); ``precision``, ``recall`` and ``f1_positive`` are those of the positive class; ``f1_macro`` is the
plain mean of the positive- and negative-class F1."""


@dataclass
class ClassResult:
    """Metrics of one class.

    Attributes:
        name: class name.
        n: labelled samples of this class (NaN labels excluded).
        positives: labelled positives.
        negatives: labelled negatives.
        excluded: why the class is left out of the macro figures (``"no positives"``, ``"no negatives"``), or None.
        threshold: decision threshold (predict positive when ``score > threshold``); None when excluded.
        values: point estimate of each metric in :data:`METRICS` on the evaluated data; empty when excluded.
        bootstrap_mean: mean of each metric over the bootstrap resamples; empty without a bootstrap.
        ci: percentile confidence interval ``(low, high)`` of each metric; empty without a bootstrap.
        degenerate_resamples: resamples that drew no positive or no negative of this class (left out of its mean).
    """

    name: str
    n: int
    positives: int
    negatives: int
    excluded: str | None = None
    threshold: float | None = None
    values: dict[str, float] = field(default_factory=dict)
    bootstrap_mean: dict[str, float] = field(default_factory=dict)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    degenerate_resamples: int = 0


@dataclass
class MultilabelResult:
    """Metrics of a multi-label evaluation.

    Attributes:
        n: number of samples (rows).
        threshold_rule: ``"official"`` (per-class ROC-corner thresholds chosen on the evaluated data) or ``"given"``
            (thresholds chosen elsewhere, e.g. with :func:`datasets.metrics.choose_thresholds` on another split).
        classes: one :class:`ClassResult` per class, in input order.
        macro: mean over the included classes of each metric's point estimate.
        bootstrap: None, or the settings (``n_resamples``, ``seed``, ``seeding``, ``confidence``) with ``mean`` (the
            official "overall": mean over included classes of the per-class bootstrap means) and ``ci`` (percentile
            interval of the per-resample macro mean) for each metric.
    """

    n: int
    threshold_rule: str
    classes: list[ClassResult]
    macro: dict[str, float]
    bootstrap: dict[str, Any] | None = None

    @property
    def excluded(self) -> dict[str, str]:
        """Classes left out of the macro figures, mapped to the reason."""
        return {c.name: c.excluded for c in self.classes if c.excluded}

    @property
    def thresholds(self) -> np.ndarray:
        """``(C,)`` thresholds used, NaN for excluded classes."""
        return np.array([np.nan if c.threshold is None else c.threshold for c in self.classes])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (NaN becomes None)."""
        return _json_safe(
            {
                "n": self.n,
                "threshold_rule": self.threshold_rule,
                "metrics": list(METRICS),
                "macro": self.macro,
                "bootstrap": self.bootstrap,
                "excluded_classes": self.excluded,
                "positives": {c.name: c.positives for c in self.classes},
                "per_class": [vars(c) for c in self.classes],
            }
        )


def evaluate_multilabel(
    scores: Any,
    labels: Any,
    class_names: Sequence[str],
    thresholds: Any | None = None,
    n_resamples: int = 0,
    seed: int = 0,
    seeding: str = "official",
    confidence: float = 0.95,
) -> MultilabelResult:
    """AUROC, AUPRC and thresholded metrics per class, their macro means and optional bootstrap intervals.

    Classes whose labelled samples have no positives or no negatives are excluded from the macro figures and listed
    in :attr:`MultilabelResult.excluded`. The bootstrap follows the CT-CLIP / BrgSA protocol: thresholds held fixed,
    all classes resampled together, "overall" = mean over classes of the per-class bootstrap means.

    Args:
        scores: ``(N, C)`` finite scores (numpy array, torch tensor or nested lists); higher means more likely positive.
        labels: ``(N, C)`` with 1 (positive), 0 (negative) or NaN (not labelled: ignored for that class only).
        class_names: ``C`` names, in column order.
        thresholds: ``(C,)`` thresholds chosen elsewhere (predict positive when ``score > threshold``). Defaults to
            None: the official rule (:func:`datasets.metrics.choose_thresholds`) on the evaluated data itself.
        n_resamples: bootstrap resamples; 0 skips the bootstrap. The official protocol uses 5,000. Defaults to 0.
        seed: bootstrap base seed. Defaults to 0 (the official seeds with ``seeding="official"``).
        seeding: ``"official"`` (resample ``i`` seeded with ``seed + i``) or ``"independent"``; see
            :mod:`datasets.metrics.bootstrap`. Defaults to ``"official"``.
        confidence: level of the percentile intervals. Defaults to 0.95.

    Returns:
        A :class:`MultilabelResult`.

    Raises:
        InputError: shapes disagree, scores are not finite, labels are not 0/1/NaN, or a given threshold is missing
            for a class that can be evaluated.

    Example::

        result = evaluate_multilabel(scores, labels, ["Cardiomegaly", "Emphysema"], n_resamples=1000)
        result.macro["auroc"], result.bootstrap["ci"]["auroc"]  # point estimate, 95% interval
    """
    scores, labels = _validated(scores, labels, class_names, n_resamples, seeding, confidence)
    rule = "official" if thresholds is None else "given"
    chosen = choose_thresholds(scores, labels) if thresholds is None else _given_thresholds(thresholds, class_names)
    results = []
    for c, name in enumerate(class_names):
        labelled = ~np.isnan(labels[:, c])
        truth = labels[labelled, c].astype(int)
        result = ClassResult(name, int(truth.size), int(truth.sum()), int(truth.size - truth.sum()))
        if result.positives == 0 or result.negatives == 0:
            result.excluded = "no positives" if result.positives == 0 else "no negatives"
            chosen[c] = np.nan
        elif np.isnan(chosen[c]):
            raise InputError(f"no threshold given for class {name!r}, which has positives and negatives here")
        else:
            result.threshold = float(chosen[c])
            result.values = _point_metrics(scores[labelled, c], truth, result.threshold)
        results.append(result)
    included = [r for r in results if not r.excluded]
    macro = {m: _mean([r.values[m] for r in included]) for m in METRICS}
    bootstrap = None
    if n_resamples:
        bootstrap = _bootstrap(scores, labels, chosen, results, n_resamples, seed, seeding, confidence)
    return MultilabelResult(int(scores.shape[0]), rule, results, macro, bootstrap)


def _point_metrics(scores: np.ndarray, truth: np.ndarray, threshold: float) -> dict[str, float]:
    """Every metric of one class with scikit-learn; ``truth`` holds both classes."""
    predicted = (scores > threshold).astype(int)
    return {
        "auroc": float(roc_auc_score(truth, scores)),
        "auprc": float(average_precision_score(truth, scores)),
        "f1_weighted": float(f1_score(truth, predicted, average="weighted", zero_division=0)),
        "f1_positive": float(f1_score(truth, predicted, zero_division=0)),
        "f1_macro": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(truth, predicted)),
        "precision": float(precision_score(truth, predicted, zero_division=0)),
        "recall": float(recall_score(truth, predicted, zero_division=0)),
    }


def _bootstrap(
    scores: np.ndarray,
    labels: np.ndarray,
    thresholds: np.ndarray,
    results: list[ClassResult],
    n_resamples: int,
    seed: int,
    seeding: str,
    confidence: float,
) -> dict[str, Any]:
    """Fill each class's bootstrap mean and interval; return the macro bootstrap summary."""
    values, degenerate = bootstrap_metrics(scores, labels, thresholds, n_resamples, seed, seeding)
    tails = (50 * (1 - confidence), 50 * (1 + confidence))
    included = [c for c, r in enumerate(results) if not r.excluded]
    for c in included:
        results[c].degenerate_resamples = int(degenerate[c])
        for m in METRICS:
            column = values[m][:, c]
            results[c].bootstrap_mean[m] = _mean(column)
            results[c].ci[m] = _interval(column, tails)
    summary: dict[str, Any] = {"n_resamples": n_resamples, "seed": seed, "seeding": seeding, "confidence": confidence}
    summary["mean"] = {m: _mean([results[c].bootstrap_mean[m] for c in included]) for m in METRICS}
    summary["ci"] = {}
    for m in METRICS:
        per_resample = values[m][:, included]  # (R, C_included)
        usable = ~np.isnan(per_resample).all(axis=1)
        macro = np.nanmean(per_resample[usable], axis=1) if included else np.array([])
        summary["ci"][m] = _interval(macro, tails)
    return summary


def _interval(values: np.ndarray, tails: tuple[float, float]) -> tuple[float, float]:
    """Percentile interval of the non-NaN values, or (NaN, NaN) when there are none."""
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return (math.nan, math.nan)
    low, high = np.percentile(finite, tails)
    return (float(low), float(high))


def _mean(values: Sequence[float] | np.ndarray) -> float:
    """Mean of the non-NaN values, NaN when there are none."""
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    return float(array.mean()) if array.size else math.nan


def _as_array(value: Any, what: str) -> np.ndarray:
    """A float64 numpy array from a numpy array, torch tensor (any device) or nested sequence."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{what} must be numeric, got {type(value).__name__}: {err}") from err


def _validated(
    scores: Any, labels: Any, class_names: Sequence[str], n_resamples: int, seeding: str, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Check the inputs of :func:`evaluate_multilabel` and return them as float64 arrays."""
    scores = _as_array(scores, "scores")
    labels = _as_array(labels, "labels")
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise InputError(f"scores must have shape (N, C) with N > 0, got {scores.shape}")
    if labels.shape != scores.shape:
        raise InputError(f"labels have shape {labels.shape} but scores have {scores.shape}; expected the same (N, C)")
    if len(class_names) != scores.shape[1]:
        raise InputError(f"{len(class_names)} class names for {scores.shape[1]} score columns")
    if not np.isfinite(scores).all():
        row, col = np.argwhere(~np.isfinite(scores))[0]
        raise InputError(
            f"scores[{row}] (0-based row), class {class_names[col]!r} is {scores[row, col]}; expected finite"
        )
    bad = ~np.isnan(labels) & (labels != 0) & (labels != 1)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(
            f"labels[{row}] (0-based row), class {class_names[col]!r} is {labels[row, col]}; expected 0, 1 or NaN"
        )
    if n_resamples < 0:
        raise InputError(f"n_resamples must be >= 0, got {n_resamples}")
    if seeding not in SEEDINGS:
        raise InputError(f"unknown seeding {seeding!r}; choose from {list(SEEDINGS)}")
    if not 0 < confidence < 1:
        raise InputError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    return scores, labels


def _given_thresholds(thresholds: Any, class_names: Sequence[str]) -> np.ndarray:
    """Given thresholds as a ``(C,)`` float64 copy."""
    array = _as_array(thresholds, "thresholds").copy()
    if array.shape != (len(class_names),):
        raise InputError(f"thresholds must have shape ({len(class_names)},), one per class, got {array.shape}")
    return array


def _json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by None and tuples turned into lists, recursively."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
