"""A seeded, distributed, resumable sampler and the data loader that checkpoints it.

Lightning (2.6) restores a training loader in the middle of an epoch when the loader itself implements
``state_dict`` / ``load_state_dict`` (``FitLoop`` stores ``[loader.state_dict()]`` under ``"combined_loader"`` and
calls ``load_state_dict`` before re-creating the iterator); for any other loader it warns that the resume is not
exact and replays the epoch from its first batch. :class:`ResumableDataLoader` is such a loader. Its state is that of
its :class:`ResumableSampler` plus this process's global random-number-generator states (``torch``, ``numpy``,
``random``), so dropout and any other draw on the global generators continue exactly where they stopped.

Position counting: Lightning fetches one batch ahead of the training step, so the number of indices the sampler has
*yielded* overshoots the number of batches *trained on*. The sampler therefore counts only what its owner reports with
:meth:`ResumableSampler.advance`; a DataModule calls it from ``on_after_batch_transfer`` while training (see
:class:`datasets.refseg_datamodule.RefSegDataModule`), i.e. once per batch that reaches ``training_step``.

Multi-process: the sampler subclasses :class:`torch.utils.data.DistributedSampler`, so Lightning keeps it instead of
wrapping it in its own distributed sampler. Every process draws the same seeded permutation of the dataset for an
epoch and takes every ``num_replicas``-th index from position ``rank``; the first global batch of ``W`` processes with
per-process batch ``B`` is therefore exactly the first ``W * B`` indices of the permutation, the batch one process with
batch ``W * B`` would see.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from datasets.errors import InputError

__all__ = ["ResumableSampler", "ResumableDataLoader", "capture_rng_states", "restore_rng_states"]

logger = logging.getLogger(__name__)

_STATE_VERSION = 1


class ResumableSampler(DistributedSampler):
    """Seeded per-epoch permutation, split across processes, that can resume in the middle of an epoch.

    Args:
        dataset: the dataset (only its length is used, plus its ``set_epoch(epoch)`` when it has one, so per-sample
            augmentation can be seeded by epoch).
        num_replicas: number of processes. Defaults to 1.
        rank: this process's global rank. Defaults to 0.
        shuffle: permute the indices every epoch (seeded by ``seed + epoch``). Defaults to True.
        seed: seed of the permutation. Defaults to 0.
        drop_last: drop the tail that does not divide evenly across processes instead of padding it with indices from
            the start of the permutation (PyTorch's ``DistributedSampler`` rule). Defaults to False.

    Example::

        sampler = ResumableSampler(dataset, num_replicas=2, rank=1, seed=0)
        loader = ResumableDataLoader(dataset, batch_size=4, sampler=sampler)
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas} and {rank}")
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.consumed = 0  # samples of the current epoch that reached the training step on this process
        self._resume_from = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's permutation; a new epoch starts from its first index (Lightning calls this)."""
        if epoch != self.epoch:
            self.consumed = 0
            self._resume_from = 0
        super().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def epoch_indices(self) -> list[int]:
        """This process's indices for the current epoch, from its first one (ignores the resume position)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            indices = torch.randperm(len(self.dataset), generator=generator).tolist()
        else:
            indices = list(range(len(self.dataset)))
        if self.drop_last:
            indices = indices[: self.total_size]
        else:
            padding = self.total_size - len(indices)
            indices += (indices * math.ceil(padding / max(len(indices), 1)))[:padding]
        return indices[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        start, self._resume_from = self._resume_from, 0
        self.consumed = start
        return iter(self.epoch_indices()[start:])

    def __len__(self) -> int:
        return self.num_samples

    def advance(self, num_samples: int) -> None:
        """Record that ``num_samples`` more samples of this epoch reached the training step."""
        self.consumed += num_samples

    def state_dict(self) -> dict[str, Any]:
        """The position: epoch, samples consumed on this process, and the settings a resume must match."""
        return {
            "version": _STATE_VERSION,
            "epoch": self.epoch,
            "consumed": self.consumed,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "num_replicas": self.num_replicas,
            "dataset_size": len(self.dataset),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position: the next iteration starts after the consumed samples of that epoch.

        Raises:
            InputError: the saved run used another seed, shuffling, process count or dataset size, so its order
                cannot be continued exactly.
        """
        mine = self.state_dict()
        different = {key: (state.get(key), mine[key]) for key in ("seed", "shuffle", "drop_last", "num_replicas",
                                                                 "dataset_size") if state.get(key) != mine[key]}
        if different:
            raise InputError(
                "cannot resume the training sampler exactly: the checkpoint was written with "
                + ", ".join(f"{key}={saved!r} (now {now!r})" for key, (saved, now) in different.items())
                + "; resume with the same data, seed and number of processes, or from an epoch-end checkpoint "
                "with a fresh trainer"
            )
        self.set_epoch(int(state["epoch"]))
        self.consumed = self._resume_from = int(state["consumed"])


def capture_rng_states() -> dict[str, Any]:
    """The global generator states of this process: ``torch`` (CPU and, when present, CUDA), ``numpy``, ``random``."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gaussian)]
    # tensors and built-in types only, so checkpoints stay loadable with torch.load(weights_only=True)
    states = {"torch": torch.get_rng_state(), "numpy": numpy_state, "random": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the global generators from :func:`capture_rng_states`'s result."""
    torch.set_rng_state(states["torch"])
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    random.setstate(states["random"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _distributed_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class ResumableDataLoader(DataLoader):
    """A :class:`~torch.utils.data.DataLoader` over a :class:`ResumableSampler` that Lightning checkpoints.

    ``state_dict`` returns the sampler's position and the global generator states of every process (gathered with
    ``all_gather_object`` when a process group is running, since only rank 0's copy reaches the checkpoint);
    ``load_state_dict`` restores them, each process taking its own generator states.

    Args:
        dataset: the dataset.
        sampler: its :class:`ResumableSampler`.
        **kwargs: other :class:`~torch.utils.data.DataLoader` arguments (not ``shuffle`` or ``batch_sampler``).

    Raises:
        TypeError: ``sampler`` is not a :class:`ResumableSampler`.
    """

    def __init__(self, dataset: Any, sampler: ResumableSampler, **kwargs: Any) -> None:
        if not isinstance(sampler, ResumableSampler):
            raise TypeError(f"ResumableDataLoader needs a ResumableSampler, got {type(sampler).__name__}")
        super().__init__(dataset, sampler=sampler, **kwargs)

    def advance(self, num_samples: int) -> None:
        """Record that ``num_samples`` samples reached the training step (see :meth:`ResumableSampler.advance`)."""
        self.sampler.advance(num_samples)

    def state_dict(self) -> dict[str, Any]:
        """Sampler position plus every process's global generator states (a collective call when distributed)."""
        world_size, _ = _distributed_world()
        rng = capture_rng_states()
        if world_size > 1:
            gathered: list[Any] = [None] * world_size
            torch.distributed.all_gather_object(gathered, rng)
        else:
            gathered = [rng]
        return {"sampler": self.sampler.state_dict(), "rng_states": gathered}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the sampler position and this process's generator states.

        Raises:
            InputError: the state is not a :class:`ResumableDataLoader` state or does not match the sampler.
        """
        if not isinstance(state, dict) or "sampler" not in state or "rng_states" not in state:
            raise InputError(
                "the checkpoint's training-loader state is not a ResumableDataLoader state; resume with the loader "
                "that wrote it"
            )
        self.sampler.load_state_dict(state["sampler"])
        _, rank = _distributed_world()
        states = state["rng_states"]
        if rank >= len(states):
            raise InputError(f"the checkpoint holds generator states of {len(states)} processes, this is rank {rank}")
        restore_rng_states(states[rank])
        logger.info(
            "resuming the training loader at epoch %d after %d samples on this process",
            self.sampler.epoch, self.sampler.consumed,
        )
