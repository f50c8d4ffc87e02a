"""The portable model folder shared by LSMS, CARZero and BrgSA.

A model folder holds everything inference needs, so preprocessing at inference can never drift from training::

    my_model/
      config.json          format marker and version, model type, medvl version, git commit, the model's constructor
                           arguments, the full preprocessing, tokenizer name and max length, seed, training-manifest
                           hash, creation time
      model.safetensors    all weights except the text encoder's (tensors only: loading runs no code)
      text_encoder/        the Hugging Face text encoder and tokenizer (``save_pretrained`` layout), when the model
                           has one, so the folder loads offline wherever it is copied

Folders are written to a temporary sibling and renamed into place, so a crash never leaves a half-written model.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from datasets.errors import InputError
from datasets.io import apply_default_modes, ensure_writable_dir

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "TEXT_ENCODER_DIR",
    "git_commit",
    "save_model_folder",
    "read_model_config",
    "load_model_weights",
]

logger = logging.getLogger(__name__)

FORMAT_NAME = "medvl-model"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TEXT_ENCODER_DIR = "text_encoder"


def git_commit() -> str | None:
    """The git commit of the medvl checkout this code runs from, or None outside a git checkout."""
    source = Path(__file__).resolve().parent.parent
    try:
        result = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def _medvl_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medvl")
    except PackageNotFoundError:
        return "unknown"


def save_model_folder(
    folder: str | os.PathLike,
    model: nn.Module,
    *,
    model_type: str,
    model_config: Mapping[str, Any],
    preprocessing: Mapping[str, Any],
    text_encoder: tuple[str, Any, Any] | None = None,
    text_encoder_config_key: str = "text_encoder",
    seed: int | None = None,
    training_manifest: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a portable model folder atomically.

    Args:
        folder: destination folder; it must not exist unless ``overwrite``.
        model: the plain PyTorch model whose ``state_dict`` is saved.
        model_type: ``"lsms"``, ``"carzero"`` or ``"brgsa"``; loading checks it.
        model_config: the model's constructor arguments (JSON-serialisable).
        preprocessing: the full input preprocessing (window, spacing, slices, image size, normalisation, ...).
        text_encoder: ``(prefix, hf_model, tokenizer)``: the state-dict prefix of the Hugging Face text model inside
            ``model`` and the objects to ``save_pretrained`` into ``text_encoder/``. The saved config then points
            ``model_config[text_encoder_config_key]`` at that subfolder. Defaults to None (no text encoder).
        text_encoder_config_key: which constructor argument names the text encoder. Defaults to "text_encoder".
        seed: training seed. Defaults to None.
        training_manifest: ``{"path", "sha256", "rows"}`` of the training manifest. Defaults to None.
        extra: further JSON-serialisable fields (e.g. metrics). Defaults to None.
        overwrite: replace an existing folder. Defaults to False.

    Returns:
        The folder's path.
    """
    target = Path(folder)
    if target.exists() and not overwrite:
        raise InputError(f"output folder {target} already exists; choose another path or overwrite it (--overwrite)")
    ensure_writable_dir(target.parent)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    config_model = dict(model_config)
    text_info: dict[str, Any] | None = None
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        if text_encoder is not None:
            prefix, hf_model, tokenizer = text_encoder
            state = {name: tensor for name, tensor in state.items() if not name.startswith(prefix)}
            hf_model.save_pretrained(staging / TEXT_ENCODER_DIR)
            tokenizer.save_pretrained(staging / TEXT_ENCODER_DIR)
            text_info = {"source": config_model.get(text_encoder_config_key), "state_prefix": prefix}
            config_model[text_encoder_config_key] = TEXT_ENCODER_DIR
        from safetensors.torch import save_file

        save_file(state, str(staging / WEIGHTS_NAME))
        config = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model_type": model_type,
            "medvl_version": _medvl_version(),
            "git_commit": git_commit(),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "model": config_model,
            "preprocessing": dict(preprocessing),
            "text_encoder": text_info,
            "seed": seed,
            "training_manifest": dict(training_manifest) if training_manifest else None,
            **(dict(extra) if extra else {}),
        }
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        apply_default_modes(staging)  # safetensors writes 0600 files, mkdtemp a 0700 folder
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote %s model folder %s", model_type, target)
    return target


def read_model_config(folder: str | os.PathLike, expected_type: str) -> dict[str, Any]:
    """Read and validate ``config.json`` of a model folder.

    The returned ``config["model"]`` has a relative text-encoder subfolder already resolved to an absolute path.

    Raises:
        InputError: not a medvl model folder, another model type, or a newer format version.
    """
    root = Path(folder)
    config_path = root / CONFIG_NAME
    if not root.is_dir():
        raise InputError(f"model folder {root} does not exist or is not a folder")
    if not config_path.is_file():
        raise InputError(f"{root} is not a medvl model folder: {CONFIG_NAME} is missing")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{config_path} is not valid JSON: {err}") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise InputError(f"{config_path} is not a medvl model config (no \"format\": \"{FORMAT_NAME}\")")
    if config.get("model_type") != expected_type:
        raise InputError(
            f"{root} holds a {config.get('model_type')!r} model, but a {expected_type!r} model was expected; "
            f"use the `{config.get('model_type')}` command for it"
        )
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise InputError(
            f"{root} was written by a newer medvl (format version {config['format_version']}, this reads "
            f"{FORMAT_VERSION}); upgrade medvl"
        )
    if not (root / WEIGHTS_NAME).is_file():
        raise InputError(f"{root} is incomplete: {WEIGHTS_NAME} is missing")
    text_info = config.get("text_encoder")
    if text_info:
        for key, value in config["model"].items():
            if value == TEXT_ENCODER_DIR:
                config["model"][key] = str((root / TEXT_ENCODER_DIR).resolve())
    return config


def load_model_weights(folder: str | os.PathLike, model: nn.Module, config: Mapping[str, Any]) -> None:
    """Load ``model.safetensors`` into ``model``; only the text encoder's keys may be absent (they load from
    ``text_encoder/``).

    Raises:
        InputError: the weights do not match the model built from ``config``.
    """
    from safetensors.torch import load_file

    weights_path = Path(folder) / WEIGHTS_NAME
    try:
        state = load_file(str(weights_path))
    except Exception as err:  # safetensors raises its own error types
        raise InputError(f"{weights_path} is not a readable safetensors file: {err}") from err
    result = model.load_state_dict(state, strict=False)
    prefix = (config.get("text_encoder") or {}).get("state_prefix")
    missing = [name for name in result.missing_keys if not (prefix and name.startswith(prefix))]
    if missing or result.unexpected_keys:
        raise InputError(
            f"{weights_path} does not match the model described by its config.json: missing "
            f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {list(result.unexpected_keys)[:5]}"
        )
    model.eval()


_MODEL_COMMANDS = ("lsms", "carzero", "brgsa")  # each module stores ``<name>_config`` in its checkpoints


def read_module_checkpoint(checkpoint: str | os.PathLike, required_keys: Sequence[str], hint: str) -> dict[str, Any]:
    """Read a Lightning ``.ckpt`` with ``weights_only=True`` (no code runs) for export to a model folder.

    Args:
        checkpoint: the ``.ckpt`` file.
        required_keys: entries the model's LightningModule and CLI callbacks store (e.g. ``"lsms_config"``).
        hint: what to do instead, appended to the error when a required entry is missing.

    Raises:
        InputError: not a Lightning checkpoint, or a required entry is missing.
    """
    from datasets.io import load_weights

    state = load_weights(checkpoint)
    if not isinstance(state, dict) or "state_dict" not in state:
        raise InputError(f"{checkpoint} is not a Lightning checkpoint (it has no 'state_dict')")
    missing = [key for key in required_keys if key not in state]
    if missing:
        other = [name for name in _MODEL_COMMANDS if f"{name}_config" in state]
        if other:
            raise InputError(f"{checkpoint} is a checkpoint of {other[0]}, not of this model: use `{other[0]} export`")
        raise InputError(f"{checkpoint} has no {' or '.join(repr(key) for key in missing)}: {hint}")
    return state


def load_module_weights(
    checkpoint: str | os.PathLike, state: Mapping[str, Any], net: nn.Module, unused: Sequence[str] = ()
) -> None:
    """Load the ``net.``-prefixed weights of a LightningModule checkpoint's ``state_dict`` into ``net``.

    Args:
        checkpoint: the ``.ckpt`` file (for messages).
        state: its content.
        net: the network its config describes.
        unused: name prefixes of weights the network never uses in its forward pass (e.g. a text model's pooler);
            a checkpoint may lack them, and ``net`` keeps its own.

    Raises:
        InputError: the checkpoint's weights do not match ``net`` (missing or unexpected names).
    """
    weights = {name[len("net."):]: tensor for name, tensor in state["state_dict"].items() if name.startswith("net.")}
    result = net.load_state_dict(weights, strict=False)
    missing = [name for name in result.missing_keys if not name.startswith(tuple(unused))]
    if len(missing) < len(result.missing_keys):
        logger.info("%s lacks %d unused weights (%s...); kept as built", checkpoint,
                    len(result.missing_keys) - len(missing), ", ".join(unused))
    if missing or result.unexpected_keys:
        raise InputError(
            f"{checkpoint}: weights do not match the network its config describes (missing "
            f"{missing[:5]}, unexpected {result.unexpected_keys[:5]})"
        )


def checkpoint_provenance(checkpoint: str | os.PathLike, state: Mapping[str, Any], table_key: str) -> dict[str, Any]:
    """``seed``, ``training_manifest`` and ``extra`` keyword arguments of a ``save_pretrained`` for an export.

    Args:
        checkpoint: the ``.ckpt`` file (recorded as ``exported_from``).
        state: its content.
        table_key: the DataModule hyper-parameter naming the training table (``"manifest"``, ``"reports"``); its
            SHA-256 is recorded when the file is still there.
    """
    from datasets.io import sha256_file

    data_hparams = state.get("datamodule_hyper_parameters") or {}
    table = data_hparams.get(table_key)
    manifest = {"path": str(table), "sha256": sha256_file(table)} if table and Path(table).is_file() else None
    if table and manifest is None:
        logger.warning(
            "the training table %s named in %s is not found from %s, so the model folder records no hash of it; "
            "a relative path is resolved from the folder training ran in: export from there, or with the file back "
            "in place", table, checkpoint, Path.cwd(),
        )
    logger.info("exporting %s (epoch %s, step %s)", checkpoint, state.get("epoch"), state.get("global_step"))
    return {
        "seed": (state.get("hyper_parameters") or {}).get("seed", data_hparams.get("seed")),
        "training_manifest": manifest,
        "extra": {"exported_from": str(checkpoint), "global_step": state.get("global_step")},
    }
