"""LightningDataModule for referring segmentation from a ``refseg-1`` manifest (RefHL-Seg style or converted LViT)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datasets.augment import random_affine
from datasets.cache import PreprocessCache, cache_key
from datasets.errors import InputError
from datasets.refseg import SPLITS, RefSegRow, load_sample, read_refseg_manifest
from datasets.sampling import ResumableDataLoader, ResumableSampler
from datasets.slices import LIVER_WINDOW, SlicePreprocessing

__all__ = ["RefSegDataset", "RefSegDataModule", "collate_refseg", "seed_worker"]

_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


class RefSegDataset(Dataset):
    """Samples of manifest rows, optionally cached on disk and augmented.

    Args:
        rows: the manifest rows to serve.
        preprocessing: slice preprocessing.
        cache_dir: folder of a :class:`~datasets.cache.PreprocessCache`; cached images are stored as float16 (the
            rounding, at most 2**-11 relative, is below the 1 HU step of a 400 HU window). Defaults to None (no cache).
        flip_lr: mirror image and mask left-right with probability 0.5 and swap "left"/"right" in the text
            (:func:`datasets.laterality.swap_laterality_words`). Defaults to False.
        intensity_jitter: ``j`` of a random contrast/brightness change ``x * (1 + a) + b``, ``a, b ~ U(-j, j)``,
            clipped to ``[0, 1]``. Defaults to 0.0 (off).
        rotate_deg: maximum absolute random rotation of image and mask, degrees. Keep it small: a large rotation
            changes which of two lesions is "more anterior" or "leftmost". Defaults to 0.0 (off).
        translate: maximum absolute random shift, fraction of the side. Defaults to 0.0 (off).
        scale: maximum relative random zoom (``0.1``: ``[0.9, 1.1]``); sizes keep their order. Defaults to 0.0 (off).
        noise_std: standard deviation of added Gaussian noise, in units of the window. Defaults to 0.0 (off).
        seed: seed of the augmentation. Each sample's draws come from a generator seeded by ``(seed, epoch,
            index)``, so they do not depend on worker processes, prefetching or where a resumed run restarted.
            Defaults to 0.
    """

    def __init__(
        self,
        rows: Sequence[RefSegRow],
        preprocessing: SlicePreprocessing,
        cache_dir: str | None = None,
        flip_lr: bool = False,
        intensity_jitter: float = 0.0,
        rotate_deg: float = 0.0,
        translate: float = 0.0,
        scale: float = 0.0,
        noise_std: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.rows = list(rows)
        self.preprocessing = preprocessing
        self.cache = PreprocessCache(cache_dir) if cache_dir else None
        self.flip_lr = flip_lr
        self.intensity_jitter = intensity_jitter
        self.rotate_deg = rotate_deg
        self.translate = translate
        self.scale = scale
        self.noise_std = noise_std
        self.seed = seed
        self.epoch = 0
        self._swap_words = None
        if flip_lr:
            from datasets.laterality import swap_laterality_words

            self._swap_words = swap_laterality_words

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation draws :meth:`__getitem__` makes (called by the sampler)."""
        self.epoch = epoch

    def _load(self, row: RefSegRow) -> dict[str, Any]:
        if self.cache is None:
            return load_sample(row, self.preprocessing)

        def compute() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
            sample = load_sample(row, self.preprocessing)
            image, mask = sample["image"].numpy(), sample["mask"].numpy()
            return {"image": image.astype(np.float16), "mask": mask.astype(np.uint8)}, sample["meta"]

        key = cache_key([row.image, row.mask], row.fields(), self.preprocessing.to_dict())
        arrays, meta = self.cache.get_or_compute(key, compute)
        image = torch.from_numpy(arrays["image"].astype(np.float32))
        mask = torch.from_numpy(arrays["mask"].astype(np.float32))
        return {"image": image, "mask": mask, "text": row.text, "label": None, "meta": meta}

    def fill_cache(self, progress: bool = False) -> int:
        """Compute every missing cache entry, reading the rows grouped by image so each volume is decoded once.

        Returns:
            The number of entries computed (0 without a cache or when all were cached).
        """
        if self.cache is None:
            return 0
        from tqdm import tqdm

        before = self.cache.computations
        for row in tqdm(sorted(self.rows, key=lambda r: (str(r.image), r.number)), desc="cache", disable=not progress):
            self._load(row)
        return self.cache.computations - before

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self._load(self.rows[index])
        geometric = bool(self.rotate_deg or self.translate or self.scale)
        if not (self.flip_lr or self.intensity_jitter or geometric or self.noise_std):
            return sample
        sample_seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(sample_seed)
        if self.flip_lr and torch.rand((), generator=generator) < 0.5:
            sample["image"] = sample["image"].flip(-1)  # display columns run patient right -> left
            sample["mask"] = sample["mask"].flip(-1)
            sample["text"] = self._swap_words(sample["text"])
            sample["meta"] = sample["meta"] | {"flipped_lr": True}
        if self.intensity_jitter > 0:
            scale, shift = (torch.rand(2, generator=generator) * 2 - 1) * self.intensity_jitter
            sample["image"] = (sample["image"] * (1 + scale) + shift).clamp(0.0, 1.0)
        if geometric:
            sample["image"], sample["mask"] = random_affine(
                [sample["image"], sample["mask"]], generator, self.rotate_deg, self.translate, self.scale
            )
        if self.noise_std:
            sample["image"] = sample["image"] + self.noise_std * torch.randn(sample["image"].shape, generator=generator)
        return sample


def collate_refseg(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples: ``image`` (B, C, H, W) and ``mask`` (B, 1, H, W) float32 tensors; ``text``, ``label`` and
    ``meta`` as lists."""
    return {
        "image": torch.stack([sample["image"] for sample in samples]),
        "mask": torch.stack([sample["mask"] for sample in samples]),
        "text": [sample["text"] for sample in samples],
        "label": [sample["label"] for sample in samples],
        "meta": [sample["meta"] for sample in samples],
    }


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive the worker's NumPy and ``random`` seeds from torch's per-worker seed
    (itself drawn from the loader's seeded generator), so code drawing from them in a worker is reproducible."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class RefSegDataModule(L.LightningDataModule):
    """Referring-segmentation data from a ``refseg-1`` manifest; splits come from its ``split`` column.

    Batches are dicts: ``image`` float32 (B, C, H, W) in ``[0, 1]`` with ``C = 2 * context_slices + 1`` and
    ``H = W = image_size``; ``mask`` float32 (B, 1, H, W) in ``{0, 1}``; ``text`` list[str]; ``label`` list (None for
    segmentation); ``meta`` list[dict] (row fields, slice affine, and the geometry for
    :func:`datasets.slices.restore_slice`).

    Args:
        manifest: path of the ``refseg-1`` CSV.
        window: HU window ``(low, high)``. Defaults to ``(-160.0, 240.0)`` (level 40, width 400).
        image_size: side of the square model input. Defaults to 128.
        context_slices: neighbouring slices per side stacked as channels. Defaults to 0.
        already_hu: stored DICOM values are already HU (see :func:`datasets.ct.read_ct`). Defaults to False.
        batch_size: samples per batch. Defaults to 8.
        num_workers: DataLoader worker processes. Defaults to 0.
        cache_dir: folder caching preprocessed samples (see :mod:`datasets.cache`). Defaults to None.
        seed: seed of shuffling and augmentation. Defaults to 0.
        flip_lr: left-right flip augmentation of training samples, swapping laterality words in the text.
            Defaults to False: a flipped "lesion in the right lobe" is only correct if the text is rewritten too.
        intensity_jitter: strength of random contrast/brightness on training images. Defaults to 0.0 (off).
        rotate_deg, translate, scale, noise_std: random affine and noise of training samples, see
            :class:`RefSegDataset`. Default 0.0 (off).

    Training order and resuming: the training loader is a :class:`datasets.sampling.ResumableDataLoader` over a
    :class:`datasets.sampling.ResumableSampler` (seeded by ``seed``, split across processes by rank). Lightning stores
    its position and the global generator states in every checkpoint, so ``fit --ckpt_path last`` continues a run
    stopped mid-epoch exactly where it stopped. Validation and test loaders are plain, in manifest order.

    Example::

        data = RefSegDataModule("refhl/manifest.csv", image_size=128, batch_size=4)
        data.setup("fit")
        batch = next(iter(data.train_dataloader()))
        batch["image"].shape  # torch.Size([4, 1, 128, 128])
    """

    def __init__(
        self,
        manifest: str,
        window: tuple[float, float] = LIVER_WINDOW,
        image_size: int = 128,
        context_slices: int = 0,
        already_hu: bool = False,
        batch_size: int = 8,
        num_workers: int = 0,
        cache_dir: str | None = None,
        seed: int = 0,
        flip_lr: bool = False,
        intensity_jitter: float = 0.0,
        rotate_deg: float = 0.0,
        translate: float = 0.0,
        scale: float = 0.0,
        noise_std: float = 0.0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise InputError(f"num_workers must be >= 0, got {num_workers}")
        if not 0.0 <= intensity_jitter < 1.0:
            raise InputError(f"intensity_jitter must be in [0, 1), got {intensity_jitter}")
        if not 0.0 <= rotate_deg <= 45.0:
            raise InputError(f"rotate_deg must be in [0, 45], got {rotate_deg}")
        for name, value in (("translate", translate), ("scale", scale), ("noise_std", noise_std)):
            if not 0.0 <= value < 0.5:
                raise InputError(f"{name} must be in [0, 0.5), got {value}")
        if not Path(manifest).is_file():  # before the Trainer starts, so the error is the first thing users see
            raise FileNotFoundError(2, "no manifest file", str(manifest))
        self.save_hyperparameters()
        self.manifest = manifest
        self.preprocessing = SlicePreprocessing(tuple(window), image_size, context_slices, already_hu)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.cache_dir = cache_dir
        self.seed = seed
        self.flip_lr = flip_lr
        self.intensity_jitter = intensity_jitter
        self.augmentation = {"rotate_deg": rotate_deg, "translate": translate, "scale": scale, "noise_std": noise_std}
        self.datasets: dict[str, RefSegDataset] = {}
        self._train_loader: ResumableDataLoader | None = None

    def prepare_data(self) -> None:
        """Validate the manifest early (every row, every file path); stores nothing."""
        read_refseg_manifest(self.manifest)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets a stage needs from the manifest's ``split`` column.

        Raises:
            InputError: the manifest is invalid or has no rows for a split the stage needs.
        """
        manifest = read_refseg_manifest(self.manifest)
        splits = _STAGE_SPLITS.get(stage, tuple(name for name in SPLITS if manifest.rows(name)))
        for split in splits:
            rows = manifest.rows(split)
            if not rows:
                raise InputError(
                    f"{self.manifest} has no rows for split {split!r}, needed by stage {stage!r}; "
                    f"rows per split: {manifest.splits}"
                )
            train = split == "train"
            self.datasets[split] = RefSegDataset(
                rows, self.preprocessing, self.cache_dir,
                flip_lr=self.flip_lr and train, intensity_jitter=self.intensity_jitter if train else 0.0,
                **(self.augmentation if train else {}), seed=self.seed,
            )

    def _loader(self, split: str) -> DataLoader:
        if split not in self.datasets:
            raise InputError(f"split {split!r} is not set up; call setup() for a stage that uses it first")
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_refseg,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(self.seed),
            persistent_workers=False,
        )

    def train_dataloader(self) -> ResumableDataLoader:
        """Shuffled training batches; this process's share when training on several (rank from the trainer)."""
        if "train" not in self.datasets:
            raise InputError("split 'train' is not set up; call setup('fit') first")
        trainer = self.trainer
        world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        dataset = self.datasets["train"]
        sampler = ResumableSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=self.seed)
        self._train_loader = ResumableDataLoader(
            dataset,
            sampler,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_refseg,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(self.seed),
            persistent_workers=False,
        )
        return self._train_loader

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Count training batches as they reach ``training_step`` (the resumable position; see
        :mod:`datasets.sampling`)."""
        trainer = self.trainer
        if trainer is not None and trainer.training and self._train_loader is not None:
            self._train_loader.advance(len(batch["text"]))
        return batch

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """The test split, in manifest order."""
        return self._loader("test")
