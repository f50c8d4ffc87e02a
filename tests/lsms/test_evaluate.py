"""Held-out evaluation diagnostics: grounding accuracy, Dice by group, and ``lsms evaluate`` on a tiny benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datasets.refseg import read_refseg_manifest
from lsms.cli import main
from lsms.evaluate import dice_per_expression, grounded

from .test_cli import benchmark, tiny_model_dir  # noqa: F401 (module-scoped fixtures)


def _disc(row: int, col: int, radius: int, size: int = 16) -> np.ndarray:
    rows, cols = np.ogrid[:size, :size]
    return (rows - row) ** 2 + (cols - col) ** 2 <= radius**2


def test_grounded_picks_the_lesion_with_the_larger_overlap():
    referred, other, empty = _disc(4, 4, 2), _disc(11, 11, 3), np.zeros((16, 16), dtype=bool)
    assert grounded(referred, referred, [other, empty])  # exactly the referred lesion
    assert not grounded(other, referred, [other])  # the wrong lesion
    assert not grounded(referred | other, referred, [other])  # both: overlaps the larger (other) one more
    assert not grounded(empty, referred, [other])  # nothing
    assert grounded(_disc(4, 4, 1) | (other & _disc(11, 11, 0)), referred, [other])  # mostly the referred one
    assert not grounded(referred, referred, [other, _disc(4, 4, 3)])  # a third lesion covering the referred one


def test_evaluate_command_writes_diagnostics_that_match_its_predictions(tiny_model_dir, benchmark, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "val.json"
    manifest = benchmark / "manifest.csv"
    assert main(["evaluate", str(tiny_model_dir), str(manifest), "--split", "val", "--out", str(out),
                 "--group-by", "attribute", "template_id"]) == 0
    results = json.loads(out.read_text())
    rows = read_refseg_manifest(manifest).rows("val")
    assert results["split"] == "val" and results["expressions"] == len(rows)
    multi = results["multi_lesion"]
    assert multi["grounding_accuracy"]["n"] == multi["expressions"]
    assert 0.0 <= multi["grounding_accuracy"]["mean"] <= 1.0
    by_attribute = results["dice_by"]["attribute"]
    assert set(by_attribute) == {row.extra["attribute"] for row in rows}
    assert sum(group["n"] for group in by_attribute.values()) == len(rows)
    assert sum(group["n"] for group in results["dice_by"]["size"].values()) == len(rows)
    assert set(results["dice_by"]["template_id"]) == {row.template_id for row in rows}
    grounding_by = multi["grounding_accuracy_by"]["attribute"]
    assert sum(group["n"] for group in grounding_by.values()) == multi["expressions"]
    assert "only" not in grounding_by  # single-lesion expressions have nothing to ground against
    weighted = sum(group["mean"] * group["n"] for group in by_attribute.values()) / len(rows)
    assert weighted == pytest.approx(results["true_prompts"]["dice"], abs=1e-5)
    assert "grounding accuracy" in capsys.readouterr().out


def test_evaluate_command_refuses_an_unknown_split(tiny_model_dir, benchmark, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "none.json"
    assert main(["evaluate", str(tiny_model_dir), str(benchmark / "manifest.csv"), "--split", "nope",
                 "--out", str(out)]) == 2
    assert "unknown split 'nope'; expected one of train, val, test" in capsys.readouterr().err
    assert not out.exists()


def test_dice_per_expression_counts_empty_prediction_of_a_lesion_as_zero():
    target = _disc(8, 8, 3)[None]
    assert dice_per_expression(np.zeros_like(target), target).tolist() == [0.0]
    assert dice_per_expression(np.zeros_like(target), np.zeros_like(target)).tolist() == [1.0]


def test_demo_table_shows_every_control_and_breakdown(tiny_model_dir, benchmark):  # noqa: F811
    from lsms.demo import ablation_markdown, results_markdown
    from lsms.evaluate import evaluate_with_controls
    from lsms.pretrained import from_pretrained

    net, preprocessing, _ = from_pretrained(tiny_model_dir)
    rows = read_refseg_manifest(benchmark / "manifest.csv").rows("test")
    test = evaluate_with_controls(net, rows, preprocessing)
    run = {"test": test, "untrained": test, "steps": 3, "epochs": 1, "train_seconds": 1.0, "seed": 0}
    table = results_markdown(run)
    grounding = test["multi_lesion"]["grounding_accuracy"]["mean"]
    assert f"| Grounding accuracy (multi-lesion slices) | {grounding:.3f} |" in table
    for line in ("| Dice by size |", "| Dice by attribute |", "| Grounding accuracy by attribute |"):
        assert line in table
    assert table.count("\n| ") == len(table.splitlines()) - 3  # every row after the header is a table row

    runs = [{"variant": variant, "seed": seed, "steps": 3, "epochs": 1, "test": test}
            for seed in (0, 1) for variant in ("full", "no_language")]
    ablation = ablation_markdown({"runs": runs, "benchmark": {"version": 1}})
    dice, gap = test["true_prompts"]["dice"], test["multi_lesion"]["gap_true_minus_shuffled"]
    assert f"| full | 0, 1 | {dice:.3f} ± 0.000 | {gap:.3f} | {grounding:.3f} |" in ablation


def test_evaluate_command_refuses_an_unknown_column_and_a_folder_as_out(tiny_model_dir, benchmark, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "val.json"
    args = ["evaluate", str(tiny_model_dir), str(benchmark / "manifest.csv"), "--split", "val"]
    assert main([*args, "--group-by", "atribute", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "group_by columns ['atribute'] are in no manifest row" in err and "'attribute'" in err
    assert main([*args, "--out", str(tmp_path)]) == 2
    assert "is a folder; name the results JSON file" in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_refuses_a_row_whose_mask_holds_no_pixel_of_its_lesion(tiny_model_dir, benchmark, tmp_path, capsys):  # noqa: F811
    """A wrong mask_value made an empty target that was scored as a lesion the model missed (Dice fell silently)."""
    lines = (benchmark / "manifest.csv").read_text().splitlines()
    header = lines[0].split(",")
    split, value = header.index("split"), header.index("mask_value")
    number = next(n for n, line in enumerate(lines[1:], start=2) if line.split(",")[split] == "val")
    fields = lines[number - 1].split(",")
    fields[value] = "7"  # a label the synthetic masks never use
    lines[number - 1] = ",".join(fields)
    manifest = benchmark / "wrong_mask_value.csv"  # beside the original: its relative paths still resolve
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "val.json"
    try:
        assert main(["evaluate", str(tiny_model_dir), str(manifest), "--split", "val", "--out", str(out),
                     "--cache-dir", str(tmp_path / "cache")]) == 2
    finally:
        manifest.unlink()
    err = capsys.readouterr().err
    assert f"row {number} " in err and "no pixel of mask_value 7" in err and "datasets check" in err, err
    assert not out.exists()
