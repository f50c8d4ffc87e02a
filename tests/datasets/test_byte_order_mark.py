"""Files saved by Windows tools often start with a UTF-8 byte-order mark: every user-file reader skips it."""

from __future__ import annotations

import json
from pathlib import Path

from carzero.module import read_prompt_file as read_validation_prompts
from datasets.benchmarks import read_prompt_file
from datasets.labels.chestxdet10 import read_chestxdet10_json
from datasets.labels.chestxray14 import read_image_list
from lsms.segment import read_batch_csv

BOM = "\ufeff"


def _write(path: Path, text: str) -> Path:
    path.write_bytes((BOM + text).encode("utf-8"))
    return path


def test_json_labels_with_a_byte_order_mark(tmp_path):
    entries = [{"file_name": "1.png", "syms": ["Effusion"], "boxes": [[1, 2, 3, 4]]}]
    labels = read_chestxdet10_json(_write(tmp_path / "test.json", json.dumps(entries)))
    assert labels.image_ids == ["1.png"] and labels.labels[0, labels.class_names.index("Effusion")] == 1


def test_text_lists_and_prompt_files_with_a_byte_order_mark(tmp_path):
    assert read_image_list(_write(tmp_path / "test_list.txt", "00000001_000.png\r\n00000002_000.png\r\n")) == [
        "00000001_000.png", "00000002_000.png"]
    assert read_prompt_file(_write(tmp_path / "p.txt", "There is Atelectasis\nThere is Edema\n"))[0] == [
        "There is Atelectasis"]
    assert read_validation_prompts(_write(tmp_path / "v.txt", "There is Atelectasis\n"))[0] == "There is Atelectasis"


def test_segment_batch_csv_with_a_byte_order_mark(tmp_path):
    (tmp_path / "ct.nii.gz").touch()  # the batch reader checks that each image is there
    requests = read_batch_csv(_write(tmp_path / "batch.csv", "image,slice_index,prompt\nct.nii.gz,3,the lesion\n"))
    assert requests[0].image == tmp_path / "ct.nii.gz" and requests[0].slice_index == 3
