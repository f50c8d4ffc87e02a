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
from datasets.io import check_writable_dir
from datasets.labels.base import LabelSet, read_csv_table
from datasets.labels.ctrate import read_ctrate_labels
from datasets.metrics import SEEDINGS, choose_thresholds, evaluate_multilabel, format_table, write_metrics

__all__ = [
    "NAME_COLUMN", "BENCHMARK_DIR", "ScoreTable", "read_scores", "benchmark_classes", "load_pair", "build_parser",
    "main", "results_markdown",
]

_REPORTED = ("auroc", "f1_weighted", "accuracy", "precision", "recall")

logger = logging.getLogger(__name__)

NAME_COLUMN = "VolumeName"
BENCHMARK_DIR = Path(__file__).resolve().parents[1] / "configs" / "benchmarks"


@dataclass
class ScoreTable:
    """A CSV of per-volume scores.

    Attributes:
        path: the file read.
        names: volume names in row order, or None when the file has no ``VolumeName`` column.
        columns: the score column names, in file order.
        values: ``(N, len(columns))`` float64.
    """

    path: Path
    names: list[str] | None
    columns: list[str]
    values: np.ndarray


def read_scores(path: str | Path) -> ScoreTable:
    """Read a score CSV: an optional ``VolumeName`` column, every other column finite numbers.

    Raises:
        FileNotFoundError: no such file.
        InputError: empty file, duplicate column names, a missing, non-numeric or non-finite value, or a duplicated
            volume name; the message names the file, the row (header = row 1) and the column.
    """
    path = Path(path)
    header, rows = read_csv_table(path)
    if len(set(header)) != len(header) or "" in header:
        raise InputError(f"{path}: the header has duplicate or blank column names: {header}")
    if not rows:
        raise InputError(f"{path} has a header but no data rows")
    columns = [name for name in header if name != NAME_COLUMN]
    values = np.empty((len(rows), len(columns)))
    for r, row in enumerate(rows):
        for c, column in enumerate(columns):
            values[r, c] = _score(row.values.get(column), f"{path}: row {row.number}, column {column!r}")
    names = None
    if NAME_COLUMN in header:
        names = [row.values.get(NAME_COLUMN, "") for row in rows]
        first: dict[str, int] = {}
        for row, name in zip(rows, names):
            if name in first:
                raise InputError(f"{path}: row {row.number}: volume {name!r} already appears in row {first[name]}")
            first[name] = row.number
    return ScoreTable(path, names, columns, values)


def _score(cell: str | None, where: str) -> float:
    """Parse one score cell; ``where`` names file, row and column in the error."""
    if cell is None:
        raise InputError(f"{where}: missing value (the row has fewer fields than the header)")
    try:
        value = float(cell)
    except ValueError:
        raise InputError(f"{where}: {cell!r} is not a number") from None
    if not np.isfinite(value):
        raise InputError(f"{where}: {cell!r} is not a finite number")
    return value


def benchmark_classes(name: str) -> tuple[list[str], Path]:
    """The class list of benchmark ``name``, from ``configs/benchmarks/<name>.yaml`` (key ``classes``).

    Returns:
        The class names and the YAML file's path.

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


def load_pair(
    scores_path: str | Path, labels_path: str | Path, classes: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a score CSV and a CT-RATE-format label CSV, pair their rows and select the classes to evaluate.

    Args:
        scores_path: score CSV; numbered columns ``0..C-1`` are positions in the class list, other columns are class
            names. With a ``VolumeName`` column rows are matched by name, without one by row order.
        labels_path: label CSV, ``VolumeName`` + one 0/1 column per class.
        classes: class list (e.g. a benchmark's). Defaults to the label columns (the scored ones when the score
            columns are names).

    Returns:
        ``(scores (N, K), labels (N, K), class names (K,))`` with rows in the order of the score file.

    Raises:
        InputError: a class missing from either file, a score column that is no label column, a bad label value, a
            score volume absent from the labels, or (score file without volume names) different row counts.
    """
    scores = read_scores(scores_path)
    label_columns = [name for name in _header(Path(labels_path)) if name != NAME_COLUMN]
    numbered = all(column.isdigit() for column in scores.columns)
    if not numbered:
        unknown = [column for column in scores.columns if column not in label_columns]
        if unknown:
            raise InputError(
                f"{scores.path}: score column(s) {unknown} have no abnormality column in {labels_path} "
                f"(its columns: {', '.join(label_columns)})"
            )
    if classes is None:
        classes = _numbered_classes(label_columns, labels_path) if numbered else [
            name for name in label_columns if name in scores.columns]
    labels = read_ctrate_labels(labels_path, classes, layout="flat")
    if numbered:
        if scores.columns != [str(i) for i in range(len(classes))]:
            raise InputError(
                f"{scores.path}: numbered score columns must be 0..{len(classes) - 1}, one per class of {classes}; "
                f"found {scores.columns}"
            )
        score_columns = list(range(len(classes)))
    else:
        missing = [name for name in classes if name not in scores.columns]
        if missing:
            raise InputError(f"{scores.path}: no score column for class(es) {missing}")
        score_columns = [scores.columns.index(name) for name in classes]
    labels = _paired_labels(scores, labels)
    return scores.values[:, score_columns], labels.labels.astype(np.float64), list(classes)


def _numbered_classes(label_columns: list[str], labels_path: str | Path) -> list[str]:
    """The class order of numbered score columns given no benchmark: the label columns', checked against the registry.

    Numbered columns carry no class names, so nothing in the score file can show a wrong order. Label columns that
    hold a registered benchmark's classes must list them in that benchmark's order (the order its numbered score
    files use); columns that differ from a benchmark's in one or two names only (a misspelt header) are refused.
    """
    registry = [path.stem for path in sorted(BENCHMARK_DIR.glob("*.yaml"))] if BENCHMARK_DIR.is_dir() else []
    benchmarks = {name: benchmark_classes(name)[0] for name in registry}
    if any(label_columns == known for known in benchmarks.values()):
        return label_columns
    for name, known in benchmarks.items():
        if set(label_columns) == set(known):
            raise InputError(
                f"{labels_path} lists the classes of benchmark {name!r} in another order, and numbered score "
                f"columns are positions in a class list: pass --benchmark {name} (columns 0..{len(known) - 1} "
                "in its order) or name the score columns after the classes"
            )
    for name, known in benchmarks.items():
        extra, absent = sorted(set(label_columns) - set(known)), sorted(set(known) - set(label_columns))
        if len(label_columns) == len(known) and 0 < len(extra) <= 2:
            raise InputError(
                f"{labels_path}: the label columns are those of benchmark {name!r} but for {extra}, where it has "
                f"{absent}; fix the header, or pass --benchmark {name}"
            )
    logger.info("numbered score columns taken in the label columns' order: %s",
                ", ".join(f"{i}={name}" for i, name in enumerate(label_columns)))
    return label_columns


def _header(path: Path) -> list[str]:
    """The header row of a CSV file."""
    if not path.is_file():
        raise FileNotFoundError(2, "no label table", str(path))
    with open(path, newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), [])
    if NAME_COLUMN not in (name.strip() for name in header):
        raise InputError(f"{path}: no {NAME_COLUMN!r} column; expected CT-RATE's label format, header {header}")
    return [name.strip() for name in header]


def _paired_labels(scores: ScoreTable, labels: LabelSet) -> LabelSet:
    """The label rows of the score rows, in score order."""
    if scores.names is not None:
        if len(scores.names) < len(labels):
            logger.info("%d of %d labelled volumes have scores", len(scores.names), len(labels))
        return labels.select_images(scores.names, what=f"the score file {scores.path}")
    if len(scores.values) != len(labels):
        raise InputError(
            f"{scores.path} has {len(scores.values)} rows but {labels.source} has {len(labels)}: a score file without "
            f"a {NAME_COLUMN!r} column is paired with the labels by row order, so both need the same rows"
        )
    return labels


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
    check_writable_dir(options.out)  # fail before the bootstrap, without creating the folder
    inputs = {"scores": options.scores, "labels": options.labels}
    classes = None
    if options.benchmark:
        classes, inputs["benchmark"] = benchmark_classes(options.benchmark)
    scores, labels, classes = load_pair(options.scores, options.labels, classes)
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
    scores, labels, _ = load_pair(scores_path, labels_path, classes)
    thresholds = choose_thresholds(scores, labels)
    unusable = [name for name, t in zip(classes, thresholds) if np.isnan(t)]
    if unusable:
        raise InputError(f"{labels_path}: no threshold can be chosen for {unusable}: no positives or negatives there")
    return thresholds


def results_markdown(results: dict) -> str:
    """A README table of a ``metrics.json``: macro point estimate, bootstrap mean and interval per metric."""
    boot = results.get("bootstrap") or {}
    mean, interval = boot.get("mean", {}), boot.get("ci", {})
    lines = [
        f"{results['n']} volumes x {len(results['classes'])} classes, thresholds: {results['threshold_rule']} rule, "
        f"{boot.get('n_resamples', 0)} bootstrap resamples ({boot.get('seeding', '-')} seeding).",
        "",
        "| metric (macro over classes) | point estimate | bootstrap mean | 95% interval |",
        "|---|---|---|---|",
    ]
    for name in _REPORTED:
        low, high = interval.get(name, (float("nan"), float("nan")))
        lines.append(
            f"| {name} | {results['macro'][name]:.4f} | {mean.get(name, float('nan')):.4f} | {low:.3f}-{high:.3f} |"
        )
    return "\n".join(lines) + "\n"
