"""``carzero demo``: CARZero end to end on the synthetic chest-radiograph benchmark v1 (``synthetic-cxr``).

1. generate the benchmark into ``OUT/synthetic-cxr`` (``python -m datasets.synthetic cxr``), or reuse it when its
   ``benchmark.json`` hashes match;
2. train with ``configs/carzero/demo.yaml`` through the ``carzero`` LightningCLI on the image-report pairs of the
   training split (a fixed epoch count, hard stop after 8 minutes or ``--max-minutes``), validating by zero-shot AUROC
   on the validation split. The text encoder is frozen (:meth:`carzero.text_encoder.TextEncoder.freeze`): each
   distinct report is encoded once, before training, and counted in the training time. Wall-clock and CPU seconds
   (``time.process_time``) are both recorded, so a run on a loaded machine can be compared with a quiet one;
3. save the portable model folder and score the 600 test images with ``carzero zeroshot`` twice: with positive
   prompts only ("There is <finding>", the paper's scoring and the headline) and with positive/negative prompt pairs
   ("There is no <finding>", ``--negative-prompts``; score ``sigmoid(pos - neg)``). The target and the controls are
   checked for both; the pair score cancels any image-level offset of the scores, but the training texts hold no
   "There is no <finding>" sentence, so it reads the negation through the frozen text encoder alone;
4. controls, scored the same way: the same model trained on SHUFFLED pairs (reports permuted across images) and the
   UNTRAINED model; both must sit at chance (macro AUROC 0.5 +- 0.05);
5. write ``results.json`` (per-class and macro figures of every run) and ``results.md`` (a table generated from it).

With ``--seeds 0 1 2`` steps 2-5 run once per training seed into ``OUT/seed_SEED`` (a seed whose finished
``results.json`` matches the config file, the benchmark and the options is reused, so an interrupted run resumes and
seeds can run as parallel processes), and ``OUT/results.json`` holds every seed's results and their mean. The target
and the controls are then checked on the means: a model that learned nothing still ranks the test images by some
function of their appearance, and on this benchmark the appearance follows the findings, so one seed's control
strays from 0.5 by several hundredths (the untrained model's per-class AUROC spans about 0.3-0.8); the mean over
seeds estimates where the control sits.
"""

from __future__ import annotations

import argparse
import csv
import io
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
from datasets.io import atomic_write_text, sha256_file

__all__ = ["DEFAULT_CONFIG", "TARGET_AUROC", "CHANCE_BAND", "main", "markdown"]

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "carzero" / "demo.yaml"
BENCHMARK = "synthetic-cxr"
NEGATIVE_PROMPTS = Path(__file__).resolve().parents[1] / "configs" / "prompts" / "synthetic-cxr_no.txt"
TARGET_AUROC = 0.85
CHANCE_BAND = (0.45, 0.55)


def _benchmark(data_dir: Path) -> dict[str, Any]:
    """Generate the v1 benchmark into ``data_dir`` or reuse an intact earlier one."""
    from datasets.synthetic.cxr import generate_cxr
    from datasets.synthetic.cxr_spec import CXR_V1
    from datasets.synthetic.reuse import reuse_or_generate

    return reuse_or_generate(data_dir, "synthetic-cxr", lambda folder: generate_cxr(folder, CXR_V1, seed=0),
                             spec=CXR_V1.to_dict())


def _aligned_manifest(out: Path) -> Path:
    """CARZero's prompt alignment of the training reports: a ``pairs-1`` copy of ``reports.csv`` whose impression is
    followed by the "There is <finding>" sentences that ``carzero align-prompts`` (rule-based, from the report text
    alone) writes for it, as CARZero's sentence pool holds both; images and splits unchanged, the benchmark folder
    untouched. On by default (``--no-align`` trains on the impressions alone); with ``text_sampling: sentence`` each
    step draws one sentence of this pool per image, as CARZero's training does.
    """
    from carzero.prompts import main as align_main

    source = out / BENCHMARK / "reports.csv"
    sentences_path = out / "aligned" / "sentences.csv"
    align_main([str(source), "--out", str(sentences_path), "--section", "impression"])
    with open(sentences_path, newline="", encoding="utf-8") as handle:
        sentences = {row["image"]: json.loads(row["sentences"]) for row in csv.DictReader(handle)}
    with open(source, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields, rows = list(reader.fieldnames or []), list(reader)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        aligned = ". ".join(sentences[row["image"]])
        writer.writerow({**row, "impression": f"{row['impression']} {aligned}." if aligned else row["impression"]})
    manifest = out / "aligned" / "reports_aligned.csv"
    atomic_write_text(manifest, buffer.getvalue())
    return manifest


def _train(options: argparse.Namespace, data: Path, manifest: Path, out: Path, seed: int, run_name: str,
           shuffle: bool) -> dict[str, Any]:
    """Train one model through the ``carzero`` LightningCLI on ``manifest`` (images under the benchmark folder
    ``data``), logging under ``out``; the wall-clock and CPU seconds include text caching."""
    from carzero.cli import build_lightning_cli

    args = [
        "--config", str(options.config),
        "--seed_everything", str(seed),
        "--data.manifest", str(manifest),
        "--data.image_root", str(data),
        "--data.val_labels", str(data / "Data_Entry_2017.csv"),
        "--data.val_image_root", str(data / "images"),
        "--data.val_split_list", str(data / "val_list.txt"),
        "--data.shuffle_reports", str(shuffle).lower(),
        "--data.seed", str(seed),
        "--trainer.logger.init_args.save_dir", str(out / "train"),
        "--trainer.logger.init_args.name", run_name,
        "--trainer.default_root_dir", str(out / "train" / run_name),
    ]
    if options.max_minutes is not None:
        args += max_time_override(options.max_minutes)
    cli = build_lightning_cli(args, run=False)
    started, cpu_started = time.perf_counter(), time.process_time()
    if not options.train_text:  # frozen pretrained text encoder: features computed once per distinct report
        cli.model.net.text.freeze(cache_features=True)
        cli.datamodule.setup("fit")
        cli.model.net.text.encode_cached(cli.datamodule.pairs.datasets["train"].distinct_texts)
    cache_seconds = time.perf_counter() - started
    cli.trainer.fit(cli.model, cli.datamodule)
    return {
        "cli": cli, "train_seconds": round(time.perf_counter() - started, 1),
        "train_cpu_seconds": round(time.process_time() - cpu_started, 1), "torch_threads": torch.get_num_threads(),
        "text_cache_seconds": round(cache_seconds, 1), "epochs": cli.trainer.current_epoch,
        "steps": cli.trainer.global_step, "shuffled_reports": shuffle,
    }


def _is_full_size(info: dict[str, Any]) -> bool:
    """Whether the benchmark has the frozen v1 split sizes (a smaller v1 copy only serves tests)."""
    from datasets.synthetic.cxr_spec import CXR_V1

    sizes = {"train": CXR_V1.train_images, "val": CXR_V1.val_images, "test": CXR_V1.test_images}
    return all(info["splits"][split]["images"] == count for split, count in sizes.items())


def _zeroshot(model_dir: Path, out: Path, data_root: Path, full_size: bool, pairs: bool) -> dict[str, Any]:
    """Score the benchmark's test split with ``carzero zeroshot`` (``pairs``: positive/negative prompt pairs) and
    return its metrics.

    ``out`` is emptied first: the demo overwrites its model folders, and ``carzero zeroshot`` refuses to resume a
    folder scored with other weights.
    """
    from carzero.zeroshot import main as zeroshot_main

    if out.is_dir():
        shutil.rmtree(out)
    args = [str(model_dir), "--benchmark", BENCHMARK, "--data-root", str(data_root), "--out", str(out)]
    if pairs:
        args += ["--negative-prompts", str(NEGATIVE_PROMPTS)]
    zeroshot_main(args if full_size else [*args, "--no-check-counts"])
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    per_class = {item["name"]: item["values"].get("auroc") for item in metrics["per_class"]}
    return {"macro_auroc": metrics["macro"]["auroc"], "macro": metrics["macro"], "per_class_auroc": per_class,
            "outputs": str(out)}


def _score(model_dir: Path, data: Path, out: Path, name: str, full_size: bool) -> dict[str, Any]:
    """Both zero-shot scorings of one model on the benchmark in ``data``, written under ``out``: ``test`` (positive
    prompts) and ``test_pairs`` (positive/negative)."""
    return {
        "test": _zeroshot(model_dir, out / f"zeroshot_{name}", data.parent, full_size, pairs=False),
        "test_pairs": _zeroshot(model_dir, out / f"zeroshot_{name}_pairs", data.parent, full_size, pairs=True),
    }


def _checks(runs: dict[str, dict[str, Any]], key: str) -> dict[str, bool | None]:
    """The target and the two chance controls for one scoring (None: that run was skipped)."""
    macro = {name: run[key]["macro_auroc"] for name, run in runs.items()}
    at_chance = {name: CHANCE_BAND[0] <= value <= CHANCE_BAND[1] for name, value in macro.items()}
    return {
        "trained_meets_target": macro["trained"] >= TARGET_AUROC,
        "shuffled_at_chance": at_chance.get("shuffled_pairs"),
        "untrained_at_chance": at_chance.get("untrained"),
    }


def _save(net: torch.nn.Module, folder: Path, preprocessing: Any, seed: int, data: Path, info: dict[str, Any],
          extra: dict) -> Path:
    from carzero.pretrained import save_pretrained

    return save_pretrained(
        net, folder, preprocessing, seed=seed, overwrite=True,
        training_manifest={"path": str(data / "reports.csv"), "sha256": info["sha256"]["reports.csv"],
                           "rows": info["splits"]["train"]["images"]},
        extra=extra,
    )


def _caption(results: dict[str, Any]) -> str:
    trained = results["runs"]["trained"]
    head = (f"CARZero on synthetic-cxr v1: zero-shot AUROC on the {results['test_images']} test images (ChestX-ray14 "
            f"format). \"pos\": prompts \"There is <finding>\" (the paper's scoring); \"pair\": sigmoid(pos - neg) "
            f"with \"There is no <finding>\".")
    if "seeds" not in results:
        return (f"{head} Training: {trained['train_seconds']:.0f} s wall-clock, {trained['train_cpu_seconds']:.0f} s "
                f"of CPU time ({trained['torch_threads']} thread(s)), {trained['epochs']} epochs, {trained['steps']} "
                f"steps, seed {results['seed']}.")
    seconds = ", ".join(f"{value:.0f}" for value in trained["train_cpu_seconds"])
    threads = "/".join(str(count) for count in sorted(set(results["torch_threads"])))
    return (f"{head} Each figure is the mean over the {len(results['seeds'])} training seeds {results['seeds']} "
            f"(macro: mean +- SD); every seed trains all three models. Training of the trained model: "
            f"{trained['steps'][0]} steps, {seconds} s of CPU time per seed ({threads} thread(s)).")


def markdown(results: dict[str, Any]) -> str:
    """The results table (Markdown) generated from a demo ``results.json``: per-class AUROC of every run, with
    positive prompts and with positive/negative prompt pairs; for several seeds, their mean and each seed's macro."""
    runs = results["runs"]
    names = list(runs)
    classes = list(runs[names[0]]["test"]["per_class_auroc"])
    several = "seeds" in results
    lines = [
        _caption(results),
        "",
        "| class | " + " | ".join(f"{name} (pos) | {name} (pair)" for name in names) + " |",
        "|---|" + "---|---|" * len(names),
    ]

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    for name in classes:
        cells = [cell(runs[run][key]["per_class_auroc"][name]) for run in names for key in ("test", "test_pairs")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    macros = [f"**{runs[run][key]['macro_auroc']:.3f}**" + (f" +- {runs[run][key]['macro_auroc_sd']:.3f}"
                                                           if several else "")
              for run in names for key in ("test", "test_pairs")]
    lines.append("| **macro AUROC** | " + " | ".join(macros) + " |")
    if several:
        lines.append("")
        lines.append("| seed | " + " | ".join(f"{name} (pos) | {name} (pair)" for name in names) + " |")
        lines.append("|---|" + "---|---|" * len(names))
        for index, seed in enumerate(results["seeds"]):
            cells = [cell(runs[run][key]["macro_auroc_per_seed"][index]) for run in names
                     for key in ("test", "test_pairs")]
            lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    lines.append("")
    basis = f" (means over {len(results['seeds'])} seeds)" if several else ""
    for key, label in (("positive_prompts", "positive prompts"), ("prompt_pairs", "prompt pairs")):
        checks = {name: {True: "yes", False: "NO", None: "not run"}[value]
                  for name, value in results["checks"][key].items()}
        lines.append(
            f"- {label}{basis}: target macro AUROC >= {TARGET_AUROC} met: {checks['trained_meets_target']}; "
            f"controls within {CHANCE_BAND[0]}-{CHANCE_BAND[1]}: shuffled pairs {checks['shuffled_at_chance']}, "
            f"untrained {checks['untrained_at_chance']}."
        )
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carzero demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/carzero_demo", help="output folder (default runs/carzero_demo)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="SEED",
                        help="training seeds (default 0). With several, each seed's demo goes to OUT/seed_SEED (a "
                             "finished one with the same config and benchmark is reused) and OUT/results.json holds "
                             "the mean over seeds, against which the target and the controls are checked")
    parser.add_argument("--train-text", action="store_true", help="fine-tune the text encoder instead of freezing it")
    parser.add_argument("--no-align", dest="align", action="store_false",
                        help="train on the impressions alone, without CARZero's 'There is <finding>' alignment "
                             "(carzero align-prompts, rules) appended to each")
    parser.add_argument("--skip-controls", action="store_true", help="train and score only the real model")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="wall-clock cap of each training run instead of the config's 8 minutes (for a loaded "
                             "machine; the fixed epoch count still bounds the work)")
    return parser


def _options_record(options: argparse.Namespace) -> dict[str, Any]:
    """The options that change a seed's results, as recorded in its ``results.json`` and compared on reuse."""
    return {"config_sha256": sha256_file(options.config), "align": options.align, "train_text": options.train_text,
            "skip_controls": options.skip_controls}


def _run_seed(options: argparse.Namespace, data: Path, info: dict[str, Any], manifest: Path, out: Path, seed: int
              ) -> dict[str, Any]:
    """The whole demo for one training seed on the benchmark in ``data`` (``info``: its ``benchmark.json``), training
    on ``manifest``, written to ``out``; returns its results (``out/results.json``)."""
    full_size = _is_full_size(info)
    if not full_size:
        logger.warning("the benchmark in %s is a smaller v1 copy: its figures are not the demo's", data)
    runs: dict[str, dict[str, Any]] = {}
    variants = [("trained", False)] if options.skip_controls else [("trained", False), ("shuffled_pairs", True)]
    config: dict[str, Any] = {}
    preprocessing = None
    for name, shuffle in variants:
        run = _train(options, data, manifest, out, seed, name, shuffle)
        cli = run.pop("cli")
        config, preprocessing = dict(cli.model.net.config), cli.datamodule.preprocessing
        model_dir = _save(cli.model.net, out / f"model_{name}", preprocessing, seed, data, info,
                          {"demo_run": name, "shuffled_reports": shuffle})
        run.update(_score(model_dir, data, out, name, full_size))
        runs[name] = run
        logger.info("seed %d, %s: test macro AUROC %.4f (positive prompts), %.4f (positive/negative pairs)", seed,
                    name, run["test"]["macro_auroc"], run["test_pairs"]["macro_auroc"])
    if not options.skip_controls:
        from carzero.model import CARZero

        torch.manual_seed(seed)
        untrained = CARZero.from_config(config)
        model_dir = _save(untrained, out / "model_untrained", preprocessing, seed, data, info,
                          {"demo_run": "untrained"})
        runs["untrained"] = {"train_seconds": 0.0, "epochs": 0, "steps": 0, "shuffled_reports": False,
                             **_score(model_dir, data, out, "untrained", full_size)}
    results = {
        "benchmark": {"name": BENCHMARK, "version": info["version"], "full_size": full_size, "sha256": info["sha256"],
                      "frozen_spec": info["frozen_spec"]},
        "test_images": info["splits"]["test"]["images"], "seed": seed, "config": str(options.config),
        **_options_record(options), "text_encoder_frozen": not options.train_text,
        "training_text": ("impression + its 'There is <finding>' alignment (carzero align-prompts, rules)"
                          if options.align else "impression"), "runs": runs,
        "checks": {"positive_prompts": _checks(runs, "test"), "prompt_pairs": _checks(runs, "test_pairs")},
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / "results.md", markdown(results))
    return results


def _finished_seed(folder: Path, options: argparse.Namespace, info: dict[str, Any], seed: int
                   ) -> dict[str, Any] | None:
    """The results of an earlier run of this seed in ``folder`` when it is complete and was made with the same
    config file contents, benchmark files (``info``) and options; None otherwise (the seed is run again)."""
    path = folder / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text(encoding="utf-8"))
    recorded = {key: results.get(key) for key in _options_record(options)}
    same = (results.get("seed") == seed and recorded == _options_record(options)
            and results["benchmark"]["sha256"] == info["sha256"])
    return results if same else None


def _over_seeds(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean (and per-seed values, sample SD) of every run's macro and per-class AUROC over seeds."""
    first = next(iter(per_seed.values()))
    runs: dict[str, dict[str, Any]] = {}
    for name in first["runs"]:
        seed_runs = [results["runs"][name] for results in per_seed.values()]
        run: dict[str, Any] = {
            key: [seed_run[key] for seed_run in seed_runs]
            for key in ("train_seconds", "train_cpu_seconds", "epochs", "steps") if key in seed_runs[0]
        }
        for key in ("test", "test_pairs"):
            macros = [seed_run[key]["macro_auroc"] for seed_run in seed_runs]
            per_class: dict[str, float | None] = {}
            for class_name in seed_runs[0][key]["per_class_auroc"]:
                values = [seed_run[key]["per_class_auroc"][class_name] for seed_run in seed_runs]
                present = [value for value in values if value is not None]
                per_class[class_name] = statistics.fmean(present) if present else None
            run[key] = {
                "macro_auroc": statistics.fmean(macros),
                "macro_auroc_sd": statistics.stdev(macros) if len(macros) > 1 else 0.0,
                "macro_auroc_per_seed": macros, "per_class_auroc": per_class,
            }
        runs[name] = run
    return runs


def _summary(options: argparse.Namespace, per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    first = next(iter(per_seed.values()))
    runs = _over_seeds(per_seed)
    return {
        "benchmark": first["benchmark"], "test_images": first["test_images"], "seeds": list(per_seed),
        "config": str(options.config), **_options_record(options),
        "text_encoder_frozen": first["text_encoder_frozen"], "training_text": first["training_text"],
        "torch_threads": [results["runs"]["trained"].get("torch_threads") for results in per_seed.values()],
        "runs": runs,
        "checks": {"positive_prompts": _checks(runs, "test"), "prompt_pairs": _checks(runs, "test_pairs")},
        "per_seed": {str(seed): results for seed, results in per_seed.items()},
    }


def main(argv: list[str]) -> int:
    """Run the demo; see the module docstring."""
    options = _parser().parse_args(argv)
    if options.max_minutes is not None and not options.max_minutes > 0:
        raise InputError(f"--max-minutes must be positive, got {options.max_minutes}")
    if not options.config.is_file():
        raise InputError(f"training config {options.config} not found; pass --config configs/carzero/demo.yaml")
    if len(set(options.seeds)) != len(options.seeds):
        raise InputError(f"--seeds must be distinct, got {options.seeds}")
    out = Path(options.out)
    data = out / BENCHMARK
    info = _benchmark(data)
    manifest = _aligned_manifest(out) if options.align else data / "reports.csv"
    if len(options.seeds) == 1:
        results = _run_seed(options, data, info, manifest, out, options.seeds[0])
    else:
        per_seed: dict[int, dict[str, Any]] = {}
        for seed in options.seeds:
            folder = out / f"seed_{seed}"
            finished = _finished_seed(folder, options, info, seed)
            if finished is not None:
                logger.info("seed %d: reusing the finished run in %s", seed, folder)
                per_seed[seed] = finished
            else:
                per_seed[seed] = _run_seed(options, data, info, manifest, folder, seed)
        results = _summary(options, per_seed)
        atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
        atomic_write_text(out / "results.md", markdown(results))
    print(markdown(results))
    print(f"results: {out / 'results.json'}")
    return 0
