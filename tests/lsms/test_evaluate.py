"""Held-out evaluation diagnostics: grounding accuracy, Dice by group, and ``lsms evaluate`` on a tiny benchmark."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.refseg import RefSegRow, load_sample, read_refseg_manifest
from lsms.cli import main
from lsms.evaluate import dice_per_expression, grounded, shuffled_prompts
from lsms.pretrained import from_pretrained, save_pretrained

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


def _row(number: int, image: str, slice_index: int | None, lesion_id: str, text: str) -> RefSegRow:
    return RefSegRow(
        number=number, row_id=f"r{number}", case_id=image, split="test", image=Path(image),
        image_kind="nifti" if slice_index is not None else "png", slice_index=slice_index, mask=Path(f"m_{image}"),
        mask_value=None, lesion_id=lesion_id, text=text, template_id="",
    )


def test_shuffled_prompts_give_each_text_of_another_lesion_of_the_same_slice():
    rows = [
        _row(2, "a.nii.gz", 3, "a1", "a1 first text"),
        _row(3, "a.nii.gz", 3, "a2", "a2 text"),
        _row(4, "a.nii.gz", 3, "a1", "a1 second text"),
        _row(5, "a.nii.gz", 3, "a3", "a3 text"),
        _row(6, "a.nii.gz", 4, "a1", "a1 alone on slice 4"),  # same image, another slice: one lesion there
        _row(7, "b.nii.gz", 3, "b1", "b1 text"),  # another image, same slice index as a's lesions
        _row(8, "b.nii.gz", 3, "b1", "b1 other text"),  # two texts, but one lesion
        _row(9, "c.png", None, "c1", "c1 text"),
        _row(10, "c.png", None, "c2", "c2 text"),
    ]
    lesion_of = {row.text: (row.image, row.slice_index, row.lesion_id) for row in rows}
    drawn: dict[int, set[str]] = defaultdict(set)
    for seed in range(30):
        shuffled = shuffled_prompts(rows, seed)
        assert shuffled == shuffled_prompts(rows, seed)  # a seed fixes the draw
        assert len(shuffled) == len(rows)
        for row, text in zip(rows, shuffled):
            if row.number in (6, 7, 8):
                assert text is None, (row.number, text)
                continue
            image, slice_index, lesion = lesion_of[text]
            assert (image, slice_index) == (row.image, row.slice_index) and lesion != row.lesion_id, (row.number, text)
            drawn[row.number].add(text)
    # every other lesion's every text gets drawn: the choice is not stuck on one lesion or one text
    assert drawn[2] == drawn[4] == {"a2 text", "a3 text"}
    assert drawn[3] == {"a1 first text", "a1 second text", "a3 text"}
    assert drawn[9] == {"c2 text"} and drawn[10] == {"c1 text"}


def test_shuffled_prompts_on_the_benchmark_describe_another_lesion(benchmark):  # noqa: F811
    rows = read_refseg_manifest(benchmark / "manifest.csv").rows("val")
    lesions_by_slice: dict[tuple, set[str]] = defaultdict(set)
    for row in rows:
        lesions_by_slice[(row.image, row.slice_index)].add(row.lesion_id)
    texts = {(row.image, row.slice_index, row.text): row.lesion_id for row in rows}
    shuffled = shuffled_prompts(rows, seed=0)
    assert sum(text is not None for text in shuffled) == 6  # slices 2-4 of the val case hold two lesions each
    for row, text in zip(rows, shuffled):
        if len(lesions_by_slice[(row.image, row.slice_index)]) == 1:
            assert text is None
        else:
            assert texts[(row.image, row.slice_index, text)] != row.lesion_id


def _dice(pred: np.ndarray, target: np.ndarray) -> float:
    total = int(pred.sum() + target.sum())
    return 1.0 if total == 0 else 2 * int((pred & target).sum()) / total


@pytest.fixture(scope="module")
def partial_model_dir(tiny_model_dir, benchmark, tmp_path_factory):  # noqa: F811
    """The tiny model with its mask head rescaled so that about 70 % of each test slice is predicted lesion.

    The random model predicts nothing at all (every logit is near -0.05), which makes grounding accuracy 0 whatever
    the code does; here its logits become ``1000 * (logit - t)``, ``t`` halfway between two neighbouring logits.
    """
    net, preprocessing, _ = from_pretrained(tiny_model_dir)
    rows = read_refseg_manifest(benchmark / "manifest.csv").rows("test")
    samples = [load_sample(row, preprocessing) for row in rows]
    with torch.no_grad():
        logits = net(torch.stack([s["image"] for s in samples]), [row.text for row in rows]).logits.numpy()
    values = np.unique(logits)
    k = int(0.3 * len(values))
    threshold = float(values[k] + values[k + 1]) / 2
    with torch.no_grad():
        net.head.weight.mul_(1000.0)
        net.head.bias.copy_(1000.0 * (net.head.bias - threshold))
    folder = tmp_path_factory.mktemp("models") / "partial_lsms"
    return save_pretrained(net, folder, preprocessing, seed=0)


@pytest.fixture
def duplicated_manifest(benchmark):  # noqa: F811
    """The benchmark manifest plus a second expression for the smallest lesion of each test slice.

    Each test slice has one expression per lesion, so a baseline that predicted any single lesion would score the
    same mean Dice as "largest lesion"; with the smallest lesions counted twice, only the largest one scores right.
    (Two slices hold two equally large lesions: they keep one expression each, so either may count as the largest.)
    """
    import csv

    source = benchmark / "manifest.csv"
    with source.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    areas: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in rows:
        areas[(row["image"], row["slice_index"])].append(float(row["area_mm2"]))

    def strictly_smallest(row: dict[str, str]) -> bool:
        ranked = sorted(areas[(row["image"], row["slice_index"])])
        return float(row["area_mm2"]) == ranked[0] < ranked[1]

    extra = [{**row, "row_id": row["row_id"] + "-again", "text": "again, " + row["text"]}
             for row in rows if row["split"] == "test" and strictly_smallest(row)]
    manifest = benchmark / "manifest_smaller_lesions_twice.csv"  # beside the original: its relative paths resolve
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows + extra)
    yield manifest
    manifest.unlink()


def test_evaluate_controls_match_an_independent_recomputation(partial_model_dir, duplicated_manifest, tmp_path):
    """Every figure of the multi-lesion controls, recomputed here from the masks and the model's own predictions."""
    out = tmp_path / "test.json"
    assert main(["evaluate", str(partial_model_dir), str(duplicated_manifest), "--split", "test", "--out", str(out),
                 "--seed", "3"]) == 0
    multi = json.loads(out.read_text())["multi_lesion"]

    net, preprocessing, _ = from_pretrained(partial_model_dir)
    rows = read_refseg_manifest(duplicated_manifest).rows("test")
    samples = [load_sample(row, preprocessing) for row in rows]
    images = torch.stack([sample["image"] for sample in samples])
    targets = [sample["mask"][0].numpy() > 0.5 for sample in samples]
    lesions: dict[tuple, dict[str, np.ndarray]] = defaultdict(dict)
    for row, target in zip(rows, targets):
        lesions[(str(row.image), row.slice_index)][row.lesion_id] = target
    shuffled_texts = shuffled_prompts(rows, seed=3)  # every test slice holds 2-3 lesions: no None
    with torch.no_grad():
        preds = net(images, [row.text for row in rows]).logits[:, 0].numpy() > 0
        shuffled_preds = net(images, shuffled_texts).logits[:, 0].numpy() > 0
    every, largest, true, shuffled, is_grounded = [], [], [], [], []
    for row, target, pred, shuffled_pred in zip(rows, targets, preds, shuffled_preds):
        slice_lesions = lesions[(str(row.image), row.slice_index)]
        union = np.zeros_like(target)
        for mask in slice_lesions.values():
            union |= mask
        every.append(_dice(union, target))
        largest.append(_dice(max(slice_lesions.values(), key=lambda mask: int(mask.sum())), target))
        true.append(_dice(pred, target))
        shuffled.append(_dice(shuffled_pred, target))
        on_target = int((pred & target).sum())
        others = [int((pred & mask).sum()) for lesion, mask in slice_lesions.items() if lesion != row.lesion_id]
        is_grounded.append(on_target > max(others))
    n = len(rows)
    assert multi["expressions"] == n == 13 + 5  # five test slices
    assert multi["dice_every_lesion_baseline"] == {"mean": pytest.approx(np.mean(every)), "n": n}
    assert multi["dice_largest_lesion_baseline"] == {"mean": pytest.approx(np.mean(largest)), "n": n}
    assert multi["dice_true_prompts"] == {"mean": pytest.approx(np.mean(true)), "n": n}
    assert multi["dice_shuffled_prompts"] == {"mean": pytest.approx(np.mean(shuffled)), "n": n}
    assert multi["gap_true_minus_shuffled"] == pytest.approx(np.mean(true) - np.mean(shuffled))
    assert multi["grounding_accuracy"] == {"mean": pytest.approx(np.mean(is_grounded)), "n": n}
    assert 0 < sum(is_grounded) < n and 0 < np.mean(true)  # the predictions really overlap some lesions
    assert 0 < np.mean(largest) < np.mean(every) < 1  # the two baselines differ from each other and from perfect
