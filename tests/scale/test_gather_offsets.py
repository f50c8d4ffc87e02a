"""Rank offsets of the contrastive gathers, with fake collectives (the real gloo run is in ``test_ddp.py``).

Each simulated rank is a thread running the module's real ``training_step`` on its slice of the batch; the fake
``all_gather`` exchanges tensors through a barrier and keeps the autograd graph for ``sync_grads=True`` (what
Lightning's ``AllGatherGrad`` achieves by all-reducing the gathered gradient), drops it otherwise. DDP averages
parameter gradients over ranks, so the quantity a step follows is ``mean_r loss_r``: it must equal the one-process loss
on the whole batch (``rtol=1e-5``), with the same gradients (to 1e-5 of each tensor's largest entry).
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from brgsa.model import BrgSA
from brgsa.module import BrgSAModule
from carzero.model import CARZero
from carzero.module import CARZeroModule

GRAD_RTOL = 1e-5


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """``max |actual - expected| <= GRAD_RTOL * max |expected| + 1e-6``: float32 summation order moves accumulated
    gradients (embedding rows summed over every token) by that much relative to the tensor, not to each element."""
    error, scale = float((actual - expected).abs().max()), float(expected.abs().max())
    assert error <= GRAD_RTOL * scale + 1e-6, f"{name}: max difference {error:.3g} at gradient scale {scale:.3g}"


TEXTS = ["there is cardiomegaly", "left pleural effusion", "a small right pneumothorax", "no acute findings"]


class FakeCollective:
    """``all_gather`` across ``world_size`` threads: stacks every rank's tensor in rank order, ``(W, ...)``."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.barrier = threading.Barrier(world_size, timeout=120)
        self.slots: list[torch.Tensor | None] = [None] * world_size
        self.calls = 0

    def for_rank(self, rank: int):  # noqa: ANN201 (returns a LightningModule.all_gather stand-in)
        def all_gather(tensor: torch.Tensor, group: Any = None, sync_grads: bool = False) -> torch.Tensor:
            self.slots[rank] = tensor
            self.barrier.wait()
            result = torch.stack([slot if sync_grads else slot.detach() for slot in self.slots])
            if rank == 0:
                self.calls += 1
            self.barrier.wait()  # nobody overwrites a slot before everyone has read it
            return result

        return all_gather


def _attach(module: torch.nn.Module, rank: int, world_size: int, all_gather: Any = None) -> None:
    module._trainer = SimpleNamespace(world_size=world_size, global_rank=rank)
    module.log = lambda *args, **kwargs: None  # no Trainer to log into
    if all_gather is not None:
        module.all_gather = all_gather


def _build(model: str, text_encoder: str) -> tuple[Any, type, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    if model == "carzero":
        net = CARZero(text_encoder=text_encoder, image_size=32, patch_size=16, vision_width=32, vision_layers=1,
                      vision_heads=2, embed_dim=16, fusion_layers=2, fusion_heads=2, fusion_ffn_dim=32,
                      head_hidden_dims=[8], text_last_n_layers=2, fusion_dropout=0.0)
        images = torch.randn(len(TEXTS), 3, 32, 32, generator=generator)
        return net.eval(), CARZeroModule, {"image": images, "text": TEXTS}
    net = BrgSA(text_encoder=text_encoder, image_size=[32, 32, 16], vision_width=24, vision_depth=1, vision_heads=2,
                embed_dim=16, knowledge_bank_size=8, text_last_n_layers=2)
    images = torch.randn(len(TEXTS), 1, 32, 32, 16, generator=generator)
    return net.eval(), BrgSAModule, {"image": images, "text": TEXTS}


def _distributed_mean_loss(  # noqa: ANN001
    net, module_class, batch, world_size: int, rank_of=lambda rank: rank
) -> torch.Tensor:
    collective = FakeCollective(world_size)
    per_rank = len(TEXTS) // world_size
    losses: list[torch.Tensor | None] = [None] * world_size
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        try:
            module = module_class(net)
            _attach(module, rank_of(rank), world_size, collective.for_rank(rank))
            part = slice(rank * per_rank, (rank + 1) * per_rank)
            losses[rank] = module.training_step({"image": batch["image"][part], "text": batch["text"][part]}, 0)
        except BaseException as error:  # surfaced below
            errors.append(error)
            collective.barrier.abort()

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    assert collective.calls > 0, "the module gathered nothing"
    return torch.stack(losses).mean()


def _gradients(net: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    net.zero_grad()
    loss.backward()
    return {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("world_size", [2, 4])
@pytest.mark.parametrize("model", ["carzero", "brgsa"])
def test_mean_of_rank_losses_and_its_gradients_equal_the_global_batch(model, world_size, tiny_bert_dir):
    net, module_class, batch = _build(model, str(tiny_bert_dir))
    single = module_class(net)
    _attach(single, 0, 1, None)
    full_loss = single.training_step(batch, 0)
    full_grads = _gradients(net, full_loss)

    mean_loss = _distributed_mean_loss(net, module_class, batch, world_size)
    torch.testing.assert_close(mean_loss, full_loss, rtol=1e-5, atol=1e-6)
    grads = _gradients(net, mean_loss)
    assert grads.keys() == full_grads.keys() and len(grads) > 10
    for name, grad in full_grads.items():
        assert_close_to_scale(grads[name], grad, name)


@pytest.mark.parametrize("model", ["carzero", "brgsa"])
def test_a_wrong_rank_offset_is_detected(model, tiny_bert_dir):
    """Control: every rank believing it is rank 0 points its labels at the wrong pairs. CARZero's loss refuses it (its
    identical-text mask no longer marks the labelled pairs); for BrgSA the gradients move far outside the tolerance
    above (at initialisation the scores are nearly uniform, so the loss value alone barely changes)."""
    net, module_class, batch = _build(model, str(tiny_bert_dir))
    if model == "carzero":
        with pytest.raises(ValueError, match="True for every matched pair"):
            _distributed_mean_loss(net, module_class, batch, 2, rank_of=lambda rank: 0)
        return
    single = module_class(net)
    _attach(single, 0, 1, None)
    full_grads = _gradients(net, single.training_step(batch, 0))
    wrong = _gradients(net, _distributed_mean_loss(net, module_class, batch, 2, rank_of=lambda rank: 0))
    worst = max(float((wrong[n] - g).abs().max()) / (GRAD_RTOL * float(g.abs().max()) + 1e-6)
                for n, g in full_grads.items())
    assert worst > 100


@pytest.mark.parametrize("model", ["carzero", "brgsa"])
def test_checkpoints_store_the_net_config(model, tiny_bert_dir):
    net, module_class, _ = _build(model, str(tiny_bert_dir))
    checkpoint: dict[str, Any] = {}
    module_class(net).on_save_checkpoint(checkpoint)
    rebuilt = type(net).from_config(checkpoint[f"{model}_config"])
    assert rebuilt.config == net.config
    assert rebuilt.state_dict().keys() == net.state_dict().keys()
