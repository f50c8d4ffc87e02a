"""``lsms segment``: referring segmentation of a CT slice (or a 2D image) from one or more prompts.

Inputs: a model folder (:mod:`lsms.pretrained`), an image (NIfTI volume, DICOM file, DICOM series folder, PNG or
NPY), a slice index for volumes with more than one slice, and prompts; or a batch CSV with columns ``image``,
``slice_index`` (empty for 2D) and ``prompt``. For each (image, slice, prompt) it writes, atomically:

- ``<id>_mask.nii.gz``: the mask as a NIfTI volume with the input's geometry (shape and affine; the segmented slice
  filled, the others zero), for CT inputs;
- ``<id>_mask.png``: the mask slice in display orientation (image left = patient right, top = anterior);
- ``<id>_overlay.png``: the windowed slice with the mask overlaid, captioned with the prompt;
- a row in ``segmentations.csv`` (resumable: rows already there are skipped when the command runs again, unless their
  ``input_sha256``, the hash of what the model saw and of the output geometry, differs: an image replaced at the same
  path is refused with the row named rather than left with the old mask);
- ``run.json``: the weights' SHA-256, the preprocessing and the threshold; a rerun into the same folder with another
  model, preprocessing or threshold is refused rather than mixing masks of two runs.

All inputs are read and checked before anything is written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datasets.errors import InputError
from datasets.io import ResumableRowWriter, atomic_write_bytes, check_run_fingerprint, ensure_writable_dir
from datasets.slices import SliceGeometry, SlicePreprocessing, prepare_2d_image, preprocess_volume_slice, restore_slice

__all__ = [
    "SegmentationRequest", "PreparedInput", "read_batch_csv", "prepare_input", "segment", "save_overlay",
    "weights_sha256",
]

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ["id", "image", "slice_index", "prompt", "mask_nifti", "mask_png", "overlay_png", "mask_pixels",
                  "max_probability", "input_sha256"]
_VOLUME_SUFFIXES = (".nii", ".nii.gz", ".dcm")


@dataclass(frozen=True)
class SegmentationRequest:
    """One image slice and the prompts to segment in it."""

    image: Path
    slice_index: int | None
    prompts: tuple[str, ...]
    source: str | None = None  # e.g. "batch.csv row 3": named in errors about this request


@dataclass
class PreparedInput:
    """A preprocessed input: model image (C, S, S), its geometry, and what is needed to write outputs."""

    request: SegmentationRequest
    image: np.ndarray
    geometry: SliceGeometry
    display_slice: np.ndarray
    volume_shape: tuple[int, ...] | None
    volume_affine: np.ndarray | None
    slice_index: int | None


def _is_volume(path: Path) -> bool:
    name = path.name.lower()
    return path.is_dir() or name.endswith(_VOLUME_SUFFIXES)


def _check_prompts(prompts: Sequence[str], where: str) -> tuple[str, ...]:
    if not prompts:
        raise InputError(f"{where}: give at least one prompt (--prompt \"the larger lesion in the right lobe\")")
    for number, prompt in enumerate(prompts, start=1):
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"{where}: prompt {number} is empty; every prompt must name the lesion to segment")
    return tuple(prompt.strip() for prompt in prompts)


def read_batch_csv(path: str | Path) -> list[SegmentationRequest]:
    """Read a batch CSV (columns ``image``, ``slice_index``, ``prompt``; image paths relative to the CSV's folder).

    Rows with the same image and slice are grouped into one request; a prompt repeated for the same image and slice
    is segmented once (logged). Errors found later about a request name its first CSV row.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [column for column in ("image", "slice_index", "prompt") if column not in header]
            if missing:
                raise InputError(f"{path}: missing column(s) {missing}; expected image,slice_index,prompt")
            grouped: dict[tuple[Path, int | None], list[str]] = {}
            first_row: dict[tuple[Path, int | None], int] = {}
            repeated = 0
            for number, row in enumerate(reader, start=2):
                image = Path(row["image"])
                image = Path(os.path.normpath(image if image.is_absolute() else path.parent / image))
                if not image.exists():
                    raise InputError(f"{path} row {number}: image {image} does not exist (relative paths are read "
                                     "from the CSV's folder)")
                raw_index = (row["slice_index"] or "").strip()
                try:
                    index = int(raw_index) if raw_index else None
                except ValueError:
                    raise InputError(f"{path} row {number}: slice_index {raw_index!r} is not an integer") from None
                _check_prompts([row["prompt"] or ""], f"{path} row {number}")
                prompts = grouped.setdefault((image, index), [])
                first_row.setdefault((image, index), number)
                if row["prompt"].strip() in prompts:
                    repeated += 1
                else:
                    prompts.append(row["prompt"].strip())
    except UnicodeDecodeError as err:
        raise InputError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from err
    if not grouped:
        raise InputError(f"{path} has no rows")
    if repeated:
        logger.warning("%s: %d row(s) repeat an image, slice and prompt of an earlier row; each is segmented once",
                       path, repeated)
    return [SegmentationRequest(key[0], key[1], tuple(prompts), f"{path} row {first_row[key]}")
            for key, prompts in grouped.items()]


def prepare_input(request: SegmentationRequest, preprocessing: SlicePreprocessing) -> PreparedInput:
    """Read and preprocess one request exactly as training did.

    Raises:
        InputError: unreadable image, a missing or out-of-range slice index, empty prompts (prefixed with the
            request's ``source`` when it has one).
    """
    try:
        return _prepare_input(request, preprocessing)
    except InputError as err:
        if request.source is None:
            raise
        raise InputError(f"{request.source}: {err}") from err


def _prepare_input(request: SegmentationRequest, preprocessing: SlicePreprocessing) -> PreparedInput:
    _check_prompts(request.prompts, str(request.image))
    if not request.image.exists():
        raise InputError(f"input image {request.image} does not exist")
    if _is_volume(request.image):
        from datasets.ct import read_ct

        volume = read_ct(request.image, already_hu=preprocessing.already_hu)
        depth = volume.array.shape[2]
        index = request.slice_index
        if index is None:
            if depth != 1:
                where = "fill its slice_index cell" if request.source else "give --slice"
                raise InputError(f"{request.image} has {depth} slices: {where} (0 to {depth - 1})")
            index = 0
        image, geometry = preprocess_volume_slice(volume, index, preprocessing)
        display = geometry.orientation.apply(volume.array[:, :, index])
        return PreparedInput(request, image, geometry, display, tuple(volume.array.shape), volume.affine, index)
    from datasets.refseg import read_2d

    plane, is_hu = read_2d(request.image)  # an unreadable file is named as such before its slice index is judged
    if request.slice_index not in (None, 0):
        raise InputError(f"{request.image} is a 2D image: slice index {request.slice_index} is out of range (only 0)")
    image, geometry = prepare_2d_image(plane, preprocessing, is_hu=is_hu, source=str(request.image))
    return PreparedInput(request, image, geometry, plane, None, None, None)


def _output_id(prepared: PreparedInput, prompt: str) -> str:
    name = prepared.request.image.name
    stem = re.sub(r"(\.nii\.gz|\.nii|\.dcm|\.png|\.npy)$", "", name, flags=re.IGNORECASE) or "image"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)
    slice_part = f"_s{prepared.slice_index}" if prepared.slice_index is not None else ""
    digest = hashlib.sha256(f"{prepared.request.image.resolve()}|{prepared.slice_index}|{prompt}".encode()).hexdigest()
    return f"{stem}{slice_part}_{digest[:10]}"


def _input_sha256(prepared: PreparedInput) -> str:
    """SHA-256 of the model input, the displayed slice and the output geometry: what a row's outputs depend on."""
    digest = hashlib.sha256()
    for array in (prepared.image, prepared.display_slice, prepared.volume_affine):
        if array is not None:
            array = np.ascontiguousarray(array, dtype=np.float32)
            digest.update(f"{array.shape}|".encode())
            digest.update(array.tobytes())
    digest.update(f"{prepared.volume_shape}".encode())
    return digest.hexdigest()


def _display_window(plane: np.ndarray, preprocessing: SlicePreprocessing, is_ct: bool) -> np.ndarray:
    if is_ct:
        low, high = preprocessing.window
        return np.clip((plane - low) / (high - low), 0, 1)
    span = float(plane.max() - plane.min())
    return (plane - plane.min()) / span if span > 0 else np.zeros_like(plane)


def save_overlay(path: Path, display: np.ndarray, mask: np.ndarray, caption: str) -> None:
    """Write a PNG of the display slice (values in [0, 1]) with ``mask`` in red and the caption above it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    height, width = display.shape
    figure = plt.figure(figsize=(5, 5 * height / width + 0.6), dpi=100)
    axes = figure.add_axes((0, 0, 1, height / (height + 0.12 * width)))
    axes.imshow(display, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    overlay = np.zeros((height, width, 4), dtype=np.float32)
    overlay[mask > 0] = (1.0, 0.1, 0.1, 0.45)
    axes.imshow(overlay, interpolation="nearest")
    if mask.any():
        axes.contour(mask > 0, levels=[0.5], colors=["red"], linewidths=1.0)
    axes.set_axis_off()
    figure.suptitle("\n".join(textwrap.wrap(caption, 60)), fontsize=10, y=0.995, va="top")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def _save_mask_png(path: Path, mask: np.ndarray) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((mask > 0).astype(np.uint8) * 255).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def weights_sha256(net: torch.nn.Module) -> str:
    """SHA-256 of a network's parameters and buffers (names, dtypes, shapes and values), to pin a run's model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@torch.inference_mode()
def _predict(net: torch.nn.Module, image: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
    images = torch.from_numpy(image)[None].expand(len(prompts), -1, -1, -1)  # (P, C, S, S)
    return torch.sigmoid(net(images, list(prompts)).logits)[:, 0].numpy()  # (P, S, S)


def segment(
    net: torch.nn.Module,
    preprocessing: SlicePreprocessing,
    requests: Sequence[SegmentationRequest],
    out_dir: str | Path,
    threshold: float = 0.5,
    progress: bool = False,
) -> list[dict[str, str]]:
    """Segment every (image, slice, prompt) and write masks, overlays and ``segmentations.csv``.

    Every request is read and preprocessed before the first file is written, so bad input leaves no output.

    Returns:
        The rows of ``segmentations.csv`` written by this call (rows from an earlier run are skipped).

    Raises:
        InputError: bad input (named), or ``out_dir`` holding masks of another model, preprocessing or threshold, or
            a row made from another input at the same path (named; checked before anything is written).
    """
    if not 0 < threshold < 1:
        raise InputError(f"--threshold must lie in (0, 1), got {threshold}")
    prepared = [prepare_input(request, preprocessing) for request in requests]
    out = ensure_writable_dir(out_dir)
    check_run_fingerprint(
        out, {"weights_sha256": weights_sha256(net), "preprocessing": preprocessing.to_dict(), "threshold": threshold}
    )
    from tqdm import tqdm

    written: list[dict[str, str]] = []
    net.eval()
    with ResumableRowWriter(out / "segmentations.csv", RESULT_COLUMNS) as results:
        plan = []  # every stored row is checked against its input before anything is written
        for item in prepared:
            input_sha256 = _input_sha256(item)
            ids = [_output_id(item, prompt) for prompt in item.request.prompts]
            todo = [(i, prompt) for i, prompt in zip(ids, item.request.prompts)
                    if not results.done(i, {"input_sha256": input_sha256})]
            plan.append((item, input_sha256, todo))
        for item, input_sha256, todo in tqdm(plan, desc="segment", unit="slice", disable=not progress):
            if not todo:
                continue
            probabilities = _predict(net, item.image, [prompt for _, prompt in todo])
            for (output_id, prompt), probability in zip(todo, probabilities):
                row = _write_outputs(out, output_id, item, prompt, probability, preprocessing, threshold)
                results.write({**row, "input_sha256": input_sha256})
                written.append(row)
    return written


def _write_outputs(
    out: Path, output_id: str, item: PreparedInput, prompt: str, probability: np.ndarray,
    preprocessing: SlicePreprocessing, threshold: float,
) -> dict[str, str]:
    stored_mask = restore_slice(probability, item.geometry, mode="bilinear") > threshold  # stored slice layout
    display_mask = item.geometry.orientation.apply(stored_mask)
    row = {"id": output_id, "image": str(item.request.image), "prompt": prompt,
           "slice_index": "" if item.slice_index is None else str(item.slice_index), "mask_nifti": "",
           "mask_pixels": str(int(stored_mask.sum())), "max_probability": f"{float(probability.max()):.4f}"}
    if item.volume_shape is not None:
        from datasets.nifti import save_nifti

        volume_mask = np.zeros(item.volume_shape, dtype=np.uint8)
        volume_mask[:, :, item.slice_index] = stored_mask
        save_nifti(volume_mask, item.volume_affine, out / f"{output_id}_mask.nii.gz")
        row["mask_nifti"] = f"{output_id}_mask.nii.gz"
    _save_mask_png(out / f"{output_id}_mask.png", display_mask)
    display = _display_window(item.display_slice, preprocessing, is_ct=item.volume_shape is not None)
    save_overlay(out / f"{output_id}_overlay.png", display, display_mask, prompt)
    row["mask_png"], row["overlay_png"] = f"{output_id}_mask.png", f"{output_id}_overlay.png"
    logger.info("%s: '%s' -> %d mask pixels", item.request.image, prompt, int(stored_mask.sum()))
    return row
