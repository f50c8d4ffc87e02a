"""BrgSA in the portable model folder (:mod:`datasets.pretrained`): save, load, export from a Lightning checkpoint.

The folder stores the network's constructor arguments (:attr:`brgsa.model.BrgSA.config`), the CT volume
preprocessing it was trained with (:class:`datasets.ct_pipeline.CTVolumePreprocessing`) and the text encoder with
its tokenizer, so ``brgsa zeroshot`` preprocesses exactly as training did, offline.

:class:`brgsa.module.BrgSAModule` stores the network's config (``brgsa_config``) in every checkpoint; the ``brgsa``
LightningCLI adds :func:`store_preprocessing`, which also writes ``brgsa_preprocessing``; :func:`export_checkpoint`
reads both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brgsa.model import BrgSA
from datasets.ct_pipeline import CTVolumePreprocessing
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
    "MODEL_TYPE", "PREPROCESSING_KEY", "export_checkpoint", "from_pretrained", "preprocessing_from_config",
    "save_pretrained", "store_preprocessing",
]


MODEL_TYPE = "brgsa"
PREPROCESSING_KEY = "brgsa_preprocessing"
_TEXT_PREFIX = "text_encoder.model."
_NORMALISATION = "HU clipped to hu_range, scaled to [-1, 1], then (x - mean) / std when mean_std is set"


def _check_sizes(config: Mapping[str, Any], preprocessing: CTVolumePreprocessing) -> None:
    patch = config["patch_size"]
    for name in ("size", "crop_size"):
        shape = getattr(preprocessing, name)
        if any(s % p for s, p in zip(shape, patch)):
            raise InputError(
                f"the preprocessing's {name} {list(shape)} is not a multiple of the network's patch size {patch} "
                "along every axis"
            )


def store_preprocessing() -> StorePreprocessing:
    """The callback the ``brgsa`` LightningCLI adds: every checkpoint gets ``brgsa_preprocessing``, and a preprocessing
    whose sizes are not multiples of the patch size (which export refuses) stops ``fit`` before it trains."""
    from datasets.checkpoint_callbacks import StorePreprocessing

    return StorePreprocessing(PREPROCESSING_KEY, CTVolumePreprocessing, check=_check_sizes)


def save_pretrained(
    net: BrgSA,
    folder: str | os.PathLike,
    preprocessing: CTVolumePreprocessing,
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
        preprocessing: the CT preprocessing used in training (its crop size is the evaluation centre crop).
        seed: training seed. Defaults to None.
        training_manifest: ``{"path", "sha256", "rows"}`` of the training table. Defaults to None.
        extra: more JSON fields, e.g. test metrics. Defaults to None.
        overwrite: replace an existing folder. Defaults to False.

    Raises:
        InputError: the preprocessing's volume or crop size is not a multiple of the patch size.
    """
    config = net.config
    _check_sizes(config, preprocessing)
    encoder = net.text_encoder
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


def preprocessing_from_config(block: Mapping[str, Any]) -> CTVolumePreprocessing:
    """The preprocessing of a model folder's ``config.json`` block (its descriptive ``normalisation`` text dropped)."""
    return CTVolumePreprocessing.from_dict({key: value for key, value in block.items() if key != "normalisation"})


def from_pretrained(folder: str | os.PathLike) -> tuple[BrgSA, CTVolumePreprocessing, dict[str, Any]]:
    """Load a model folder written by :func:`save_pretrained` (or ``brgsa export`` / ``convert-official``).

    Returns:
        The network in eval mode, its preprocessing, and the whole ``config.json``.

    Raises:
        InputError: not a BrgSA model folder (e.g. an LSMS or CARZero folder), or weights that do not match.
    """
    config = read_model_config(folder, MODEL_TYPE)
    try:
        preprocessing = preprocessing_from_config(config["preprocessing"])
        net = BrgSA.from_config(config["model"])
    except (TypeError, ValueError) as err:
        raise InputError(f"{folder}: config.json does not describe a BrgSA model: {err}") from err
    load_model_weights(folder, net, config)
    return net.eval(), preprocessing, config


def export_checkpoint(checkpoint: str | os.PathLike, folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Convert a Lightning ``.ckpt`` of :class:`brgsa.module.BrgSAModule` into a portable model folder.

    The checkpoint is read with ``weights_only=True`` (no code runs). The network is rebuilt from the
    ``brgsa_config`` that the module stores, the
    preprocessing from ``brgsa_preprocessing``.

    Raises:
        InputError: not a BrgSAModule checkpoint written through the ``brgsa`` CLI, or mismatching weights.
    """
    state = read_module_checkpoint(
        checkpoint, ("brgsa_config", PREPROCESSING_KEY),
        "it was not written by a BrgSAModule trained through the `brgsa` CLI (which adds "
        "brgsa.pretrained.store_preprocessing); save the network with brgsa.pretrained.save_pretrained instead",
    )
    preprocessing = CTVolumePreprocessing.from_dict(state[PREPROCESSING_KEY])
    net = BrgSA.from_config(state["brgsa_config"])
    load_module_weights(checkpoint, state, net)
    return save_pretrained(
        net, folder, preprocessing, **checkpoint_provenance(checkpoint, state, "reports"), overwrite=overwrite
    )
