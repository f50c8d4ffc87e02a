"""LViT-style text-annotated segmentation data (QaTa-COV19, MosMedData+, MoNuSeg) converted to a ``refseg-1`` manifest.

Layout (as published with LViT, Li et al., IEEE TMI 2023)::

    ROOT/Train_Folder/img/*.png         images
    ROOT/Train_Folder/labelcol/*.png    binary masks (0 / 255)
    ROOT/Train_Folder/Train_text.xlsx   columns Image, Description (one row per annotated mask)
    ROOT/Val_Folder/...   Val_text.xlsx
    ROOT/Test_Folder/...  Test_text.xlsx

The ``Image`` column names the mask file in ``labelcol/``. Two naming schemes exist and both are resolved, never
guessed silently: the mask and the image share one file name (MoNuSeg, MosMedData+), or the mask carries a ``mask_``
prefix that the image lacks (QaTa-COV19: ``mask_x.png`` for ``img/x.png``). A cell that names the image instead
(``x.png`` while the mask is ``labelcol/mask_x.png``) is resolved too. A row whose files cannot be found, or whose name
matches two different images, is an error naming the spreadsheet, its row and the paths tried.

LViT gives no patient identifiers, so ``case_id`` is the image's file stem and the split is the folder the row is in,
stored in the manifest as-is. The same file stem in two folders is therefore reported as a case in two splits when the
manifest is read: check such data for patient overlap. PNG images are display images (no HU window; scaled to
``[0, 1]``) and taken as already in display orientation.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from datasets.errors import InputError, MissingDependencyError
from datasets.refseg import write_refseg_manifest

__all__ = ["LVIT_SPLITS", "read_lvit_split", "lvit_to_manifest"]

logger = logging.getLogger(__name__)

LVIT_SPLITS = {"train": ("Train_Folder", "Train_text.xlsx"), "val": ("Val_Folder", "Val_text.xlsx"),
               "test": ("Test_Folder", "Test_text.xlsx")}
_MASK_PREFIX = "mask_"


def _read_xlsx(path: Path) -> list[tuple[int, str, str]]:
    """``(excel_row, image, description)`` for every non-empty data row of the first sheet."""
    try:
        import openpyxl
    except ImportError as err:
        raise MissingDependencyError("reading LViT .xlsx annotations", extra="xlsx", package="openpyxl") from err
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as err:  # openpyxl raises zipfile, KeyError and its own errors on damaged files
        raise InputError(f"{path} is not a readable .xlsx workbook: {' '.join(str(err).split())[:200]}") from err
    try:
        rows = list(workbook.worksheets[0].iter_rows(values_only=True))
    finally:
        workbook.close()
    header = [str(cell).strip() if cell is not None else "" for cell in (rows[0] if rows else ())]
    if "Image" not in header or "Description" not in header:
        raise InputError(f"{path}: first row must hold the columns 'Image' and 'Description', got {header}")
    image_col, text_col = header.index("Image"), header.index("Description")
    entries = []
    for excel_row, cells in enumerate(rows[1:], start=2):
        cells = tuple(cells) + (None,) * (len(header) - len(cells))
        image = str(cells[image_col]).strip() if cells[image_col] is not None else ""
        text = str(cells[text_col]).strip() if cells[text_col] is not None else ""
        if not image and not text:
            continue
        if not image:
            raise InputError(f"{path} row {excel_row}: column 'Image' is empty; expected the mask file name")
        if not text:
            raise InputError(f"{path} row {excel_row} ({image}): column 'Description' is empty; expected the text")
        entries.append((excel_row, image, text))
    return entries


def _unique_existing(candidates: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in candidates:
        if path.is_file() and path not in found:
            found.append(path)
    return found


def _resolve_pair(folder: Path, name: str, where: str) -> tuple[Path, Path]:
    """The (image, mask) files for an ``Image`` cell, under either naming scheme."""
    stripped = name[len(_MASK_PREFIX):] if name.startswith(_MASK_PREFIX) else name
    masks = _unique_existing([folder / "labelcol" / name, folder / "labelcol" / f"{_MASK_PREFIX}{stripped}"])
    images = _unique_existing([folder / "img" / stripped, folder / "img" / name])
    if len(masks) != 1 or len(images) != 1:
        problem = "no" if not masks or not images else "ambiguous"
        raise InputError(
            f"{where}: {problem} image/mask pair for {name!r}: masks found {[str(p) for p in masks]}, images found "
            f"{[str(p) for p in images]} (tried labelcol/{name}, labelcol/{_MASK_PREFIX}{stripped}, img/{stripped}, "
            f"img/{name})"
        )
    return images[0], masks[0]


def read_lvit_split(root: str | os.PathLike, split: str) -> list[dict[str, str]]:
    """Rows of one LViT split as ``refseg-1`` fields with absolute paths.

    Args:
        root: the dataset root holding ``Train_Folder`` etc.
        split: ``train``, ``val`` or ``test``.

    Raises:
        InputError: unknown split, missing folder or spreadsheet, bad rows, or files that cannot be matched.
        MissingDependencyError: openpyxl is not installed (extra ``xlsx``).
    """
    if split not in LVIT_SPLITS:
        raise InputError(f"unknown LViT split {split!r}; expected one of {', '.join(LVIT_SPLITS)}")
    folder_name, sheet_name = LVIT_SPLITS[split]
    folder = Path(root) / folder_name
    sheet = folder / sheet_name
    for required in (folder / "img", folder / "labelcol"):
        if not required.is_dir():
            raise InputError(f"{required}: folder not found; an LViT split folder holds img/, labelcol/, {sheet_name}")
    if not sheet.is_file():
        raise InputError(f"{sheet}: annotation spreadsheet not found")
    rows, seen = [], {}
    for excel_row, name, text in _read_xlsx(sheet):
        image, mask = _resolve_pair(folder, name, f"{sheet} row {excel_row}")
        stem = image.name.rsplit(".", 1)[0]
        count = seen[stem] = seen.get(stem, 0) + 1
        rows.append({
            "row_id": f"{split}/{stem}" + (f"#{count}" if count > 1 else ""),
            "case_id": stem, "split": split, "image": str(image.resolve()), "slice_index": "",
            "mask": str(mask.resolve()), "mask_value": "", "lesion_id": "", "text": text, "template_id": "",
            "source_row": f"{sheet_name}:{excel_row}",
        })
    annotated = {Path(row["mask"]).name for row in rows}
    unannotated = sorted(path.name for path in (folder / "labelcol").iterdir()
                         if path.is_file() and not path.name.startswith(".") and path.name not in annotated)
    if unannotated:
        logger.warning(
            "%s: %d mask(s) in labelcol/ have no row in %s and are left out (no text to pair them with), e.g. %s",
            folder, len(unannotated), sheet_name, ", ".join(unannotated[:3]),
        )
    return rows


def lvit_to_manifest(root: str | os.PathLike, out_csv: str | os.PathLike) -> Path:
    """Convert an LViT-layout dataset into a ``refseg-1`` manifest (written atomically).

    Paths are written relative to the manifest's folder when they lie under it, absolute otherwise. The extra column
    ``source_row`` records ``<spreadsheet>:<excel row>`` for every row. Split folders that do not exist are skipped
    (logged); at least one must exist.

    Args:
        root: the dataset root holding ``Train_Folder``, ``Val_Folder``, ``Test_Folder``.
        out_csv: manifest to write.

    Returns:
        The manifest path.

    Raises:
        InputError: no split folder at all, or any problem reported by :func:`read_lvit_split`.
    """
    root, out_csv = Path(root), Path(out_csv)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder; pass the LViT dataset root (the folder holding its split folders)")
    present = [split for split, (folder, _) in LVIT_SPLITS.items() if (root / folder).is_dir()]
    if not present:
        expected = ", ".join(folder for folder, _ in LVIT_SPLITS.values())
        raise InputError(f"{root}: no LViT split folder found; expected {expected}")
    missing = [split for split in LVIT_SPLITS if split not in present]
    if missing:
        logger.info("%s: no folder for split(s) %s; converting %s only", root, missing, present)
    base = out_csv.parent.resolve()
    rows = []
    for split in present:
        for row in read_lvit_split(root, split):
            for column in ("image", "mask"):
                path = Path(row[column])
                row[column] = path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)
            rows.append(row)
    logger.info("LViT %s: %d rows written to %s", root, len(rows), out_csv)
    return write_refseg_manifest(out_csv, rows, extra_columns=["source_row"])
