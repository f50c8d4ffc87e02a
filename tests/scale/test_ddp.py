"""DDP on CPU with real gloo: one optimiser step on 2 processes equals one step on 1 process on the concatenated batch.

LSMS goes through the real ``lsms fit`` command (``--trainer.strategy=ddp --trainer.devices=2``); Lightning's DDP
launcher re-runs that command for rank 1. CARZero and BrgSA run this file as a script under ``strategy="ddp"`` (the
launcher re-runs the script), each rank saving its loss, gradients and parameters.

Batch statistics and dropout: LSMS uses BatchNorm, whose training-mode statistics are per process (``SyncBatchNorm``
needs a GPU in PyTorch), and the BERT text encoders drop attention weights by the module's ``training`` flag (not via an
``nn.Dropout``). :class:`EvalForward` therefore puts the whole module in eval mode before every training batch:
gradients still flow, the forward pass is a deterministic per-sample function, and the comparison is exact up to float
summation order. Tolerances: parameters
``atol=1e-6`` (LSMS: AdamW lr 0.01; CARZero/BrgSA: SGD lr 0.01); gradients to ``1e-5`` of each tensor's largest
entry plus ``1e-6`` (float32 summation order alone moves BrgSA's gradients, which
reach ~10, by ~1e-5); losses ``rtol=1e-5``; validation metrics
(torchmetrics sums) ``atol=1e-6``.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml

HERE = Path(__file__).resolve().parent
LSMS_SCRIPT = Path(sys.executable).with_name("lsms")
TINY_LSMS = dict(
    encoder_widths=[4, 8, 8, 8], encoder_depths=[1, 1, 1, 1], svla_kernel_sizes=[3], svla_dilations=[1],
    decoder_width=4,
)
GLOBAL_BATCH = 4


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """``max |actual - expected| <= 1e-5 * max |expected| + 1e-6`` (as in ``test_gather_offsets.py``)."""
    error, scale = float((actual - expected).abs().max()), float(expected.abs().max())
    assert error <= 1e-5 * scale + 1e-6, f"{name}: max difference {error:.3g} at gradient scale {scale:.3g}"


class EvalForward(pl.Callback):
    """Train with the module in eval mode: no batch statistics, no dropout, gradients as usual."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        pl_module.eval()


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


# ------------------------------------------------------------------------------------------------------------ LSMS
@pytest.fixture(scope="module")
def benchmark(tmp_path_factory) -> Path:
    from datasets.synthetic.refhl import generate_refhl
    from datasets.synthetic.spec import REFHL_V1

    out = tmp_path_factory.mktemp("refhl") / "data"
    generate_refhl(out, dataclasses.replace(REFHL_V1, train_cases=2, val_cases=1, test_cases=1), seed=5)
    return out


def _lsms_config(run: Path, text_encoder: Path, manifest: Path, devices: int) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": devices, "strategy": "ddp" if devices > 1 else "auto", "max_steps": 1,
            "val_check_interval": 1, "num_sanity_val_steps": 0, "enable_progress_bar": False,
            "enable_model_summary": False, "default_root_dir": str(run),
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(run), "name": "log", "version": 0}},
            "callbacks": [
                {"class_path": "test_ddp.EvalForward"},
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"dirpath": str(run / "checkpoints"), "every_n_train_steps": 1, "save_last": True}},
            ],
        },
        "model": {"net": {"class_path": "lsms.model.LSMS", "init_args": {"text_encoder": str(text_encoder),
                                                                        **TINY_LSMS}}, "lr": 0.01},
        "data": {"manifest": str(manifest), "cache_dir": str(manifest.parent / "cache"), "image_size": 32,
                 "batch_size": GLOBAL_BATCH // devices, "seed": 2},
    }
    path = run.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    return path


def _val_metrics(run: Path) -> dict[str, float]:
    with open(run / "log" / "version_0" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    values = {}
    for row in rows:
        values.update({key: float(value) for key, value in row.items() if key.startswith("val/") and value})
    return values


def test_lsms_one_ddp_step_on_two_processes_equals_one_process_on_the_concatenated_batch(
    benchmark, tiny_bert_dir, tmp_path
):
    manifest = benchmark / "manifest.csv"
    splits = [line.split(",")[3] for line in manifest.read_text().splitlines()[1:]]
    assert splits.count("val") % 2 == 0, "an odd validation set would be padded by the distributed sampler"
    runs = {}
    for devices in (1, 2):
        run = tmp_path / f"devices{devices}"
        output = _run([str(LSMS_SCRIPT), "fit", "--config", str(_lsms_config(run, tiny_bert_dir, manifest, devices))])
        if devices == 2:
            assert "distributed_backend=gloo" in output and "Starting with 2 processes" in output, output
        runs[devices] = run

    single = torch.load(runs[1] / "checkpoints" / "last.ckpt", weights_only=True)
    double = torch.load(runs[2] / "checkpoints" / "last.ckpt", weights_only=True)
    assert single["global_step"] == double["global_step"] == 1
    assert double["lsms_config"] == single["lsms_config"]
    initial = _initial_lsms_state(tiny_bert_dir)
    moved = 0
    for name, value in single["state_dict"].items():
        torch.testing.assert_close(double["state_dict"][name], value, rtol=0, atol=1e-6, msg=name)
        moved += int(not torch.equal(value, initial[name]))
    assert moved > 10, "the step changed almost nothing; the comparison would be vacuous"

    metrics = {devices: _val_metrics(run) for devices, run in runs.items()}
    for name in ("val/dice", "val/miou", "val/oiou", "val/p@0.5"):
        assert metrics[2][name] == pytest.approx(metrics[1][name], abs=1e-6), name
    assert metrics[2]["val/loss"] == pytest.approx(metrics[1]["val/loss"], rel=1e-5)


def _initial_lsms_state(text_encoder: Path) -> dict[str, torch.Tensor]:
    from lsms.model import LSMS

    pl.seed_everything(0)
    net = LSMS(text_encoder=str(text_encoder), **TINY_LSMS)
    return {f"net.{name}": value for name, value in net.state_dict().items()}


# -------------------------------------------------------------------------------------------- CARZero and BrgSA
class _Items(torch.utils.data.Dataset):
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


class _PairsData(pl.LightningDataModule):
    """The same 4 pairs on every process; the resumable sampler gives rank ``r`` indices ``r, r + W, ...``."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        super().__init__()
        self.items = items

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        from datasets.sampling import ResumableDataLoader, ResumableSampler

        dataset = _Items(self.items)
        sampler = ResumableSampler(dataset, self.trainer.world_size, self.trainer.global_rank, shuffle=False)
        batch = GLOBAL_BATCH // self.trainer.world_size
        return ResumableDataLoader(dataset, sampler, batch_size=batch,
                                   collate_fn=lambda s: {"image": torch.stack([x["image"] for x in s]),
                                                         "text": [x["text"] for x in s]})


class _Record(pl.Callback):
    """Each rank saves its training loss, its (all-reduced) gradients and its parameters after the step."""

    def __init__(self, out: Path) -> None:
        self.out, self.record = out, {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.record["loss"] = outputs["loss"].detach().clone()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # noqa: ANN001
        self.record["grads"] = {n: p.grad.detach().clone() for n, p in pl_module.named_parameters()
                                if p.grad is not None}

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.record["params"] = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        torch.save(self.record, self.out / f"rank{trainer.global_rank}_of{trainer.world_size}.pt")


def _contrastive_module(model: str, text_encoder: str) -> tuple[pl.LightningModule, list[dict[str, Any]]]:
    texts = ["there is cardiomegaly", "left pleural effusion", "a small pneumothorax", "no acute findings"]
    generator = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    if model == "carzero":
        from carzero.model import CARZero
        from carzero.module import CARZeroModule

        net = CARZero(text_encoder=text_encoder, image_size=32, patch_size=16, vision_width=32, vision_layers=1,
                      vision_heads=2, embed_dim=16, fusion_layers=2, fusion_heads=2, fusion_ffn_dim=32,
                      head_hidden_dims=[8], text_last_n_layers=2, fusion_dropout=0.0)
        optimizer = lambda params: torch.optim.SGD(params, lr=0.01)  # noqa: E731 (an OptimizerCallable)
        module = CARZeroModule(net, optimizer=optimizer)
        shape = (3, 32, 32)
    else:
        from brgsa.model import BrgSA
        from brgsa.module import BrgSAModule

        net = BrgSA(text_encoder=text_encoder, image_size=[32, 32, 16], vision_width=24, vision_depth=1,
                    vision_heads=2, embed_dim=16, knowledge_bank_size=8, text_last_n_layers=2)
        module = BrgSAModule(net, optimizer=lambda params: torch.optim.SGD(params, lr=0.01))
        shape = (1, 32, 32, 16)
    items = [{"image": torch.randn(shape, generator=generator), "text": text} for text in texts]
    return module, items


def _contrastive_main(model: str, text_encoder: str, devices: int, out: Path) -> None:
    """Script mode: one SGD step of ``model`` on ``devices`` processes (rank 1 is this script re-run by Lightning)."""
    module, items = _contrastive_module(model, text_encoder)
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", max_steps=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0,
                         callbacks=[EvalForward(), _Record(out)])
    trainer.fit(module, _PairsData(items))


@pytest.mark.parametrize("model", ["carzero", "brgsa"])
def test_contrastive_loss_and_step_over_two_processes_equal_the_global_batch(model, tiny_bert_dir, tmp_path):
    """The contrastive softmax spans the global batch: the mean of the two ranks' losses is the 1-process loss on all
    4 pairs, and after DDP's gradient averaging gradients and SGD-updated parameters match too."""
    for devices in (1, 2):
        _run([sys.executable, str(Path(__file__)), model, str(tiny_bert_dir), str(devices), str(tmp_path)])
    single = torch.load(tmp_path / "rank0_of1.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"rank{r}_of2.pt", weights_only=True) for r in range(2)]
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, single["loss"], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ranks[0]["loss"], ranks[1]["loss"]), "ranks saw the same pairs"
    assert single["grads"].keys() == ranks[0]["grads"].keys() and len(single["grads"]) > 10
    for name, grad in single["grads"].items():
        for rank in ranks:
            assert_close_to_scale(rank["grads"][name], grad, name)
    moved = 0
    for name, value in single["params"].items():
        torch.testing.assert_close(ranks[1]["params"][name], value, rtol=0, atol=1e-6, msg=name)
        moved += int(bool((single["grads"].get(name, torch.zeros(())) != 0).any()))
    assert moved > 10


if __name__ == "__main__":
    _contrastive_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
