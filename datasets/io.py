"""I/O utilities every model uses: atomic writes, a resumable row-keyed writer, and code-free weight loading."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from datasets.errors import InputError

__all__ = [
    "apply_default_modes",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_run_fingerprint",
    "check_writable_dir",
    "ensure_writable_dir",
    "sha256_file",
    "sha256_of_set",

    "ResumableRowWriter",
    "load_weights",
]

logger = logging.getLogger(__name__)


def _umask_mode(requested: int) -> int:
    """``requested`` under the current umask: the mode ``open()`` (0o666) or ``mkdir`` (0o777) would give, where
    ``mkstemp`` / ``mkdtemp`` alone give 0600 / 0700."""
    umask = os.umask(0)
    os.umask(umask)
    return requested & ~umask


def apply_default_modes(folder: str | os.PathLike) -> None:
    """Give ``folder`` and everything in it the modes ``mkdir`` / ``open()`` would under the current umask.

    For folders staged with ``tempfile.mkdtemp`` (0700) and filled by writers that create 0600 files (``mkstemp``,
    safetensors), before they are renamed into place: the result is as readable as any other output.
    """
    root = Path(folder)
    root.chmod(_umask_mode(0o777))
    for path in root.rglob("*"):
        if not path.is_symlink():
            path.chmod(_umask_mode(0o777 if path.is_dir() else 0o666))


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check that files can be written there.

    Raises:
        InputError: the folder cannot be created or written to.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocker = next((parent for parent in (folder, *folder.parents) if parent.exists() and not parent.is_dir()),
                       None)
        reason = f"{blocker} is a file, not a folder" if blocker is not None else err.strerror
        raise InputError(f"cannot create output folder {folder}: {reason}") from err
    if not folder.is_dir():
        raise InputError(f"output path {folder} exists and is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"output folder {folder} is not writable")
    return folder


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Check, without creating anything, that ``path`` is (or can be created as) a writable folder.

    Commands call it before reading their inputs, so bad input never leaves an empty output folder behind.

    Raises:
        InputError: a file is in the way, or the folder (or its nearest existing parent) is not writable.
    """
    folder = Path(path)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"output folder {folder}: {probe} exists and is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"output folder {folder} is not writable ({probe} is read-only)")
    return folder


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` and rename it onto ``path`` only if the block succeeds.

    Readers never see a half-written file, and an error (or a kill) leaves any earlier version of ``path`` intact.

    Example::

        with atomic_write("scores.json") as f:
            json.dump(scores, f)
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write needs a write mode ('w' or 'wb'), got {mode!r}")
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{target} is a folder; name a file to write")
    ensure_writable_dir(target.parent if str(target.parent) else ".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, _umask_mode(0o666))
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def check_run_fingerprint(out: str | os.PathLike, fingerprint: Mapping[str, Any], name: str = "run.json") -> None:
    """Pin what a resumable output folder was written with, so a rerun never mixes two runs' outputs.

    The first run writes ``out/<name>`` (JSON); a later run with the same ``fingerprint`` resumes, and one that
    differs (another model, prompts, threshold, ...) is refused before anything is written.

    Raises:
        InputError: ``out`` holds outputs of a run whose fingerprint differs (the message names the keys).
    """
    path = Path(out) / name
    fingerprint = json.loads(json.dumps(fingerprint))  # compare as stored: tuples become lists
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != fingerprint:
            changed = sorted(key for key in {*fingerprint, *previous} if previous.get(key) != fingerprint.get(key))
            raise InputError(
                f"{out} holds outputs of another run (differs in {changed}); use another --out or remove {out}"
            )
        return
    atomic_write_text(path, json.dumps(fingerprint, indent=2) + "\n")


def sha256_of_set(values: Iterable[str]) -> str:
    """SHA-256 of a set of strings (sorted, newline-joined, UTF-8): pins e.g. which images a run scores."""
    return hashlib.sha256("\n".join(sorted(set(values))).encode("utf-8")).hexdigest()


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ResumableRowWriter:
    """A CSV writer for long batch jobs that can be killed and restarted.

    Each row has a key column. On opening, rows already in the file are read and their keys are skipped by
    :meth:`done`; a torn last line (a kill mid-write) is dropped. Every :meth:`write` is flushed and fsync'ed, so the
    file always holds whole rows only.

    A key alone does not say that a stored row still holds: its input may have been edited, or the job rerun with
    other settings. Columns that record what a row was computed from (a hash of its input, the model, a config hash)
    can be passed to :meth:`done` as ``pinned``; a stored row whose values differ is refused, naming its row, so a
    resumed file never mixes two runs.

    Args:
        path: CSV file to create or continue.
        fieldnames: column names; the first one unless ``key`` says otherwise is the row key.
        key: name of the key column. Defaults to ``fieldnames[0]``.

    Example::

        with ResumableRowWriter("scores.csv", ["image", "score"]) as out:
            for image in images:
                if not out.done(image):
                    out.write({"image": image, "score": model(image)})
    """

    def __init__(self, path: str | os.PathLike, fieldnames: Sequence[str], key: str | None = None) -> None:
        self.path = Path(path)
        self.fieldnames = list(fieldnames)
        self.key = key or self.fieldnames[0]
        if self.key not in self.fieldnames:
            raise ValueError(f"key column {self.key!r} is not among fieldnames {self.fieldnames}")
        ensure_writable_dir(self.path.parent)
        self._rows: dict[str, tuple[int, dict[str, str]]] = {}  # key -> (spreadsheet row number, stored row)
        self._recover()
        is_new = not self.path.exists() or self.path.stat().st_size == 0
        self._handle = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._handle, fieldnames=self.fieldnames)
        if is_new:
            self._writer.writeheader()
            self._sync()

    def _recover(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        raw = self.path.read_bytes()
        if not raw.endswith(b"\n"):
            raw = raw[: raw.rfind(b"\n") + 1]
            logger.warning("dropped a torn last line of %s (the previous run was interrupted mid-write)", self.path)
            atomic_write_bytes(self.path, raw)
        with open(self.path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames != self.fieldnames:
                raise InputError(
                    f"{self.path} already exists with columns {reader.fieldnames}, expected {self.fieldnames}; "
                    "use another output path or remove the file"
                )
            self._rows = {row[self.key]: (number, row) for number, row in enumerate(reader, start=2)}
        if self._rows:
            logger.info("resuming %s: %d rows already written", self.path, len(self._rows))

    def __len__(self) -> int:
        return len(self._rows)

    def done(self, key: str, pinned: Mapping[str, Any] | None = None) -> bool:
        """Whether a row with this key is already in the file.

        Args:
            key: the row's key.
            pinned: column values the stored row must hold (compared as text), e.g. the hash of the input it was
                computed from; ignored when the key is not stored yet.

        Raises:
            InputError: the stored row differs in a ``pinned`` column (the message names the file, row, key and
                columns).
        """
        stored = self._rows.get(str(key))
        if stored is None:
            return False
        if pinned:
            number, row = stored
            changed = sorted(name for name, value in pinned.items() if row.get(name) != str(value))
            if changed:
                raise InputError(
                    f"{self.path} row {number} ({self.key} {key!r}) was written from other input or settings "
                    f"(differs in {changed}: stored {[row.get(name) for name in changed]}, this run "
                    f"{[str(pinned[name]) for name in changed]}); write to another output or remove the file"
                )
        return True

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row (skipped if its key was already written) and flush it to disk."""
        key = str(row[self.key])
        if key in self._rows:
            return
        values = {name: row.get(name, "") for name in self.fieldnames}
        self._writer.writerow(values)
        self._sync()
        self._rows[key] = (len(self._rows) + 2, {name: str(value) for name, value in values.items()})

    def _sync(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> ResumableRowWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def load_weights(path: str | os.PathLike) -> dict[str, Any]:
    """Load a state dict or checkpoint without running code from the file.

    ``.safetensors`` files are read with safetensors; anything else goes through ``torch.load(weights_only=True)``,
    which refuses pickled classes and functions.

    Raises:
        FileNotFoundError: no file at ``path``.
        InputError: the file is not a readable weights file or carries code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no weights file", str(path))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise InputError(f"{path} is not a readable safetensors file: {err}") from err
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(
            f"{path} could not be loaded as plain tensors (weights_only=True): it is truncated, not a PyTorch file, "
            f"or it carries pickled code, which medvl refuses to run. Detail: {' '.join(str(err).split())[:300]}"
        ) from err
