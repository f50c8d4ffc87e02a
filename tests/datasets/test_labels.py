"""Label-table adapters on fixture files with the public releases' exact headers and awkward rows."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from datasets.errors import InputError
from datasets.labels import chestxdet10, chestxray14, chexpert, ctrate, openi, padchest, radchestct
from datasets.labels.base import LabelSet

DATA = Path(__file__).resolve().parents[1] / "data" / "labels"


def _edit(src: Path, dst: Path, old: str, new: str, encoding: str = "utf-8") -> Path:
    text = src.read_text(encoding=encoding)
    assert old in text
    dst.write_text(text.replace(old, new, 1), encoding=encoding)
    return dst


def _row(labels: LabelSet, image_id: str) -> dict[str, float]:
    i = labels.image_ids.index(image_id)
    return dict(zip(labels.class_names, labels.labels[i].tolist()))


# ---------------------------------------------------------------- ChestX-ray14


def test_chestxray14_data_entry_split_brackets_trailing_comma_pipes_no_finding():
    labels = chestxray14.read_data_entry(DATA / "chestxray14" / "Data_Entry_2017.csv")
    assert labels.class_names == chestxray14.CLASSES and "Pleural_Thickening" in labels.class_names
    assert labels.labels.dtype == np.float32 and labels.labels.shape == (5, 14)
    assert labels.image_ids[0] == "00000001_000.png"
    two = _row(labels, "00000001_001.png")
    assert two["Cardiomegaly"] == 1 and two["Emphysema"] == 1 and sum(two.values()) == 2
    assert sum(_row(labels, "00000002_000.png").values()) == 0  # "No Finding"
    three = _row(labels, "00000003_001.png")
    assert {k for k, v in three.items() if v == 1} == {"Effusion", "Infiltration", "Pleural_Thickening"}
    meta = labels.meta[0]
    assert (meta["width"], meta["height"], meta["view"]) == ("2682", "2749", "PA")
    assert meta["spacing_x"] == meta["spacing_y"] == "0.14300000000000002"
    assert meta["row"] == 2


def test_chestxray14_official_list_and_chexnet_list_agree():
    entries = chestxray14.read_data_entry(DATA / "chestxray14" / "Data_Entry_2017.csv")
    official = entries.select_images(chestxray14.read_image_list(DATA / "chestxray14" / "test_list.txt"))
    chexnet = chestxray14.read_chexnet_list(DATA / "chestxray14" / "chexnet_test_list.txt")
    assert official.image_ids == chexnet.image_ids == ["00000003_000.png", "00000003_001.png"]
    np.testing.assert_array_equal(official.labels, chexnet.labels)
    assert chexnet.image_relpaths[0] == "images/00000003_000.png"


def test_chestxray14_errors(tmp_path):
    src = DATA / "chestxray14" / "Data_Entry_2017.csv"
    bad = _edit(src, tmp_path / "a.csv", "Cardiomegaly|Emphysema", "Cardiomegaly|Pleural Thickening")
    with pytest.raises(InputError, match=r"row 3 \(00000001_001.png\), column 'Finding Labels'.*'Pleural Thickening'"):
        chestxray14.read_data_entry(bad)
    dup = _edit(src, tmp_path / "b.csv", "00000002_000.png", "00000001_000.png")
    with pytest.raises(InputError, match=r"row 4, column 'Image Index': duplicate id '00000001_000.png'.*row 2"):
        chestxray14.read_data_entry(dup)
    nocol = _edit(src, tmp_path / "c.csv", "Finding Labels", "Findings")
    with pytest.raises(InputError, match=r"c.csv: missing column\(s\) \['Finding Labels'\]"):
        chestxray14.read_data_entry(nocol)
    (tmp_path / "list.txt").write_text("00000003_000.png\n99999999_000.png\n")
    entries = chestxray14.read_data_entry(src)
    with pytest.raises(InputError, match=r"1 image id\(s\) listed in .*list.txt are absent from .*'99999999_000.png'"):
        entries.select_images(chestxray14.read_image_list(tmp_path / "list.txt"), what=str(tmp_path / "list.txt"))
    (tmp_path / "chexnet.txt").write_text("a.png 0 0 0 0 0 0 0 0 0 0 0 0 0 2\n")
    with pytest.raises(InputError, match=r"line 1 \(a.png\), column 'Hernia': expected 0 or 1, got '2'"):
        chestxray14.read_chexnet_list(tmp_path / "chexnet.txt")


# ---------------------------------------------------------------- CheXpert


@pytest.mark.parametrize(
    "policy, blank, edema_row3, atel_row1, lesion_row1",
    [("u_ones", "zeros", 1.0, 1.0, 0.0), ("u_zeros", "zeros", 0.0, 0.0, 0.0), ("ignore", "ignore", None, None, None)],
)
def test_chexpert_uncertainty_and_blank_policies(policy, blank, edema_row3, atel_row1, lesion_row1):
    labels = chexpert.read_chexpert_csv(DATA / "chexpert" / "valid.csv", uncertainty=policy, blank=blank)
    assert labels.class_names == chexpert.OBSERVATIONS and labels.labels.shape == (3, 14)
    first = _row(labels, "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg")
    third = _row(labels, "CheXpert-v1.0-small/valid/patient64542/study1/view2_lateral.jpg")
    for value, expected in ((third["Edema"], edema_row3), (first["Atelectasis"], atel_row1),
                            (first["Lung Lesion"], lesion_row1)):
        assert math.isnan(value) if expected is None else value == expected
    assert first["Cardiomegaly"] == 1 and first["Pneumothorax"] == 0 and third["Pleural Effusion"] == 1
    assert labels.meta[2]["frontal_lateral"] == "Lateral" and labels.meta[2]["ap_pa"] == ""


def test_chexpert_competition_tasks_and_test_set(tmp_path):
    labels = chexpert.read_chexpert_test(DATA / "chexpert" / "test_labels.csv")
    assert labels.class_names == ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    np.testing.assert_array_equal(labels.labels[0], [1, 1, 0, 0, 1])
    src = DATA / "chexpert" / "valid.csv"
    with pytest.raises(InputError, match=r"row 3 \(.*patient64542.*\), column 'Cardiomegaly': expected 1.0, 0.0, -1.0"):
        chexpert.read_chexpert_csv(_edit(src, tmp_path / "v.csv", "PA,1.0,,0.0", "PA,1.0,,2"))
    bad_test = _edit(DATA / "chexpert" / "test_labels.csv", tmp_path / "t.csv", "jpg,0,1", "jpg,0,-1")
    with pytest.raises(InputError, match=r"row 2, column 'Cardiomegaly': expected 0 or 1, got '-1'"):
        chexpert.read_chexpert_test(bad_test)
    with pytest.raises(ValueError, match="uncertainty policy"):
        chexpert.read_chexpert_csv(src, uncertainty="u_maybe")


def test_a_row_cut_short_is_named_and_a_bad_cell_is_not_blamed_on_the_options(tmp_path):
    """A truncated row would otherwise fail later as a KeyError on its missing column."""
    from datasets.benchmarks import read_labels

    src = DATA / "chexpert" / "valid.csv"
    short = _edit(src, tmp_path / "short.csv", "PA,1.0,,0.0,,,,,,,,0.0,,,\n", "PA,1.0,,0.0\n")
    with pytest.raises(InputError, match=r"short\.csv: row 3 has 8 fields but the header has 19 columns"):
        chexpert.read_chexpert_csv(short)
    bad_cell = _edit(src, tmp_path / "cell.csv", "PA,1.0,,0.0", "PA,1.0,,2")
    with pytest.raises(InputError) as caught:
        read_labels("chexpert.csv", {"labels": bad_cell}, {"uncertainty": "u_ones"}, "--adapter-option")
    assert "bad option" not in str(caught.value) and "row 3" in str(caught.value)
    with pytest.raises(InputError, match="--adapter-option: bad option for adapter 'chexpert.csv'"):
        read_labels("chexpert.csv", {"labels": src}, {"uncertainty": "ones"}, "--adapter-option")


# ---------------------------------------------------------------- PadChest

PADCHEST = DATA / "padchest" / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"


def test_padchest_literal_with_stray_spaces_and_empty_entries():
    assert padchest.parse_labels_literal("['pleural effusion', ' cardiomegaly', '']", "f.csv", 2) == [
        "pleural effusion", "cardiomegaly"]
    labels = padchest.read_padchest_csv(PADCHEST)
    assert len(labels.class_names) == 192 and len(labels) == 3  # the RNN_model row is dropped
    first = labels.labels[0]
    assert {labels.class_names[j] for j in np.flatnonzero(first)} == {"pleural effusion", "cardiomegaly"}
    assert labels.labels[1].sum() == 0  # 'normal'
    assert _row(labels, labels.image_ids[2])["COPD signs"] == 1
    assert labels.image_relpaths[2].startswith("1/")
    assert labels.meta[0]["labels"] == ["pleural effusion", "cardiomegaly"]
    assert len(padchest.read_padchest_csv(PADCHEST, physician_only=False)) == 4


def test_padchest20_is_the_rarest_classes_in_class_order():
    labels = padchest.read_padchest_csv(PADCHEST)
    rare = padchest.rarest_classes(labels, 20)
    assert len(rare) == 20 and rare == [name for name in labels.class_names if name in rare]
    assert "cardiomegaly" not in rare  # the only class with 2 positives
    assert padchest.rarest_classes(labels, 191)[-1] == "volume loss"


@pytest.mark.parametrize("literal", ["['pleural effusion', ' cardiomegaly'", "__import__('os')", "'cardiomegaly'"])
def test_padchest_unparsable_literal_names_row(tmp_path, literal):
    bad = _edit(PADCHEST, tmp_path / "p.csv", ",['normal'],", ',"' + literal.replace('"', '""') + '",')
    with pytest.raises(InputError, match=r"p.csv: row 3, column 'Labels'"):
        padchest.read_padchest_csv(bad)


def test_padchest_blank_labels_cell_is_left_out_and_named(tmp_path, caplog):
    blank = _edit(PADCHEST, tmp_path / "p.csv", ",['normal'],", ",,")
    with caplog.at_level(logging.WARNING, logger="datasets.labels.padchest"):
        labels = padchest.read_padchest_csv(blank)
    assert len(labels) == 2 and all(meta["row"] != 3 for meta in labels.meta)
    assert "left out 1 of 3 rows whose 'Labels' cell is blank" in caplog.text and "row 3 (" in caplog.text
    no_entries = padchest.read_padchest_csv(_edit(PADCHEST, tmp_path / "e.csv", ",['normal'],", ",[''],"))
    assert len(no_entries) == 3 and no_entries.labels[1].sum() == 0  # an annotation with no finding stays


def test_padchest_unknown_label_and_duplicate(tmp_path):
    bad = _edit(PADCHEST, tmp_path / "p.csv", "['normal']", "['pleural effusión']")
    with pytest.raises(InputError, match=r"row 3 .* label 'pleural effusión' is not one of the 192"):
        padchest.read_padchest_csv(bad)
    ids = padchest.read_padchest_csv(PADCHEST).image_ids
    dup = _edit(PADCHEST, tmp_path / "d.csv", ids[1], ids[0])
    with pytest.raises(InputError, match=r"row 3, column 'ImageID': duplicate id"):
        padchest.read_padchest_csv(dup)


# ---------------------------------------------------------------- ChestX-Det10


def test_chestxdet10_syms_boxes_and_empty_syms(tmp_path):
    labels = chestxdet10.read_chestxdet10_json(DATA / "chestxdet10" / "test.json")
    assert labels.class_names == chestxdet10.CLASSES and labels.labels.shape == (3, 10)
    assert labels.labels[1].sum() == 0 and labels.meta[1]["boxes"] == []
    assert _row(labels, "36201.png")["Nodule"] == 1 and labels.labels[2].sum() == 2
    (tmp_path / "t.json").write_text('[{"file_name": "1.png", "syms": ["Effusion"], "boxes": [[1, 2, 3]]}]')
    with pytest.raises(InputError, match=r"entry 1 \(1.png\), key 'boxes'"):
        chestxdet10.read_chestxdet10_json(tmp_path / "t.json")
    (tmp_path / "u.json").write_text('[{"file_name": "1.png", "syms": ["Pleural Effusion"], "boxes": [[1, 2, 3, 4]]}]')
    with pytest.raises(InputError, match=r"key 'syms': unknown class 'Pleural Effusion'"):
        chestxdet10.read_chestxdet10_json(tmp_path / "u.json")


# ---------------------------------------------------------------- Open-I


def test_openi_containment_rule_synonyms_and_image_join(tmp_path):
    table = openi.read_openi_custom_csv(DATA / "openi" / "custom.csv")
    assert len(table.class_names) == 18
    assert sum(_row(table, "CXR1_1_IM-0001-3001").values()) == 0  # blank labels_automatic
    assert {k for k, v in _row(table, "CXR2_IM-0652-1001").items() if v} == {"Cardiomegaly", "Atelectasis"}
    assert {k for k, v in _row(table, "CXR3_IM-1384-1001").items() if v} == {
        "Calcified Granuloma", "Granuloma", "Pleural_Thickening", "Infiltration"}
    images = openi.read_openi_image_list(DATA / "openi" / "openi_multi_label_image.csv")
    assert len(table.select_images(images)) == 3
    (tmp_path / "img.csv").write_text("Path\n/x/CXR9_IM-0001-1001.png\n")
    with pytest.raises(InputError, match="'CXR9_IM-0001-1001'"):
        table.select_images(openi.read_openi_image_list(tmp_path / "img.csv"))


# ---------------------------------------------------------------- CT-RATE

CTRATE = DATA / "ctrate" / "dataset_multi_abnormality_labels_valid_predicted_labels.csv"


def test_ctrate_18_columns_nested_paths_and_metadata():
    labels = ctrate.read_ctrate_labels(CTRATE)
    header = CTRATE.read_text().splitlines()[0].split(",")
    assert labels.class_names == header[1:] == ctrate.CLASSES
    assert labels.image_relpaths[0] == "valid_1/valid_1_a/valid_1_a_1.nii.gz"
    assert _row(labels, "valid_2_a_1.nii.gz")["Hiatal hernia"] == 1
    geometry = ctrate.read_ctrate_metadata(DATA / "ctrate" / "validation_metadata.csv")
    g = geometry["valid_1_a_2.nii.gz"]
    assert g.spacing == (0.68359375, 0.68359375, 1.0) and (g.rescale_slope, g.rescale_intercept) == (1.0, -8192.0)
    assert g.origin == (-166.0, 9.0, 56.2998657) and len(g.orientation) == 6
    joined = ctrate.join_metadata(labels, geometry)
    assert joined.meta[2]["geometry"].spacing[0] == 0.7421875


def test_ctrate_lt_selects_columns_by_name():
    labels = ctrate.read_ctrate_labels(DATA / "ctrate" / "CT-RATE-LT-label.csv", classes=ctrate.LT_CLASSES)
    assert labels.class_names[:3] == ["Pneumonia", "Pneumothorax", "Empyema"] and labels.labels.shape == (3, 15)
    assert {k for k, v in _row(labels, "valid_8_a_1.nii.gz").items() if v} == {
        "Atherosclerosis", "Spondylosis", "Osteophyte", "Rib fracture"}


def test_ctrate_errors(tmp_path):
    yes = _edit(CTRATE, tmp_path / "l.csv", "valid_1_a_2.nii.gz,0,", "valid_1_a_2.nii.gz,yes,")
    with pytest.raises(InputError, match=r"l.csv: row 3, column 'Medical material': expected 0 or 1, got 'yes'"):
        ctrate.read_ctrate_labels(yes)
    short = tmp_path / "s.csv"
    short.write_text(CTRATE.read_text().replace(",Interlobular septal thickening", ",Septal thickening"))
    with pytest.raises(InputError, match=r"missing column\(s\) \['Interlobular septal thickening'\]"):
        ctrate.read_ctrate_labels(short)
    meta = _edit(DATA / "ctrate" / "validation_metadata.csv", tmp_path / "m.csv", '"[0.68359375, 0.68359375]"', "0.68")
    with pytest.raises(InputError, match=r"m.csv: row 3, column 'XYSpacing'"):
        ctrate.read_ctrate_metadata(meta)
    labels = ctrate.read_ctrate_labels(CTRATE)
    with pytest.raises(InputError, match=r"1 image id\(s\) .* absent from .*: 'valid_2_a_1.nii.gz'"):
        ctrate.join_metadata(labels, {k: v for k, v in ctrate.read_ctrate_metadata(
            DATA / "ctrate" / "validation_metadata.csv").items() if k != "valid_2_a_1.nii.gz"})


def test_samples_and_image_folder_join(tmp_path):
    labels = ctrate.read_ctrate_labels(CTRATE)
    for relpath in labels.image_relpaths[:2]:
        (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relpath).write_bytes(b"")
    with pytest.raises(InputError, match=r"1 image id\(s\) listed in .* absent from the folder .*'valid_2_a_1.nii.gz'"):
        labels.check_images(tmp_path)
    sample = next(labels.samples(tmp_path))
    assert set(sample) == {"image", "mask", "text", "label", "meta"}
    assert sample["image"] == tmp_path / "valid_1/valid_1_a/valid_1_a_1.nii.gz" and sample["mask"] is None
    assert sample["label"].shape == (18,) and sample["meta"]["image_id"] == "valid_1_a_1.nii.gz"


# ---------------------------------------------------------------- RAD-ChestCT


def test_radchestct_location_table_or_over_locations():
    labels = radchestct.read_radchestct_labels(DATA / "radchestct" / "imgtest_Abnormality_and_Location_Labels.csv")
    assert labels.class_names == radchestct.CLASSES and labels.labels.shape == (3, 16)
    assert {k for k, v in _row(labels, "tst32575").items() if v} == {"nodule", "calcification"}
    assert {k for k, v in _row(labels, "tst32577").items() if v} == {"emphysema"}
    assert labels.image_relpaths[0] == "tst32575.npz"


def test_radchestct_npz_reader(tmp_path):
    volume = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 1000
    np.savez_compressed(tmp_path / "tst32575.npz", ct=volume)
    loaded = radchestct.read_radchestct_volume(tmp_path / "tst32575.npz")
    np.testing.assert_array_equal(loaded.array, volume)
    assert loaded.spacing == (0.8, 0.8, 0.8)
    np.savez(tmp_path / "wrong.npz", volume=volume)
    with pytest.raises(InputError, match=r"wrong.npz: no array 'ct' in the archive; it holds \['volume'\]"):
        radchestct.read_radchestct_volume(tmp_path / "wrong.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="junk.npz is not a readable NumPy .npz archive"):
        radchestct.read_radchestct_volume(tmp_path / "junk.npz")


def test_radchestct_missing_abnormality(tmp_path):
    src = DATA / "radchestct" / "imgtest_Abnormality_and_Location_Labels.csv"
    text = src.read_text().replace("septal_thickening*lung", "septal*lung")
    (tmp_path / "r.csv").write_text(text)
    with pytest.raises(InputError, match=r"'<abnormality>\*<location>' columns for abnormality\(ies\) \['septal_thick"):
        radchestct.read_radchestct_labels(tmp_path / "r.csv")


def test_latin1_label_table_is_a_clear_error(tmp_path):
    shutil.copy(DATA / "reports" / "latin1_pairs.csv", tmp_path / "t.csv")
    with pytest.raises(InputError, match=r"t.csv: line 2 is not valid utf-8 text.*encoding='latin-1'"):
        chexpert.read_chexpert_test(tmp_path / "t.csv")
