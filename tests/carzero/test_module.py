"""CARZero loss and LightningModule: symmetry, multi-process split, training, zero-shot AUROC validation."""

from __future__ import annotations

import json
import math
import re

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, Dataset

from carzero.losses import CARZeroLoss, symmetric_cross_entropy
from carzero.module import CARZeroModule, read_prompt_file
from carzero.scoring import score_all_pairs
from datasets.errors import InputError

REPORTS = ["there is cardiomegaly", "there is pleural effusion", "there is pneumothorax", "no acute findings"]
VAL_PROMPTS = ["there is cardiomegaly", "there is pleural effusion", "there is hernia"]


class _Samples(Dataset):
    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def _trainer(**kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    return pl.Trainer(**{**defaults, **kwargs})


# ---------------------------------------------------------------------------------------------------------- loss
def test_loss_symmetric_and_matches_definition():
    torch.manual_seed(0)
    scores = torch.randn(5, 5)
    loss = symmetric_cross_entropy(scores, scores.T)
    log_rows = scores.log_softmax(dim=1).diagonal()
    log_columns = scores.log_softmax(dim=0).diagonal()
    torch.testing.assert_close(loss, -(log_rows.mean() + log_columns.mean()) / 2)
    torch.testing.assert_close(symmetric_cross_entropy(scores.T, scores), loss)  # images and texts swapped
    assert torch.isfinite(symmetric_cross_entropy(scores * 1e4, scores.T * 1e4))
    torch.testing.assert_close(symmetric_cross_entropy(scores, scores.T, temperature=0.5),
                               symmetric_cross_entropy(2 * scores, 2 * scores.T))


def test_loss_split_over_processes_equals_global_loss():
    """Two processes with 3 pairs each, rows against the global batch + rank offset, average to the global loss."""
    torch.manual_seed(0)
    scores = torch.randn(6, 6)  # global matrix, images as rows
    per_rank = [symmetric_cross_entropy(scores[r * 3 : r * 3 + 3], scores[:, r * 3 : r * 3 + 3].T, label_offset=r * 3)
                for r in range(2)]
    torch.testing.assert_close(sum(per_rank) / 2, symmetric_cross_entropy(scores, scores.T))


def test_carzero_loss_sums_both_directions():
    torch.manual_seed(0)
    image_to_text, text_to_image = torch.randn(4, 4), torch.randn(4, 4)
    out = CARZeroLoss()(image_to_text, image_to_text.T, text_to_image, text_to_image.T)
    torch.testing.assert_close(out["loss"], out["image_to_text_loss"] + out["text_to_image_loss"])
    torch.testing.assert_close(out["image_to_text_loss"], symmetric_cross_entropy(image_to_text, image_to_text.T))


def test_duplicate_texts_are_positives_not_negatives():
    """Pairs 0 and 2 share a text: each image's target mass is split between the two identical texts (and each
    text's between the two images); without duplicates the multi-positive loss is the plain loss."""
    torch.manual_seed(0)
    scores = torch.randn(4, 4)
    identity = torch.eye(4, dtype=torch.bool)
    torch.testing.assert_close(symmetric_cross_entropy(scores, scores.T, positives=identity),
                               symmetric_cross_entropy(scores, scores.T))
    texts = ["there is edema", "normal", "there is edema", "there is mass"]
    positives = torch.tensor([[a == b for b in texts] for a in texts])
    targets = positives.float() / positives.sum(1, keepdim=True)
    expected_rows = -(targets * scores.log_softmax(dim=1)).sum(1).mean()
    expected_columns = -(targets * scores.T.log_softmax(dim=1)).sum(1).mean()
    loss = symmetric_cross_entropy(scores, scores.T, positives=positives)
    torch.testing.assert_close(loss, (expected_rows + expected_columns) / 2)
    # identical texts cannot be told apart: the plain loss still rewards preferring one copy, the fixed loss does not
    tied = scores.clone()
    tied[:, 2] = tied[:, 0]
    tied[2] = tied[0]
    broken = tied.clone()
    broken[0, 0] += 1.0
    broken[0, 2] -= 1.0
    assert symmetric_cross_entropy(broken, broken.T) < symmetric_cross_entropy(tied, tied.T)
    assert (symmetric_cross_entropy(broken, broken.T, positives=positives)
            > symmetric_cross_entropy(tied, tied.T, positives=positives))
    out = CARZeroLoss(duplicates_as_positives=False)(scores, scores.T, scores, scores.T, positives=positives)
    torch.testing.assert_close(out["image_to_text_loss"], symmetric_cross_entropy(scores, scores.T))
    with pytest.raises(ValueError, match="matched pair"):
        symmetric_cross_entropy(scores, scores.T, positives=~identity)


@pytest.mark.parametrize("kwargs", [{"temperature": 0.0}, {"temperature": -1.0}])
def test_loss_ill_arg(kwargs):
    with pytest.raises(ValueError, match="temperature"):
        CARZeroLoss(**kwargs)
    with pytest.raises(ValueError, match="B_local"):
        symmetric_cross_entropy(torch.randn(2, 3), torch.randn(3, 2))


# ------------------------------------------------------------------------------------------------------ training
def test_training_reduces_loss(tiny_carzero):
    torch.manual_seed(0)
    items = [{"image": torch.randn(3, 32, 32), "text": text} for text in REPORTS]
    module = CARZeroModule(tiny_carzero(fusion_dropout=0.0), optimizer=lambda params: torch.optim.Adam(params, lr=1e-2))

    losses: list[float] = []

    class RecordLoss(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = _trainer(max_steps=20, limit_val_batches=0, callbacks=[RecordLoss()])
    trainer.fit(module, train_dataloaders=DataLoader(_Samples(items), batch_size=4))
    assert len(losses) == 20 and all(math.isfinite(value) for value in losses)
    assert losses[0] == pytest.approx(2 * math.log(4), rel=0.05)  # near-uniform logits at initialisation
    assert np.mean(losses[-3:]) < 0.85 * losses[0]
    assert {"train/loss", "train/image_to_text_loss", "train/text_to_image_loss"} <= set(trainer.callback_metrics)


def test_training_batch_needs_one_text_per_image(tiny_carzero):
    module = CARZeroModule(tiny_carzero())
    with pytest.raises(ValueError, match="one text per image"):
        module.training_step({"image": torch.randn(2, 3, 32, 32), "text": ["only one"]}, 0)


def test_default_optimizer_and_schedule_follow_the_paper(tiny_carzero):
    config = CARZeroModule(tiny_carzero()).configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.Adam)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (5e-5, (0.5, 0.999), 1e-6)
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (scheduler.factor, scheduler.patience, scheduler.mode) == (0.5, 5, "max")
    assert config["lr_scheduler"]["monitor"] == "val/macro_auroc"


# ---------------------------------------------------------------------------------------------------- validation
def _val_items() -> list[dict]:
    torch.manual_seed(3)
    nan = float("nan")
    labels = [  # column 2 ("hernia") has no positives: it must be excluded, not crash
        [1, 0, 0], [0, 1, 0], [1, nan, 0], [0, 1, nan], [1, 1, 0], [0, 0, 0],
    ]
    return [{"image": torch.randn(3, 32, 32), "label": torch.tensor(row, dtype=torch.float32)} for row in labels]


def test_validation_auroc_excludes_classes_without_positives(tiny_carzero):
    net = tiny_carzero()
    module = CARZeroModule(net, val_prompts=VAL_PROMPTS, val_image_chunk_size=2, val_text_chunk_size=2)
    items = _val_items()
    metrics = _trainer().validate(module, dataloaders=DataLoader(_Samples(items), batch_size=4), verbose=False)[0]
    assert metrics["val/auroc_classes"] == 2

    # independent reference: scores from the scorer, AUROC per labelled class with scikit-learn
    net.eval()
    with torch.no_grad():
        images = torch.stack([item["image"] for item in items])
        scores = score_all_pairs(net, net.encode_images(images), net.encode_texts(VAL_PROMPTS)).mean.numpy()
    labels = torch.stack([item["label"] for item in items]).numpy()
    expected = []
    for column in range(2):
        labelled = ~np.isnan(labels[:, column])
        expected.append(roc_auc_score(labels[labelled, column], scores[labelled, column]))
    assert metrics["val/macro_auroc"] == pytest.approx(np.mean(expected), abs=1e-6)


def test_validation_needs_prompts_and_matching_labels(tiny_carzero):
    loader = DataLoader(_Samples(_val_items()), batch_size=3)
    with pytest.raises(ValueError, match="val_prompts"):
        _trainer().validate(CARZeroModule(tiny_carzero()), dataloaders=loader, verbose=False)
    module = CARZeroModule(tiny_carzero(), val_prompts=VAL_PROMPTS[:2])
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        _trainer().validate(module, dataloaders=loader, verbose=False)


def test_prompt_files(tmp_path, tiny_carzero):
    released = tmp_path / "chestxray14_test_text.json"
    released.write_text(json.dumps({"1": ["There is Cardiomegaly"], "0": ["There is Atelectasis"]}))
    assert read_prompt_file(released) == ["There is Atelectasis", "There is Cardiomegaly"]
    listed = tmp_path / "prompts.json"
    listed.write_text(json.dumps(["There is Edema"]))
    assert read_prompt_file(listed) == ["There is Edema"]
    lines = tmp_path / "prompts.txt"
    lines.write_text("There is Edema\n\nThere is Mass\n")
    module = CARZeroModule(tiny_carzero(), val_prompt_file=str(lines))
    assert module.val_prompts == ["There is Edema", "There is Mass"]

    for name, content, problem in [
        ("empty.txt", "\n", "holds no prompts"), ("bad.json", "{", "is not valid JSON"),
        ("keys.json", '{"a": "x"}', "keys of a prompt object must be class indices, got ['a']"),
        ("num.json", "[1]", "must hold a list of prompt strings"),
    ]:
        (tmp_path / name).write_text(content)
        with pytest.raises(InputError, match=re.escape(f"{tmp_path / name}") + ".*" + re.escape(problem)):
            read_prompt_file(tmp_path / name)
    with pytest.raises(FileNotFoundError, match=re.escape(f"no prompt file: '{tmp_path / 'missing.txt'}'")):
        read_prompt_file(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="not both"):
        CARZeroModule(tiny_carzero(), val_prompts=["x"], val_prompt_file=str(lines))
    with pytest.raises(ValueError, match="non-empty"):
        CARZeroModule(tiny_carzero(), val_prompts=[])
