"""A disk cache for deterministic preprocessing results: plain ``.npz`` arrays plus JSON metadata, no pickles.

Why not MONAI's ``PersistentDataset``: it stores each transformed item with ``torch.save`` and reads it back with
``torch.load``, i.e. through pickle, so a cache folder shared between users or copied from elsewhere can run code when
loaded; and its default key hashes the input dict (file *names*), so an image rewritten in place under the same name
silently serves stale results. Here each entry is an ``.npz`` read with ``np.load(allow_pickle=False)`` and a JSON
file, and the key is a SHA-256 over

* the identity of every source file (absolute path, size, modification time in ns; for a DICOM folder, the same for
  each file in it),
* the row's own fields (row id, slice index, mask value, text, ...),
* the full preprocessing configuration (what MONAI's ``hash_transform`` option adds to its key),
* :data:`CACHE_FORMAT`, bumped whenever what is stored changes.

Changing the HU window, the image size or a source file therefore gives a new key and a recomputation. Entries are
written atomically (``.npz`` first, then the ``.json`` that marks the entry complete), so concurrent data-loader
workers and killed runs never leave a half-written entry that is read back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datasets.io import atomic_write, atomic_write_text, ensure_writable_dir

__all__ = ["CACHE_FORMAT", "PreprocessCache", "cache_key", "source_identity"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1

Entry = tuple[dict[str, np.ndarray], dict[str, Any]]


def source_identity(path: str | os.PathLike) -> list[Any]:
    """``[absolute path, size, mtime_ns]`` of a file; for a folder, that of every file in it (sorted by name)."""
    path = Path(path).resolve()
    if path.is_dir():
        files = sorted(child for child in path.iterdir() if child.is_file())
        return [str(path), [[child.name, child.stat().st_size, child.stat().st_mtime_ns] for child in files]]
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def cache_key(sources: Sequence[str | os.PathLike], fields: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """SHA-256 hex key over source identities, row fields and configuration (all JSON-serialisable)."""
    payload = {
        "format": CACHE_FORMAT,
        "sources": [source_identity(source) for source in sources],
        "fields": fields,
        "config": config,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class PreprocessCache:
    """Key-value store of ``(arrays, meta)`` entries in a folder.

    Args:
        folder: cache folder (created if needed). Entries live in ``folder/<key[:2]>/<key>.npz`` and ``.json``.

    Attributes:
        hits: entries served from disk by this object.
        computations: entries computed (and stored) by this object.

    Example::

        cache = PreprocessCache("cache/")
        key = cache_key([image_path], row_fields, preprocessing.to_dict())
        arrays, meta = cache.get_or_compute(key, lambda: ({"image": image}, {"shape": [2, 3]}))
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = ensure_writable_dir(folder)
        self.hits = 0
        self.computations = 0

    def _paths(self, key: str) -> tuple[Path, Path]:
        base = self.folder / key[:2] / key
        return base.with_suffix(".npz"), base.with_suffix(".json")

    def has(self, key: str) -> bool:
        """Whether an entry for ``key`` was stored (its JSON, written last, marks it complete)."""
        return self._paths(key)[1].is_file()

    def load(self, key: str) -> Entry | None:
        """The stored entry, or None if absent or unreadable (a damaged entry is logged and recomputed later)."""
        arrays_path, meta_path = self._paths(key)
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            with np.load(arrays_path, allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in stored.files}
        except (OSError, ValueError, EOFError) as err:
            logger.warning("ignoring damaged cache entry %s: %s", arrays_path, err)
            return None
        return arrays, meta

    def save(self, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Store an entry atomically; arrays must be plain numeric arrays, ``meta`` JSON-serialisable."""
        arrays_path, meta_path = self._paths(key)
        with atomic_write(arrays_path, "wb") as handle:
            np.savez(handle, **{name: np.asarray(value) for name, value in arrays.items()})
        atomic_write_text(meta_path, json.dumps(meta, sort_keys=True))

    def remove_stale_temporaries(self, older_than_s: float = 3600.0) -> int:
        """Delete the temporary files of writes that never finished (a killed process) and return how many.

        :func:`~datasets.io.atomic_write` names them ``.<entry file>.<random>.tmp`` beside the entry; only those last
        modified more than ``older_than_s`` seconds ago are removed, so a write in progress elsewhere is left alone.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        for path in self.folder.glob("*/.*.tmp"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:  # finished or removed meanwhile
                continue
        if removed:
            logger.info("removed %d unfinished temporary files (older than %.0f s) from %s", removed, older_than_s,
                        self.folder)
        return removed

    def get_or_compute(self, key: str, compute: Callable[[], Entry]) -> Entry:
        """Serve the entry for ``key`` from disk, or call ``compute()`` once, store and return its result."""
        entry = self.load(key)
        if entry is not None:
            self.hits += 1
            return entry
        arrays, meta = compute()
        self.computations += 1
        self.save(key, arrays, meta)
        return {name: np.asarray(value) for name, value in arrays.items()}, json.loads(json.dumps(meta, sort_keys=True))
