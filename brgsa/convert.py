"""``brgsa convert-official``: the released BrgSA checkpoint (laihaoran/BrgSA, class ``CLIPProjDict``) to a model
folder.

The checkpoint is read only through :func:`datasets.io.load_weights` (``torch.load(weights_only=True)``): tensors and
plain containers load, anything carrying pickled code (classes, functions, ``__reduce__`` calls) is refused with
exit status 2. If the released ``.ckpt`` is refused because its Lightning hyper-parameters pickle config objects,
extract the weights once, in an environment you trust, with
``torch.save(torch.load(ckpt, weights_only=False)["state_dict"], "brgsa_state_dict.pt")`` and convert that file.

Names are mapped by :func:`brgsa.model.convert_released_state_dict` (``img_encoder.model.*`` -> ``vision_encoder.*``,
``img_encoder.global_embedder`` -> ``vision_projection``, ``text_encoder.emb_global`` -> ``text_projection``,
``dictionarylearning.dictionary.weight`` -> ``knowledge_bank.entries``; the unused local projections are dropped).
The architecture is read from the tensors' shapes: ViT width, depth, MLP ratio, patch size and input channels,
the joint width and the bank size; the base position-embedding grid is taken as cubic (the released 14x14x14 at
224x224x112 with 16x16x8 patches) unless ``--image-size`` says otherwise. The ViT head count is not recoverable from
shapes (``--vision-heads``, default 12). The text encoder's architecture and tokenizer come from ``--text-encoder``
(the released ``M3AE_CXRBERT`` folder); its weights are replaced by the checkpoint's.

The folder's preprocessing is the released one (:class:`~datasets.ct_pipeline.CTVolumePreprocessing` defaults:
1.5x1.5x3 mm, 256x256x128 volumes, HU [-1000, 1000] to [-1, 1], then (x - 0.4978) / 0.2449).
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from datasets.errors import InputError
from datasets.io import load_weights, sha256_file

__all__ = ["DEFAULT_TEXT_ENCODER", "infer_config", "read_released_state_dict", "convert_official", "main"]

logger = logging.getLogger(__name__)

DEFAULT_TEXT_ENCODER = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext"


def read_released_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a released checkpoint's ``state_dict`` (or of a bare state dict), read without running code.

    Raises:
        FileNotFoundError: no file at ``path``.
        InputError: the file carries pickled code, is not a PyTorch file, or holds no tensors.
    """
    content = load_weights(path)
    state = content.get("state_dict", content) if isinstance(content, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{path} holds no state dict (top level: {type(content).__name__})")
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise InputError(f"{path}: its state dict holds no tensors")
    return tensors


def _cube_root(n: int) -> int | None:
    root = round(n ** (1 / 3))
    return root if root**3 == n else None


def infer_config(
    converted: dict[str, torch.Tensor], text_encoder: str, vision_heads: int = 12,
    image_size: Sequence[int] | None = None, text_last_n_layers: int = 4,
) -> dict[str, Any]:
    """Constructor arguments of :class:`brgsa.model.BrgSA` from the converted tensors' shapes.

    Raises:
        InputError: a tensor needed for the shapes is missing, or the position-embedding grid is not cubic and no
            ``image_size`` is given.
    """
    needed = ["vision_encoder.patch_embed.proj.weight", "vision_encoder.pos_embed",
              "vision_encoder.blocks.0.mlp.fc1.weight", "vision_projection.weight"]
    absent = [name for name in needed if name not in converted]
    if absent:
        released = [name.replace("vision_encoder.", "img_encoder.model.").replace("vision_projection.",
                                                                                   "img_encoder.global_embedder.")
                    for name in absent]
        raise InputError(f"the checkpoint lacks {released}; is it a BrgSA (CLIPProjDict) checkpoint?")
    patch = converted["vision_encoder.patch_embed.proj.weight"]  # (W, C, px, py, pz)
    width, channels, patch_size = patch.shape[0], patch.shape[1], list(patch.shape[2:])
    tokens = converted["vision_encoder.pos_embed"].shape[1] - 1
    if image_size is None:
        grid = _cube_root(tokens)
        if grid is None:
            raise InputError(f"the position embedding has {tokens} patch positions, not a cubic grid; pass "
                             "--image-size X Y Z (the training crop)")
        image_size = [grid * p for p in patch_size]
    elif math.prod(s // p for s, p in zip(image_size, patch_size)) != tokens:
        raise InputError(f"--image-size {list(image_size)} with patches {patch_size} gives "
                         f"{math.prod(s // p for s, p in zip(image_size, patch_size))} positions; the checkpoint has "
                         f"{tokens}")
    depth = len({int(m.group(1)) for key in converted if (m := re.match(r"vision_encoder\.blocks\.(\d+)\.", key))})
    bank = converted.get("knowledge_bank.entries")
    return {
        "text_encoder": text_encoder,
        "image_size": [int(v) for v in image_size],
        "patch_size": [int(v) for v in patch_size],
        "in_channels": int(channels),
        "vision_width": int(width),
        "vision_depth": depth,
        "vision_heads": vision_heads,
        "vision_mlp_ratio": converted["vision_encoder.blocks.0.mlp.fc1.weight"].shape[0] / width,
        "embed_dim": int(converted["vision_projection.weight"].shape[0]),
        "knowledge_bank_size": int(bank.shape[0]) if bank is not None else 2048,
        "use_knowledge_bank": bank is not None,
        "text_max_length": 97,
        "text_pooling": "gloria",
        "text_last_n_layers": text_last_n_layers,
    }


def convert_official(
    checkpoint: str | Path, out: str | Path, text_encoder: str = DEFAULT_TEXT_ENCODER, vision_heads: int = 12,
    image_size: Sequence[int] | None = None, text_last_n_layers: int = 4, overwrite: bool = False,
) -> Path:
    """Convert a released BrgSA checkpoint into a model folder (see the module docstring).

    Args:
        checkpoint: the released ``.ckpt`` (or a bare state dict with the same names).
        out: model folder to write.
        text_encoder: Hugging Face id or folder giving the text model's architecture and tokenizer (the released
            ``M3AE_CXRBERT`` folder). Defaults to PubMedBERT.
        vision_heads: ViT heads (not recoverable from shapes). Defaults to 12 (ViT-B).
        image_size: training crop ``(X, Y, Z)`` of the base position grid. Defaults to None (cubic grid).
        text_last_n_layers: hidden layers summed by the GLoRIA pooling. Defaults to 4 (released).
        overwrite: replace an existing folder. Defaults to False.

    Raises:
        InputError: pickled code, unknown keys, missing or mis-shaped parameters (listed).
    """
    from brgsa.model import BrgSA, convert_released_state_dict
    from brgsa.pretrained import save_pretrained
    from datasets.ct_pipeline import CTVolumePreprocessing

    if Path(out).exists() and not overwrite:
        raise InputError(f"output folder {out} already exists; choose another path or pass --overwrite")
    released = read_released_state_dict(checkpoint)
    try:
        converted = convert_released_state_dict(released)
    except ValueError as err:
        raise InputError(f"{checkpoint}: {err}") from err
    config = infer_config(converted, text_encoder, vision_heads, image_size, text_last_n_layers)
    try:
        net = BrgSA(**config)
    except ValueError as err:
        raise InputError(f"{checkpoint}: the architecture read from its shapes is invalid: {err}") from err
    expected = net.state_dict()
    missing = [name for name in expected if name not in converted]
    shapes = [f"{name} {tuple(converted[name].shape)} != {tuple(expected[name].shape)}" for name in expected
              if name in converted and converted[name].shape != expected[name].shape]
    extra = [name for name in converted if name not in expected]
    if missing or shapes or extra:
        raise InputError(f"{checkpoint} does not fit the BrgSA architecture read from it (text encoder "
                         f"{text_encoder!r}): missing {missing[:8]}, wrong shapes {shapes[:5]}, unexpected {extra[:8]}")
    net.load_state_dict(converted, strict=True)
    defaults = CTVolumePreprocessing()
    crop = tuple(config["image_size"])
    size = tuple(max(s, c) for s, c in zip(defaults.size, crop))
    preprocessing = CTVolumePreprocessing(size=size, crop_size=crop)
    logger.info("converted %d of %d released tensors", len(converted), len(released))
    return save_pretrained(
        net, out, preprocessing, overwrite=overwrite,
        extra={"converted_from": {"path": str(checkpoint), "sha256": sha256_file(checkpoint)},
               "conversion": {"released_tensors": len(released), "converted_tensors": len(converted)}},
    )


def main(argv: list[str]) -> int:
    """Run ``brgsa convert-official``; see the module docstring."""
    from datasets.cli_utils import setup_logging

    parser = argparse.ArgumentParser(prog="brgsa convert-official", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="released BrgSA checkpoint (.ckpt) or its bare state dict (.pt)")
    parser.add_argument("out", help="model folder to write")
    parser.add_argument("--text-encoder", default=DEFAULT_TEXT_ENCODER,
                        help="HF id or folder of the text model's architecture and tokenizer (released M3AE_CXRBERT)")
    parser.add_argument("--vision-heads", type=int, default=12, help="ViT heads (default 12)")
    parser.add_argument("--image-size", type=int, nargs=3, metavar=("X", "Y", "Z"),
                        help="training crop of a non-cubic position grid (default: cubic grid, 224 224 112 released)")
    parser.add_argument("--text-last-n-layers", type=int, default=4, help="layers of the GLoRIA pooling (default 4)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    options = parser.parse_args(argv)
    setup_logging()
    folder = convert_official(options.checkpoint, options.out, options.text_encoder, options.vision_heads,
                              options.image_size, options.text_last_n_layers, options.overwrite)
    print(f"wrote {folder}")
    return 0
