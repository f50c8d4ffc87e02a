"""``carzero demo``: CARZero end to end on the synthetic chest-radiograph benchmark v1 (``synthetic-cxr``).

1. generate the benchmark into ``OUT/synthetic-cxr`` (``python -m datasets.synthetic cxr``), or reuse it when its
   ``benchmark.json`` hashes match;
2. train with ``configs/carzero/demo.yaml`` through the ``carzero`` LightningCLI on the image-report pairs of the
   training split (hard stop after 8 minutes), validating by zero-shot AUROC on the validation split;
3. save the portable model folder and score the 600 test images with ``carzero zeroshot`` (ChestX-ray14 prompts
   "There is <finding>", positive prompts only);
4. controls, scored the same way: the same model trained on SHUFFLED pairs (reports permuted across images) and the
   UNTRAINED model; both must sit at chance (macro AUROC 0.5 +- 0.05);
5. write ``results.json`` (per-class and macro figures of every run) and ``results.md`` (a table generated from it).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from datasets.errors import InputError
from datasets.io import atomic_write_text, sha256_file

__all__ = ["DEFAULT_CONFIG", "TARGET_AUROC", "CHANCE_BAND", "main", "markdown"]

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "carzero" / "demo.yaml"
BENCHMARK = "synthetic-cxr"
TARGET_AUROC = 0.85
CHANCE_BAND = (0.45, 0.55)


def _benchmark(data_dir: Path) -> dict[str, Any]:
    """Generate the v1 benchmark into ``data_dir`` or reuse an intact earlier one."""
    info_path = data_dir / "benchmark.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        changed = [name for name, digest in info.get("sha256", {}).items() if sha256_file(data_dir / name) != digest]
        if info.get("version") != 1 or changed:
            raise InputError(f"{data_dir} holds a benchmark that is not an intact v1 ({changed or 'version'} differ); "
                             "remove it")
        logger.info("reusing the synthetic-cxr benchmark v1 in %s", data_dir)
        return info
    from datasets.synthetic.cxr import generate_cxr
    from datasets.synthetic.cxr_spec import CXR_V1

    logger.info("generating the synthetic-cxr benchmark v1 into %s", data_dir)
    return generate_cxr(data_dir, CXR_V1, seed=0)


class _TextFeatureCache:
    """Features of a frozen text encoder, computed once per distinct text (eval mode, no gradients) and re-padded per
    batch. CARZero's text encoder has no feature cache of its own; with the encoder frozen the outputs are the same as
    re-encoding every step, at a fraction of the cost on a CPU.
    """

    def __init__(self, encoder: torch.nn.Module, batch_size: int = 64) -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        self.features: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def fill(self, texts: list[str]) -> None:
        """Encode the texts not cached yet."""
        from carzero.text_encoder import TextEncoder

        todo = list(dict.fromkeys(text for text in texts if text not in self.features))
        was_training = self.encoder.training
        self.encoder.eval()
        with torch.no_grad():
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                sentence, tokens, mask = TextEncoder.forward(self.encoder, chunk)  # the real encoder, not the cache
                for i, text in enumerate(chunk):
                    self.features[text] = (sentence[i], tokens[i, : int(mask[i].sum())])  # right-padded: a prefix
        self.encoder.train(was_training)

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.fill(texts)
        sentences, tokens = zip(*(self.features[text] for text in texts))
        length = max(t.shape[0] for t in tokens)
        padded = torch.stack([torch.nn.functional.pad(t, (0, 0, 0, length - t.shape[0])) for t in tokens])
        mask = torch.stack([torch.arange(length) < t.shape[0] for t in tokens])
        return torch.stack(sentences), padded, mask


def _train(options: argparse.Namespace, out: Path, run_name: str, shuffle: bool) -> dict[str, Any]:
    from carzero.cli import build_lightning_cli

    data = out / BENCHMARK
    args = [
        "--config", str(options.config),
        "--seed_everything", str(options.seed),
        "--data.manifest", str(data / "reports.csv"),
        "--data.val_labels", str(data / "Data_Entry_2017.csv"),
        "--data.val_image_root", str(data / "images"),
        "--data.val_split_list", str(data / "val_list.txt"),
        "--data.shuffle_reports", str(shuffle).lower(),
        "--data.seed", str(options.seed),
        "--trainer.logger.init_args.save_dir", str(out / "train"),
        "--trainer.logger.init_args.name", run_name,
        "--trainer.default_root_dir", str(out / "train" / run_name),
    ]
    cli = build_lightning_cli(args, run=False)
    text = cli.model.net.text
    started = time.perf_counter()
    if not options.train_text:  # frozen pretrained MiniLM: no gradients, features cached per distinct text
        text.requires_grad_(False)
        cache = _TextFeatureCache(text)
        cli.datamodule.setup("fit")
        cache.fill(cli.datamodule.pairs.datasets["train"].texts)
        text.forward = cache
    cache_seconds = time.perf_counter() - started
    try:
        cli.trainer.fit(cli.model, cli.datamodule)
    finally:
        text.__dict__.pop("forward", None)  # the plain encoder again, for saving and scoring
    seconds = time.perf_counter() - started
    return {"cli": cli, "train_seconds": round(seconds, 1), "text_cache_seconds": round(cache_seconds, 1),
            "epochs": cli.trainer.current_epoch, "steps": cli.trainer.global_step, "shuffled_reports": shuffle}


def _zeroshot(model_dir: Path, out: Path, data_root: Path) -> dict[str, Any]:
    """Score the benchmark's test split with ``carzero zeroshot`` and return its metrics."""
    from carzero.zeroshot import main as zeroshot_main

    zeroshot_main([str(model_dir), "--benchmark", BENCHMARK, "--data-root", str(data_root), "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    per_class = {item["name"]: item["values"].get("auroc") for item in metrics["per_class"]}
    return {"macro_auroc": metrics["macro"]["auroc"], "macro": metrics["macro"], "per_class_auroc": per_class,
            "outputs": str(out)}


def _save(net: torch.nn.Module, folder: Path, preprocessing: Any, seed: int, info: dict[str, Any], extra: dict
          ) -> Path:
    from carzero.pretrained import save_pretrained

    manifest = folder.parent / BENCHMARK / "reports.csv"
    return save_pretrained(
        net, folder, preprocessing, seed=seed, overwrite=True,
        training_manifest={"path": str(manifest), "sha256": info["sha256"]["reports.csv"],
                           "rows": info["splits"]["train"]["images"]},
        extra=extra,
    )


def markdown(results: dict[str, Any]) -> str:
    """The results table (Markdown) generated from ``results.json``."""
    runs = results["runs"]
    names = list(runs)
    classes = list(runs[names[0]]["test"]["per_class_auroc"])
    trained = runs["trained"]
    lines = [
        f"CARZero on synthetic-cxr v1: zero-shot AUROC on the {results['test_images']} test images "
        f"(ChestX-ray14 format, prompts \"There is <finding>\"). Training: {trained['train_seconds']:.0f} s on this "
        f"CPU, {trained['epochs']} epochs, {trained['steps']} steps, seed {results['seed']}.",
        "",
        "| class | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for name in classes:
        cells = [runs[run]["test"]["per_class_auroc"][name] for run in names]
        lines.append(f"| {name} | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in cells) + " |")
    lines.append("| **macro AUROC** | " + " | ".join(f"**{runs[r]['test']['macro_auroc']:.3f}**" for r in names) + " |")
    checks = {key: {True: "yes", False: "NO", None: "not run"}[value] for key, value in results["checks"].items()}
    lines += ["", f"Target macro AUROC >= {TARGET_AUROC} met: {checks['trained_meets_target']}. Controls within "
              f"{CHANCE_BAND[0]}-{CHANCE_BAND[1]}: shuffled pairs {checks['shuffled_at_chance']}, untrained "
              f"{checks['untrained_at_chance']}."]
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carzero demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/carzero_demo", help="output folder (default runs/carzero_demo)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training config")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--train-text", action="store_true", help="fine-tune the text encoder instead of freezing it")
    parser.add_argument("--skip-controls", action="store_true", help="train and score only the real model")
    return parser


def main(argv: list[str]) -> int:
    """Run the demo; see the module docstring."""
    options = _parser().parse_args(argv)
    if not options.config.is_file():
        raise InputError(f"training config {options.config} not found; pass --config configs/carzero/demo.yaml")
    out = Path(options.out)
    info = _benchmark(out / BENCHMARK)
    runs: dict[str, dict[str, Any]] = {}
    variants = [("trained", False)] if options.skip_controls else [("trained", False), ("shuffled_pairs", True)]
    config: dict[str, Any] = {}
    preprocessing = None
    for name, shuffle in variants:
        run = _train(options, out, name, shuffle)
        cli = run.pop("cli")
        config, preprocessing = dict(cli.model.net.config), cli.datamodule.preprocessing
        model_dir = _save(cli.model.net, out / f"model_{name}", preprocessing, options.seed, info,
                          {"demo_run": name, "shuffled_reports": shuffle})
        run["test"] = _zeroshot(model_dir, out / f"zeroshot_{name}", out)
        runs[name] = run
        logger.info("%s: test macro AUROC %.4f", name, run["test"]["macro_auroc"])
    if not options.skip_controls:
        from carzero.model import CARZero

        torch.manual_seed(options.seed)
        untrained = CARZero.from_config(config)
        model_dir = _save(untrained, out / "model_untrained", preprocessing, options.seed, info,
                          {"demo_run": "untrained"})
        runs["untrained"] = {"train_seconds": 0.0, "epochs": 0, "steps": 0, "shuffled_reports": False,
                             "test": _zeroshot(model_dir, out / "zeroshot_untrained", out)}
    macro = {name: run["test"]["macro_auroc"] for name, run in runs.items()}
    at_chance = {name: CHANCE_BAND[0] <= value <= CHANCE_BAND[1] for name, value in macro.items()}
    results = {
        "benchmark": {"name": BENCHMARK, "version": info["version"], "sha256": info["sha256"]},
        "test_images": info["splits"]["test"]["images"], "seed": options.seed, "config": str(options.config),
        "text_encoder_frozen": not options.train_text, "runs": runs,
        "checks": {
            "trained_meets_target": macro["trained"] >= TARGET_AUROC,
            "shuffled_at_chance": at_chance.get("shuffled_pairs"),
            "untrained_at_chance": at_chance.get("untrained"),
        },
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    atomic_write_text(out / "results.md", table)
    print(table)
    print(f"results: {out / 'results.json'}; model folder: {out / 'model_trained'}")
    return 0
