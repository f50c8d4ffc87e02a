"""Tests of the shared multi-label metrics (datasets.metrics) against scikit-learn and hand-checked examples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.utils import resample

from datasets.errors import InputError
from datasets.metrics import (
    METRICS,
    bootstrap_metrics,
    choose_thresholds,
    evaluate_multilabel,
    format_table,
    resample_counts,
    roc_corner_threshold,
    write_metrics,
)
from datasets.metrics.weighted import weighted_auroc_auprc


def _random_problem(n: int = 200, c: int = 4, seed: int = 0, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, c)) < np.linspace(0.15, 0.5, c)).astype(float)
    scores = labels * rng.uniform(0.2, 1.0, c) + rng.normal(size=(n, c))  # informative, varying difficulty
    return (np.round(scores, 1) if ties else scores), labels


def _sklearn_metrics(truth: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = (scores > threshold).astype(int)
    return {
        "auroc": roc_auc_score(truth, scores),
        "auprc": average_precision_score(truth, scores),
        "f1_weighted": f1_score(truth, predicted, average="weighted"),
        "f1_positive": f1_score(truth, predicted),
        "f1_macro": f1_score(truth, predicted, average="macro"),
        "accuracy": accuracy_score(truth, predicted),
        "precision": precision_score(truth, predicted, zero_division=0),
        "recall": recall_score(truth, predicted),
    }


@pytest.mark.parametrize("ties", [False, True])
def test_point_metrics_and_macro_match_sklearn(ties: bool) -> None:
    scores, labels = _random_problem(ties=ties)
    result = evaluate_multilabel(scores, labels, ["a", "b", "c", "d"], thresholds=np.zeros(4))
    for c, cls in enumerate(result.classes):
        expected = _sklearn_metrics(labels[:, c], scores[:, c], 0.0)
        for name in METRICS:
            assert cls.values[name] == pytest.approx(expected[name], abs=1e-12), name
    per_class = [roc_auc_score(labels[:, c], scores[:, c]) for c in range(4)]
    assert result.macro["auroc"] == pytest.approx(np.mean(per_class))


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_kernel_equals_sklearn_on_explicit_resamples(ties: bool) -> None:
    scores, labels = _random_problem(n=150, c=1, seed=3, ties=ties)
    weights = resample_counts(150, range(4))  # (4, 150)
    auroc, auprc = weighted_auroc_auprc(scores[:, 0], labels[:, 0] == 1, weights)
    for i in range(4):
        rows = np.random.RandomState(i).randint(0, 150, 150)  # the official draw of resample i
        assert auroc[i] == pytest.approx(roc_auc_score(labels[rows, 0], scores[rows, 0]), abs=1e-12)
        assert auprc[i] == pytest.approx(average_precision_score(labels[rows, 0], scores[rows, 0]), abs=1e-12)


def test_official_resamples_are_sklearn_resample_with_seed_i() -> None:
    counts = resample_counts(50, range(3, 6))
    for row, i in zip(counts, range(3, 6)):
        drawn = resample(np.arange(50), replace=True, random_state=i)
        assert np.array_equal(row, np.bincount(drawn, minlength=50))
    independent = resample_counts(50, range(3), seed=7, seeding="independent")
    assert independent.shape == (3, 50) and (independent.sum(axis=1) == 50).all()
    assert not np.array_equal(independent, resample_counts(50, range(3), seed=8, seeding="independent"))


def test_bootstrap_resamples_equal_sklearn_on_resampled_rows() -> None:
    scores, labels = _random_problem(n=120, c=3, seed=1)
    thresholds = choose_thresholds(scores, labels)
    values, degenerate = bootstrap_metrics(scores, labels, thresholds, n_resamples=5, seed=10, chunk_size=2)
    assert (degenerate == 0).all()
    for i in range(5):
        rows = np.random.RandomState(10 + i).randint(0, 120, 120)
        for c in range(3):
            expected = _sklearn_metrics(labels[rows, c], scores[rows, c], thresholds[c])
            for name in METRICS:
                assert values[name][i, c] == pytest.approx(expected[name], abs=1e-12), (name, i, c)


def test_threshold_rule_on_a_hand_checked_example() -> None:
    # Negatives score 0.1 and 0.4, positives 0.35 and 0.8; prediction is score > t, distance sqrt((1-TPR)^2 + FPR^2):
    #   t=0.1:  predicted {0.35, 0.4, 0.8} -> TPR 1,   FPR 1/2 -> 0.5
    #   t=0.35: predicted {0.4, 0.8}       -> TPR 1/2, FPR 1/2 -> 0.707
    #   t=0.4:  predicted {0.8}            -> TPR 1/2, FPR 0   -> 0.5
    #   t=0.8:  predicted {}               -> TPR 0,   FPR 0   -> 1
    # 0.1 and 0.4 tie at 0.5; the largest threshold wins.
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    assert roc_corner_threshold(scores, np.array([False, False, True, True])) == 0.4
    # Perfect separation: t=0.2 predicts exactly the positives (TPR 1, FPR 0, distance 0).
    assert roc_corner_threshold(np.array([0.1, 0.2, 0.7, 0.9]), np.array([False, False, True, True])) == 0.2


def test_nan_labels_are_ignored_per_class() -> None:
    scores, labels = _random_problem(n=100, c=2, seed=2)
    masked = labels.copy()
    masked[:30, 0] = np.nan  # class 0 labelled on rows 30.. only; class 1 fully labelled
    result = evaluate_multilabel(scores, masked, ["x", "y"], n_resamples=3)
    subset = evaluate_multilabel(scores[30:, :1], labels[30:, :1], ["x"])
    full = evaluate_multilabel(scores[:, 1:], labels[:, 1:], ["y"])
    assert result.classes[0].n == 70 and result.classes[1].n == 100
    assert result.classes[0].values == subset.classes[0].values
    assert result.classes[1].values == full.classes[0].values
    assert result.classes[0].threshold == subset.classes[0].threshold


def test_class_without_positives_is_excluded_and_listed() -> None:
    scores, labels = _random_problem(n=80, c=3, seed=4)
    labels[:, 1] = 0
    labels[:5, 2] = np.nan
    labels[5:, 2] = 1
    result = evaluate_multilabel(scores, labels, ["ok", "none", "all"], n_resamples=4)
    assert result.excluded == {"none": "no positives", "all": "no negatives"}
    assert result.macro["auroc"] == result.classes[0].values["auroc"]
    assert result.bootstrap["mean"]["auroc"] == result.classes[0].bootstrap_mean["auroc"]
    assert result.classes[1].threshold is None and not result.classes[1].values
    document = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert document["excluded_classes"] == {"none": "no positives", "all": "no negatives"}
    assert document["positives"] == {"ok": int(labels[:, 0].sum()), "none": 0, "all": 75}
    assert "excluded: no positives" in format_table(result)


def test_thresholds_chosen_on_one_split_apply_to_another() -> None:
    scores, labels = _random_problem(n=300, c=3, seed=5)
    split_a, split_b = slice(0, 150), slice(150, 300)
    thresholds = choose_thresholds(scores[split_a], labels[split_a])
    result = evaluate_multilabel(scores[split_b], labels[split_b], ["a", "b", "c"], thresholds=thresholds)
    official_b = evaluate_multilabel(scores[split_b], labels[split_b], ["a", "b", "c"])
    assert result.threshold_rule == "given" and official_b.threshold_rule == "official"
    assert np.array_equal(result.thresholds, thresholds)
    assert not np.array_equal(official_b.thresholds, thresholds)
    for c in range(3):
        expected = _sklearn_metrics(labels[split_b, c], scores[split_b, c], thresholds[c])
        assert result.classes[c].values["accuracy"] == pytest.approx(expected["accuracy"])
        assert result.classes[c].values["f1_weighted"] == pytest.approx(expected["f1_weighted"])


def test_bootstrap_overall_is_mean_of_class_means_and_intervals_bracket_it() -> None:
    scores, labels = _random_problem(n=150, c=3, seed=6)
    result = evaluate_multilabel(torch.from_numpy(scores), torch.from_numpy(labels), ["a", "b", "c"], n_resamples=40)
    boot = result.bootstrap
    assert boot["n_resamples"] == 40 and boot["seeding"] == "official"
    for name in METRICS:
        assert boot["mean"][name] == pytest.approx(np.mean([c.bootstrap_mean[name] for c in result.classes]))
        low, high = boot["ci"][name]
        assert low <= boot["mean"][name] <= high
        for cls in result.classes:
            assert cls.ci[name][0] <= cls.bootstrap_mean[name] <= cls.ci[name][1]


def test_write_metrics_records_cohort_and_fingerprints(tmp_path) -> None:
    scores, labels = _random_problem(n=60, c=2, seed=7)
    source = tmp_path / "scores.npy"
    np.save(source, scores)
    result = evaluate_multilabel(scores, labels, ["a", "b"], n_resamples=5)
    json_path, csv_path = write_metrics(result, tmp_path / "out", {"scores": source}, {"benchmark": None})
    document = json.loads(json_path.read_text())
    assert document["n"] == 60 and document["positives"] == {"a": int(labels[:, 0].sum()), "b": int(labels[:, 1].sum())}
    assert len(document["inputs"]["scores"]["sha256"]) == 64
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("class,n,positives,negatives,excluded,threshold,auroc,auroc_boot_mean,auroc_ci_low")
    assert len(lines) == 3 and lines[1].startswith("a,60,")


@pytest.mark.parametrize(
    "scores, labels, thresholds, match",
    [
        (np.zeros((4, 2)), np.zeros((4, 3)), None, "labels have shape"),
        (np.zeros((4, 2)), np.full((4, 2), 2.0), None, "expected 0, 1 or NaN"),
        (np.array([[0.0, np.inf]] * 4), np.array([[0, 1], [1, 0]] * 2, dtype=float), None, "expected finite"),
        (np.zeros((4, 2)), np.array([[0, 1], [1, 0]] * 2, dtype=float), np.array([0.0, np.nan]), "no threshold given"),
        (np.zeros((4, 2)), np.zeros((4, 2)), np.zeros(3), "thresholds must have shape"),
    ],
)
def test_ill_arg(scores, labels, thresholds, match) -> None:
    with pytest.raises(InputError, match=match):
        evaluate_multilabel(scores, labels, ["a", "b"], thresholds=thresholds)
