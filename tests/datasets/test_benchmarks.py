"""The benchmark registry: every YAML and prompt file, loading on fixture files, count checks, unknown names."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from datasets.benchmarks import ADAPTERS, CONFIG_DIR, list_benchmarks, load_benchmark, read_prompt_file
from datasets.errors import InputError
from datasets.labels import chestxray14, ctrate

DATA = Path(__file__).resolve().parents[1] / "data" / "labels"
EXPECTED = {
    "chestxray14", "chestxray14-nih", "chexpert", "padchest", "padchest20", "chestxdet10", "openi", "ct-rate",
    "ct-rate-lt", "rad-chestct", "synthetic-cxr", "synthetic-ct3d",
}


def _place(root: Path, layout: dict[str, Path]) -> Path:
    for relpath, src in layout.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / relpath)
    return root


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_yaml_is_complete_and_its_prompts_match_its_classes(name):
    config = yaml.safe_load((CONFIG_DIR / "benchmarks" / f"{name}.yaml").read_text())
    assert config["name"] == name and config["adapter"] in ADAPTERS
    classes = config["classes"]
    for key in ("prompts", "negative_prompts"):
        if config.get(key):
            prompts = read_prompt_file(CONFIG_DIR / config[key])
            assert len(prompts) == len(classes)
            assert all(text.startswith("There is ") for texts in prompts for text in texts)
    assert len(config["display_names"]) == len(classes) and config["expected"]["classes"] <= len(classes)
    paths = [path for value in config["sources"].values() for path in (value if isinstance(value, list) else [value])]
    assert all(str(path).startswith("{data_root}/") for path in paths)


def test_registry_lists_names_and_unknown_name_lists_them(tmp_path):
    assert EXPECTED <= set(list_benchmarks())
    with pytest.raises(KeyError, match=r"Wrong benchmark name `chestxray15`, available benchmarks: \[.*'chestxray14'"):
        load_benchmark("chestxray15", tmp_path)


def test_chestxray14_count_check_and_override(tmp_path):
    root = _place(tmp_path, {  # each list where its release puts it: NIH's top level, CheXNet's in labels/
        "ChestXray14/labels/test_list.txt": DATA / "chestxray14" / "chexnet_test_list.txt",
        "ChestXray14/test_list.txt": DATA / "chestxray14" / "test_list.txt",
        "ChestXray14/Data_Entry_2017.csv": DATA / "chestxray14" / "Data_Entry_2017.csv",
    })
    with pytest.raises(InputError, match=r"benchmark chestxray14: expected 22433 images .* found 2 in .*test_list.txt"):
        load_benchmark("chestxray14", root)
    bench = load_benchmark("chestxray14", root, check_counts=False)
    assert bench.class_names == chestxray14.CLASSES and bench.prompt_texts[3] == "There is Pulmonary Infiltration"
    assert bench.published[-1]["model"] == "CARZero" and bench.published[-1]["value"] == 0.811
    assert load_benchmark("chestxray14-nih", root, check_counts=False).labels.image_ids == [
        "00000003_000.png", "00000003_001.png"]
    sample = next(bench.samples())
    assert sample["image"] == root / "ChestXray14" / "images" / "images" / "00000003_000.png"
    with pytest.raises(InputError, match=r"absent from the folder .*ChestXray14/images: '00000003_000.png'"):
        bench.check_images()


def test_nih_split_join_chexpert_padchest20_openi_chestxdet10(tmp_path):
    root = _place(tmp_path, {
        "ChestXray14/Data_Entry_2017.csv": DATA / "chestxray14" / "Data_Entry_2017.csv",
        "ChestXray14/test_list.txt": DATA / "chestxray14" / "test_list.txt",
        "CheXpert/test_labels.csv": DATA / "chexpert" / "test_labels.csv",
        "PadChest/PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv":
            DATA / "padchest" / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
        "OpenI/custom.csv": DATA / "openi" / "custom.csv",
        "OpenI/openi_multi_label_image.csv": DATA / "openi" / "openi_multi_label_image.csv",
        "ChestXDet10/test.json": DATA / "chestxdet10" / "test.json",
    })
    nih = load_benchmark("chestxray14-nih", root, check_counts=False)
    assert nih.labels.image_ids == ["00000003_000.png", "00000003_001.png"]
    assert load_benchmark("chexpert", root, check_counts=False).labels.labels.shape == (3, 5)
    pc20 = load_benchmark("padchest20", root, check_counts=False)
    assert len(pc20.class_names) == 20 and pc20.prompt_texts == [f"There is {c}" for c in pc20.class_names]
    with pytest.raises(InputError, match=r"expected 39053 images .*found 3"):
        load_benchmark("padchest20", root)
    assert len(load_benchmark("openi", root, check_counts=False).labels) == 3
    assert load_benchmark("chestxdet10", root, check_counts=False).display_names[3] == "Pleural Effusion"


def test_ct_benchmarks_metadata_and_prompt_merge(tmp_path):
    root = _place(tmp_path, {
        "CT-RATE/dataset/multi_abnormality_labels/dataset_multi_abnormality_labels_valid_predicted_labels.csv":
            DATA / "ctrate" / "dataset_multi_abnormality_labels_valid_predicted_labels.csv",
        "CT-RATE/dataset/metadata/validation_metadata.csv": DATA / "ctrate" / "validation_metadata.csv",
        "CT-RATE-LT/CT-RATE-LT-label.csv": DATA / "ctrate" / "CT-RATE-LT-label.csv",
        "RAD-ChestCT/imgtest_Abnormality_and_Location_Labels.csv":
            DATA / "radchestct" / "imgtest_Abnormality_and_Location_Labels.csv",
    })
    ct = load_benchmark("ct-rate", root, check_counts=False)
    assert ct.labels.meta[0]["geometry"].spacing == (0.341796875, 0.341796875, 1.5)
    assert ct.negative_prompts[0] == ["There is no Medical material"]
    assert next(ct.samples())["image"] == root / "CT-RATE/dataset/valid/valid_1/valid_1_a/valid_1_a_1.nii.gz"
    assert load_benchmark("ct-rate-lt", root, check_counts=False).class_names == ctrate.LT_CLASSES
    rad = load_benchmark("rad-chestct", root, check_counts=False)
    assert len(rad.prompt_texts) == 17 and rad.prompt_class_index[1:3] == [1, 1]
    scores = np.arange(2 * 17, dtype=np.float32).reshape(2, 17)
    scores[0, 1], scores[0, 2] = 5.0, -5.0
    merged = rad.class_scores(scores)
    assert merged.shape == (2, 16) and merged[0, 1] == 5.0 and merged[1, 1] == scores[1, 2]
    np.testing.assert_array_equal(merged[:, 2:], scores[:, 3:])
    with pytest.raises(ValueError, match=r"expected scores of shape \(N, 17\)"):
        rad.class_scores(scores[:, :16])


def test_malformed_configs(tmp_path):
    config_dir = tmp_path / "configs"
    (config_dir / "benchmarks").mkdir(parents=True)
    shutil.copytree(CONFIG_DIR / "prompts", config_dir / "prompts")
    config = yaml.safe_load((CONFIG_DIR / "benchmarks" / "chexpert.yaml").read_text())
    (config_dir / "benchmarks" / "chexpert.yaml").write_text(yaml.safe_dump({**config, "prompt": "x"}))
    with pytest.raises(InputError, match=r"unknown key\(s\) \['prompt'\]"):
        load_benchmark("chexpert", tmp_path, config_dir=config_dir)
    (config_dir / "prompts" / "chexpert.txt").write_text("There is Atelectasis\n")
    (config_dir / "benchmarks" / "chexpert.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(InputError, match=r"chexpert.txt: 1 prompt lines for the 5 classes"):
        load_benchmark("chexpert", tmp_path, config_dir=config_dir)
    bad = {**config, "sources": {"labels": "{root}/x.csv"}}
    (config_dir / "benchmarks" / "chexpert.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(InputError, match=r"placeholder other than \{data_root\}"):
        load_benchmark("chexpert", tmp_path, config_dir=config_dir)


def test_a_missing_relative_prompt_file_says_where_it_was_looked_for(tmp_path, monkeypatch):
    """Configs name prompt files relative to the repository; run elsewhere, the error said only "no prompt file"."""
    from datasets.benchmarks import read_prompt_file

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as caught:
        read_prompt_file("configs/prompts/ct-rate.txt")
    assert caught.value.filename == "configs/prompts/ct-rate.txt"
    assert caught.value.strerror == f"no prompt file (a relative path is read from the current folder, {tmp_path})"


def test_a_source_named_differently_by_later_releases_is_found_under_either_name(tmp_path):
    """CT-RATE's later releases call the labels valid_predicted_labels.csv; the benchmark only knew the older name."""
    labels = "CT-RATE/dataset/multi_abnormality_labels/"
    root = _place(tmp_path, {
        labels + "valid_predicted_labels.csv": DATA / "ctrate" / "dataset_multi_abnormality_labels_valid_predicted"
                                                                 "_labels.csv",
        "CT-RATE/dataset/metadata/validation_metadata.csv": DATA / "ctrate" / "validation_metadata.csv",
    })
    assert load_benchmark("ct-rate", root, check_counts=False).labels.source.name == "valid_predicted_labels.csv"
    (root / labels / "valid_predicted_labels.csv").unlink()
    with pytest.raises(InputError, match=r"sources.labels: none of .*dataset_multi_abnormality_labels_valid_predicted"
                                         r"_labels.csv.*valid_predicted_labels.csv.* exists"):
        load_benchmark("ct-rate", root, check_counts=False)
