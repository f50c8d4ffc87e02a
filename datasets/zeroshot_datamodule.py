"""LightningDataModule of labelled radiographs for zero-shot classification (validation, test, prediction)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from datasets.benchmarks import ADAPTERS, load_benchmark
from datasets.cxr_transforms import CARZERO_MEAN, CARZERO_STD, CXRPreprocessing
from datasets.errors import InputError
from datasets.labels.base import LabelSet
from datasets.labels.chestxray14 import read_image_list
from datasets.pairs_datamodule import CXRDataset, check_loader_options, make_loader

__all__ = ["ZeroShotDataModule"]


class ZeroShotDataModule(L.LightningDataModule):
    """Radiographs with a multi-label target, from a registered benchmark or a label table and an adapter.

    Give either ``benchmark`` + ``data_root`` (see :mod:`datasets.benchmarks`; images, prompts and class order come
    from its YAML) or ``labels`` + ``adapter`` + ``image_root``. Every stage serves the same images: the validation,
    test and predict loaders are identical and unshuffled.

    Batches are dicts: ``image`` float32 (B, C, H, W); ``label`` float32 (B, K) with 1 positive, 0 negative and NaN
    not labelled, columns in :attr:`class_names` order; ``meta`` list[dict] (``image_id`` and the label table's row
    fields).

    Args:
        benchmark: registry name, e.g. ``"synthetic-cxr"``. Defaults to None.
        data_root: folder substituted for ``{data_root}`` in the benchmark's paths. Defaults to None.
        labels: label table path (instead of ``benchmark``). Defaults to None.
        adapter: adapter name from :data:`datasets.benchmarks.ADAPTERS` for ``labels``. Defaults to
            ``"chestxray14.data_entry"``.
        image_root: folder the label table's image ids are relative to (with ``labels``). Defaults to None.
        split_list: image list keeping only its images, in its order (with ``labels``; e.g. ``test_list.txt``).
            Defaults to None.
        classes: class names to keep, in this order. Defaults to None (all of the table's).
        check_counts: check the benchmark's expected image and class counts. Defaults to True.
        image_size: side of the square model input. Defaults to 224.
        channels: image channels ``C``. Defaults to 3.
        mean: normalisation mean. Defaults to 0.4978 (CARZero).
        std: normalisation standard deviation. Defaults to 0.2449 (CARZero).
        resize: ``"stretch"`` or ``"pad_crop"`` (CARZero's release), see :mod:`datasets.cxr_transforms`. Defaults to
            ``"stretch"``.
        load_size: padded square side of ``"pad_crop"``. Defaults to 256.
        intensity: ``"minmax"`` or ``"range"`` (the file's nominal bit range). Defaults to ``"minmax"``.
        batch_size: samples per batch. Defaults to 32.
        num_workers: DataLoader worker processes. Defaults to 0.
        seed: seed of the loaders' generators and workers. Defaults to 0.

    Example::

        data = ZeroShotDataModule(labels="synthetic-cxr/Data_Entry_2017.csv", image_root="synthetic-cxr/images",
                                  split_list="synthetic-cxr/test_list.txt", image_size=96)
        data.setup("validate")
        batch = next(iter(data.val_dataloader()))
        batch["label"].shape  # torch.Size([32, 14])
    """

    def __init__(
        self,
        benchmark: str | None = None,
        data_root: str | None = None,
        labels: str | None = None,
        adapter: str = "chestxray14.data_entry",
        image_root: str | None = None,
        split_list: str | None = None,
        classes: list[str] | None = None,
        check_counts: bool = True,
        image_size: int = 224,
        channels: int = 3,
        mean: float = CARZERO_MEAN,
        std: float = CARZERO_STD,
        resize: str = "stretch",
        load_size: int = 256,
        intensity: str = "minmax",
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_loader_options(batch_size, num_workers)
        if (benchmark is None) == (labels is None):
            raise InputError("give either benchmark (with data_root) or labels (with adapter and image_root)")
        if benchmark is not None and data_root is None:
            raise InputError(f"benchmark {benchmark!r} needs data_root, the folder its paths are relative to")
        if labels is not None:
            if image_root is None:
                raise InputError(f"labels {labels!r} needs image_root, the folder its image ids are relative to")
            if adapter not in ADAPTERS:
                raise InputError(f"unknown adapter {adapter!r}; available adapters: {sorted(ADAPTERS)}")
        self.save_hyperparameters()
        self.benchmark = benchmark
        self.data_root = data_root
        self.labels = labels
        self.adapter = adapter
        self.image_root = image_root
        self.split_list = split_list
        self.classes = classes
        self.check_counts = check_counts
        self.preprocessing = CXRPreprocessing(image_size, channels, mean, std, resize=resize, load_size=load_size,
                                              intensity=intensity)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.label_set: LabelSet | None = None
        self._root = Path(image_root) if image_root is not None else None
        self.prompts: list[list[str]] | None = None
        self.dataset: CXRDataset | None = None

    @property
    def class_names(self) -> list[str]:
        """Class order of the ``label`` columns (reads the label table on first use)."""
        return list(self._read()[0].class_names)

    def _read(self) -> tuple[LabelSet, Path]:
        if self.label_set is not None:
            return self.label_set, self._root
        if self.benchmark is not None:
            bench = load_benchmark(self.benchmark, self.data_root, check_counts=self.check_counts)
            label_set, root, self.prompts = bench.labels, bench.image_root, bench.prompts
        else:
            label_set, root = ADAPTERS[self.adapter]({"labels": Path(self.labels)}, {}), Path(self.image_root)
            if self.split_list is not None:
                label_set = label_set.select_images(read_image_list(self.split_list), self.split_list)
        if self.classes is not None:
            label_set = label_set.select_classes(self.classes)
        self.label_set, self._root = label_set, root
        return label_set, root

    def setup(self, stage: str | None = None) -> None:
        """Read the labels and check that every image exists.

        Raises:
            InputError: a bad label table or split list, unknown classes, or images absent from the image folder
                (the message names the folder and lists the first missing ids).
        """
        label_set, root = self._read()
        label_set.check_images(root)
        meta = [{"image_id": image_id, **row} for image_id, row in zip(label_set.image_ids, label_set.meta)]
        self.dataset = CXRDataset(label_set.image_paths(root), self.preprocessing, labels=label_set.labels, meta=meta,
                                  seed=self.seed)

    def _loader(self) -> DataLoader:
        return make_loader(self.dataset, "zero-shot", self.batch_size, self.num_workers, self.seed, False)

    def val_dataloader(self) -> DataLoader:
        return self._loader()

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()
