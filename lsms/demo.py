"""``lsms demo``: the package's main job, end to end on the synthetic RefHL-Seg-style benchmark v1.

1. generate the benchmark (``python -m datasets.synthetic refhl``), or reuse it when its manifest hash matches;
2. train LSMS with ``configs/lsms/demo.yaml`` through LightningCLI (hard stop after 6 minutes);
3. evaluate on the held-out test cases (held-out templates too) with true prompts, shuffled prompts, the text-blind
   baselines and the untrained model (:mod:`lsms.evaluate`);
4. save the portable model folder and segment a held-out slice with ``lsms segment``'s code, writing an overlay;
5. write ``results.json`` and ``results.md`` (the README table is generated from such a JSON by
   ``lsms demo-report``).

``--ablation --seeds 0 1 2`` trains the full model and the no-language ablation for each seed and writes
``ablation.json`` with mean and standard deviation.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from datasets.cli_utils import max_time_override
from datasets.errors import InputError
from datasets.io import atomic_write_text
from lsms.evaluate import breakdowns

__all__ = ["run", "DEFAULT_CONFIG", "results_markdown", "ablation_markdown"]

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "lsms" / "demo.yaml"


def _benchmark(data_dir: Path) -> dict[str, Any]:
    """Generate the v1 benchmark into ``data_dir`` or reuse an intact earlier one."""
    from datasets.synthetic.refhl import generate_refhl
    from datasets.synthetic.reuse import reuse_or_generate
    from datasets.synthetic.spec import REFHL_V1

    return reuse_or_generate(
        data_dir, "synthetic RefHL-Seg-style", lambda folder: generate_refhl(folder, REFHL_V1, seed=0),
        spec=REFHL_V1.to_dict(),
    )


def _train(config: Path, out: Path, manifest: Path, seed: int, run_name: str, overrides: list[str]) -> dict[str, Any]:
    from lsms.cli import build_lightning_cli

    args = [
        "--config", str(config),
        "--seed_everything", str(seed),
        "--data.manifest", str(manifest),
        "--data.cache_dir", str(out / "cache"),
        "--trainer.logger.init_args.save_dir", str(out / "train"),
        "--trainer.logger.init_args.name", run_name,
        "--trainer.default_root_dir", str(out / "train" / run_name),
        *overrides,
    ]
    cli = build_lightning_cli(args, run=False)
    started = time.perf_counter()
    cli.datamodule.setup("fit")
    computed = sum(dataset.fill_cache(progress=True) for dataset in cli.datamodule.datasets.values())
    cache_seconds = time.perf_counter() - started
    logger.info("preprocessing cache: %d entries computed in %.0f s", computed, cache_seconds)
    started = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    seconds = time.perf_counter() - started
    return {
        "cli": cli, "cache_seconds": cache_seconds, "train_seconds": seconds,
        "epochs": cli.trainer.current_epoch, "steps": cli.trainer.global_step,
    }


def _evaluate(net: torch.nn.Module, data: Any, out: Path, seed: int) -> dict[str, Any]:
    from datasets.refseg import read_refseg_manifest
    from lsms.evaluate import evaluate_with_controls

    rows = read_refseg_manifest(data.manifest).rows("test")
    return evaluate_with_controls(net, rows, data.preprocessing, cache_dir=str(out / "cache"), seed=seed)


def _example_segmentation(model_dir: Path, manifest: Path, out: Path) -> list[dict[str, str]]:
    """Segment a held-out test slice holding two or more lesions, one overlay per lesion's expression."""
    from datasets.refseg import read_refseg_manifest
    from lsms.pretrained import from_pretrained
    from lsms.segment import SegmentationRequest, segment

    rows = read_refseg_manifest(manifest).rows("test")
    by_slice: dict[tuple[str, int | None], dict[str, str]] = {}
    for row in rows:
        by_slice.setdefault((str(row.image), row.slice_index), {}).setdefault(row.lesion_id, row.text)
    image, index = next((key for key, lesions in by_slice.items() if len(lesions) >= 2), next(iter(by_slice)))
    net, preprocessing, _ = from_pretrained(model_dir)
    request = SegmentationRequest(Path(image), index, tuple(by_slice[(image, index)].values()))
    shutil.rmtree(out, ignore_errors=True)  # the demo's own masks of an earlier model folder, now overwritten
    return segment(net, preprocessing, [request], out)


def _run(options: argparse.Namespace, out: Path, manifest: Path, seed: int, variant: str) -> dict[str, Any]:
    overrides = ["--model.net.init_args.use_language", "false"] if variant == "no_language" else []
    if options.max_minutes is not None:
        overrides += max_time_override(options.max_minutes)
    if options.max_epochs is not None:
        overrides += ["--trainer.max_epochs", str(options.max_epochs)]
    trained = _train(options.config, out, manifest, seed, f"{variant}_seed{seed}", overrides)
    cli = trained.pop("cli")
    net = cli.model.net
    return {
        "variant": variant, "seed": seed, **trained,
        "test": _evaluate(net, cli.datamodule, out, seed),
        "cli": cli,
    }


def results_markdown(results: dict[str, Any]) -> str:
    """The README table of a demo ``results.json``."""
    test = results["test"]
    multi = test["multi_lesion"]
    lines = [
        f"Synthetic RefHL-Seg-style benchmark v1, held-out test cases and templates ({test['expressions']} "
        f"expressions; {multi['expressions']} on slices with 2-3 lesions). Training: {results['steps']} steps "
        f"({results['epochs']} epochs) in {results['train_seconds']:.0f} s wall-clock, seed {results['seed']}.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for name, value in test["true_prompts"].items():
        lines.append(f"| {name} (true prompts, all) | {value:.3f} |")
    rows = [
        ("Dice, true prompts (multi-lesion slices)", multi["dice_true_prompts"]["mean"]),
        ("Dice, shuffled prompts (another lesion's text)", multi["dice_shuffled_prompts"]["mean"]),
        ("Dice, 'every lesion' baseline", multi["dice_every_lesion_baseline"]["mean"]),
        ("Dice, 'largest lesion' baseline", multi["dice_largest_lesion_baseline"]["mean"]),
        ("Grounding accuracy (multi-lesion slices)", multi["grounding_accuracy"]["mean"]),
        ("Dice, untrained model (true prompts, all)", results["untrained"]["true_prompts"]["dice"]),
    ]
    lines += [f"| {name} | {value:.3f} |" for name, value in rows]
    lines += [f"| {metric} by {group} | {text} |" for metric, group, text in breakdowns(test)]
    return "\n".join(lines) + "\n"


def ablation_markdown(results: dict[str, Any]) -> str:
    """The README table of an ``ablation.json``: full model vs no-language ablation, mean ± sd over seeds."""
    runs = results["runs"]
    lines = [
        f"{len(runs)} runs of {runs[0]['steps']} training steps ({runs[0]['epochs']} epochs) each, test split of the "
        f"synthetic RefHL-Seg-style benchmark v{results['benchmark']['version']}.",
        "",
        "| variant | seeds | test Dice (true prompts), mean ± sd | Dice gap true - shuffled prompts | grounding "
        "accuracy (multi-lesion slices) |",
        "|---|---|---|---|---|",
    ]
    for variant, summary in _ablation_summary(runs).items():
        lines.append(
            f"| {variant} | {', '.join(map(str, summary['seeds']))} | {summary['dice_mean']:.3f} ± "
            f"{summary['dice_sd']:.3f} | {summary['shuffle_gap_mean']:.3f} | {summary['grounding_mean']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _ablation_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for variant in sorted({run["variant"] for run in runs}):
        dice = [run["test"]["true_prompts"]["dice"] for run in runs if run["variant"] == variant]
        multi = [run["test"]["multi_lesion"] for run in runs if run["variant"] == variant]
        summary[variant] = {
            "dice_mean": statistics.mean(dice), "dice_sd": statistics.stdev(dice) if len(dice) > 1 else 0.0,
            "shuffle_gap_mean": statistics.mean(m["gap_true_minus_shuffled"] for m in multi),
            "grounding_mean": statistics.mean(m["grounding_accuracy"]["mean"] for m in multi),
            "seeds": [run["seed"] for run in runs if run["variant"] == variant],
        }
    return summary


def run(argv: list[str]) -> str:
    """Run the demo (see the module docstring) and return the summary for the terminal."""
    parser = argparse.ArgumentParser(prog="lsms demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training config (configs/lsms/demo.yaml)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--max-minutes", type=float, default=None, help="training time limit (config: 6 minutes)")
    parser.add_argument("--max-epochs", type=int, default=None, help="training epochs (config: see demo.yaml)")
    parser.add_argument("--ablation", action="store_true", help="train full and no-language models for --seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of --ablation")
    options = parser.parse_args(argv)
    if not options.config.is_file():
        raise InputError(f"training config {options.config} not found; pass --config configs/lsms/demo.yaml")
    out = Path(options.out)
    info = _benchmark(out / "data")
    manifest = out / "data" / "manifest.csv"
    benchmark = {"name": info["name"], "version": info["version"], "manifest_sha256": info["manifest_sha256"],
                 "frozen_spec": info["frozen_spec"]}

    if options.ablation:
        runs = []
        for seed in options.seeds:
            for variant in ("full", "no_language"):
                run = _run(options, out, manifest, seed, variant)
                run.pop("cli")
                runs.append(run)
                logger.info("%s seed %d: test Dice %.3f", variant, seed, run["test"]["true_prompts"]["dice"])
        results = {"benchmark": benchmark, "runs": runs, "summary": _ablation_summary(runs)}
        atomic_write_text(out / "ablation.json", json.dumps(results, indent=2) + "\n")
        return ablation_markdown(results)

    run = _run(options, out, manifest, options.seed, "full")
    cli = run.pop("cli")
    from lsms.model import LSMS
    from lsms.pretrained import save_pretrained

    torch.manual_seed(options.seed)
    untrained = LSMS(**cli.model.net.config)
    run["untrained"] = _evaluate(untrained, cli.datamodule, out, options.seed)
    model_dir = save_pretrained(
        cli.model.net, out / "model", cli.datamodule.preprocessing, seed=options.seed,
        training_manifest={"path": str(manifest), "sha256": info["manifest_sha256"],
                           "rows": info["splits"]["train"]["rows"]},
        extra={"test_metrics": run["test"]["true_prompts"], "benchmark": benchmark}, overwrite=True,
    )
    run["example_segmentation"] = _example_segmentation(model_dir, manifest, out / "segment")
    results = {"benchmark": benchmark, **run}
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    table = results_markdown(results)
    atomic_write_text(out / "results.md", table)
    return f"{table}\nmodel folder: {model_dir}; overlays: {out / 'segment'}"
