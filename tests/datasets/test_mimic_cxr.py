"""MIMIC-CXR's released layout (split and metadata tables, report text files) converted to a pairs-1 manifest."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from datasets.__main__ import main
from datasets.mimic_cxr import report_sections
from datasets.reports import read_pairs_manifest

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough  // ?pna

 COMPARISON:  ___

 FINDINGS:

 There is a small left pleural effusion.  The cardiac silhouette is
 mildly enlarged.

 IMPRESSION:

 Small left pleural effusion.  Mild cardiomegaly.
"""
REPORT_WITHOUT_FINDINGS = """                                 FINAL REPORT
 INDICATION:  Line placement.

 IMPRESSION:  Right IJ catheter tip in the SVC.  No pneumothorax.
"""


def test_report_sections_split_at_upper_case_headers():
    sections = report_sections(REPORT)
    assert sections["findings"] == "There is a small left pleural effusion. The cardiac silhouette is mildly enlarged."
    assert sections["impression"] == "Small left pleural effusion. Mild cardiomegaly."
    assert sections["examination"] == "CHEST (PA AND LAT)" and "final report" not in sections


@pytest.fixture
def layout(tmp_path) -> Path:
    reports = tmp_path / "mimic-cxr-reports" / "files" / "p10" / "p10000032"
    reports.mkdir(parents=True)
    (reports / "s50414267.txt").write_text(REPORT, encoding="utf-8")
    (reports / "s53189527.txt").write_text(REPORT_WITHOUT_FINDINGS, encoding="utf-8")
    with gzip.open(tmp_path / "mimic-cxr-2.0.0-split.csv.gz", "wt", encoding="utf-8") as handle:
        handle.write("dicom_id,study_id,subject_id,split\n"
                     "02aa804e-bde0afdd,50414267,10000032,train\n"
                     "174413ec-4ec4c1f7,50414267,10000032,train\n"
                     "2a2277a9-b0ded155,53189527,10000032,validate\n")
    (tmp_path / "mimic-cxr-2.0.0-metadata.csv").write_text(
        "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns\n"
        "02aa804e-bde0afdd,10000032,50414267,CHEST (PA AND LAT),PA,3056,2544\n"
        "174413ec-4ec4c1f7,10000032,50414267,CHEST (PA AND LAT),LATERAL,3056,2544\n"
        "2a2277a9-b0ded155,10000032,53189527,CHEST (PORTABLE AP),AP,3056,2544\n", encoding="utf-8")
    return tmp_path


def _args(layout: Path, out: Path) -> list[str]:
    return ["mimic-cxr", "--split-csv", str(layout / "mimic-cxr-2.0.0-split.csv.gz"), "--metadata-csv",
            str(layout / "mimic-cxr-2.0.0-metadata.csv"), "--reports-root", str(layout / "mimic-cxr-reports"),
            "--out", str(out)]


def test_released_layout_becomes_a_pairs_manifest(layout, capsys):
    out = layout / "pairs.csv"
    assert main(_args(layout, out)) == 0
    assert "3 images of 2 studies (0 studies without IMPRESSION, 1 without FINDINGS)" in capsys.readouterr().out
    reports = read_pairs_manifest(out, section="impression")
    assert reports.image_ids[0] == "files/p10/p10000032/s50414267/02aa804e-bde0afdd.jpg"
    assert reports.texts[0] == "Small left pleural effusion. Mild cardiomegaly."
    assert [meta["view"] for meta in reports.meta] == ["PA", "LATERAL", "AP"]
    assert [meta["split"] for meta in reports.meta] == ["train", "train", "validate"]
    findings = read_pairs_manifest(out, section="findings", on_empty="skip")
    assert len(findings) == 2  # the study without FINDINGS is left out by the reader's own rule


def test_a_missing_report_or_column_is_named(layout, capsys):
    (layout / "mimic-cxr-reports" / "files" / "p10" / "p10000032" / "s53189527.txt").unlink()
    out = layout / "pairs.csv"
    assert main(_args(layout, out)) == 2
    err = capsys.readouterr().err
    assert "split.csv.gz row 4: no report for study 53189527" in err and not out.exists()
    (layout / "mimic-cxr-2.0.0-metadata.csv").write_text("dicom_id,ViewCodeSequence\n", encoding="utf-8")
    assert main(_args(layout, out)) == 2
    assert "missing column(s) ['ViewPosition']" in capsys.readouterr().err


def test_validation_labels_of_the_validate_split_read_as_a_chexpert_table(layout, capsys):
    """Validating on MIMIC's own validate split keeps every zero-shot test set out of checkpoint choice."""
    from datasets.benchmarks import read_labels
    from datasets.labels.chexpert import OBSERVATIONS

    header = ("subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,"
              "Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,"
              "Support Devices\n")
    (layout / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        header + "10000032,50414267,,1.0,,,,,,,,1.0,,,,\n" + "10000032,53189527,,,,,,,,,,,,-1.0,0.0,1.0\n",
        encoding="utf-8")
    labels_out = layout / "validate_labels.csv"
    assert main([*_args(layout, layout / "pairs.csv"), "--chexpert-csv", str(layout / "mimic-cxr-2.0.0-chexpert.csv"),
                 "--labels-out", str(labels_out)]) == 0
    assert "1 frontal images of the validate split" in capsys.readouterr().out
    table = read_labels("chexpert.csv", {"labels": labels_out}, {}, "test")  # uncertain ignored, blank negative
    assert table.image_ids == ["files/p10/p10000032/s53189527/2a2277a9-b0ded155.jpg"]
    row = dict(zip(OBSERVATIONS, table.labels[0].tolist()))
    assert row["Support Devices"] == 1.0 and row["Pneumothorax"] == 0.0 and row["Cardiomegaly"] == 0.0
    assert row["Pneumonia"] != row["Pneumonia"]  # -1.0 (uncertain) is NaN: not scored
    prompts = Path(__file__).parents[2] / "configs" / "prompts" / "chexpert14.txt"
    lines = [line for line in prompts.read_text().splitlines() if line and not line.startswith("#")]
    assert lines == [f"There is {name}" for name in OBSERVATIONS]  # the prompt file follows the table's columns
    assert main([*_args(layout, layout / "pairs2.csv"), "--labels-out", str(layout / "x.csv")]) == 2
    assert "--chexpert-csv and --labels-out go together" in capsys.readouterr().err
