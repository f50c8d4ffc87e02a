"""`brgsa metrics` and the shared metrics on BrgSA's released CT-RATE scores (tests/data/brgsa_reference)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from brgsa.cli import main
from brgsa.metrics import load_pair
from datasets.io import sha256_file
from datasets.labels.ctrate import CLASSES
from datasets.metrics import evaluate_multilabel

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "brgsa_reference"
SCORES = REFERENCE / "CT-RATE_epoch38.csv"
LABELS = REFERENCE / "ct-rate_valid_labels.csv"

# Published / re-scored figures of the official protocol (BrgSA paper: macro AUC 82.9; README of the reference data).
PUBLISHED_MACRO_AUC = 0.8287
PUBLISHED_THRESHOLDED = {"f1_weighted": 0.793, "accuracy": 0.770, "precision": 0.432, "recall": 0.763}


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray, list[str]]:
    return load_pair(SCORES, LABELS)


def test_reference_files_pair_by_row_order(reference) -> None:
    scores, labels, classes = reference
    assert scores.shape == labels.shape == (3039, 18)
    assert classes == CLASSES


def test_macro_auc_reproduces_the_published_figure(reference) -> None:
    result = evaluate_multilabel(*reference)
    assert result.macro["auroc"] == pytest.approx(PUBLISHED_MACRO_AUC, abs=1e-4)
    assert not result.excluded
    for name, value in PUBLISHED_THRESHOLDED.items():  # point estimates at the official thresholds
        assert result.macro[name] == pytest.approx(value, abs=0.002), name


def test_small_seeded_bootstrap_is_close_to_the_point_estimate(reference) -> None:
    result = evaluate_multilabel(*reference, n_resamples=50, seed=0)
    again = evaluate_multilabel(*reference, n_resamples=50, seed=0)
    assert result.bootstrap == again.bootstrap  # seeded: identical
    for name in ("auroc", "f1_weighted", "accuracy", "precision", "recall"):
        assert result.bootstrap["mean"][name] == pytest.approx(result.macro[name], abs=0.005), name
        low, high = result.bootstrap["ci"][name]
        assert low < result.macro[name] < high


@pytest.mark.slow
def test_official_protocol_5000_resamples(tmp_path, capsys) -> None:
    assert main(["metrics", str(SCORES), str(LABELS), "--out", str(tmp_path)]) == 0
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert document["bootstrap"]["n_resamples"] == 5000 and document["bootstrap"]["seeding"] == "official"
    for name, value in PUBLISHED_THRESHOLDED.items():
        assert document["bootstrap"]["mean"][name] == pytest.approx(value, abs=0.002), name
    assert document["bootstrap"]["mean"]["auroc"] == pytest.approx(PUBLISHED_MACRO_AUC, abs=5e-4)


def test_cli_end_to_end_writes_metrics(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["metrics", str(SCORES), str(LABELS), "--bootstrap", "20", "--out", str(out)]) == 0
    document = json.loads((out / "metrics.json").read_text())
    assert document["n"] == 3039 and document["threshold_rule"] == "official"
    assert document["macro"]["auroc"] == pytest.approx(PUBLISHED_MACRO_AUC, abs=1e-4)
    assert document["positives"]["Lung nodule"] == 1361
    assert document["inputs"]["scores"]["sha256"] == sha256_file(SCORES)
    assert document["inputs"]["labels"]["sha256"] == sha256_file(LABELS)
    rows = list(csv.DictReader((out / "metrics_per_class.csv").open()))
    assert [row["class"] for row in rows] == CLASSES
    printed = capsys.readouterr().out
    assert "macro" in printed and "metrics.json" in printed


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _reference_rows(path: Path, n: int) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1 : n + 1]


@pytest.fixture
def small(tmp_path) -> dict[str, Path]:
    """The first 200 reference volumes: labels, and scores with volume names and class-named columns."""
    label_header, label_rows = _reference_rows(LABELS, 200)
    _, score_rows = _reference_rows(SCORES, 200)
    named = [[labels[0], *scores] for labels, scores in zip(label_rows, score_rows)]
    return {
        "labels": _write_csv(tmp_path / "labels.csv", label_header, label_rows),
        "scores": _write_csv(tmp_path / "scores.csv", label_header, named),
        "tmp": tmp_path,
    }


def test_named_scores_match_by_volume_and_split_thresholds(small, tmp_path) -> None:
    out = tmp_path / "split"
    args = [str(small["scores"]), str(small["labels"]), "--bootstrap", "0", "--out", str(out)]
    args += ["--threshold-rule", "split", "--threshold-scores", str(SCORES), "--threshold-labels", str(LABELS)]
    assert main(["metrics", *args]) == 0
    document = json.loads((out / "metrics.json").read_text())
    assert document["n"] == 200 and document["threshold_rule"] == "given"
    assert set(document["inputs"]) == {"scores", "labels", "threshold_scores", "threshold_labels"}
    full = evaluate_multilabel(*load_pair(SCORES, LABELS))
    assert [row["threshold"] for row in document["per_class"]] == pytest.approx(list(full.thresholds))


def _edit(path: Path, row: int, column: int, value: str) -> None:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    rows[row][column] = value
    _write_csv(path, rows[0], rows[1:])


def _drop_column(path: Path, column: int) -> None:
    with path.open(newline="") as handle:
        rows = [row[:column] + row[column + 1 :] for row in csv.reader(handle)]
    _write_csv(path, rows[0], rows[1:])


def _first_lines(path: Path, n: int) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[: n + 1]))


@pytest.mark.parametrize(
    "damage, culprit",
    [
        (lambda f: _drop_column(f["labels"], 3), ["labels.csv", "'Cardiomegaly'"]),
        (lambda f: _edit(f["labels"], 5, 2, "2"), ["labels.csv", "row 6", "'Arterial wall calcification'", "'2'"]),
        (lambda f: _edit(f["scores"], 7, 0, "train_9_a_1.nii.gz"), ["scores.csv", "'train_9_a_1.nii.gz'"]),
        (lambda f: _edit(f["scores"], 4, 3, "abc"), ["scores.csv", "row 5", "'Cardiomegaly'", "'abc'"]),
        (lambda f: _edit(f["scores"], 4, 3, "nan"), ["scores.csv", "row 5", "not a finite number"]),
    ],
    ids=["label-column-missing", "label-not-binary", "volume-not-labelled", "score-not-numeric", "score-nan"],
)
def test_bad_input_exits_2_with_one_line_naming_the_culprit(small, capsys, damage, culprit) -> None:
    damage(small)
    args = [str(small["scores"]), str(small["labels"]), "--bootstrap", "0", "--out", str(small["tmp"])]
    status = main(["metrics", *args])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and err.startswith("brgsa metrics: error:")
    for part in culprit:
        assert part in err, (part, err)


def test_unnamed_scores_need_the_same_row_count(tmp_path, capsys) -> None:
    scores = tmp_path / "scores.csv"
    scores.write_text("".join(SCORES.read_text().splitlines(keepends=True)[:101]))
    assert main(["metrics", str(scores), str(LABELS), "--bootstrap", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "100 rows" in err and "3039" in err and "row order" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--benchmark", "no-such-benchmark"], "unknown benchmark 'no-such-benchmark'"),
        (["--threshold-rule", "split"], "needs both --threshold-scores and --threshold-labels"),
        (["--threshold-scores", str(SCORES)], "only apply with --threshold-rule split"),
        (["--bootstrap", "many"], "invalid int value"),
    ],
)
def test_bad_options_exit_2(tmp_path, capsys, extra, message) -> None:
    assert main(["metrics", str(SCORES), str(LABELS), "--bootstrap", "0", "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_unknown_command_lists_the_commands(capsys) -> None:
    assert main(["no-such-command"]) == 2
    assert "choose from: metrics" in capsys.readouterr().err
    assert main([]) == 0
    assert "metrics" in capsys.readouterr().out


def _reorder_labels(tmp_path: Path, header_edit=None) -> Path:
    """The reference labels with their Cardiomegaly and Medical material columns swapped (header and values)."""
    with LABELS.open(newline="") as handle:
        rows = list(csv.reader(handle))
    a, b = rows[0].index("Medical material"), rows[0].index("Cardiomegaly")
    for row in rows:
        row[a], row[b] = row[b], row[a]
    if header_edit:
        rows[0] = [header_edit.get(name, name) for name in rows[0]]
    return _write_csv(tmp_path / "labels.csv", rows[0], rows[1:])


def test_numbered_scores_with_reordered_label_columns_need_the_benchmark(tmp_path, capsys) -> None:
    """Numbered columns are positions in CT-RATE's class list; label columns in another order paired them with the
    wrong classes (Cardiomegaly AUROC 0.75 instead of 0.93) without a word."""
    labels = _reorder_labels(tmp_path)
    assert main(["metrics", str(SCORES), str(labels), "--bootstrap", "0", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "in another order" in err and "--benchmark ct-rate" in err
    assert main(["metrics", str(SCORES), str(labels), "--bootstrap", "0", "--out", str(tmp_path / "b"),
                 "--benchmark", "ct-rate"]) == 0
    document = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert document["macro"]["auroc"] == pytest.approx(PUBLISHED_MACRO_AUC, abs=1e-4)


def test_a_misspelt_label_header_is_refused_with_numbered_scores(tmp_path, capsys) -> None:
    labels = _reorder_labels(tmp_path, header_edit={"Cardiomegaly": "Cardiomegally"})
    assert main(["metrics", str(SCORES), str(labels), "--bootstrap", "0", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "['Cardiomegally']" in err and "['Cardiomegaly']" in err and "fix the header" in err
