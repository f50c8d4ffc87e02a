"""Tests of the LSMS LightningModule, its losses and its metrics."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, Dataset

from lsms.losses import LSMSLoss, dice_loss_with_logits, region_sentence_contrastive_loss
from lsms.metrics import ReferringSegmentationMetrics
from lsms.model import LSMS
from lsms.module import LSMSModule

TEXTS = ["lesion in the upper left", "lesion in the lower right", "lesion in the upper right", "lesion in the centre"]
CORNERS = [(4, 4), (36, 36), (4, 36), (20, 20)]


def tiny_net(text_encoder, **overrides) -> LSMS:
    torch.manual_seed(0)
    config = dict(
        text_encoder=str(text_encoder),
        encoder_widths=(8, 16, 16, 32),
        encoder_depths=(1, 1, 1, 1),
        svla_kernel_sizes=(3, 7),
        svla_dilations=(1, 1),
        decoder_width=8,
    )
    config.update(overrides)
    return LSMS(**config)


def synthetic_batch() -> dict:
    """Four 64x64 slices, each with one bright 24x24 "lesion" and a dimmer distractor; masks mark the lesion."""
    generator = torch.Generator().manual_seed(0)
    images = 0.2 * torch.rand(4, 1, 64, 64, generator=generator)
    masks = torch.zeros(4, 1, 64, 64)
    for index, (row, col) in enumerate(CORNERS):
        images[index, :, row : row + 24, col : col + 24] += 0.7
        masks[index, :, row : row + 24, col : col + 24] = 1
    return {"image": images, "mask": masks, "text": list(TEXTS), "meta": [{"id": i} for i in range(4)]}


class RepeatedBatch(Dataset):
    """The same pre-collated batch, ``length`` times (use with ``DataLoader(batch_size=None)``)."""

    def __init__(self, batch: dict, length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return self.batch


def _trainer(**kwargs) -> Trainer:
    return Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, **kwargs,
    )


# ----------------------------------------------------------------------------------------------------- metrics


def _masks(*boxes: tuple[int, int, int, int] | None, size: int = 10) -> torch.Tensor:
    masks = torch.zeros(len(boxes), 1, size, size)
    for index, box in enumerate(boxes):
        if box is not None:
            top, left, bottom, right = box
            masks[index, :, top:bottom, left:right] = 1
    return masks


def test_empty_prediction_for_present_lesion_scores_zero_and_empty_pair_scores_one():
    metric = ReferringSegmentationMetrics()
    metric.update(_masks(None, None), _masks((0, 0, 4, 4), None))
    values = metric.compute()
    assert values["dice"].item() == pytest.approx(0.5)  # (0 + 1) / 2
    assert values["miou"].item() == pytest.approx(0.5)
    assert values["oiou"].item() == pytest.approx(0.0)  # 0 intersection over 16 union pixels
    assert values["p@0.5"].item() == pytest.approx(0.5)


def test_overall_iou_weighs_large_lesions_and_mean_iou_does_not():
    metric = ReferringSegmentationMetrics()
    # expression 1: large lesion (100 px) predicted perfectly; expression 2: small lesion (4 px) missed by half
    target = _masks((0, 0, 10, 10), (0, 0, 2, 2))
    prediction = _masks((0, 0, 10, 10), (0, 0, 1, 2))
    metric.update(prediction.float() * 0.9, target)  # probabilities, thresholded at 0.5
    values = metric.compute()
    assert values["miou"].item() == pytest.approx((1.0 + 0.5) / 2)
    assert values["oiou"].item() == pytest.approx((100 + 2) / (100 + 4))
    assert values["dice"].item() == pytest.approx((1.0 + 2 * 2 / (2 + 4)) / 2)
    assert values["p@0.5"].item() == pytest.approx(0.5)  # IoU must be strictly greater than 0.5
    assert values["p@0.9"].item() == pytest.approx(0.5)


def test_metric_accumulates_over_batches_and_resets():
    metric = ReferringSegmentationMetrics(iou_thresholds=(0.3,))
    metric.update(_masks((0, 0, 4, 4)), _masks((0, 0, 4, 4)))
    metric.update(_masks((0, 0, 4, 2)), _masks((0, 0, 4, 4)))
    values = metric.compute()
    assert set(values) == {"dice", "miou", "oiou", "p@0.3"}
    assert values["miou"].item() == pytest.approx(0.75) and values["oiou"].item() == pytest.approx(24 / 32)
    metric.reset()
    with pytest.warns(UserWarning, match="called before the ``update`` method"):
        assert math.isnan(metric.compute()["dice"].item())
    with pytest.raises(ValueError, match="must equal target shape"):
        metric.update(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 5, 5))


# ----------------------------------------------------------------------------------------------------- losses


def test_losses_take_logits():
    target = _masks((0, 0, 5, 5))
    confident_right = (target * 2 - 1) * 20  # logits
    assert dice_loss_with_logits(confident_right, target).item() < 1e-3
    assert dice_loss_with_logits(-confident_right, target).item() > 0.99
    losses = LSMSLoss()(confident_right, target, aux_logits=[confident_right])
    assert set(losses) == {"loss", "dice_loss", "bce_loss", "aux_loss"}
    assert losses["loss"].item() < 1e-2
    with pytest.raises(ValueError, match="must be >= 0"):
        LSMSLoss(dice_weight=-1)
    with pytest.raises(ValueError, match="needs pixel and sentence embeddings"):
        LSMSLoss(contrastive_weight=0.1)(confident_right, target)


def test_region_sentence_contrastive_loss_prefers_aligned_pairs():
    torch.manual_seed(0)
    sentences = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)  # (B, E)
    pixel_embeds = sentences[:, :, None, None].expand(3, 8, 4, 4).clone()  # every pixel = its own sentence
    masks = _masks((0, 0, 8, 8), (4, 4, 16, 16), (8, 0, 16, 8), size=16)
    scale = torch.tensor(10.0)
    aligned = region_sentence_contrastive_loss(pixel_embeds, sentences, masks, scale)
    shuffled = region_sentence_contrastive_loss(pixel_embeds, sentences.roll(1, 0), masks, scale)
    assert aligned < shuffled
    # an empty mask leaves its sample out; fewer than two lesions gives 0
    empty = _masks(None, None, (0, 0, 4, 4), size=16)
    assert region_sentence_contrastive_loss(pixel_embeds, sentences, empty, scale).item() == 0.0
    # duplicated texts are positives of each other: two identical pairs score as well as the aligned set
    twins = torch.stack([sentences[0], sentences[0], sentences[2]])
    twin_pixels = twins[:, :, None, None].expand(3, 8, 4, 4)
    duplicates = region_sentence_contrastive_loss(twin_pixels, twins, masks, scale, texts=["a", "a", "b"])
    distinct = region_sentence_contrastive_loss(twin_pixels, twins, masks, scale, texts=["a", "b", "c"])
    assert duplicates < distinct


# ----------------------------------------------------------------------------------------------------- module


def test_module_overfits_a_fixed_batch(tiny_bert_dir):
    torch.manual_seed(0)
    module = LSMSModule(tiny_net(tiny_bert_dir, contrastive_dim=8), contrastive_weight=0.1, lr=3e-3)
    batch = synthetic_batch()

    def current_loss() -> float:
        with torch.no_grad():
            output = module.net(batch["image"], batch["text"])
            return module.loss(**vars(output), target=batch["mask"], texts=batch["text"])["loss"].item()

    before = current_loss()
    _trainer(max_steps=20).fit(module, DataLoader(RepeatedBatch(batch, 20), batch_size=None))
    after = current_loss()
    assert after < 0.6 * before, (before, after)


def test_validation_test_predict_and_checkpoint_reload(tiny_bert_dir, tmp_path):
    module = LSMSModule(tiny_net(tiny_bert_dir))
    loader = DataLoader(RepeatedBatch(synthetic_batch(), 2), batch_size=None)
    trainer = _trainer()
    (validated,) = trainer.validate(module, loader, verbose=False)
    expected = {"dice", "miou", "oiou", "p@0.5", "p@0.7", "p@0.9"}
    assert {f"val/{name}" for name in expected} <= set(validated)
    assert "val/loss" in validated
    (tested,) = trainer.test(module, loader, verbose=False)
    assert {f"test/{name}" for name in expected} <= set(tested)
    predictions = trainer.predict(module, loader)
    assert predictions[0]["probs"].shape == (4, 1, 64, 64)
    assert predictions[0]["masks"].dtype == torch.bool
    assert ((predictions[0]["probs"] >= 0) & (predictions[0]["probs"] <= 1)).all()
    assert predictions[0]["meta"] == [{"id": i} for i in range(4)]
    trainer.save_checkpoint(tmp_path / "lsms.ckpt")
    torch.manual_seed(1)  # another initialisation than the saved one: only loading the checkpoint makes them equal
    net = LSMS(**torch.load(tmp_path / "lsms.ckpt")["lsms_config"])
    saved = module.state_dict()
    assert any(not torch.equal(value, saved[f"net.{name}"]) for name, value in net.state_dict().items())
    reloaded = LSMSModule.load_from_checkpoint(tmp_path / "lsms.ckpt", net=net).state_dict()
    assert list(reloaded) == list(saved)  # zip() below would silently skip a missing or extra tensor
    for name, value in saved.items():
        torch.testing.assert_close(reloaded[name], value, msg=name)


def test_optimizer_groups_and_cosine_schedule(tiny_bert_dir):
    module = LSMSModule(tiny_net(tiny_bert_dir, freeze_text=False), lr=1e-3, warmup_steps=1, text_lr_ratio=0.1)
    _trainer(max_steps=4).fit(module, DataLoader(RepeatedBatch(synthetic_batch(), 4), batch_size=None))
    optimizer = module.optimizers().optimizer
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.01, 0.0, 0.01]
    text_params = {id(p) for p in module.net.text_encoder.parameters()}
    assert {id(p) for p in optimizer.param_groups[2]["params"]} <= text_params
    scheduler = module.lr_schedulers()
    assert scheduler.base_lrs == pytest.approx([1e-3, 1e-3, 1e-4])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-6)  # cosine reached its end


def test_module_builds_from_a_lightningcli_style_config(tiny_bert_dir):
    parser = ArgumentParser()
    parser.add_class_arguments(LSMSModule, "model")
    config = parser.parse_object(
        {
            "model": {
                "net": {
                    "class_path": "lsms.model.LSMS",
                    "init_args": {
                        "text_encoder": str(tiny_bert_dir),
                        "encoder_widths": [8, 16, 16, 32],
                        "encoder_depths": [1, 1, 1, 1],
                        "svla_kernel_sizes": [3],
                        "svla_dilations": [1],
                        "decoder_width": 8,
                    },
                },
                "lr": 1e-3,
            }
        }
    )
    module = parser.instantiate(config).model
    assert isinstance(module, LSMSModule) and isinstance(module.net, LSMS)
    assert module.net.config["encoder_widths"] == [8, 16, 16, 32]
    assert module.hparams.lr == 1e-3 and "net" not in module.hparams


def test_module_ill_arguments(tiny_bert_dir, caplog):
    net = tiny_net(tiny_bert_dir)
    with pytest.raises(ValueError, match="build the net with contrastive_dim > 0"):
        LSMSModule(net, contrastive_weight=0.1)
    with pytest.raises(ValueError, match="lr=0"):
        LSMSModule(net, lr=0)
    with caplog.at_level(logging.WARNING, logger="lsms.module"):
        LSMSModule(tiny_net(tiny_bert_dir, contrastive_dim=8))
    assert "contrastive_weight=0" in caplog.text
    module = LSMSModule(net)
    with pytest.raises(ValueError, match=r"the batch lacks \['text'\]"):
        module.training_step({"image": torch.rand(1, 1, 32, 32), "mask": torch.zeros(1, 1, 32, 32)}, 0)
