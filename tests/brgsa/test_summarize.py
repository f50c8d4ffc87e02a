"""``brgsa summarize`` on a CT-RATE report table: sentences, empty reports, --allow-empty, the dispatcher entry."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from brgsa.cli import main as brgsa_main
from brgsa.summarize import main
from datasets.errors import InputError

HEADER = "VolumeName,ClinicalInformation_EN,Technique_EN,Findings_EN,Impressions_EN\n"
ABNORMAL = (
    '"Heart size increased. No pleural or pericardial effusion was detected. A 6 mm nodule in the right upper lobe. '
    'Bronchiectasis cannot be excluded.",Cardiomegaly.'
)


def _table(path: Path, with_empty: bool) -> Path:
    rows = [f"valid_1_a_1.nii.gz,Cough.,Non-contrast.,{ABNORMAL}\n"]
    if with_empty:
        rows.append("valid_2_a_1.nii.gz,Trauma.,Non-contrast.,Trachea and both main bronchi are open.,Normal.\n")
    path.write_text(HEADER + "".join(rows), encoding="utf-8")
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_summaries_of_a_ct_rate_table(tmp_path):
    out = tmp_path / "summaries.csv"
    assert main([str(_table(tmp_path / "reports.csv", False)), "--out", str(out)]) == 0
    (row,) = _rows(out)
    assert list(row)[:2] == ["VolumeName", "sentences"]
    assert json.loads(row["sentences"]) == [
        "There is Cardiomegaly.", "There is Lung nodule.", "Possible bronchiectasis.", "No pericardial effusion.",
        "No pleural effusion.",
    ]
    assert (row["source"], row["fallback"]) == ("rules", "false")


def test_empty_summary_is_an_error_naming_the_row_unless_allowed(tmp_path, capsys):
    reports, out = _table(tmp_path / "reports.csv", True), tmp_path / "summaries.csv"
    with pytest.raises(InputError, match=r"row 3 \(VolumeName 'valid_2_a_1.nii.gz'\).*--allow-empty"):
        main([str(reports), "--out", str(out)])
    assert len(_rows(out)) == 1  # the rows before the bad one are kept
    assert main([str(reports), "--out", str(out), "--allow-empty"]) == 0
    assert "1 empty" in capsys.readouterr().out
    assert json.loads(_rows(out)[1]["sentences"]) == []


def test_empty_report_text_is_an_error_unless_allowed(tmp_path, capsys):
    reports = tmp_path / "reports.csv"
    reports.write_text(HEADER + f"valid_1_a_1.nii.gz,Cough.,Non-contrast.,{ABNORMAL}\r\n"
                       "valid_3_a_2.nii.gz,,,,\r\n", encoding="utf-8")
    out = tmp_path / "summaries.csv"
    with pytest.raises(InputError, match=r"row 3, column 'Findings_EN\+Impressions_EN': empty report text.*"
                                         r"--allow-empty"):
        main([str(reports), "--out", str(out)])
    assert not out.exists()
    assert main([str(reports), "--out", str(out), "--allow-empty"]) == 0
    assert "1 empty" in capsys.readouterr().out
    rows = _rows(out)
    assert [row["VolumeName"] for row in rows] == ["valid_1_a_1.nii.gz", "valid_3_a_2.nii.gz"]
    assert json.loads(rows[1]["sentences"]) == [] and rows[1]["source"] == "none"


def test_dispatcher_runs_summarize_and_reports_bad_input(tmp_path, capsys):
    reports = _table(tmp_path / "reports.csv", True)
    assert brgsa_main(["summarize", str(reports), "--out", str(tmp_path / "s.csv")]) == 2
    assert "brgsa summarize: error:" in capsys.readouterr().err
