"""LSMS end to end through its command line: LightningCLI fit, export, the portable model folder, ``lsms segment``
on a real CT slice, and clear errors with no partial output for bad input."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml
from pydicom.data import get_testdata_file

from datasets.nifti import save_nifti
from datasets.pretrained import save_model_folder
from datasets.slices import SlicePreprocessing
from datasets.synthetic.refhl import generate_refhl
from datasets.synthetic.spec import REFHL_V1
from lsms.cli import main
from lsms.model import LSMS
from lsms.pretrained import from_pretrained, save_pretrained

TINY_NET = dict(
    encoder_widths=[8, 16, 16, 32], encoder_depths=[1, 1, 1, 1], svla_kernel_sizes=[3, 7], svla_dilations=[1, 1],
    decoder_width=8,
)


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory) -> Path:
    """A tiny synthetic RefHL-Seg-style benchmark (2 train, 1 val, 1 test case)."""
    out = tmp_path_factory.mktemp("refhl") / "data"
    generate_refhl(out, dataclasses.replace(REFHL_V1, train_cases=2, val_cases=1, test_cases=1), seed=3)
    return out


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tiny_bert_dir) -> Path:
    torch.manual_seed(0)
    net = LSMS(text_encoder=str(tiny_bert_dir), **TINY_NET)
    folder = tmp_path_factory.mktemp("models") / "tiny_lsms"
    return save_pretrained(net, folder, SlicePreprocessing(image_size=64), seed=0)


def _config(tmp_path: Path, text_encoder: Path, manifest: Path) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp_path / "run")},
        "model": {"net": {"class_path": "lsms.model.LSMS",
                          "init_args": {"text_encoder": str(text_encoder), **TINY_NET}}},
        "data": {"manifest": str(manifest), "image_size": 64, "batch_size": 4},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_lightningcli_fit_export_and_reload(benchmark, tiny_bert_dir, tmp_path):
    config = _config(tmp_path, tiny_bert_dir, benchmark / "manifest.csv")
    assert main(["fit", "--config", str(config), "--trainer.limit_train_batches=2",
                 "--trainer.limit_val_batches=1", "--data.context_slices=1"]) == 0
    checkpoints = sorted((tmp_path / "run").rglob("*.ckpt"))
    assert checkpoints, "fit wrote no checkpoint"

    assert main(["export", str(checkpoints[-1]), str(tmp_path / "exported")]) == 0
    net, preprocessing, config_json = from_pretrained(tmp_path / "exported")
    assert preprocessing == SlicePreprocessing(image_size=64, context_slices=1)
    assert net.in_channels == 3  # linked from data.context_slices
    assert config_json["training_manifest"]["sha256"]
    assert config_json["model_type"] == "lsms" and config_json["tokenizer"]["max_length"] == 32

    state = torch.load(checkpoints[-1], weights_only=True)
    trained = {name[4:]: value for name, value in state["state_dict"].items() if name.startswith("net.")}
    for name, value in net.state_dict().items():
        assert torch.equal(value, trained[name]), name


def test_fast_dev_run(benchmark, tiny_bert_dir, tmp_path):
    config = _config(tmp_path, tiny_bert_dir, benchmark / "manifest.csv")
    assert main(["fit", "--config", str(config), "--trainer.fast_dev_run=1"]) == 0


def test_save_then_load_gives_identical_outputs(tiny_model_dir, tiny_bert_dir):
    net, preprocessing, config = from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    original = LSMS(text_encoder=str(tiny_bert_dir), **TINY_NET).eval()
    images = torch.rand(2, 1, 64, 64)
    texts = ["the larger hypodense lesion in the right lobe", "the only lesion"]
    with torch.no_grad():
        assert torch.equal(net(images, texts).logits, original(images, texts).logits)
    assert (tiny_model_dir / "text_encoder" / "config.json").is_file()  # self-contained: loads offline anywhere
    assert config["git_commit"] is None or len(config["git_commit"]) == 40
    assert preprocessing.image_size == 64


def test_segment_real_ct_slice_writes_geometry_preserving_nifti_and_overlay(tiny_model_dir, tmp_path):
    dicom = get_testdata_file("693_UNCR.dcm")  # a real 512x512 head CT slice from pydicom-data
    out = tmp_path / "seg"
    assert main(["segment", str(tiny_model_dir), dicom, "--prompt", "the larger lesion", "--prompt",
                 "the hypodense lesion in the left lobe", "--out", str(out)]) == 0
    rows = (out / "segmentations.csv").read_text().splitlines()
    assert len(rows) == 3
    reference = sitk.ReadImage(dicom)
    for nifti in sorted(out.glob("*_mask.nii.gz")):
        written = sitk.ReadImage(str(nifti))
        assert written.GetSize() == reference.GetSize()
        assert np.allclose(written.GetSpacing()[:2], reference.GetSpacing()[:2], atol=1e-4)
        assert np.allclose(written.GetOrigin(), reference.GetOrigin(), atol=1e-3)
        assert np.allclose(written.GetDirection(), reference.GetDirection(), atol=1e-4)
    overlays = sorted(out.glob("*_overlay.png"))
    assert len(overlays) == 2
    from PIL import Image

    with Image.open(overlays[0]) as picture:
        assert picture.size[0] >= 300 and picture.mode in ("RGBA", "RGB")

    # Running again resumes: nothing new is written.
    assert main(["segment", str(tiny_model_dir), dicom, "--prompt", "the larger lesion", "--out", str(out)]) == 0
    assert len((out / "segmentations.csv").read_text().splitlines()) == 3
    # Another threshold (or model) would mix two runs' masks in one folder: refused, nothing changed.
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    assert main(["segment", str(tiny_model_dir), dicom, "--prompt", "the larger lesion", "--threshold", "0.9",
                 "--out", str(out)]) == 2
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_segment_volume_slice_and_batch_csv(tiny_model_dir, benchmark, tmp_path, capsys):
    volume = next((benchmark / "images").glob("*.nii.gz"))
    batch = tmp_path / "batch.csv"
    batch.write_text(f"image,slice_index,prompt\n{volume},2,the only lesion\n{volume},3,the larger lesion\n")
    out = tmp_path / "seg"
    assert main(["segment", str(tiny_model_dir), "--batch", str(batch), "--out", str(out)]) == 0
    masks = sorted(out.glob("*_mask.nii.gz"))
    assert len(masks) == 2
    image = sitk.ReadImage(str(volume))
    for mask in masks:
        written = sitk.ReadImage(str(mask))
        assert written.GetSize() == image.GetSize()
        assert np.allclose(written.GetOrigin(), image.GetOrigin(), atol=1e-3)

    # The same path now holds another image: its stored masks no longer hold, so the rerun is refused, the row named.
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    original = volume.read_bytes()
    flipped = sitk.GetImageFromArray(sitk.GetArrayFromImage(image)[:, ::-1].copy())
    flipped.CopyInformation(image)
    try:
        sitk.WriteImage(flipped, str(volume))
        assert main(["segment", str(tiny_model_dir), "--batch", str(batch), "--out", str(out)]) == 2
    finally:
        volume.write_bytes(original)
    err = capsys.readouterr().err
    assert "segmentations.csv row 2" in err and "input_sha256" in err, err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def _assert_bad_input(capsys, args: list[str], fragment: str, out: Path) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert not out.exists() or not any(out.iterdir()), "bad input left partial output"


def test_bad_inputs_fail_clearly_without_output(tiny_model_dir, benchmark, tmp_path, capsys, tiny_bert_dir):
    volume = str(next((benchmark / "images").glob("*.nii.gz")))
    out = tmp_path / "out"
    _assert_bad_input(capsys, ["segment", str(tiny_model_dir), volume, "--slice", "99", "--prompt", "the lesion",
                               "--out", str(out)], "99", out)
    _assert_bad_input(capsys, ["segment", str(tiny_model_dir), volume, "--slice", "1", "--prompt", "  ",
                               "--out", str(out)], "prompt 1 is empty", out)
    _assert_bad_input(capsys, ["segment", str(tiny_model_dir), volume, "--prompt", "the lesion", "--out", str(out)],
                      "give --slice", out)
    batch = tmp_path / "batch.csv"
    batch.write_text(f"image,slice_index,prompt\n{volume},1,the lesion\nmissing.nii.gz,1,the lesion\n")
    _assert_bad_input(capsys, ["segment", str(tiny_model_dir), "--batch", str(batch), "--out", str(out)],
                      "batch.csv row 3: image", out)
    _assert_bad_input(capsys, ["segment", str(tiny_model_dir), str(batch), "--slice", "1", "--prompt", "the lesion",
                               "--out", str(out)], "not a readable 2D image", out)  # not "slice out of range"

    other = save_model_folder(tmp_path / "carzero_model", torch.nn.Linear(2, 2), model_type="carzero",
                              model_config={}, preprocessing={})
    _assert_bad_input(capsys, ["segment", str(other), volume, "--slice", "1", "--prompt", "the lesion",
                               "--out", str(out)], "'carzero' model", out)

    # A training manifest whose masks do not match their image's geometry.
    manifest = (benchmark / "manifest.csv").read_text().splitlines()
    first = manifest[1].split(",")
    mask_path = benchmark / first[6]
    bad_mask = tmp_path / "bad_mask.nii.gz"
    save_nifti(np.zeros((10, 10, 3), dtype=np.uint8), np.eye(4), bad_mask)
    bad_rows = [manifest[0]] + [line.replace(first[6], str(bad_mask)) for line in manifest[1:]]
    bad_manifest = benchmark / "bad_manifest.csv"
    bad_manifest.write_text("\n".join(bad_rows) + "\n")
    assert mask_path.is_file()
    config = _config(tmp_path, tiny_bert_dir, bad_manifest)
    run_dir = tmp_path / "run"
    assert main(["fit", "--config", str(config), "--trainer.fast_dev_run=1"]) == 2
    err = capsys.readouterr().err
    assert "bad_mask.nii.gz" in err and "shape" in err
    assert not any(run_dir.rglob("*.ckpt"))


def test_console_script_runs_in_a_subprocess():
    result = subprocess.run([sys.executable, "-m", "lsms.cli", "segment", "/nonexistent", "x.nii.gz", "--slice", "0",
                             "--prompt", "a", "--out", "/tmp/never"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("lsms segment: error:") and "/nonexistent" in result.stderr
    assert json.loads(json.dumps(result.stderr))  # one plain line, no traceback
    assert "Traceback" not in result.stderr


def test_evaluate_on_single_lesion_lvit_manifest_reports_controls_as_not_applicable(tiny_model_dir, tmp_path, capsys):
    """LViT data (one mask per image) has no slice with two lesions: the controls are n/a, not a crash."""
    import openpyxl
    from PIL import Image

    from datasets.lvit import lvit_to_manifest

    for folder, sheet, stems in [("Train_Folder", "Train_text.xlsx", ["covid_1"]),
                                 ("Val_Folder", "Val_text.xlsx", ["covid_2"]),
                                 ("Test_Folder", "Test_text.xlsx", ["covid_3", "covid_4"])]:
        (tmp_path / "QaTa" / folder / "img").mkdir(parents=True)
        (tmp_path / "QaTa" / folder / "labelcol").mkdir()
        workbook = openpyxl.Workbook()
        workbook.active.append(["Image", "Description"])
        for stem in stems:
            Image.fromarray(np.full((40, 48), 90, np.uint8)).save(tmp_path / "QaTa" / folder / "img" / f"{stem}.png")
            mask = np.zeros((40, 48), np.uint8)
            mask[10:20, 12:30] = 255
            Image.fromarray(mask).save(tmp_path / "QaTa" / folder / "labelcol" / f"mask_{stem}.png")
            workbook.active.append([f"mask_{stem}.png", "Left lung infection."])
        workbook.save(tmp_path / "QaTa" / folder / sheet)
    manifest = lvit_to_manifest(tmp_path / "QaTa", tmp_path / "manifest.csv")
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(tiny_model_dir), str(manifest), "--split", "test", "--out", str(out)]) == 0
    results = json.loads(out.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert results["expressions"] == 2 and results["multi_lesion"]["expressions"] == 0
    assert results["multi_lesion"]["dice_shuffled_prompts"] == {"mean": None, "n": 0}
    assert results["single_lesion_dice_true_prompts"]["n"] == 2
    assert "controls do not apply" in capsys.readouterr().out


def test_batch_errors_name_the_csv_row_and_repeated_rows_run_once(tiny_model_dir, benchmark, tmp_path, capsys,
                                                                   caplog):
    volume = next((benchmark / "images").glob("*.nii.gz"))
    depth = sitk.ReadImage(str(volume)).GetSize()[2]
    out = tmp_path / "seg"
    bad = tmp_path / "bad.csv"
    bad.write_text(f"image,slice_index,prompt\n{volume},1,the only lesion\n{volume},{depth + 5},the larger lesion\n")
    _assert_bad_input(capsys, ["segment", str(tiny_model_dir), "--batch", str(bad), "--out", str(out)],
                      f"bad.csv row 3: slice index {depth + 5} is out of range", out)
    empty = tmp_path / "empty.csv"
    empty.write_text(f"image,slice_index,prompt\n{volume},,the only lesion\n")
    _assert_bad_input(capsys, ["segment", str(tiny_model_dir), "--batch", str(empty), "--out", str(out)],
                      f"empty.csv row 2: {volume} has {depth} slices: fill its slice_index cell", out)
    repeated = tmp_path / "repeated.csv"
    repeated.write_text(f"image,slice_index,prompt\n{volume},1,the only lesion\n{volume},1,the only lesion\n"
                        f"{volume},2,the only lesion\n")
    with caplog.at_level("WARNING", logger="lsms.segment"):
        assert main(["segment", str(tiny_model_dir), "--batch", str(repeated), "--out", str(out)]) == 0
    assert "1 row(s) repeat an image, slice and prompt" in caplog.text
    assert "wrote 2 segmentation(s)" in capsys.readouterr().out
    assert len((out / "segmentations.csv").read_text().splitlines()) == 3


@pytest.mark.parametrize("stored_as", ["RAS", "LPS"])
def test_segment_masks_land_on_the_requested_slice_in_the_input_layout(tiny_model_dir, benchmark, tmp_path,
                                                                        stored_as):
    """The written NIfTI and PNG hold the model's thresholded probability map, at the requested slice only, in the
    input's stored layout (NIfTI) and in display orientation (PNG); checked for RAS- and LPS-stored volumes."""
    import nibabel as nib
    from PIL import Image

    from datasets.ct import read_ct
    from datasets.slices import preprocess_volume_slice, restore_slice

    source = next((benchmark / "images").glob("*.nii.gz"))
    image = nib.load(source)
    volume_path = tmp_path / f"{stored_as}.nii.gz"
    if stored_as == "LPS":  # the same world grid stored with x and y reversed
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        flip[:2, 3] = np.array(image.shape[:2]) - 1
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[::-1, ::-1].copy(), image.affine @ flip), volume_path)
    else:
        nib.save(image, volume_path)
    net, preprocessing, _ = from_pretrained(tiny_model_dir)
    index, prompt = 2, "the larger lesion"
    model_input, geometry = preprocess_volume_slice(read_ct(volume_path), index, preprocessing)
    with torch.no_grad():
        probability = torch.sigmoid(net(torch.from_numpy(model_input)[None], [prompt]).logits)[0, 0].numpy()
    threshold = round(float(np.quantile(probability, 0.7)), 6)  # a mask that is neither empty nor full
    expected = restore_slice(probability, geometry, mode="bilinear") > threshold
    assert 0 < expected.sum() < expected.size

    out = tmp_path / "seg"
    assert main(["segment", str(tiny_model_dir), str(volume_path), "--slice", str(index), "--prompt", prompt,
                 "--threshold", str(threshold), "--out", str(out)]) == 0
    written = np.asarray(nib.load(next(out.glob("*_mask.nii.gz"))).dataobj)
    assert written.shape == image.shape
    np.testing.assert_array_equal(written[:, :, index] > 0, expected)
    assert written.sum() == written[:, :, index].sum()  # nothing on the other slices
    with Image.open(next(out.glob("*_mask.png"))) as png:
        np.testing.assert_array_equal(np.asarray(png) > 0, geometry.orientation.apply(expected))
