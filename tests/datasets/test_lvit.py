"""LViT layout (img/, labelcol/, <Split>_text.xlsx written by openpyxl) converted to refseg-1 and served."""

from __future__ import annotations

import numpy as np
import openpyxl
import pytest
from PIL import Image

from datasets.errors import InputError
from datasets.lvit import lvit_to_manifest, read_lvit_split
from datasets.refseg import read_refseg_manifest
from datasets.refseg_datamodule import RefSegDataModule


def _split(root, folder, sheet, entries, mask_prefix):
    """entries: (image stem, description); masks are named mask_<stem>.png when mask_prefix (QaTa) else <stem>.png."""
    (root / folder / "img").mkdir(parents=True)
    (root / folder / "labelcol").mkdir()
    workbook = openpyxl.Workbook()
    workbook.active.append(["Image", "Description"])
    for k, (stem, text) in enumerate(entries):
        picture = np.full((12, 16, 3), 40 * k, dtype=np.uint8)
        Image.fromarray(picture).save(root / folder / "img" / f"{stem}.png")
        mask = np.zeros((12, 16), dtype=np.uint8)
        mask[2:6, 3:9] = 255
        mask_name = f"mask_{stem}.png" if mask_prefix else f"{stem}.png"
        Image.fromarray(mask).save(root / folder / "labelcol" / mask_name)
        workbook.active.append([mask_name, text])
    workbook.save(root / folder / sheet)


@pytest.fixture
def lvit_root(tmp_path):
    root = tmp_path / "QaTa"
    _split(root, "Train_Folder", "Train_text.xlsx",
           [("covid_1", "Bilateral pulmonary infection, two infected areas."), ("covid_2", "Left lung infection.")],
           mask_prefix=True)
    _split(root, "Val_Folder", "Val_text.xlsx", [("covid_3", "Unilateral pulmonary infection.")], mask_prefix=True)
    _split(root, "Test_Folder", "Test_text.xlsx", [("case_9", "All right lung.")], mask_prefix=False)
    return root


def test_conversion_handles_both_naming_schemes(lvit_root, tmp_path):
    out = lvit_to_manifest(lvit_root, tmp_path / "manifest.csv")
    manifest = read_refseg_manifest(out)
    assert manifest.splits == {"train": 2, "val": 1, "test": 1}
    first = manifest.rows("train")[0]
    assert first.image.name == "covid_1.png" and first.mask.name == "mask_covid_1.png"
    assert first.text == "Bilateral pulmonary infection, two infected areas."
    assert first.extra == {"source_row": "Train_text.xlsx:2"} and first.case_id == "covid_1"
    test = manifest.rows("test")[0]
    assert test.image.parent.name == "img" and test.mask.parent.name == "labelcol" and test.image.name == "case_9.png"
    assert "QaTa/Train_Folder/img/covid_1.png" in out.read_text()  # relative to the manifest's folder


def test_converted_manifest_feeds_the_datamodule(lvit_root, tmp_path):
    data = RefSegDataModule(str(lvit_to_manifest(lvit_root, tmp_path / "m.csv")), image_size=8, batch_size=2)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (2, 1, 8, 8) and batch["mask"].shape == (2, 1, 8, 8)
    assert batch["mask"].sum() > 0 and sorted(batch["text"])[0] == "Bilateral pulmonary infection, two infected areas."


def test_masks_without_a_spreadsheet_row_are_counted_in_a_warning(lvit_root, caplog):
    """LViT's own loader walks labelcol/ and would fail on such a mask; the converter left it out without a word."""
    mask = np.zeros((12, 16), dtype=np.uint8)
    Image.fromarray(mask).save(lvit_root / "Train_Folder" / "labelcol" / "mask_covid_99.png")
    Image.fromarray(mask).save(lvit_root / "Train_Folder" / "img" / "covid_99.png")
    with caplog.at_level("WARNING"):
        rows = read_lvit_split(lvit_root, "train")
    assert len(rows) == 2
    assert "1 mask(s) in labelcol/ have no row in Train_text.xlsx" in caplog.text and "mask_covid_99.png" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        read_lvit_split(lvit_root, "val")
    assert "labelcol" not in caplog.text


def test_unmatched_file_names_the_sheet_row_and_paths(lvit_root):
    (lvit_root / "Train_Folder" / "img" / "covid_2.png").unlink()
    with pytest.raises(InputError, match=r"Train_text.xlsx row 3: no image/mask pair for 'mask_covid_2.png'"):
        read_lvit_split(lvit_root, "train")


def test_empty_description_and_bad_header_are_errors(tmp_path):
    root = tmp_path / "d"
    _split(root, "Train_Folder", "Train_text.xlsx", [("a", "text"), ("b", "")], mask_prefix=False)
    with pytest.raises(InputError, match=r"row 3 \(b.png\): column 'Description' is empty"):
        read_lvit_split(root, "train")
    workbook = openpyxl.Workbook()
    workbook.active.append(["Name", "Text"])
    workbook.save(root / "Train_Folder" / "Train_text.xlsx")
    with pytest.raises(InputError, match="'Image' and 'Description'"):
        read_lvit_split(root, "train")
    with pytest.raises(InputError, match="nothing: no such folder"):
        lvit_to_manifest(tmp_path / "nothing", tmp_path / "m.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no LViT split folder"):
        lvit_to_manifest(tmp_path / "empty", tmp_path / "m.csv")
