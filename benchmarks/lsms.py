"""LSMS cost figures on this machine: parameters, FLOPs, training throughput, inference latency, peak memory.

Run: ``python benchmarks/lsms.py [--config configs/lsms/demo.yaml] [--batch 16] [--steps 5]``. Prints a table; it is a
measurement script, not a test.

- FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (one forward pass, a multiply-add counted as 2
  FLOPs; convolutions, matmuls and attention are counted, element-wise ops are not), for the demo network and the
  default-size network, at 224 x 224 and 512 x 512, text encoder excluded (its features are cached).
- Throughput is forward + backward + AdamW step with the frozen text features cached, after one warm-up step.
- Latency is one slice with one prompt, eval mode, median of ``--steps`` runs; bf16 runs under CPU autocast.
- Peak memory is the process's maximum resident set size (``resource.getrusage``), imports and model included.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lsms.model import LSMS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["the larger hypodense lesion in the right lobe", "the only lesion in this slice"]


def _flops(net: LSMS, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    text = net.encode_text(TEXTS[:1])  # cached afterwards; excluded from the count
    images = torch.rand(1, net.in_channels, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net.forward_features(images, text.word_feats, text.word_mask, text.sentence)
    return counter.get_total_flops()


def _train_throughput(net: LSMS, batch: int, size: int, steps: int, dtype: torch.dtype | None) -> float:
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    images = torch.rand(batch, net.in_channels, size, size)
    texts = [TEXTS[i % 2] for i in range(batch)]

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            out = net(images, texts)
            loss = out.logits.float().mean() + sum(aux.float().mean() for aux in out.aux_logits)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    net.train()
    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - started)


@torch.inference_mode()
def _latency(net: LSMS, size: int, steps: int, dtype: torch.dtype | None) -> float:
    net.eval()
    image = torch.rand(1, net.in_channels, size, size)
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            net(image, TEXTS[:1])
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "lsms" / "demo.yaml")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=128, help="training and latency input size (demo: 128)")
    parser.add_argument("--steps", type=int, default=5)
    options = parser.parse_args(argv)
    demo_args = yaml.safe_load(options.config.read_text())["model"]["net"]["init_args"]
    torch.manual_seed(0)
    demo = LSMS(**demo_args)
    default = LSMS(**{key: demo_args[key] for key in ("text_encoder", "freeze_text", "cache_text_features")})

    rows = [("torch threads", f"{torch.get_num_threads()}")]
    for name, net in (("demo", demo), ("default", default)):
        trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
        total = sum(p.numel() for p in net.parameters())
        rows.append((f"{name}: parameters (trainable / total)", f"{trainable / 1e6:.2f} M / {total / 1e6:.2f} M"))
        for size in (224, 512):
            rows.append((f"{name}: GFLOPs per slice at {size}x{size}", f"{_flops(net, size) / 1e9:.2f}"))
    for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        rows.append((f"demo: training samples/s at {options.size}, batch {options.batch}, {label}",
                     f"{_train_throughput(demo, options.batch, options.size, options.steps, dtype):.1f}"))
        rows.append((f"demo: inference latency per slice at {options.size}, {label}",
                     f"{1000 * _latency(demo, options.size, options.steps, dtype):.1f} ms"))
        rows.append((f"default: inference latency per slice at 512, {label}",
                     f"{1000 * _latency(default, 512, max(options.steps // 2, 1), dtype):.1f} ms"))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(("peak resident memory (whole process)", f"{peak_mib:.0f} MiB"))
    width = max(len(name) for name, _ in rows)
    print(f"{'LSMS benchmark'.ljust(width)}  value")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
