"""The bad-input catalogue: every kind of broken input, fed in-process to the command lines' ``main(args)``, must end
with exit status 2, exactly one line on stderr naming the culprit, and nothing new in the output folder. One real
subprocess per console script (``lsms``, ``carzero``, ``brgsa``) checks the same contract end to end.

Each case is a row of :data:`CASES`: an id, the entry point, and a builder that writes the broken input under a
temporary folder and returns the arguments plus the fragment the message must contain (usually the culprit's name).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file

from datasets.nifti import save_nifti
from datasets.slices import SlicePreprocessing

SCRIPTS = Path(sys.executable).parent
TINY_LSMS = dict(encoder_widths=[4, 8, 8, 8], encoder_depths=[1, 1, 1, 1], svla_kernel_sizes=[3],
                 svla_dilations=[1], decoder_width=4)
AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


@dataclass
class Env:
    """What a case builder gets: a scratch folder, the output folder that must stay empty, shared fixtures."""

    tmp: Path
    out: Path
    model: Path
    benchmark: Path

    def volume(self, name: str = "ct.nii.gz", array: np.ndarray | None = None, affine: np.ndarray = AFFINE) -> Path:
        data = np.full((16, 16, 4), -100, np.int16) if array is None else array
        return save_nifti(data, affine, self.tmp / name)

    def segment(self, image: Path | str, *extra: str, prompt: str = "the larger lesion") -> list[str]:
        return ["segment", str(self.model), str(image), "--prompt", prompt, "--out", str(self.out), *extra]


def _write(path: Path, content: bytes | str, encoding: str = "utf-8") -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


# ------------------------------------------------------------------------------------------------ case builders
def missing_image(env: Env) -> tuple[list[str], str]:
    return env.segment(env.tmp / "nowhere.nii.gz", "--slice", "0"), "nowhere.nii.gz"


def empty_png(env: Env) -> tuple[list[str], str]:
    return env.segment(_write(env.tmp / "empty.png", b"")), "empty.png"


def truncated_nifti(env: Env) -> tuple[list[str], str]:
    data = env.volume("full.nii.gz").read_bytes()
    return env.segment(_write(env.tmp / "cut.nii.gz", data[: len(data) // 2]), "--slice", "0"), "cut.nii.gz"


def text_named_nifti(env: Env) -> tuple[list[str], str]:
    return env.segment(_write(env.tmp / "notes.nii.gz", "not an image\n"), "--slice", "0"), "notes.nii.gz"


def unknown_extension(env: Env) -> tuple[list[str], str]:
    return env.segment(_write(env.tmp / "scan.xyz", b"\x00" * 64)), "scan.xyz"


def nan_volume(env: Env) -> tuple[list[str], str]:
    array = np.zeros((16, 16, 4), np.float32)
    array[3, 3, 1] = np.nan
    return env.segment(env.volume("nan.nii.gz", array), "--slice", "1"), "nan.nii.gz"


def zero_byte_nifti(env: Env) -> tuple[list[str], str]:
    return env.segment(_write(env.tmp / "zero.nii.gz", b""), "--slice", "0"), "zero.nii.gz"


def dicom_mixed_series(env: Env) -> tuple[list[str], str]:
    import pydicom

    folder = env.tmp / "dicom"
    folder.mkdir()
    for index, uid in enumerate(["1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"]):
        dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        dataset.SeriesInstanceUID = uid
        dataset.InstanceNumber = index + 1
        dataset.save_as(folder / f"slice{index}.dcm")
    return env.segment(folder), "dicom"


def out_of_range_slice(env: Env) -> tuple[list[str], str]:
    return env.segment(env.volume(), "--slice", "9"), "9"


def negative_slice(env: Env) -> tuple[list[str], str]:
    return env.segment(env.volume(), "--slice", "-1"), "-1"


def empty_prompt(env: Env) -> tuple[list[str], str]:
    return env.segment(env.volume(), "--slice", "0", prompt="   "), "prompt"


def another_models_folder(env: Env) -> tuple[list[str], str]:
    folder = env.tmp / "carzero_model"
    shutil.copytree(env.model, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "carzero"}))
    return ["segment", str(folder), str(env.volume()), "--slice", "0", "--prompt", "x", "--out", str(env.out)], \
        "carzero"


def not_a_model_folder(env: Env) -> tuple[list[str], str]:
    folder = env.tmp / "holiday_photos"
    folder.mkdir()
    return ["segment", str(folder), str(env.volume()), "--slice", "0", "--prompt", "x", "--out", str(env.out)], \
        "holiday_photos"


class _RunsCode:
    """Creates ``marker`` when unpickled: a pickle that would run code when loaded without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.makedirs, (str(self.marker),))


def code_carrying_checkpoint(env: Env) -> tuple[list[str], str]:
    path = env.tmp / "evil.ckpt"
    marker = env.tmp / "code_ran"
    torch.save({"state_dict": {}, "payload": _RunsCode(marker)}, path)  # the runner checks that no marker appears
    return ["export", str(path), str(env.out / "model")], "evil.ckpt"


def unwritable_output(env: Env) -> tuple[list[str], str]:
    """An output folder below a regular file: cannot be created even by root (permission bits would not stop root)."""
    blocker = _write(env.tmp / "a_file", "x")
    return ["segment", str(env.model), str(env.volume()), "--slice", "0", "--prompt", "x", "--out",
            str(blocker / "out")], "a_file"


def batch_csv_wrong_columns(env: Env) -> tuple[list[str], str]:
    csv = _write(env.tmp / "batch.csv", f"path,slice,text\n{env.volume()},0,the lesion\n")
    return ["segment", str(env.model), "--batch", str(csv), "--out", str(env.out)], "batch.csv"


def batch_csv_latin1(env: Env) -> tuple[list[str], str]:
    csv = _write(env.tmp / "batch_latin1.csv", f"image,slice_index,prompt\n{env.volume()},0,lésion hépatique\n",
                 encoding="latin-1")
    return ["segment", str(env.model), "--batch", str(csv), "--out", str(env.out)], "batch_latin1.csv"


def batch_csv_bad_slice_index(env: Env) -> tuple[list[str], str]:
    """The message names the spreadsheet row (header = row 1), as every table error in the package does."""
    csv = _write(env.tmp / "batch_slice.csv",
                 f"image,slice_index,prompt\n{env.volume()},0,the lesion\n{env.volume()},two,the lesion\n")
    return ["segment", str(env.model), "--batch", str(csv), "--out", str(env.out)], "batch_slice.csv row 3: slice_index"


def _manifest_with(env: Env, transform: Callable[[list[str]], list[str]], name: str, encoding: str = "utf-8") -> Path:
    lines = (env.benchmark / "manifest.csv").read_text().splitlines()
    text = "\n".join(transform(lines)) + "\n"
    path = env.benchmark / name  # next to the images, so relative paths resolve
    path.write_bytes(text.encode(encoding))
    return path


def manifest_wrong_columns(env: Env) -> tuple[list[str], str]:
    path = _manifest_with(env, lambda lines: [lines[0].replace("mask_value", "label_value"), *lines[1:]],
                          "renamed_column.csv")
    return ["check", str(path), "--write-filtered", str(env.out / "filtered.csv")], "mask_value"


def manifest_latin1(env: Env) -> tuple[list[str], str]:
    path = _manifest_with(env, lambda lines: [lines[0], lines[1].replace("lesion", "lésion"), *lines[2:]],
                          "latin1.csv", encoding="latin-1")
    return ["check", str(path), "--write-filtered", str(env.out / "filtered.csv")], "latin1.csv"


def manifest_missing_for_fit(env: Env) -> tuple[list[str], str]:
    return ["fit", "--model.net.class_path=lsms.model.LSMS", f"--data.manifest={env.tmp / 'gone.csv'}",
            f"--trainer.default_root_dir={env.out}"], "gone.csv"


def metrics_label_values(env: Env) -> tuple[list[str], str]:
    scores = _write(env.tmp / "scores.csv", "VolumeName,Emphysema\nv1.nii.gz,0.2\nv2.nii.gz,0.7\n")
    labels = _write(env.tmp / "labels.csv", "VolumeName,Emphysema\nv1.nii.gz,0\nv2.nii.gz,2\n")
    return ["metrics", str(scores), str(labels), "--bootstrap", "0", "--out", str(env.out)], "labels.csv"


def metrics_wrong_columns(env: Env) -> tuple[list[str], str]:
    scores = _write(env.tmp / "scores.csv", "VolumeName,Emphysema\nv1.nii.gz,0.2\nv2.nii.gz,0.7\n")
    labels = _write(env.tmp / "labels_cols.csv", "volume,Atelectasis\nv1.nii.gz,0\nv2.nii.gz,1\n")
    return ["metrics", str(scores), str(labels), "--bootstrap", "0", "--out", str(env.out)], "labels_cols.csv"


def summarize_latin1(env: Env) -> tuple[list[str], str]:
    table = _write(env.tmp / "reports_latin1.csv", "VolumeName,Findings_EN,Impressions_EN\nv1.nii.gz,Épanchement "
                   "pleural.,Normal.\n", encoding="latin-1")
    return ["summarize", str(table), "--out", str(env.out / "summaries.csv")], "reports_latin1.csv"


def summarize_empty_text(env: Env) -> tuple[list[str], str]:
    table = _write(env.tmp / "reports_empty.csv", "VolumeName,Findings_EN,Impressions_EN\nv1.nii.gz,,\n")
    return ["summarize", str(table), "--out", str(env.out / "summaries.csv")], "reports_empty.csv"


def prepare_zero_byte_volume(env: Env) -> tuple[list[str], str]:
    folder = env.tmp / "volumes"
    folder.mkdir()
    _write(folder / "broken.nii.gz", b"")
    return ["prepare", "--volumes", str(folder), "--layout", "flat", "--out", str(env.out)], "broken.nii.gz"


def _lsms(args: list[str]) -> int:
    from lsms.cli import main

    return main(args)


def _datasets(args: list[str]) -> int:
    from datasets.__main__ import main

    return main(args)


def _brgsa(args: list[str]) -> int:
    from brgsa.cli import main

    return main(args)


CASES: list[tuple[str, Callable[[list[str]], int], Callable[[Env], tuple[list[str], str]]]] = [
    ("missing image", _lsms, missing_image),
    ("empty PNG", _lsms, empty_png),
    ("truncated NIfTI", _lsms, truncated_nifti),
    ("text file named .nii.gz", _lsms, text_named_nifti),
    ("unknown image format", _lsms, unknown_extension),
    ("NaN voxels", _lsms, nan_volume),
    ("zero-byte .nii.gz", _lsms, zero_byte_nifti),
    ("DICOM folder with two series", _lsms, dicom_mixed_series),
    ("slice index past the end", _lsms, out_of_range_slice),
    ("negative slice index", _lsms, negative_slice),
    ("blank prompt", _lsms, empty_prompt),
    ("another model's folder", _lsms, another_models_folder),
    ("folder that is no model", _lsms, not_a_model_folder),
    ("checkpoint pickling code", _lsms, code_carrying_checkpoint),
    ("output folder below a file", _lsms, unwritable_output),
    ("batch CSV with wrong columns", _lsms, batch_csv_wrong_columns),
    ("Latin-1 batch CSV", _lsms, batch_csv_latin1),
    ("batch CSV with a non-integer slice index", _lsms, batch_csv_bad_slice_index),
    ("fit on a missing manifest", _lsms, manifest_missing_for_fit),
    ("manifest with a renamed column", _datasets, manifest_wrong_columns),
    ("Latin-1 manifest", _datasets, manifest_latin1),
    ("label value 2", _brgsa, metrics_label_values),
    ("label table without VolumeName", _brgsa, metrics_wrong_columns),
    ("Latin-1 report table", _brgsa, summarize_latin1),
    ("report with empty text", _brgsa, summarize_empty_text),
    ("zero-byte volume to prepare", _brgsa, prepare_zero_byte_volume),
]


# `brgsa prepare` documents its bad-volume report as output (the list of volumes it could not read); everything else
# must leave the output folder empty.
ALLOWED_OUTPUT = {"zero-byte volume to prepare": {"prepare_report.json"}}


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory) -> Path:
    import dataclasses

    from datasets.synthetic.refhl import generate_refhl
    from datasets.synthetic.spec import REFHL_V1

    out = tmp_path_factory.mktemp("refhl") / "data"
    generate_refhl(out, dataclasses.replace(REFHL_V1, train_cases=1, val_cases=1, test_cases=1), seed=3)
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tiny_bert_dir) -> Path:
    from lsms.model import LSMS
    from lsms.pretrained import save_pretrained

    torch.manual_seed(0)
    net = LSMS(text_encoder=str(tiny_bert_dir), **TINY_LSMS)
    return save_pretrained(net, tmp_path_factory.mktemp("models") / "lsms", SlicePreprocessing(image_size=32), seed=0)


LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING)\b")


def message_lines(stderr: str) -> list[str]:
    """stderr without log records (``INFO ...``, Lightning's ``INFO: Seed set ...``) and progress-bar redraws: what
    remains must be the single error line."""
    lines = [line.split("\r")[-1] for line in stderr.split("\n")]
    return [line for line in lines if line.strip() and not LOG_LINE.match(line) and "%|" not in line]


def _snapshot(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*")} if folder.exists() else set()


@pytest.mark.parametrize(("name", "entry", "build"), CASES, ids=[case[0] for case in CASES])
def test_bad_input_exits_2_with_one_line_naming_the_culprit(name, entry, build, tmp_path, tiny_model, benchmark,
                                                            capsys):
    env = Env(tmp_path, tmp_path / "out", tiny_model, benchmark)
    args, culprit = build(env)
    before = _snapshot(benchmark) | _snapshot(tiny_model)
    capsys.readouterr()
    status = entry(args)
    captured = capsys.readouterr()
    lines = message_lines(captured.err)
    assert status == 2, f"{name}: exit {status}\n{captured.err[-3000:]}"
    assert len(lines) == 1, f"{name}: expected one line on stderr, got:\n{captured.err[-3000:]}"
    assert culprit in lines[0], f"{name}: {lines[0]!r} does not name {culprit!r}"
    assert "Traceback" not in captured.err
    assert not (tmp_path / "code_ran").exists(), f"{name}: code pickled in an input file ran"
    written = {path.name for path in _snapshot(env.out)} - ALLOWED_OUTPUT.get(name, set())
    assert not written, f"{name}: partial output {sorted(written)}"
    assert (_snapshot(benchmark) | _snapshot(tiny_model)) - before <= {p for p in _snapshot(benchmark)
                                                                       if p.suffix == ".csv"}


def test_rgba_png_is_accepted_with_alpha_dropped(tmp_path, tiny_model, capsys):
    """The 2D reader documents RGBA as accepted (alpha dropped): the segmentation runs and writes its mask."""
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 120, 7
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = tmp_path / "out"
    assert _lsms(["segment", str(tiny_model), str(tmp_path / "rgba.png"), "--prompt", "the lesion", "--out",
                  str(out)]) == 0
    assert len(list(out.glob("*_mask*"))) == 1


@pytest.mark.parametrize(
    ("script", "args", "culprit"),
    [
        ("lsms", ["segment", "{tmp}/no_model", "{tmp}/no.nii.gz", "--prompt", "x", "--out", "{tmp}/out"], "no_model"),
        ("carzero", ["zeroshot", "{tmp}/no_model", "--labels", "{tmp}/labels.csv", "--out", "{tmp}/out"], "no_model"),
        ("brgsa", ["metrics", "{tmp}/scores.csv", "{tmp}/labels.csv", "--out", "{tmp}/out"], "scores.csv"),
    ],
)
def test_console_script_subprocess(script, args, culprit, tmp_path):
    command = [str(SCRIPTS / script), *(arg.format(tmp=tmp_path) for arg in args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    lines = message_lines(result.stderr)
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and culprit in lines[0], result.stderr[-3000:]
    assert not _snapshot(tmp_path / "out")


def test_gzip_payload_is_really_truncated(tmp_path):
    """Guard for the 'truncated NIfTI' row: the cut file fails gzip decoding itself, not only the NIfTI parser."""
    data = save_nifti(np.zeros((16, 16, 4), np.int16), AFFINE, tmp_path / "v.nii.gz").read_bytes()
    with pytest.raises((EOFError, OSError)):
        gzip.GzipFile(fileobj=io.BytesIO(data[: len(data) // 2])).read()


def test_check_write_filtered_drops_bad_rows_and_training_runs_on_the_result(benchmark, tiny_bert_dir, tmp_path,
                                                                            capsys):
    """Skipping bad samples is a pre-scan, not an on-the-fly skip: ``check --full --write-filtered`` writes a manifest
    without the bad rows, and ``lsms fit`` trains on it."""
    lines = (benchmark / "manifest.csv").read_text().splitlines()
    header = lines[0].split(",")
    train = next(line for line in lines[1:] if line.split(",")[header.index("split")] == "train")
    bad_slice = train.split(",")
    bad_slice[header.index("row_id")] += "-bad-slice"
    bad_slice[header.index("slice_index")] = "999"
    bad_file = train.split(",")
    bad_file[header.index("row_id")] += "-bad-file"
    bad_file[header.index("image")] = "images/missing.nii.gz"
    manifest = benchmark / "with_bad_rows.csv"
    manifest.write_text("\n".join([*lines, ",".join(bad_slice), ",".join(bad_file)]) + "\n")
    filtered = tmp_path / "filtered.csv"

    assert _datasets(["check", str(manifest), "--full", "--write-filtered", str(filtered)]) == 2
    report = capsys.readouterr().out  # the problem list is the command's output
    assert "missing.nii.gz" in report and "999" in report
    kept = filtered.read_text()
    assert "-bad-slice" not in kept and "-bad-file" not in kept
    assert len(kept.splitlines()) == len(lines)  # header + every good row
    assert _datasets(["check", str(filtered), "--full"]) == 0

    config = {"seed_everything": 0,
              "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 2, "logger": False,
                          "enable_checkpointing": False, "enable_progress_bar": False, "limit_val_batches": 1,
                          "num_sanity_val_steps": 0, "default_root_dir": str(tmp_path / "run")},
              "model": {"net": {"class_path": "lsms.model.LSMS",
                                "init_args": {"text_encoder": str(tiny_bert_dir), **TINY_LSMS}}},
              "data": {"manifest": str(filtered), "image_size": 32, "batch_size": 4}}
    (tmp_path / "fit.yaml").write_text(json.dumps(config))
    assert _lsms(["fit", "--config", str(tmp_path / "fit.yaml")]) == 0
