"""CARZero in the portable model folder (:mod:`datasets.pretrained`): save, load, export from a Lightning checkpoint.

The folder stores the network's constructor arguments (:attr:`carzero.model.CARZero.config`), the radiograph
preprocessing it was trained with (:class:`datasets.cxr_transforms.CXRPreprocessing`) and the text encoder with its
tokenizer, so ``carzero zeroshot`` preprocesses exactly as training did, offline.

:class:`CARZeroModule` stores the network's config (``carzero_config``) in every checkpoint; the ``carzero``
LightningCLI adds :func:`store_preprocessing`, which also writes ``carzero_preprocessing``; :func:`export_checkpoint`
reads both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carzero.model import CARZero
from datasets.cxr_transforms import CXRPreprocessing
from datasets.errors import InputError
from datasets.pretrained import (
    checkpoint_provenance,
    load_model_weights,
    load_module_weights,
    read_model_config,
    read_module_checkpoint,
    save_model_folder,
)

if TYPE_CHECKING:
    from datasets.checkpoint_callbacks import StorePreprocessing

__all__ = [
    "MODEL_TYPE", "PREPROCESSING_KEY", "export_checkpoint", "from_pretrained", "save_pretrained", "store_preprocessing"
]


MODEL_TYPE = "carzero"
PREPROCESSING_KEY = "carzero_preprocessing"
_TEXT_PREFIX = "text.model."
_NORMALISATION = "per-image min-max to [0, 1], then (x - mean) / std"


def store_preprocessing() -> StorePreprocessing:
    """The callback the ``carzero`` LightningCLI adds: every checkpoint gets ``carzero_preprocessing``."""
    from datasets.checkpoint_callbacks import StorePreprocessing

    return StorePreprocessing(PREPROCESSING_KEY, CXRPreprocessing)


def save_pretrained(
    net: CARZero,
    folder: str | os.PathLike,
    preprocessing: CXRPreprocessing,
    *,
    seed: int | None = None,
    training_manifest: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``net`` and its preprocessing as a portable model folder.

    Args:
        net: the network.
        folder: destination (must not exist unless ``overwrite``).
        preprocessing: the evaluation preprocessing (augmentation options are stored but unused at inference).
        seed: training seed. Defaults to None.
        training_manifest: ``{"path", "sha256", "rows"}`` of the training manifest. Defaults to None.
        extra: more JSON fields, e.g. test metrics. Defaults to None.
        overwrite: replace an existing folder. Defaults to False.

    Raises:
        InputError: the preprocessing does not produce the network's input size or channels.
    """
    config = net.config
    if preprocessing.image_size != config["image_size"] or preprocessing.channels != config["in_channels"]:
        raise InputError(
            f"the network takes {config['in_channels']} x {config['image_size']} px images but the preprocessing "
            f"makes {preprocessing.channels} x {preprocessing.image_size} px"
        )
    encoder = net.text
    return save_model_folder(
        folder,
        net,
        model_type=MODEL_TYPE,
        model_config=config,
        preprocessing={**preprocessing.to_dict(), "normalisation": _NORMALISATION},
        text_encoder=(_TEXT_PREFIX, encoder.model, encoder.tokenizer),
        seed=seed,
        training_manifest=training_manifest,
        extra={"tokenizer": {"source": config["text_encoder"], "max_length": encoder.max_length}, **(extra or {})},
        overwrite=overwrite,
    )


def from_pretrained(folder: str | os.PathLike) -> tuple[CARZero, CXRPreprocessing, dict[str, Any]]:
    """Load a model folder written by :func:`save_pretrained` (or ``carzero export`` / ``convert-official``).

    Returns:
        The network in eval mode, its preprocessing (applied without augmentation at inference), and the whole
        ``config.json``.

    Raises:
        InputError: not a CARZero model folder (e.g. an LSMS or BrgSA folder), or weights that do not match.
    """
    config = read_model_config(folder, MODEL_TYPE)
    net = CARZero.from_config(config["model"])
    load_model_weights(folder, net, config)
    values = {key: value for key, value in config["preprocessing"].items() if key != "normalisation"}
    try:
        preprocessing = CXRPreprocessing.from_dict(values)
    except ValueError as err:
        raise InputError(f"{folder}: bad preprocessing in config.json: {err}") from err
    return net.eval(), preprocessing, config


def export_checkpoint(checkpoint: str | os.PathLike, folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Convert a Lightning ``.ckpt`` of :class:`carzero.module.CARZeroModule` into a portable model folder.

    The checkpoint is read with ``weights_only=True`` (no code runs). The network is rebuilt from the
    ``carzero_config`` that the module stores.

    Raises:
        InputError: not a CARZeroModule checkpoint written through the ``carzero`` CLI, or mismatching weights.
    """
    state = read_module_checkpoint(
        checkpoint, ("carzero_config",),
        "it was not written by a CARZeroModule trained through the `carzero` CLI (which adds "
        "carzero.pretrained.store_preprocessing); save the network with carzero.pretrained.save_pretrained instead",
    )
    data_hparams = state.get("datamodule_hyper_parameters") or {}
    values = state.get(PREPROCESSING_KEY) or {
        key: data_hparams[key] for key in ("image_size", "channels", "mean", "std") if key in data_hparams
    }
    if "image_size" not in values:
        raise InputError(f"{checkpoint} does not record the image preprocessing (no 'carzero_preprocessing')")
    preprocessing = CXRPreprocessing.from_dict(values)
    net = CARZero.from_config(state["carzero_config"])
    load_module_weights(checkpoint, state, net, unused=("text.model.pooler.",))  # older checkpoints lack it
    return save_pretrained(
        net, folder, preprocessing, **checkpoint_provenance(checkpoint, state, "manifest"), overwrite=overwrite
    )
