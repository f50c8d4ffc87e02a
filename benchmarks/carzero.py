"""Benchmark of CARZero zero-shot scoring at paper sizes; prints a table (not a test).

Measures, on the same random tokens (768-d, 4 fusion layers, 197 image tokens, 98 text tokens, 192 prompts):

1. the all-pairs scorer (:func:`carzero.scoring.score_all_pairs`) against a per-image Python loop structured like the
   released inference (for each image: the prompts' sentence vectors query that image's tokens, and that image's
   global token queries all prompts' tokens, whose keys/values are therefore re-projected for every image), in
   float32 and bfloat16, with the largest absolute difference between their scores;
2. image-encoding throughput of ViT-B/16 at 224 px;
3. peak memory of scoring a streamed subset, measured in a fresh subprocess per subset size as the high-water resident
   set size of the scoring phase (Linux ``VmHWM``, reset after model construction; ``ru_maxrss`` of the whole process
   is printed too; ``tracemalloc`` would miss PyTorch's native allocations), extrapolated to PadChest's 39,053
   images x 192 prompts.

Run: ``python benchmarks/carzero.py`` (a few minutes on two CPU cores). Options: ``--images``, ``--prompts``,
``--text-encoder``, ``--probe-sizes``.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from carzero.model import CARZero, ImageTokens, SimilarityScores, TextTokens  # noqa: E402
from carzero.scoring import score_all_pairs  # noqa: E402

PADCHEST_IMAGES = 39_053
IMAGE_TOKENS = 196  # patches; plus the global token = 197
TEXT_WORDS = 97  # word slots; plus the sentence vector = 98


def random_tokens(num_images: int, num_prompts: int, width: int, seed: int = 0) -> tuple[ImageTokens, TextTokens]:
    """Random image and text tokens of the released model's sizes; every text slot valid, as released (no mask)."""
    generator = torch.Generator().manual_seed(seed)
    image_tokens = ImageTokens(
        torch.randn(num_images, width, generator=generator),
        torch.randn(num_images, IMAGE_TOKENS, width, generator=generator),
    )
    text_tokens = TextTokens(
        torch.randn(num_prompts, width, generator=generator),
        torch.randn(num_prompts, TEXT_WORDS, width, generator=generator),
        torch.ones(num_prompts, TEXT_WORDS, dtype=torch.bool),
    )
    return image_tokens, text_tokens


@torch.inference_mode()
def per_image_loop(model: CARZero, image_tokens: ImageTokens, text_tokens: TextTokens, dtype: torch.dtype):
    """The released inference's structure: one image at a time, all prompts per fusion call, text K/V per image."""
    image_to_text, text_to_image = [], []
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        for index in range(len(image_tokens)):
            image = image_tokens.select(slice(index, index + 1))
            # (M, 1): the prompts query this image's 197 tokens
            image_cache = model.project_image_memory(image)
            image_to_text.append(model.fusion.score_all_pairs(text_tokens.sentence, image_cache))
            # (1, M): this image's global token queries the prompts' 98 tokens (re-projected for every image)
            text_cache = model.project_text_memory(text_tokens)
            text_to_image.append(model.fusion.score_all_pairs(image.global_token, text_cache))
    return SimilarityScores(torch.cat(image_to_text, 1).T.float(), torch.cat(text_to_image, 0).float())


@torch.inference_mode()
def project_prompts(model: CARZero, text_tokens: TextTokens, dtype: torch.dtype):
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        return model.project_text_memory(text_tokens)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _resident_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_probe(text_encoder: str, num_images: int, num_prompts: int, image_chunk_size: int) -> dict:
    """Run in a fresh process: stream ``num_images`` through the scorer chunk by chunk, report high-water RSS.

    The high-water mark (VmHWM) is reset after the model is built and the prompts are projected (writing 5 to
    ``/proc/self/clear_refs``), so the peak covers the scoring phase: the resident model and prompt cache, the output
    buffers and the per-chunk working set.
    """
    model = CARZero(text_encoder=text_encoder).eval()
    width = model.config["embed_dim"]
    _, text_tokens = random_tokens(1, num_prompts, width, seed=1)
    text_cache = project_prompts(model, text_tokens, torch.float32)
    Path("/proc/self/clear_refs").write_text("5")
    baseline_kib = _resident_kib("VmRSS")
    image_to_text = torch.empty(num_images, num_prompts)
    text_to_image = torch.empty(num_images, num_prompts)
    start = time.perf_counter()
    for first in range(0, num_images, image_chunk_size):
        count = min(image_chunk_size, num_images - first)
        image_tokens, _ = random_tokens(count, 1, width, seed=first)  # stands for one encoded image batch
        scores = score_all_pairs(model, image_tokens, text_tokens, image_chunk_size, 64, text_cache=text_cache)
        image_to_text[first : first + count] = scores.image_to_text
        text_to_image[first : first + count] = scores.text_to_image
    seconds = time.perf_counter() - start
    return {
        "images": num_images,
        "baseline_mib": baseline_kib / 1024,
        "peak_mib": _resident_kib("VmHWM") / 1024,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="images in the loop-vs-all-pairs comparison")
    parser.add_argument("--prompts", type=int, default=192)
    parser.add_argument("--text-encoder", default="offline:all-MiniLM-L6-v2")
    parser.add_argument("--encode-batch", type=int, default=4)
    parser.add_argument("--probe-sizes", type=int, nargs=2, default=(8, 24))
    parser.add_argument("--probe-chunk", type=int, default=8)
    parser.add_argument("--memory-probe", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    if args.memory_probe is not None:
        sys.stdout.write(json.dumps(memory_probe(args.text_encoder, args.memory_probe, args.prompts, args.probe_chunk)))
        return

    torch.manual_seed(0)
    model = CARZero(text_encoder=args.text_encoder).eval()
    width = model.config["embed_dim"]
    image_tokens, text_tokens = random_tokens(args.images, args.prompts, width)
    pairs = args.images * args.prompts
    rows = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; fusion {width}-d x "
        f"{model.config['fusion_layers']} layers, {1 + IMAGE_TOKENS} image / {1 + TEXT_WORDS} text tokens, "
        f"{args.images} images x {args.prompts} prompts ({pairs} pairs, both directions)",
        "all-pairs = prompts' keys/values projected once (column 'prompt setup'), then every image scored against "
        "them; per-image loop = released structure",
        "",
        f"{'method':<38}{'dtype':<10}{'prompt setup s':>15}{'per image s':>13}{'speed-up':>10}{'PadChest h':>12}"
        f"{'max |diff|':>12}",
    ]
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        warm_up = image_tokens.select(slice(0, 1)), text_tokens.select(slice(0, 2))
        per_image_loop(model, *warm_up, dtype)
        score_all_pairs(model, *warm_up, dtype=dtype)
        loop_scores, loop_seconds = timed(per_image_loop, model, image_tokens, text_tokens, dtype)
        text_cache, setup_seconds = timed(project_prompts, model, text_tokens, dtype)
        all_scores, all_seconds = timed(
            score_all_pairs, model, image_tokens, text_tokens, 64, 64, dtype, text_cache=text_cache
        )
        difference = (loop_scores.mean - all_scores.mean).abs().max().item()
        loop_per_image, all_per_image = loop_seconds / args.images, all_seconds / args.images
        padchest_loop = PADCHEST_IMAGES * loop_per_image / 3600
        padchest_all = (setup_seconds + PADCHEST_IMAGES * all_per_image) / 3600
        rows.append(f"{'per-image loop (released structure)':<38}{name:<10}{'-':>15}{loop_per_image:>13.3f}"
                    f"{1.0:>10.1f}{padchest_loop:>12.2f}{'':>12}")
        rows.append(f"{'all-pairs scorer':<38}{name:<10}{setup_seconds:>15.2f}{all_per_image:>13.3f}"
                    f"{loop_per_image / all_per_image:>10.1f}{padchest_all:>12.2f}{difference:>12.2e}")
        rows.append(f"{'':<38}{'':<10}end-to-end on these {args.images} images (setup included): "
                    f"{loop_seconds / (setup_seconds + all_seconds):.1f}x; at PadChest size: "
                    f"{padchest_loop / padchest_all:.1f}x")
    rows.append("")

    images = torch.randn(args.encode_batch, 3, 224, 224)
    for dtype in (torch.float32, torch.bfloat16):
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            model.encode_images(images[:1])  # warm-up
            _, seconds = timed(model.encode_images, images)
        rows.append(f"ViT-B/16 224 px image encoding, {str(dtype).removeprefix('torch.')}: "
                    f"{args.encode_batch / seconds:.2f} images/s (batch {args.encode_batch})")
    rows.append("")

    probes = []
    for size in args.probe_sizes:
        command = [sys.executable, __file__, "--memory-probe", str(size), "--prompts", str(args.prompts),
                   "--text-encoder", args.text_encoder, "--probe-chunk", str(args.probe_chunk)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        probes.append(json.loads(output.strip().splitlines()[-1]))
    for probe in probes:
        rows.append(f"memory probe (fp32), {probe['images']} images streamed in chunks of {args.probe_chunk}: "
                    f"scoring-phase peak RSS {probe['peak_mib']:.0f} MiB, resident before scoring "
                    f"{probe['baseline_mib']:.0f} MiB (process lifetime ru_maxrss {probe['ru_maxrss_mib']:.0f} MiB)")
    small, large = probes
    growth_kib = (large["peak_mib"] - small["peak_mib"]) * 1024 / (large["images"] - small["images"])
    scores_mib = args.prompts * 4 * 3 / 2**20  # i2t, t2i and their mean, float32, per image
    extrapolated = large["peak_mib"] + scores_mib * (PADCHEST_IMAGES - large["images"])
    linear_fit = large["peak_mib"] + max(growth_kib / 1024, scores_mib) * (PADCHEST_IMAGES - large["images"])
    rows.append(f"peak difference between the probes: {growth_kib:.1f} KiB/image (the chunked working set is sized by "
                f"the chunks, not by N; this difference is not verified to be flat); N-proportional score storage: "
                f"{scores_mib * 1024:.2f} KiB/image")
    rows.append(f"PadChest {PADCHEST_IMAGES:,} x {args.prompts} extrapolated peak: {extrapolated:.0f} MiB "
                f"(larger probe's peak + score storage of the remaining images); linear fit of the two probes, an "
                f"upper bound if the difference were real growth: {linear_fit:.0f} MiB")
    sys.stdout.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
