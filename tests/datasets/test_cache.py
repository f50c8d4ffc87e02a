"""The preprocessing cache: pickle-free entries, keys that follow configuration and source files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from datasets.cache import PreprocessCache, cache_key
from datasets.nifti import save_nifti
from datasets.refseg import read_refseg_manifest, write_refseg_manifest
from datasets.refseg_datamodule import RefSegDataset
from datasets.slices import SlicePreprocessing


@pytest.fixture
def rows(tmp_path):
    rng = np.random.default_rng(1)
    affine = np.diag([0.7, 0.7, 3.0, 1.0])
    save_nifti(rng.uniform(-500, 300, (24, 20, 3)).astype(np.float32), affine, tmp_path / "ct.nii.gz")
    labels = np.zeros((24, 20, 3), dtype=np.uint8)
    labels[5:12, 4:10, :] = 1
    save_nifti(labels, affine, tmp_path / "seg.nii.gz")
    manifest = write_refseg_manifest(tmp_path / "m.csv", [
        {"row_id": f"r{k}", "case_id": "c", "split": "train", "image": "ct.nii.gz", "slice_index": k,
         "mask": "seg.nii.gz", "mask_value": "", "lesion_id": "1", "text": "the lesion", "template_id": ""}
        for k in range(3)
    ])
    return read_refseg_manifest(manifest).rows("train")


def _computations(rows, cache_dir, **config):
    dataset = RefSegDataset(rows, SlicePreprocessing(**config), cache_dir=str(cache_dir))
    samples = [dataset[i] for i in range(len(dataset))]
    return dataset.cache.computations, dataset.cache.hits, samples


def test_same_config_hits_changed_config_recomputes(rows, tmp_path):
    cache_dir = tmp_path / "cache"
    assert _computations(rows, cache_dir, image_size=16)[:2] == (3, 0)
    assert _computations(rows, cache_dir, image_size=16)[:2] == (0, 3)
    assert _computations(rows, cache_dir, image_size=16, window=(-100.0, 200.0))[:2] == (3, 0)
    assert _computations(rows, cache_dir, image_size=24)[:2] == (3, 0)
    assert _computations(rows, cache_dir, image_size=16, context_slices=1)[:2] == (3, 0)
    assert _computations(rows, cache_dir, image_size=16)[:2] == (0, 3)


def test_rewritten_source_file_invalidates(rows, tmp_path):
    cache_dir = tmp_path / "cache"
    _computations(rows, cache_dir, image_size=16)
    stat = rows[0].image.stat()
    os.utime(rows[0].image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert _computations(rows, cache_dir, image_size=16)[:2] == (3, 0)


def test_cached_samples_match_uncached_and_load_without_pickle(rows, tmp_path):
    cache_dir = tmp_path / "cache"
    pre = SlicePreprocessing(image_size=16)
    plain = RefSegDataset(rows, pre)[1]
    _computations(rows, cache_dir, image_size=16)
    cached = _computations(rows, cache_dir, image_size=16)[2][1]
    assert cached["image"].dtype == plain["image"].dtype and cached["image"].shape == plain["image"].shape
    np.testing.assert_allclose(cached["image"].numpy(), plain["image"].numpy(), atol=5e-4)
    np.testing.assert_array_equal(cached["mask"].numpy(), plain["mask"].numpy())
    assert cached["meta"] == json.loads(json.dumps(plain["meta"]))
    entries = sorted(cache_dir.rglob("*.npz"))
    assert entries
    with np.load(entries[0], allow_pickle=False) as stored:
        assert stored["image"].dtype == np.float16 and stored["mask"].dtype == np.uint8
    assert json.loads(entries[0].with_suffix(".json").read_text())["row_id"].startswith("r")


def test_cache_key_covers_fields_config_and_damaged_entries_recompute(tmp_path):
    source = tmp_path / "a.npy"
    np.save(source, np.zeros((2, 2)))
    key = cache_key([source], {"row_id": "a"}, {"image_size": 8})
    assert key != cache_key([source], {"row_id": "b"}, {"image_size": 8})
    assert key != cache_key([source], {"row_id": "a"}, {"image_size": 9})
    cache = PreprocessCache(tmp_path / "c")
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(3, dtype=np.int16)}, {"n": 3}

    arrays, meta = cache.get_or_compute(key, compute)
    assert meta == {"n": 3} and arrays["x"].tolist() == [0, 1, 2]
    cache.get_or_compute(key, compute)
    assert len(calls) == 1
    next((tmp_path / "c").rglob("*.npz")).write_bytes(b"truncated")
    cache.get_or_compute(key, compute)
    assert len(calls) == 2
