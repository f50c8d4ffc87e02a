"""Tests of the BrgSA loss and LightningModule, with real Lightning trainers on tiny models and volumes."""

from __future__ import annotations

import functools
import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from brgsa.losses import BrgSALoss, contrastive_loss
from brgsa.module import BrgSAModule
from datasets.metrics import evaluate_multilabel

PROMPTS = ["There is emphysema", "There is pleural effusion"]
REPORTS = [
    "There is emphysema in both upper lobes",
    "There is a small left pleural effusion",
    "There is a calcified nodule in the right lung",
    "There is cardiomegaly with pericardial effusion",
]


class VolumeTextDataset(Dataset):
    """Fixed random 32x32x16 volumes with a text entry and a label row each."""

    def __init__(self, texts: list, labels: list[list[float]]) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(len(texts), 1, 32, 32, 16, generator=generator)
        self.texts = texts
        self.labels = torch.tensor(labels, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "text": self.texts[index], "label": self.labels[index]}


def collate(samples: list[dict]) -> dict:
    """Stack tensors, keep each sample's text entry (a string or a list of sentences) as is."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "text": [s["text"] for s in samples],
        "label": torch.stack([s["label"] for s in samples]),
    }


LABELS = [[1.0, 0.0], [0.0, 1.0], [0.0, float("nan")], [1.0, 1.0]]


def trainer(**kwargs) -> pl.Trainer:
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return pl.Trainer(**{**options, **kwargs})


# --------------------------------------------------------------------------------------------------------- losses
def test_contrastive_loss_matches_explicit_symmetric_cross_entropy():
    torch.manual_seed(0)
    images, texts = torch.randn(4, 8), torch.randn(4, 8)
    similarity = torch.tensor(
        [[10 * F.cosine_similarity(images[i], texts[j], dim=0).item() for j in range(4)] for i in range(4)]
    )
    expected = 0.0
    for i in range(4):
        expected -= torch.log_softmax(similarity[i], 0)[i] / 4 + torch.log_softmax(similarity[:, i], 0)[i] / 4
    torch.testing.assert_close(contrastive_loss(images, texts), expected)


def test_rank_offset_loss_over_split_batches_equals_full_batch_loss():
    torch.manual_seed(0)
    images, texts = torch.randn(6, 8), torch.randn(6, 8)
    full = contrastive_loss(images, texts)
    per_rank = [
        contrastive_loss(images[rank * 3 : rank * 3 + 3], texts[rank * 3 : rank * 3 + 3], images, texts, rank=rank)
        for rank in range(2)
    ]
    torch.testing.assert_close((per_rank[0] + per_rank[1]) / 2, full)


def test_brgsa_loss_is_the_weighted_sum_of_its_terms():
    torch.manual_seed(0)
    v, t, v_hat, t_hat = (torch.randn(4, 8) for _ in range(4))
    losses = BrgSALoss()(v, t, v_hat, t_hat)
    assert set(losses) == {"loss", "contrastive_loss", "mse_loss", "bridged_contrastive_loss"}
    mse = ((v_hat - v) ** 2).mean() + ((t_hat - t) ** 2).mean()
    torch.testing.assert_close(losses["mse_loss"], mse)
    torch.testing.assert_close(losses["bridged_contrastive_loss"], contrastive_loss(v_hat, t_hat))
    expected = contrastive_loss(v, t) + 0.5 * mse + contrastive_loss(v_hat, t_hat)
    torch.testing.assert_close(losses["loss"], expected)
    only_raw = BrgSALoss()(v, t)
    assert set(only_raw) == {"loss", "contrastive_loss"}
    torch.testing.assert_close(only_raw["loss"], contrastive_loss(v, t))


def test_loss_ill_arg():
    with pytest.raises(ValueError, match="mse_weight must be non-negative"):
        BrgSALoss(mse_weight=-1.0)
    with pytest.raises(ValueError, match="logit_scale must be positive"):
        BrgSALoss(logit_scale=0.0)
    with pytest.raises(ValueError, match="or neither"):
        BrgSALoss()(torch.randn(2, 4), torch.randn(2, 4), image_embeds_hat=torch.randn(2, 4))


# ---------------------------------------------------------------------------------------------------------- module
class LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_training_reduces_the_loss_on_fixed_samples(tiny_brgsa):
    module = BrgSAModule(tiny_brgsa(), optimizer=functools.partial(torch.optim.AdamW, lr=1e-3))
    loader = DataLoader(VolumeTextDataset(REPORTS, LABELS), batch_size=4, collate_fn=collate)
    recorder = LossRecorder()
    trainer(max_steps=20, limit_val_batches=0, callbacks=[recorder]).fit(module, loader)
    assert len(recorder.losses) == 20
    assert all(math.isfinite(loss) for loss in recorder.losses)
    assert np.mean(recorder.losses[-3:]) < 0.7 * recorder.losses[0]


def test_zero_shot_validation_auroc_matches_the_shared_metric(tiny_brgsa):
    net = tiny_brgsa()
    module = BrgSAModule(net, val_prompts=PROMPTS)
    dataset = VolumeTextDataset(REPORTS, LABELS)
    metrics = trainer().validate(module, DataLoader(dataset, batch_size=2, collate_fn=collate), verbose=False)[0]
    net.eval()
    with torch.no_grad():
        scores = net.zero_shot_scores(dataset.images, net.encode_texts(PROMPTS)[0])
    expected = evaluate_multilabel(scores.numpy(), dataset.labels.numpy(), PROMPTS).macro["auroc"]
    assert metrics["val/macro_auroc"] == pytest.approx(expected, abs=1e-6)
    assert metrics["val/auroc_classes"] == 2.0
    assert math.isfinite(metrics["val/loss"]) and "val/bridged_contrastive_loss" in metrics


def test_sentence_lists_and_ablation_run_through_fit(tiny_brgsa):
    sentences = [report.split(" in ") + ["No other finding."] for report in REPORTS]
    net = tiny_brgsa(use_knowledge_bank=False)
    module = BrgSAModule(net, val_prompts=PROMPTS, sentences_per_sample=2)
    loader = DataLoader(VolumeTextDataset(sentences, LABELS), batch_size=4, collate_fn=collate)
    fit = trainer(fast_dev_run=1)
    fit.fit(module, loader, loader)
    metrics = fit.callback_metrics
    assert "train/contrastive_loss" in metrics and "val/macro_auroc" in metrics
    assert "train/mse_loss" not in metrics  # no knowledge bank: raw InfoNCE only
    torch.testing.assert_close(metrics["train/loss"], metrics["train/contrastive_loss"])


def test_sentence_sampling_is_seeded(tiny_brgsa):
    net = tiny_brgsa()
    sentences = [f"Sentence {i}." for i in range(6)]
    texts = [sentences, ["Only one."], "A plain report."]
    first = BrgSAModule(net, sentences_per_sample=3, sampling_seed=7).select_texts(texts, sample=True)
    again = BrgSAModule(net, sentences_per_sample=3, sampling_seed=7).select_texts(texts, sample=True)
    assert first == again
    drawn = first[0].split(" ")[1::2]
    assert len(drawn) == 3 and len(set(drawn)) == 3 and set(drawn) <= {f"{i}." for i in range(6)}
    assert first[1:] == ["Only one.", "A plain report."]
    fixed = BrgSAModule(net, sentences_per_sample=3).select_texts(texts, sample=False)
    assert fixed[0] == "Sentence 0. Sentence 1. Sentence 2."
    with pytest.raises(ValueError, match=r"text\[1\] is an empty sentence list"):
        BrgSAModule(net).select_texts([["a"], []], sample=True)
    kept = BrgSAModule(net, sentences_per_sample=3, sentence_combination="mean").select_texts(texts, sample=False)
    assert kept == [sentences[:3], ["Only one."], ["A plain report."]]


def test_mean_combination_averages_cached_sentence_vectors(tiny_brgsa):
    net = tiny_brgsa().eval()
    net.text_encoder.requires_grad_(False)
    sets = [["There is Emphysema.", "No pleural effusion."], ["There is Emphysema."]]
    with torch.no_grad():
        vectors = net.text_encoder(["There is Emphysema.", "No pleural effusion."])[1]
    encoded_rows = []  # rows of every batch the text model really encodes
    net.text_encoder.model.register_forward_hook(lambda module, args, kwargs, out: encoded_rows.append(
        kwargs["input_ids"].shape[0]), with_kwargs=True)
    embeds, embeds_hat = net.encode_sentence_sets(sets)
    assert encoded_rows == [2]  # the repeated sentence is encoded once
    expected = net.text_projection(torch.stack([vectors.mean(0), vectors[0]]))
    torch.testing.assert_close(embeds, expected)
    torch.testing.assert_close(embeds_hat, net.knowledge_bank(expected))
    output = net(torch.randn(2, 1, 32, 32, 16), sets)  # sentence lists take the same path in forward
    torch.testing.assert_close(output.text_embeds, expected)
    net.encode_sentence_sets([["No pleural effusion.", "A new sentence."]])
    assert encoded_rows == [2, 1]  # served from the cache: only the new sentence is encoded
    net.text_encoder.requires_grad_(True)  # a trained encoder is never served from the cache
    trained, _ = net.encode_sentence_sets(sets)
    assert trained.requires_grad and encoded_rows == [2, 1, 2]
    with pytest.raises(ValueError, match="sentence set 1 is empty"):
        net.encode_sentence_sets([["a"], []])


def test_default_optimizer_and_scheduler(tiny_brgsa):
    config = BrgSAModule(tiny_brgsa()).configure_optimizers()
    optimizer = config["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (5e-5, (0.5, 0.999), 1e-6)
    scheduler = config["lr_scheduler"]
    assert isinstance(scheduler["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert scheduler["monitor"] == "val/macro_auroc" and scheduler["scheduler"].mode == "max"


def test_module_ill_arg(tiny_brgsa):
    net = tiny_brgsa()
    with pytest.raises(ValueError, match="val_prompts must be a non-empty list"):
        BrgSAModule(net, val_prompts=[])
    with pytest.raises(ValueError, match="sentences_per_sample must be at least 1"):
        BrgSAModule(net, sentences_per_sample=0)
    with pytest.raises(ValueError, match="sentence_combination must be 'join' or 'mean'"):
        BrgSAModule(net, sentence_combination="sum")
