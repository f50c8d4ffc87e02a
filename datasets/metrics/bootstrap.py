"""Bootstrap resampling of multi-label metrics with fixed thresholds, vectorised over resamples.

Resample ``i`` draws ``N`` row indices with replacement (all classes share the draw, as in the CT-CLIP / BrgSA
protocol). With ``seeding="official"`` the draw is ``numpy.random.RandomState(seed + i).randint(0, N, N)``, the draw
``sklearn.utils.resample(idx, replace=True, random_state=i)`` makes, so ``seed=0`` reproduces the official protocol.
With ``seeding="independent"`` resample ``i`` uses ``numpy.random.default_rng((seed, i))``: different seeds then give
unrelated resamples (with the official seeding, seeds 0 and 1 share all but one resample).
"""

from __future__ import annotations

import numpy as np

from datasets.metrics.weighted import threshold_metrics, weighted_auroc_auprc

__all__ = ["SEEDINGS", "resample_counts", "bootstrap_metrics"]

SEEDINGS = ("official", "independent")


def resample_counts(n: int, resamples: range, seed: int = 0, seeding: str = "official") -> np.ndarray:
    """How often each row is drawn in each of the given resamples.

    Args:
        n: number of rows.
        resamples: indices of the resamples to draw, e.g. ``range(0, 500)``.
        seed: base seed. Defaults to 0 (the official protocol with ``seeding="official"``).
        seeding: ``"official"`` or ``"independent"`` (see the module docstring). Defaults to ``"official"``.

    Returns:
        ``(len(resamples), n)`` float64 counts; each row sums to ``n``.
    """
    if seeding not in SEEDINGS:
        raise ValueError(f"unknown seeding {seeding!r}; choose from {SEEDINGS}")
    if seeding == "official":
        draws = [np.random.RandomState(seed + i).randint(0, n, n) for i in resamples]
    else:
        draws = [np.random.default_rng((seed, i)).integers(0, n, n) for i in resamples]
    flat = (np.stack(draws) + n * np.arange(len(resamples))[:, None]).ravel()  # (B * n,) offsets keep rows apart
    return np.bincount(flat, minlength=len(resamples) * n).reshape(len(resamples), n).astype(np.float64)


def bootstrap_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    thresholds: np.ndarray,
    n_resamples: int,
    seed: int = 0,
    seeding: str = "official",
    chunk_size: int = 500,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every metric of every class on each bootstrap resample, thresholds held fixed.

    Args:
        scores: ``(N, C)`` finite scores.
        labels: ``(N, C)`` with 1, 0 or NaN (not labelled: ignored for that class).
        thresholds: ``(C,)`` fixed thresholds, predict positive when ``score > threshold``; NaN skips a class.
        n_resamples: number of resamples.
        seed: base seed. Defaults to 0.
        seeding: ``"official"`` or ``"independent"``. Defaults to ``"official"``.
        chunk_size: resamples evaluated together (memory about ``chunk_size * N * 8`` bytes a few times over).
            Defaults to 500.

    Returns:
        ``(values, degenerate)``: ``values`` maps each metric name (``auroc``, ``auprc`` and those of
        :func:`datasets.metrics.weighted.threshold_metrics`) to an ``(n_resamples, C)`` array, NaN for a skipped class
        and for resamples where the class drew no positive or no negative; ``degenerate`` is ``(C,)``, how many
        resamples were such for each class.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    n, n_classes = scores.shape
    labelled = ~np.isnan(labels)
    positive = labels == 1
    active = [c for c in range(n_classes) if not np.isnan(thresholds[c])]
    predicted = scores > np.nan_to_num(thresholds, nan=np.inf)  # (N, C)
    chunks: list[dict[str, np.ndarray]] = []
    for start in range(0, n_resamples, chunk_size):
        weights = resample_counts(n, range(start, min(start + chunk_size, n_resamples)), seed, seeding)  # (B, N)
        values = threshold_metrics(predicted, positive, labelled, weights)  # (B, C) each
        values["auroc"] = np.full((len(weights), n_classes), np.nan)
        values["auprc"] = np.full((len(weights), n_classes), np.nan)
        for c in active:
            rows = labelled[:, c]
            values["auroc"][:, c], values["auprc"][:, c] = weighted_auroc_auprc(
                scores[rows, c], positive[rows, c], weights[:, rows]
            )
        skipped = np.ones(n_classes, dtype=bool)
        skipped[active] = False
        invalid = np.isnan(values["auroc"]) | skipped  # (B, C) no positive or no negative drawn, or skipped class
        for array in values.values():
            array[invalid] = np.nan
        chunks.append(values)
    merged = {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}
    degenerate = np.isnan(merged["auroc"][:, active]).sum(axis=0)
    return merged, _spread(degenerate, active, n_classes)


def _spread(values: np.ndarray, columns: list[int], size: int) -> np.ndarray:
    """A ``(size,)`` int array holding ``values`` at ``columns`` and 0 elsewhere."""
    out = np.zeros(size, dtype=np.int64)
    out[columns] = values
    return out
