"""Writing a :class:`~datasets.metrics.multilabel.MultilabelResult`: ``metrics.json``, a per-class CSV, a text table."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datasets.io import atomic_write_text, ensure_writable_dir, sha256_file
from datasets.metrics.multilabel import METRICS, MultilabelResult

__all__ = ["METRICS_JSON", "PER_CLASS_CSV", "per_class_rows", "write_metrics", "format_table"]

METRICS_JSON = "metrics.json"
PER_CLASS_CSV = "metrics_per_class.csv"


def per_class_rows(result: MultilabelResult) -> list[dict[str, Any]]:
    """One flat row per class: counts, threshold, each metric with its bootstrap mean and interval bounds."""
    rows = []
    for c in result.classes:
        row: dict[str, Any] = {
            "class": c.name,
            "n": c.n,
            "positives": c.positives,
            "negatives": c.negatives,
            "excluded": c.excluded or "",
            "threshold": c.threshold,
        }
        for m in METRICS:
            low, high = c.ci.get(m, (None, None))
            row.update({m: c.values.get(m), f"{m}_boot_mean": c.bootstrap_mean.get(m), f"{m}_ci_low": low})
            row[f"{m}_ci_high"] = high
        rows.append(row)
    return rows


def write_metrics(
    result: MultilabelResult,
    out_dir: str | os.PathLike,
    inputs: Mapping[str, str | os.PathLike],
    extra: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``metrics_per_class.csv`` atomically into ``out_dir``.

    The JSON holds :meth:`MultilabelResult.to_dict` plus ``inputs``: for each role (e.g. ``"scores"``), the path
    and SHA-256 of the file read, so a number can be traced back to the exact files that produced it.

    Args:
        result: the evaluation.
        out_dir: folder to write into (created if missing).
        inputs: role -> path of each file the evaluation read.
        extra: more JSON-serialisable fields for the top level (e.g. the command line, the benchmark name).

    Returns:
        Paths of the JSON and CSV files.
    """
    folder = ensure_writable_dir(out_dir)
    document = result.to_dict()
    document["inputs"] = {role: {"path": str(path), "sha256": sha256_file(path)} for role, path in inputs.items()}
    document.update(extra or {})
    json_path, csv_path = folder / METRICS_JSON, folder / PER_CLASS_CSV
    atomic_write_text(json_path, json.dumps(document, indent=2, allow_nan=False) + "\n")
    rows = per_class_rows(result)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if _missing(value) else value for key, value in row.items()} for row in rows)
    atomic_write_text(csv_path, buffer.getvalue())
    return json_path, csv_path


def format_table(result: MultilabelResult, metrics: tuple[str, ...] = METRICS) -> str:
    """A fixed-width text table: one line per class, then the macro line (and the bootstrap mean and interval).

    Args:
        result: the evaluation.
        metrics: columns to show. Defaults to all of :data:`~datasets.metrics.multilabel.METRICS`.
    """
    width = max(len("macro, bootstrap mean"), *(len(c.name) for c in result.classes))

    def line(label: str, positives: str, cells: list[str]) -> str:
        return f"{label:<{width}} {positives:>5} " + " ".join(f"{cell:>13}" for cell in cells)

    header = line("class", "pos", [m[:13] for m in metrics])
    lines = [header, "-" * len(header)]
    for c in result.classes:
        row = line(c.name, str(c.positives), [_cell(c.values.get(m)) for m in metrics])
        lines.append(row + (f"  (excluded: {c.excluded})" if c.excluded else ""))
    lines.append("-" * len(header))
    lines.append(line("macro", "", [_cell(result.macro[m]) for m in metrics]))
    if result.bootstrap:
        boot = result.bootstrap
        lines.append(line("macro, bootstrap mean", "", [_cell(boot["mean"][m]) for m in metrics]))
        level = f"{100 * boot['confidence']:g}% interval"
        lines.append(line(level, "", [f"{_cell(boot['ci'][m][0], 3)}-{_cell(boot['ci'][m][1], 3)}" for m in metrics]))
        lines.append(f"bootstrap: {boot['n_resamples']} resamples, seed {boot['seed']} ({boot['seeding']} seeding)")
    if result.excluded:
        lines.append("excluded from macro: " + ", ".join(f"{name} ({why})" for name, why in result.excluded.items()))
    return "\n".join(lines)


def _cell(value: float | None, digits: int = 4) -> str:
    return "-" if _missing(value) else f"{value:.{digits}f}"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
