"""RefSegDataModule: batch layout, split handling, flip augmentation with laterality words, determinism."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.errors import InputError
from datasets.refseg import write_refseg_manifest
from datasets.refseg_datamodule import RefSegDataModule


def _manifest(folder, splits=("train", "train", "train", "val", "test")):
    rows = []
    for k, split in enumerate(splits):
        image = np.zeros((20, 20), dtype=np.float32) - 50.0 + k
        mask = np.zeros((20, 20), dtype=np.uint8)
        mask[4:9, 2:6] = 255  # a lesion on the image's left = the patient's right
        np.save(folder / f"img{k}.npy", image)
        Image.fromarray(mask).save(folder / f"mask{k}.png")
        rows.append({
            "row_id": f"r{k}", "case_id": f"c{k}", "split": split, "image": f"img{k}.npy", "slice_index": "",
            "mask": f"mask{k}.png", "mask_value": "", "lesion_id": "1", "text": "lesion in the right lobe",
            "template_id": "t",
        })
    return str(write_refseg_manifest(folder / "manifest.csv", rows))


def test_batches_have_documented_shapes(tmp_path):
    data = RefSegDataModule(_manifest(tmp_path), image_size=16, context_slices=1, batch_size=2)
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (2, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (2, 1, 16, 16) and batch["mask"].dtype == torch.float32
    assert set(batch["mask"].unique().tolist()) == {0.0, 1.0}
    assert batch["text"] == ["lesion in the right lobe"] * 2 and batch["label"] == [None, None]
    assert len(batch["meta"]) == 2 and {"row_id", "geometry", "stored_shape"} <= set(batch["meta"][0])
    assert len(data.val_dataloader().dataset) == 1
    data.setup("predict")
    assert [meta["row_id"] for b in data.predict_dataloader() for meta in b["meta"]] == ["r4"]


def test_flip_is_off_by_default_and_swaps_text_with_the_image(tmp_path):
    assert inspect.signature(RefSegDataModule).parameters["flip_lr"].default is False
    manifest = _manifest(tmp_path, splits=("train",) * 8)
    plain = RefSegDataModule(manifest, image_size=16)
    plain.setup(None)
    reference = plain.datasets["train"][0]
    assert all(plain.datasets["train"][k]["text"] == "lesion in the right lobe" for k in range(8))
    flipping = RefSegDataModule(manifest, image_size=16, flip_lr=True)
    flipping.setup(None)
    flipped = 0
    for k in range(8):
        sample = flipping.datasets["train"][k]
        if sample["meta"].get("flipped_lr"):
            flipped += 1
            assert sample["text"] == "lesion in the left lobe"
            assert torch.equal(sample["mask"], reference["mask"].flip(-1))
        else:
            assert sample["text"] == "lesion in the right lobe" and torch.equal(sample["mask"], reference["mask"])
    assert 0 < flipped < 8


def test_shuffling_is_reproducible_with_workers(tmp_path):
    manifest = _manifest(tmp_path, splits=("train",) * 6 + ("val",))
    orders = []
    for _ in range(2):
        data = RefSegDataModule(manifest, image_size=8, batch_size=3, seed=7, num_workers=1, intensity_jitter=0.2)
        data.setup("fit")
        batches = list(data.train_dataloader())
        orders.append(([m["row_id"] for b in batches for m in b["meta"]], torch.cat([b["image"] for b in batches])))
    assert orders[0][0] == orders[1][0]
    assert torch.equal(orders[0][1], orders[1][1])


def test_missing_split_is_named(tmp_path):
    data = RefSegDataModule(_manifest(tmp_path, splits=("train", "train")), image_size=8)
    with pytest.raises(InputError, match="no rows for split 'val'"):
        data.setup("fit")
    with pytest.raises(InputError, match="no rows for split 'test'"):
        data.setup("test")
    with pytest.raises(InputError, match="batch_size"):
        RefSegDataModule("m.csv", batch_size=0)


def test_affine_augmentation_moves_image_and_mask_together(tmp_path):
    rows = []
    for k in range(4):
        image = np.full((32, 32), -100.0, dtype=np.float32)
        image[10:20, 6:14] = 200.0  # a bright lesion exactly where the mask is
        mask = np.zeros((32, 32), dtype=np.uint8)
        mask[10:20, 6:14] = 255
        np.save(tmp_path / f"img{k}.npy", image)
        Image.fromarray(mask).save(tmp_path / f"mask{k}.png")
        rows.append({
            "row_id": f"r{k}", "case_id": f"c{k}", "split": "train", "image": f"img{k}.npy", "slice_index": "",
            "mask": f"mask{k}.png", "mask_value": "", "lesion_id": "1", "text": "the lesion", "template_id": "t",
        })
    manifest = str(write_refseg_manifest(tmp_path / "manifest.csv", rows))
    plain = RefSegDataModule(manifest, window=(-100.0, 200.0), image_size=32)
    plain.setup(None)
    moving = RefSegDataModule(manifest, window=(-100.0, 200.0), image_size=32, rotate_deg=20.0, translate=0.15,
                              scale=0.2)
    moving.setup(None)
    dataset = moving.datasets["train"]
    reference = plain.datasets["train"][0]
    sample = dataset[0]
    assert not torch.equal(sample["mask"], reference["mask"])  # the lesion moved
    # image and mask got the same map: the (soft) mask is the image's bright part, the zero padding is background
    torch.testing.assert_close(sample["image"], sample["mask"], atol=1e-5, rtol=0)
    assert torch.equal(dataset[0]["image"], sample["image"])  # same (seed, epoch, index): same draw
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0]["image"], sample["image"])  # a new epoch draws again


@pytest.mark.parametrize("argument, value", [("rotate_deg", 60.0), ("translate", 0.5), ("scale", -0.1),
                                             ("noise_std", 0.7)])
def test_bad_augmentation_strength_is_named(tmp_path, argument, value):
    with pytest.raises(InputError, match=argument):
        RefSegDataModule(_manifest(tmp_path), **{argument: value})
