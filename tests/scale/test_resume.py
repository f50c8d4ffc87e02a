"""Exact resume after SIGKILL: a real ``lsms fit`` process is killed mid-epoch, resumed with ``--ckpt_path last``, and
ends with the same weights as an uninterrupted run of the same seed; plus the sampler's resume rules in-process."""

from __future__ import annotations

import dataclasses
import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from datasets.errors import InputError
from datasets.refseg_datamodule import collate_refseg
from datasets.sampling import ResumableDataLoader, ResumableSampler
from datasets.synthetic.refhl import generate_refhl
from datasets.synthetic.spec import REFHL_V1
from lsms.cli import main

LSMS_SCRIPT = Path(sys.executable).with_name("lsms")
TINY_NET = dict(
    encoder_widths=[4, 8, 8, 8], encoder_depths=[1, 1, 1, 1], svla_kernel_sizes=[3], svla_dilations=[1],
    decoder_width=4,
)
EVERY_N_STEPS = 3
BATCHES_PER_EPOCH = 6  # limit_train_batches: a short epoch, so the run ends inside its second one
RESUME_WARNINGS = ("not resumable", "unreliable results", "Traceback")


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("refhl") / "data"
    generate_refhl(out, dataclasses.replace(REFHL_V1, train_cases=2, val_cases=1, test_cases=1), seed=5)
    return out


def _train_batches(manifest: Path, batch_size: int = 4) -> int:
    lines = manifest.read_text().splitlines()
    split = lines[0].split(",").index("split")
    return -(-sum(1 for line in lines[1:] if line.split(",")[split] == "train") // batch_size)


def _config(run: Path, text_encoder: Path, manifest: Path, max_steps: int, max_epochs: int = -1) -> Path:
    """Dropout in the trainable text encoder draws on the global generator; flips and jitter on per-sample seeds."""
    config = {
        "seed_everything": 11,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_steps": max_steps, "max_epochs": max_epochs, "logger": False,
            "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
            "limit_train_batches": BATCHES_PER_EPOCH, "limit_val_batches": 1, "default_root_dir": str(run),
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"dirpath": str(run / "checkpoints"), "every_n_train_steps": EVERY_N_STEPS,
                                         "save_last": True, "save_top_k": -1}}],
        },
        "model": {"net": {"class_path": "lsms.model.LSMS",
                          "init_args": {"text_encoder": str(text_encoder), "freeze_text": False,
                                        "cache_text_features": False, **TINY_NET}},
                  "lr": 0.01},
        "data": {"manifest": str(manifest), "cache_dir": str(manifest.parent / "cache"), "image_size": 32,
                 "batch_size": 4, "num_workers": 0, "seed": 4,
                 "flip_lr": True, "intensity_jitter": 0.1},
    }
    path = run.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    return path


def _lsms(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(LSMS_SCRIPT), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, **kwargs)


def _finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, output
    return output


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=True, map_location="cpu")["state_dict"]


@pytest.mark.parametrize("max_epochs", [-1, 5], ids=["max_steps_only", "with_max_epochs"])
def test_sigkill_mid_epoch_then_ckpt_path_last_matches_an_uninterrupted_run(benchmark, tiny_bert_dir, tmp_path,
                                                                            max_epochs):
    """With max_epochs set (every shipped config), the step count for the LR schedule needs the training loader:
    asked for too early, Lightning built it before the checkpoint's loader state was restored."""
    manifest = benchmark / "manifest.csv"
    assert _train_batches(manifest) > BATCHES_PER_EPOCH
    per_epoch = BATCHES_PER_EPOCH
    max_steps = per_epoch + EVERY_N_STEPS  # ends inside the second epoch, on a checkpoint step

    reference = tmp_path / "reference"
    _finish(_lsms("fit", "--config", str(_config(reference, tiny_bert_dir, manifest, max_steps, max_epochs))))
    reference_final = reference / "checkpoints" / "last.ckpt"
    assert torch.load(reference_final, weights_only=True)["global_step"] == max_steps

    # The run to kill: poll for its first checkpoint, then SIGKILL it while it trains on.
    killed = tmp_path / "killed"
    config = _config(killed, tiny_bert_dir, manifest, max_steps, max_epochs)
    process = _lsms("fit", "--config", str(config))
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 180
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed; make it longer"
    state = torch.load(last, weights_only=True)
    step = state["global_step"]
    assert 0 < step < per_epoch and step % per_epoch != 0, f"killed at step {step}, not mid-epoch"
    loader_state = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert loader_state["sampler"]["consumed"] == 4 * step and loader_state["sampler"]["epoch"] == 0

    output = _finish(_lsms("fit", "--config", str(config), "--ckpt_path", "last"))
    for warning in RESUME_WARNINGS:
        assert warning not in output, output
    resumed = _weights(last)
    assert torch.load(last, weights_only=True)["global_step"] == max_steps
    expected = _weights(reference_final)
    assert resumed.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6, msg=name)


def test_ckpt_path_last_without_a_checkpoint_is_an_error(benchmark, tiny_bert_dir, tmp_path, capsys):
    """Lightning only warns and trains from scratch; a user who asked to resume gets exit 2 and nothing trained."""
    run = tmp_path / "nothing_saved"
    config = _config(run, tiny_bert_dir, benchmark / "manifest.csv", EVERY_N_STEPS)
    assert main(["fit", "--config", str(config), "--ckpt_path", "last"]) == 2
    err = capsys.readouterr().err
    assert "--ckpt_path last: no last.ckpt where this run's ModelCheckpoint saves" in err and "dirpath" in err
    assert not (run / "checkpoints").exists()


def test_a_plain_loader_is_what_lightning_warns_about(benchmark, tiny_bert_dir, tmp_path):
    """Control: resuming a mid-epoch checkpoint with a plain DataLoader (no ``state_dict``) makes Lightning emit the
    warning the test above forbids, so that check looks for the string Lightning really emits."""
    manifest = benchmark / "manifest.csv"
    run = tmp_path / "plain"
    config = _config(run, tiny_bert_dir, manifest, EVERY_N_STEPS + 1)
    from lsms.cli import build_lightning_cli

    assert main(["fit", "--config", str(config), f"--trainer.max_steps={EVERY_N_STEPS}"]) == 0
    checkpoint = run / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    del state["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    torch.save(state, checkpoint)
    cli = build_lightning_cli(["--config", str(config)], run=False)
    cli.datamodule.train_dataloader = lambda: torch.utils.data.DataLoader(  # a loader without state_dict
        cli.datamodule.datasets["train"], batch_size=4, collate_fn=collate_refseg
    )
    with pytest.warns(UserWarning, match="not resumable"):
        cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=str(checkpoint))


def test_sampler_resumes_after_the_consumed_samples_and_splits_the_permutation_by_rank():
    data = list(range(10))
    whole = ResumableSampler(data, seed=3)
    whole.set_epoch(2)
    order = list(whole)
    assert sorted(order) == data and order != data
    ranks = [ResumableSampler(data, num_replicas=2, rank=r, seed=3) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(2)
    assert list(ranks[0]) == order[0::2] and list(ranks[1]) == order[1::2]

    first = ResumableSampler(data, seed=3)
    first.set_epoch(2)
    iterator = iter(first)
    taken = [next(iterator) for _ in range(6)]  # six yielded (prefetching), four trained on
    first.advance(4)
    second = ResumableSampler(data, seed=3)
    second.load_state_dict(first.state_dict())
    assert taken[:4] + list(second) == order
    assert list(second) == order  # only the first pass after a resume skips
    second.set_epoch(3)
    assert second.consumed == 0 and len(list(second)) == 10


def test_loader_state_restores_the_global_generators():
    loader = ResumableDataLoader(list(range(4)), ResumableSampler(list(range(4))), batch_size=2)
    state = loader.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # tensors and built-ins only
    expected = (torch.rand(3), np.random.rand(3), random.random())
    loader.load_state_dict(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [({"seed": 4}, "seed=3 (now 4)"), ({"num_replicas": 2, "rank": 0}, "num_replicas=1 (now 2)")],
)
def test_resuming_with_other_settings_is_refused_loudly(change, fragment):
    saved = ResumableSampler(list(range(8)), seed=3).state_dict()
    settings = {"seed": 3, **change}
    with pytest.raises(InputError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        ResumableSampler(list(range(8)), **settings).load_state_dict(saved)


def test_a_fresh_fit_into_a_used_checkpoint_folder_is_refused(benchmark, tiny_bert_dir, tmp_path, capsys):
    """Lightning only warns that the folder is not empty, then overwrites last.ckpt and mixes the two runs' top-k."""
    run = tmp_path / "used"
    config = _config(run, tiny_bert_dir, benchmark / "manifest.csv", EVERY_N_STEPS)
    assert main(["fit", "--config", str(config)]) == 0
    saved = {path.name: path.read_bytes() for path in (run / "checkpoints").iterdir()}
    assert "last.ckpt" in saved
    assert main(["fit", "--config", str(config), f"--trainer.max_steps={2 * EVERY_N_STEPS}"]) == 2
    err = capsys.readouterr().err
    assert "already holds checkpoints of an earlier run" in err and "--ckpt_path last" in err and "last.ckpt" in err
    assert {path.name: path.read_bytes() for path in (run / "checkpoints").iterdir()} == saved
    assert main(["fit", "--config", str(config), f"--trainer.max_steps={2 * EVERY_N_STEPS}", "--ckpt_path",
                 "last"]) == 0  # resuming that run is what the folder is for
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2 * EVERY_N_STEPS
