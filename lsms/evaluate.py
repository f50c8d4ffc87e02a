"""Held-out evaluation of a referring segmenter with its honest controls.

- true prompts: every expression with its own text;
- shuffled prompts: on slices with two or more lesions, each expression's text is replaced by one describing
  ANOTHER lesion of the same slice; a model that reads the text must then segment the wrong lesion;
- text-blind baselines computed from the ground truth: "every lesion" predicts the union of all lesions of the
  slice, "largest lesion" predicts the largest one. They show what ignoring the text can reach at best.

Two diagnostics split the error into "found the wrong lesion" and "drew the right lesion badly":

- grounding accuracy: on slices with two or more lesions, the fraction of expressions whose predicted mask overlaps
  the referred lesion more than any other lesion of the slice (an empty prediction counts as wrong);
- Dice and grounding accuracy by group: by referred-lesion size on the model grid (pixels) and by any manifest
  column named in ``group_by`` (e.g. the synthetic benchmark's ``attribute``).

"The lesions of a slice" are those that some row of the evaluated split refers to on that slice.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from datasets.errors import InputError
from datasets.refseg import RefSegRow
from datasets.refseg_datamodule import RefSegDataset, collate_refseg
from datasets.slices import SlicePreprocessing
from lsms.metrics import ReferringSegmentationMetrics

__all__ = [
    "SIZE_BINS_PIXELS",
    "breakdowns",
    "dice_per_expression",
    "evaluate_with_controls",
    "grounded",
    "shuffled_prompts",
]

SIZE_BINS_PIXELS = (20, 60, 150)
"""Upper edges of the referred-lesion size bins on the model grid, in pixels (the last bin is open)."""


def dice_per_expression(preds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Dice of each expression; ``preds`` and ``targets`` are bool (N, H, W). Empty vs empty scores 1."""
    intersection = (preds & targets).sum((1, 2))
    total = preds.sum((1, 2)) + targets.sum((1, 2))
    return np.where(total == 0, 1.0, 2 * intersection / np.maximum(total, 1))


def grounded(pred: np.ndarray, target: np.ndarray, others: Sequence[np.ndarray]) -> bool:
    """Whether a prediction overlaps its referred lesion more than every other lesion of its slice.

    Args:
        pred: bool (H, W) prediction.
        target: bool (H, W) referred lesion.
        others: the other lesions of the slice, bool (H, W) each (at least one).

    Returns:
        True when the overlap with ``target`` beats every overlap with ``others``; an empty prediction is never
        grounded.
    """
    on_target = int((pred & target).sum())
    return on_target > max(int((pred & other).sum()) for other in others)


def _size_bin(pixels: int) -> str:
    lower = 0
    for upper in SIZE_BINS_PIXELS:
        if pixels < upper:
            return f"{lower}-{upper - 1} px"
        lower = upper
    return f">={lower} px"


def _grouped(values: np.ndarray, keys: Sequence[str]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[float]] = defaultdict(list)
    for key, value in zip(keys, values):
        groups[key].append(float(value))
    return {key: _summary(np.asarray(groups[key])) for key in sorted(groups)}


def breakdowns(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The breakdowns of an :func:`evaluate_with_controls` result as text, for tables and logs.

    Returns:
        ``(metric, group, "value: mean (n=N), ...")`` per breakdown: Dice first, then grounding accuracy.
    """
    sources = [("Dice", result["dice_by"]), ("Grounding accuracy", result["multi_lesion"]["grounding_accuracy_by"])]
    return [
        (metric, group, ", ".join(f"{key}: {value['mean']:.2f} (n={value['n']})" for key, value in values.items()))
        for metric, groups in sources
        for group, values in groups.items()
        if values
    ]


def _slice_key(row: RefSegRow) -> tuple[str, int | None]:
    return str(row.image), row.slice_index


def shuffled_prompts(rows: Sequence[RefSegRow], seed: int = 0) -> list[str | None]:
    """For each row, a text of another lesion of the same slice (None when the slice has one lesion)."""
    texts_by_lesion: dict[tuple[str, int | None], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        texts_by_lesion[_slice_key(row)][row.lesion_id].append(row.text)
    rng = random.Random(seed)
    shuffled: list[str | None] = []
    for row in rows:
        others = [lesion for lesion in sorted(texts_by_lesion[_slice_key(row)]) if lesion != row.lesion_id]
        if not others:
            shuffled.append(None)
            continue
        shuffled.append(rng.choice(texts_by_lesion[_slice_key(row)][rng.choice(others)]))
    return shuffled


@torch.inference_mode()
def _predict(net: torch.nn.Module, dataset: RefSegDataset, texts: Sequence[str], batch_size: int) -> np.ndarray:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_refseg)
    predictions, start = [], 0
    for batch in loader:
        count = batch["image"].shape[0]
        logits = net(batch["image"], list(texts[start : start + count])).logits  # (B, 1, S, S)
        predictions.append((logits[:, 0] > 0).numpy())  # sigmoid > 0.5
        start += count
    return np.concatenate(predictions)


def _targets(dataset: RefSegDataset) -> np.ndarray:
    """The ``(N, S, S)`` target masks.

    Raises:
        InputError: rows whose mask holds no pixel of their lesion at their slice (a wrong ``mask_value`` or slice):
            scored, they would pass as lesions the model missed.
    """
    masks, empty = [], []
    for i, row in enumerate(dataset.rows):
        sample = dataset[i]  # only the mask is kept: holding every image would cost the whole split's memory
        masks.append(sample["mask"][0].numpy() > 0.5)
        if sample["meta"].get("target_pixels", 1) == 0:  # entries cached before the count existed pass unchecked
            empty.append(row)
    if empty:
        row = empty[0]
        where = "" if row.slice_index is None else f" at slice {row.slice_index}"
        value = "(any)" if row.mask_value is None else row.mask_value
        raise InputError(
            f"{len(empty)} manifest row(s) refer to no lesion: the first, row {row.number} (row_id {row.row_id!r}), "
            f"has no pixel of mask_value {value} in {row.mask}{where}; "
            "fix the manifest (python -m datasets check MANIFEST --full lists every such row)"
        )
    return np.stack(masks)


def _summary(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(values.mean()) if len(values) else None, "n": int(len(values))}  # None: no row to score


def evaluate_with_controls(
    net: torch.nn.Module,
    rows: Sequence[RefSegRow],
    preprocessing: SlicePreprocessing,
    cache_dir: str | None = None,
    batch_size: int = 32,
    seed: int = 0,
    group_by: Sequence[str] = ("attribute",),
) -> dict[str, Any]:
    """Score ``net`` on ``rows`` with true prompts, shuffled prompts and the text-blind baselines.

    Args:
        group_by: manifest columns to break Dice and grounding accuracy down by: ``template_id``, ``case_id`` or any
            extra column (``RefSegRow.extra``); a column missing from some row is left out. Defaults to
            ``("attribute",)``.

    Raises:
        InputError: a ``group_by`` column that no row has (the message lists the available ones).

    Returns:
        A JSON-ready dict: ``true_prompts`` (all metrics of :class:`ReferringSegmentationMetrics` over all rows),
        on the multi-lesion subset ``multi_lesion`` with Dice of true prompts, shuffled prompts, "every lesion"
        and "largest lesion", the gap true - shuffled, the grounding accuracy and ``grounding_accuracy_by`` (per
        referred-lesion size bin and per value of each ``group_by`` column), and ``dice_by`` with Dice (true prompts)
        per size bin and per value of each ``group_by`` column.
    """
    columns = [{**row.extra, "template_id": row.template_id, "case_id": row.case_id} for row in rows]
    unknown = [column for column in group_by if rows and not any(column in values for values in columns)]
    if unknown:
        raise InputError(
            f"group_by columns {unknown} are in no manifest row; available: {sorted(set().union(*columns))}"
        )
    net.eval()
    dataset = RefSegDataset(rows, preprocessing, cache_dir)
    targets = _targets(dataset)
    true_preds = _predict(net, dataset, [row.text for row in rows], batch_size)
    metrics = ReferringSegmentationMetrics()
    metrics.update(torch.from_numpy(true_preds[:, None]), torch.from_numpy(targets[:, None]))
    true_metrics = {name: float(value) for name, value in metrics.compute().items()}
    true_dice = dice_per_expression(true_preds, targets)

    shuffled = shuffled_prompts(rows, seed)
    multi = np.array([text is not None for text in shuffled])
    subset = [i for i in range(len(rows)) if multi[i]]
    none = np.zeros((0, *targets.shape[1:]), dtype=bool)  # no slice with two lesions (e.g. an LViT manifest)
    shuffled_preds = _predict(
        net, RefSegDataset([rows[i] for i in subset], preprocessing, cache_dir), [shuffled[i] for i in subset],
        batch_size,
    ) if subset else none
    shuffled_dice = dice_per_expression(shuffled_preds, targets[subset])

    lesions: dict[tuple[str, int | None], dict[str, np.ndarray]] = defaultdict(dict)
    for row, target in zip(rows, targets):
        lesions[_slice_key(row)][row.lesion_id] = target
    def stacked(masks: list[np.ndarray]) -> np.ndarray:
        return np.stack(masks) if masks else none

    every = stacked([np.logical_or.reduce(list(lesions[_slice_key(rows[i])].values())) for i in subset])
    largest = stacked([max(lesions[_slice_key(rows[i])].values(), key=lambda m: int(m.sum())) for i in subset])
    is_grounded = np.array([
        grounded(true_preds[i], targets[i],
                 [mask for lesion, mask in lesions[_slice_key(rows[i])].items() if lesion != rows[i].lesion_id])
        for i in subset
    ], dtype=bool)
    sizes = [_size_bin(int(target.sum())) for target in targets]
    dice_by = {"size": _grouped(true_dice, sizes)}
    grounding_by = {"size": _grouped(is_grounded, [sizes[i] for i in subset])}
    for column in group_by:
        if rows and all(column in values for values in columns):
            dice_by[column] = _grouped(true_dice, [values[column] for values in columns])
            grounding_by[column] = _grouped(is_grounded, [columns[i][column] for i in subset])
    return {
        "expressions": len(rows),
        "true_prompts": true_metrics,
        "multi_lesion": {
            "expressions": len(subset),
            "dice_true_prompts": _summary(true_dice[subset]),
            "dice_shuffled_prompts": _summary(shuffled_dice),
            "dice_every_lesion_baseline": _summary(dice_per_expression(every, targets[subset])),
            "dice_largest_lesion_baseline": _summary(dice_per_expression(largest, targets[subset])),
            "gap_true_minus_shuffled": float(true_dice[subset].mean() - shuffled_dice.mean()) if subset else None,
            "grounding_accuracy": _summary(is_grounded.astype(float)),
            "grounding_accuracy_by": grounding_by,
        },
        "single_lesion_dice_true_prompts": _summary(true_dice[~multi]),
        "dice_by": dice_by,
    }
