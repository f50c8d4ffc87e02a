"""LSMS in the portable model folder (:mod:`datasets.pretrained`): save, load, and export from a Lightning checkpoint.

The folder stores the network's constructor arguments and the slice preprocessing it was trained with, so
``lsms segment`` preprocesses exactly as training did.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datasets.errors import InputError
from datasets.pretrained import (
    checkpoint_provenance,
    load_model_weights,
    load_module_weights,
    read_model_config,
    read_module_checkpoint,
    save_model_folder,
)
from datasets.slices import SlicePreprocessing
from lsms.model import LSMS

__all__ = ["MODEL_TYPE", "save_pretrained", "from_pretrained", "export_checkpoint"]


MODEL_TYPE = "lsms"
_PREPROCESSING_KEYS = ("window", "image_size", "context_slices", "already_hu")


def save_pretrained(
    net: LSMS,
    folder: str | os.PathLike,
    preprocessing: SlicePreprocessing,
    *,
    seed: int | None = None,
    training_manifest: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``net`` and its preprocessing as a portable model folder.

    Args:
        net: the trained network.
        folder: destination (must not exist unless ``overwrite``).
        preprocessing: the slice preprocessing used in training.
        seed: training seed. Defaults to None.
        training_manifest: ``{"path", "sha256", "rows"}`` of the training manifest. Defaults to None.
        extra: more JSON fields, e.g. test metrics. Defaults to None.
        overwrite: replace an existing folder. Defaults to False.
    """
    if net.in_channels != preprocessing.channels:
        raise InputError(
            f"the network takes {net.in_channels} channels but the preprocessing makes {preprocessing.channels} "
            f"(context_slices={preprocessing.context_slices})"
        )
    encoder = net.text_encoder
    return save_model_folder(
        folder,
        net,
        model_type=MODEL_TYPE,
        model_config=net.config,
        preprocessing={**preprocessing.to_dict(), "normalisation": "HU window clipped and scaled to [0, 1]"},
        text_encoder=("text_encoder.model.", encoder.model, encoder.tokenizer),
        seed=seed,
        training_manifest=training_manifest,
        extra={"tokenizer": {"source": encoder.name, "max_length": encoder.max_length}, **(extra or {})},
        overwrite=overwrite,
    )


def from_pretrained(folder: str | os.PathLike) -> tuple[LSMS, SlicePreprocessing, dict[str, Any]]:
    """Load a model folder written by :func:`save_pretrained`.

    Returns:
        The network in eval mode, its preprocessing, and the whole ``config.json``.

    Raises:
        InputError: not an LSMS model folder (e.g. a CARZero folder), or weights that do not match.
    """
    config = read_model_config(folder, MODEL_TYPE)
    net = LSMS(**config["model"])
    load_model_weights(folder, net, config)
    preprocessing = SlicePreprocessing.from_dict(
        {key: config["preprocessing"][key] for key in _PREPROCESSING_KEYS if key in config["preprocessing"]}
    )
    return net.eval(), preprocessing, config


def export_checkpoint(checkpoint: str | os.PathLike, folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Convert a Lightning ``.ckpt`` of :class:`lsms.module.LSMSModule` into a portable model folder.

    The checkpoint is read with ``weights_only=True`` (no code runs). The network is rebuilt from the
    ``lsms_config`` the module stores, and the preprocessing from the DataModule's saved hyper-parameters.
    """
    state = read_module_checkpoint(
        checkpoint, ("lsms_config",), "it is not a checkpoint of lsms.module.LSMSModule; save the network with "
        "lsms.pretrained.save_pretrained instead",
    )
    data_hparams = state.get("datamodule_hyper_parameters") or {}
    missing = [key for key in ("window", "image_size", "context_slices") if key not in data_hparams]
    if missing:
        raise InputError(
            f"{checkpoint} does not record the data preprocessing ({missing} missing from its datamodule "
            "hyper-parameters); it was not trained with lsms.RefSegDataModule"
        )
    preprocessing = SlicePreprocessing.from_dict({key: data_hparams[key] for key in _PREPROCESSING_KEYS
                                                  if key in data_hparams})
    net = LSMS(**state["lsms_config"])
    load_module_weights(checkpoint, state, net)
    return save_pretrained(
        net, folder, preprocessing, **checkpoint_provenance(checkpoint, state, "manifest"), overwrite=overwrite
    )
