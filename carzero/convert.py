"""``carzero convert-official CKPT OUT``: the released CARZero checkpoint to a medvl model folder.

The released file (``CARZero_best_model.ckpt``, laihaoran/CARZero) is a PyTorch Lightning 1.1 checkpoint whose
``state_dict`` holds the ``CARZeroDQNWOSAGLMLP`` weights under the prefix ``CARZero.``. It is read without running
any code from it: first with ``torch.load(weights_only=True)``; if the file also pickles other objects (e.g. an
OmegaConf config in ``hyper_parameters``), with :class:`RestrictedUnpickler`, which rebuilds tensors, storages and plain
containers only, keeps instances of other classes as inert placeholders whose code never runs, and refuses any pickled
function call (the way pickles execute code).

Parameter names (released -> medvl), derived from the official model files:

========================================================  =====================================================
``img_encoder.model.{patch_embed,cls_token,pos_embed,``     ``vision.*`` (same timm-style names)
``blocks.N.*,norm}``
``text_encoder.model.*`` (Hugging Face BERT)               ``text.model.*`` (``pooler.*`` kept, frozen: unused)
``fusion_module.decoder_norm`` (= ``decoder.norm``)         ``fusion.norm``
``fusion_module.decoder.layers.N.multihead_attn``           ``fusion.layers.N.cross_attn``
``fusion_module.decoder.layers.N.norm2`` / ``norm3``        ``fusion.layers.N.norm1`` / ``norm2`` (pre-norms)
``fusion_module.decoder.layers.N.linear1`` / ``linear2``    ``fusion.layers.N.linear1`` / ``linear2``
``fusion_module.mlp_head.K``                                ``fusion.head.K`` (same Sequential indices)
``...layers.N.self_attn``, ``...layers.N.norm1``,           dropped: instantiated but never used in ``forward``
``fusion_module.logit_scale``
========================================================  =====================================================

Every other key is reported as unknown, and every model parameter without a source as missing; either fails the
conversion with the list, unless ``--ignore-unknown``.
"""

from __future__ import annotations

import argparse
import collections
import io
import logging
import math
import pickle
import re
import types
from pathlib import Path
from typing import Any

import torch

from datasets.errors import InputError
from datasets.io import load_weights, sha256_file

__all__ = ["RestrictedUnpickler", "convert_official", "main", "map_released_state_dict", "read_released_checkpoint"]

logger = logging.getLogger(__name__)

_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
}
_RELEASED_PREFIX = "CARZero."
_VISION_NAMES = re.compile(
    r"(patch_embed\.proj|cls_token|pos_embed|blocks\.\d+\.(norm[12]|attn\.(qkv|proj)|mlp\.fc[12])|norm)(\.weight|\.bias)?"
)
_LAYER_RENAMES = {"multihead_attn": "cross_attn", "norm2": "norm1", "norm3": "norm2", "linear1": "linear1",
                  "linear2": "linear2"}
_UNUSED_LAYER_PARTS = ("self_attn", "norm1")


class _PlaceholderMeta(type):
    """Metaclass of the placeholders: calling one (a pickled function call) is refused."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise InputError(
            f"the checkpoint carries pickled code: it calls {cls.qualified_name}, which medvl refuses to run; only "
            "tensors and plain containers are read"
        )


class _Placeholder(metaclass=_PlaceholderMeta):
    """An inert stand-in for an instance of a class that is not rebuilt (its ``__setstate__`` never runs)."""

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _Placeholder:
        return object.__new__(cls)

    def __setstate__(self, state: Any) -> None:
        """Drop the pickled state: the real class's code is never called."""

    def __repr__(self) -> str:
        return f"<not loaded: {self.qualified_name}>"


class RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds tensors, storages, OrderedDicts and builtin containers; other classes become inert placeholders and
    any other pickled call raises :class:`InputError`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        qualified = f"{module}.{name}"
        return _PlaceholderMeta(f"Placeholder[{qualified}]", (_Placeholder,), {"qualified_name": qualified})


def _restricted_pickle_module() -> types.ModuleType:
    module = types.ModuleType("medvl_restricted_pickle")
    module.Unpickler = RestrictedUnpickler
    module.load = lambda file, **kwargs: RestrictedUnpickler(file, **kwargs).load()
    module.loads = lambda data, **kwargs: RestrictedUnpickler(io.BytesIO(data), **kwargs).load()
    module.__version__ = "1"
    return module


def read_released_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a released checkpoint's ``state_dict`` (or of a bare state dict), read without running code.

    Raises:
        FileNotFoundError: no file at ``path``.
        InputError: the file carries pickled code, is not a PyTorch file, or holds no tensors.
    """
    try:
        content = load_weights(path)
    except InputError as err:
        logger.info("weights_only loading refused %s (%s); reading it with the restricted unpickler", path, err)
        try:
            content = torch.load(
                path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle_module()
            )
        except InputError:
            raise
        except Exception as inner:
            raise InputError(f"{path} is not a readable PyTorch checkpoint: {' '.join(str(inner).split())[:300]}"
                             ) from inner
    state = content.get("state_dict", content) if isinstance(content, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{path} holds no state dict (top level: {type(content).__name__})")
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise InputError(f"{path}: its state dict holds no tensors")
    return tensors


def _target_name(key: str) -> str | None:
    """Our parameter name for a released one; None for a known-unused released parameter; raises KeyError if unknown."""
    if key.startswith("img_encoder.model.") and _VISION_NAMES.fullmatch(key[len("img_encoder.model."):]):
        return "vision." + key[len("img_encoder.model."):]
    if key.startswith("text_encoder.model."):
        rest = key[len("text_encoder.model."):]
        return None if rest == "embeddings.position_ids" else "text.model." + rest
    if key in ("fusion_module.decoder_norm.weight", "fusion_module.decoder_norm.bias"):
        return "fusion.norm." + key.rsplit(".", 1)[1]
    if key.startswith("fusion_module.decoder.norm.") or key == "fusion_module.logit_scale":
        return None  # the same LayerNorm as decoder_norm (checked equal) / an unused scale
    match = re.fullmatch(r"fusion_module\.decoder\.layers\.(\d+)\.([a-z_0-9]+)\.(.+)", key)
    if match:
        index, part, rest = match.groups()
        if part in _UNUSED_LAYER_PARTS:
            return None
        if part in _LAYER_RENAMES:
            return f"fusion.layers.{index}.{_LAYER_RENAMES[part]}.{rest}"
    match = re.fullmatch(r"fusion_module\.mlp_head\.(\d+)\.(weight|bias)", key)
    if match:
        return f"fusion.head.{match.group(1)}.{match.group(2)}"
    raise KeyError(key)


def map_released_state_dict(released: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, list]]:
    """Rename released parameters to medvl's.

    Returns:
        The renamed state dict and a report ``{"dropped": [...], "unknown": [...]}`` of released keys.
    """
    mapped: dict[str, torch.Tensor] = {}
    report: dict[str, list] = {"dropped": [], "unknown": []}
    for key, tensor in released.items():
        name = key[len(_RELEASED_PREFIX):] if key.startswith(_RELEASED_PREFIX) else key
        try:
            target = _target_name(name)
        except KeyError:
            report["unknown"].append(key)
            continue
        if target is None:
            report["dropped"].append(key)
        else:
            mapped[target] = tensor
    for suffix in ("weight", "bias"):
        shared = released.get(f"{_RELEASED_PREFIX}fusion_module.decoder.norm.{suffix}",
                              released.get(f"fusion_module.decoder.norm.{suffix}"))
        if shared is not None and f"fusion.norm.{suffix}" in mapped and not torch.equal(
            shared, mapped[f"fusion.norm.{suffix}"]
        ):
            raise InputError(f"fusion_module.decoder.norm.{suffix} differs from decoder_norm.{suffix}: not the "
                             "released architecture (one LayerNorm shared at the input and output of the fusion)")
    return mapped, report


def infer_config(mapped: dict[str, torch.Tensor], text_encoder: str, vision_heads: int, fusion_heads: int
                 ) -> dict[str, Any]:
    """Constructor arguments of :class:`carzero.model.CARZero` from the renamed tensors' shapes.

    Raises:
        InputError: a vision or fusion tensor needed for the shapes is missing.
    """
    needed = ["vision.patch_embed.proj.weight", "vision.pos_embed", "fusion.norm.weight",
              "fusion.layers.0.linear1.weight"]
    absent = [name for name in needed if name not in mapped]
    if absent:
        raise InputError(f"the checkpoint lacks {absent}; is it a CARZero (CARZeroDQNWOSAGLMLP) checkpoint?")
    patch = mapped["vision.patch_embed.proj.weight"]  # (D, C, p, p)
    grid = math.isqrt(mapped["vision.pos_embed"].shape[1] - 1)
    layers = {int(m.group(1)) for k in mapped if (m := re.match(r"vision\.blocks\.(\d+)\.", k))}
    fusion_layers = {int(m.group(1)) for k in mapped if (m := re.match(r"fusion\.layers\.(\d+)\.", k))}
    head = sorted((int(m.group(1)), mapped[k].shape[0]) for k in mapped
                  if (m := re.fullmatch(r"fusion\.head\.(\d+)\.weight", k)))
    return {
        "text_encoder": text_encoder,
        "image_size": grid * patch.shape[-1],
        "patch_size": patch.shape[-1],
        "in_channels": patch.shape[1],
        "vision_width": patch.shape[0],
        "vision_layers": len(layers),
        "vision_heads": vision_heads,
        "embed_dim": mapped["fusion.norm.weight"].shape[0],
        "fusion_layers": len(fusion_layers),
        "fusion_heads": fusion_heads,
        "fusion_ffn_dim": mapped["fusion.layers.0.linear1.weight"].shape[0],
        "head_hidden_dims": [width for _, width in head[:-1]],
        "text_max_length": 97,
        "text_last_n_layers": 4,
        "text_layer_aggregation": "sum",
        "merge_word_pieces": True,
        "sentence_pooling": "mean",
        "clean_text": True,
    }


def convert_official(
    checkpoint: str | Path, out: str | Path, text_encoder: str = "Laihaoran/BioClinicalMPBERT", vision_heads: int = 12,
    fusion_heads: int = 4, ignore_unknown: bool = False, overwrite: bool = False,
) -> Path:
    """Convert a released CARZero checkpoint into a model folder (see the module docstring).

    Args:
        checkpoint: the released ``.ckpt`` (or a bare state dict with the same names).
        out: model folder to write.
        text_encoder: Hugging Face id or folder giving the text model's architecture and tokenizer (its weights are
            replaced by the checkpoint's). Defaults to "Laihaoran/BioClinicalMPBERT".
        vision_heads: ViT heads (not recoverable from shapes). Defaults to 12 (ViT-B/16).
        fusion_heads: cross-attention heads (hard-coded 4 in the released code). Defaults to 4.
        ignore_unknown: convert even if the checkpoint has keys the mapping does not know. Defaults to False.
        overwrite: replace an existing folder. Defaults to False.

    Raises:
        InputError: pickled code, unknown keys (listed), missing or mis-shaped parameters (listed).
    """
    from carzero.model import CARZero
    from carzero.pretrained import save_pretrained
    from datasets.cxr_transforms import CXRPreprocessing

    if Path(out).exists() and not overwrite:
        raise InputError(f"output folder {out} already exists; choose another path or pass --overwrite")
    released = read_released_checkpoint(checkpoint)
    mapped, report = map_released_state_dict(released)
    if report["unknown"] and not ignore_unknown:
        raise InputError(f"{checkpoint}: {len(report['unknown'])} keys the CARZero mapping does not know: "
                         f"{report['unknown'][:10]}{' ...' if len(report['unknown']) > 10 else ''}")
    config = infer_config(mapped, text_encoder, vision_heads, fusion_heads)
    net = CARZero(**config)
    expected = net.state_dict()
    missing = [name for name in expected if name not in mapped]
    shapes = [f"{name} {tuple(mapped[name].shape)} != {tuple(expected[name].shape)}" for name in expected
              if name in mapped and mapped[name].shape != expected[name].shape]
    extra = [name for name in mapped if name not in expected]
    if missing or shapes or extra:
        raise InputError(f"{checkpoint} does not fit the CARZero architecture inferred from it: missing "
                         f"{missing[:10]}, wrong shapes {shapes[:5]}, unexpected {extra[:10]}")
    net.load_state_dict(mapped, strict=True)
    logger.info("converted %d tensors; dropped %d unused, %d unknown", len(mapped), len(report["dropped"]),
                len(report["unknown"]))
    return save_pretrained(
        net, out, CXRPreprocessing.released_carzero(config["image_size"], config["in_channels"]), overwrite=overwrite,
        extra={"converted_from": {"path": str(checkpoint), "sha256": sha256_file(checkpoint)},
               "conversion": {"tensors": len(mapped), "dropped_unused": report["dropped"],
                              "ignored_unknown": report["unknown"]}},
    )


def main(argv: list[str]) -> int:
    """Run ``carzero convert-official``; see the module docstring."""
    parser = argparse.ArgumentParser(prog="carzero convert-official", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="released CARZero checkpoint (CARZero_best_model.ckpt)")
    parser.add_argument("out", help="model folder to write")
    parser.add_argument("--text-encoder", default="Laihaoran/BioClinicalMPBERT",
                        help="HF id or folder of the text model's architecture and tokenizer")
    parser.add_argument("--vision-heads", type=int, default=12, help="ViT heads (default 12)")
    parser.add_argument("--fusion-heads", type=int, default=4, help="cross-attention heads (default 4)")
    parser.add_argument("--ignore-unknown", action="store_true", help="convert despite unknown keys (listed)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    options = parser.parse_args(argv)
    folder = convert_official(options.checkpoint, options.out, options.text_encoder, options.vision_heads,
                              options.fusion_heads, options.ignore_unknown, options.overwrite)
    print(f"wrote {folder}")
    return 0
