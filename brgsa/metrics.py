"""``brgsa metrics``: score per-volume zero-shot scores against CT-RATE-format labels.

The metrics are those of :mod:`datasets.metrics` (the one implementation every medvl evaluation uses); this module
reads the two CSV files, checks and pairs them, and writes ``metrics.json`` and ``metrics_per_class.csv``.

Formats:

* LABELS: CT-RATE's multi-abnormality label CSV, a ``VolumeName`` column and one 0/1 column per abnormality.
* SCORES: one row per volume and one column per abnormality, higher = more likely present. Either with a
  ``VolumeName`` column (rows are matched to LABELS by name) or without one, like BrgSA's released
  ``CT-RATE_epoch38.csv`` (rows are paired with LABELS by order). Score columns are either abnormality names from the
  LABELS header or the numbers ``0..C-1``, positions in the class list.

The class list is the LABELS header order, or the benchmark's with ``--benchmark NAME``
(``configs/benchmarks/NAME.yaml``, key ``classes``).
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from datasets.cli_utils import setup_logging
from datasets.errors import InputError
from datasets.metrics import SEEDINGS, choose_thresholds, evaluate_multilabel, format_table, write_metrics

__all__ = ["NAME_COLUMN", "BENCHMARK_DIR", "Table", "read_table", "benchmark_classes", "paired_arrays", "main"]

logger = logging.getLogger(__name__)

NAME_COLUMN = "VolumeName"
BENCHMARK_DIR = Path(__file__).resolve().parents[1] / "configs" / "benchmarks"


@dataclass
class Table:
    """A CSV of per-volume numbers.

    Attributes:
        path: the file read.
        names: volume names in row order, or None when the file has no ``VolumeName`` column.
        columns: the numeric column names, in file order.
        values: ``(N, len(columns))`` float64.
    """

    path: Path
    names: list[str] | None
    columns: list[str]
    values: np.ndarray


def read_table(path: str | Path, binary: bool = False) -> Table:
    """Read a score or label CSV.

    Args:
        path: the CSV file; a ``VolumeName`` column is optional, every other column must be numeric.
        binary: require every value to be 0 or 1 (labels). Defaults to False (finite numbers, for scores).

    Raises:
        FileNotFoundError: no such file.
        InputError: empty file, duplicate or blank column names, ragged rows, a non-numeric/non-finite value or (with
            ``binary``) a value other than 0/1, or a duplicated volume name; the message names file, line and column.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    if not rows or not rows[0]:
        raise InputError(f"{path} is empty; expected a CSV header line")
    header = [name.strip() for name in rows[0]]
    if len(set(header)) != len(header) or "" in header:
        raise InputError(f"{path}: the header has duplicate or blank column names: {header}")
    body = [(line, row) for line, row in enumerate(rows[1:], start=2) if row]
    if not body:
        raise InputError(f"{path} has a header but no data rows")
    name_index = header.index(NAME_COLUMN) if NAME_COLUMN in header else None
    columns = [name for i, name in enumerate(header) if i != name_index]
    values = np.empty((len(body), len(columns)))
    for r, (line, row) in enumerate(body):
        if len(row) != len(header):
            raise InputError(f"{path}, line {line}: {len(row)} fields, but the header has {len(header)}")
        cells = [cell for i, cell in enumerate(row) if i != name_index]
        for c, cell in enumerate(cells):
            values[r, c] = _number(cell, binary, f"{path}, line {line}, column {columns[c]!r}")
    names = None
    if name_index is not None:
        names = [row[name_index].strip() for _, row in body]
        seen: dict[str, int] = {}
        for (line, _), name in zip(body, names):
            if name in seen:
                raise InputError(f"{path}, line {line}: volume {name!r} already appears on line {seen[name]}")
            seen[name] = line
    return Table(path, names, columns, values)


def _number(cell: str, binary: bool, where: str) -> float:
    """Parse one cell; ``where`` names file, line and column in the error."""
    try:
        value = float(cell)
    except ValueError:
        raise InputError(f"{where}: {cell!r} is not a number") from None
    if binary and value not in (0.0, 1.0):
        raise InputError(f"{where}: label {cell!r}; expected 0 or 1")
    if not np.isfinite(value):
        raise InputError(f"{where}: {cell!r} is not a finite number")
    return value


def benchmark_classes(name: str) -> tuple[list[str], Path]:
    """The class list of benchmark ``name``, from ``configs/benchmarks/<name>.yaml`` (key ``classes``).

    Raises:
        InputError: no such benchmark (the message lists those that exist), or the file has no list of class names.
    """
    path = BENCHMARK_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in BENCHMARK_DIR.glob("*.yaml")) if BENCHMARK_DIR.is_dir() else []
        raise InputError(f"unknown benchmark {name!r}: no {path}; known benchmarks: {', '.join(known) or 'none yet'}")
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    classes = document.get("classes") if isinstance(document, dict) else None
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise InputError(f"{path}: expected a non-empty list of class names under the key 'classes'")
    return classes, path


def paired_arrays(
    scores: Table, labels: Table, classes: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pair the rows of a score table with a label table and select the classes to evaluate.

    Args:
        scores: score table; numbered columns ``0..C-1`` are positions in the class list, other columns are names.
        labels: CT-RATE-format label table (must have ``VolumeName``).
        classes: class list (e.g. a benchmark's). Defaults to the label columns (the scored ones when the score
            columns are names).

    Returns:
        ``(scores (N, K), labels (N, K), class names (K,))`` with rows in the order of the score file.

    Raises:
        InputError: a class missing from either file, a score volume absent from the labels, or (score file without
            volume names) different row counts.
    """
    if labels.names is None:
        raise InputError(f"{labels.path}: no {NAME_COLUMN!r} column; expected CT-RATE's label format")
    numbered = all(column.isdigit() for column in scores.columns)
    if classes is None:
        classes = labels.columns if numbered else [c for c in labels.columns if c in scores.columns]
    for column in [] if numbered else scores.columns:
        if column not in labels.columns:
            raise InputError(
                f"{scores.path}: score column {column!r} has no abnormality column in {labels.path} "
                f"(its columns: {', '.join(labels.columns)})"
            )
    for name in classes:
        if name not in labels.columns:
            raise InputError(f"{labels.path}: no column for class {name!r} (its columns: {', '.join(labels.columns)})")
    if numbered:
        if scores.columns != [str(i) for i in range(len(classes))]:
            raise InputError(
                f"{scores.path}: numbered score columns must be 0..{len(classes) - 1}, one per class in "
                f"{classes}; found {scores.columns}"
            )
        score_columns = list(range(len(classes)))
    else:
        missing = [name for name in classes if name not in scores.columns]
        if missing:
            raise InputError(f"{scores.path}: no score column for class(es) {missing}")
        score_columns = [scores.columns.index(name) for name in classes]
    rows = _label_rows(scores, labels)
    label_columns = [labels.columns.index(name) for name in classes]
    return scores.values[:, score_columns], labels.values[np.ix_(rows, label_columns)], list(classes)


def _label_rows(scores: Table, labels: Table) -> np.ndarray:
    """Index of the label row of each score row."""
    if scores.names is None:
        if len(scores.values) != len(labels.values):
            raise InputError(
                f"{scores.path} has {len(scores.values)} rows but {labels.path} has {len(labels.values)}: a score file "
                f"without a {NAME_COLUMN!r} column is paired with the labels by row order, so both need the same rows"
            )
        return np.arange(len(scores.values))
    where = {name: i for i, name in enumerate(labels.names)}
    for line, name in enumerate(scores.names, start=2):
        if name not in where:
            raise InputError(f"{scores.path}, line {line}: volume {name!r} is not in {labels.path}")
    if len(scores.names) < len(labels.names):
        logger.info("%d of %d labelled volumes have scores", len(scores.names), len(labels.names))
    return np.array([where[name] for name in scores.names])


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are :class:`InputError` (one line, exit status 2 via ``run_cli``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    """The ``brgsa metrics`` argument parser."""
    parser = _Parser(
        prog="brgsa metrics",
        description="Per-class and macro AUROC, AUPRC, F1, accuracy, precision and recall of per-volume scores, with "
        "bootstrap intervals (defaults: the official CT-CLIP/BrgSA protocol, ROC-corner thresholds chosen on the "
        "evaluated data and 5,000 resamples seeded 0..4999).",
    )
    parser.add_argument("scores", type=Path, help="CSV of per-volume scores (VolumeName column optional)")
    parser.add_argument("labels", type=Path, help="CT-RATE-format label CSV (VolumeName + one 0/1 column per class)")
    parser.add_argument("--benchmark", help="take the class list from configs/benchmarks/NAME.yaml")
    parser.add_argument(
        "--threshold-rule",
        choices=("official", "split"),
        default="official",
        help="official: per-class ROC-corner thresholds chosen on the evaluated data (optimistic); split: chosen on "
        "--threshold-scores/--threshold-labels and applied here. Default: official",
    )
    parser.add_argument("--threshold-scores", type=Path, help="scores of the split the thresholds are chosen on")
    parser.add_argument("--threshold-labels", type=Path, help="labels of the split the thresholds are chosen on")
    parser.add_argument("--bootstrap", type=int, default=5000, help="bootstrap resamples, 0 for none. Default: 5000")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap base seed. Default: 0")
    parser.add_argument("--seeding", choices=SEEDINGS, default="official", help="resample seeding. Default: official")
    parser.add_argument("--out", type=Path, default=Path("."), help="output folder. Default: the current folder")
    return parser


def main(args: list[str]) -> int:
    """Run ``brgsa metrics`` on the argument list (without the subcommand name); returns the exit status."""
    options = build_parser().parse_args(args)
    setup_logging()
    split_files = (options.threshold_scores, options.threshold_labels)
    if options.threshold_rule == "split" and None in split_files:
        raise InputError("--threshold-rule split needs both --threshold-scores and --threshold-labels")
    if options.threshold_rule == "official" and split_files != (None, None):
        raise InputError("--threshold-scores/--threshold-labels only apply with --threshold-rule split")
    if options.bootstrap < 0:
        raise InputError(f"--bootstrap must be >= 0, got {options.bootstrap}")
    inputs = {"scores": options.scores, "labels": options.labels}
    classes = None
    if options.benchmark:
        classes, inputs["benchmark"] = benchmark_classes(options.benchmark)
    score_table, label_table = read_table(options.scores), read_table(options.labels, binary=True)
    scores, labels, classes = paired_arrays(score_table, label_table, classes)
    thresholds = None
    if options.threshold_rule == "split":
        inputs.update(threshold_scores=options.threshold_scores, threshold_labels=options.threshold_labels)
        thresholds = _split_thresholds(options.threshold_scores, options.threshold_labels, classes)
    started = time.perf_counter()
    result = evaluate_multilabel(
        scores, labels, classes, thresholds=thresholds, n_resamples=options.bootstrap, seed=options.seed,
        seeding=options.seeding,
    )
    logger.info("metrics of %d volumes x %d classes in %.1f s", *scores.shape, time.perf_counter() - started)
    extra = {"command": "brgsa metrics", "arguments": list(args), "benchmark": options.benchmark, "classes": classes}
    json_path, csv_path = write_metrics(result, options.out, inputs, extra)
    print(format_table(result, ("auroc", "auprc", "f1_weighted", "accuracy", "precision", "recall")))
    print(f"wrote {json_path} and {csv_path}")
    return 0


def _split_thresholds(scores_path: Path, labels_path: Path, classes: list[str]) -> np.ndarray:
    """Official per-class thresholds chosen on another split; every class must be choosable there."""
    scores, labels, _ = paired_arrays(read_table(scores_path), read_table(labels_path, binary=True), classes)
    thresholds = choose_thresholds(scores, labels)
    unusable = [name for name, t in zip(classes, thresholds) if np.isnan(t)]
    if unusable:
        raise InputError(f"{labels_path}: no threshold can be chosen for {unusable}: no positives or negatives there")
    return thresholds
