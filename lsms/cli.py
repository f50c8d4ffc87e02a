"""The ``lsms`` command line.

- ``lsms fit|validate|test|predict --config configs/lsms/<name>.yaml``: LightningCLI over
  :class:`lsms.module.LSMSModule` and :class:`datasets.refseg_datamodule.RefSegDataModule`.
- ``lsms export CKPT OUT``: a Lightning checkpoint to a portable model folder.
- ``lsms segment MODEL IMAGE [--slice N] --prompt TEXT [--prompt TEXT ...] --out DIR`` (or ``--batch CSV``).
- ``lsms evaluate MODEL MANIFEST [--split val] [--out FILE.json]``: a model folder on one split of a ``refseg-1``
  manifest with the controls and diagnostics of :mod:`lsms.evaluate` (choose variants on ``val``, report ``test``).
- ``lsms demo --out DIR``: the main job: synthetic benchmark, training, evaluation with controls, an overlay.

Bad input exits with status 2 and one line naming the culprit (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from datasets.cli_utils import Command, export_command, lightning_command, run_commands

__all__ = ["COMMANDS", "build_lightning_cli", "export", "fit", "main", "predict", "test", "validate"]


def _lightning_cli_class() -> type:
    from datasets.lightning_cli import MedvlLightningCLI

    class LSMSCLI(MedvlLightningCLI):
        """LightningCLI whose network input channels follow the data's neighbouring-slice setting."""

        def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse parser)
            parser.link_arguments(
                "data.context_slices", "model.net.init_args.in_channels", compute_fn=lambda k: 2 * k + 1
            )

    return LSMSCLI


def build_lightning_cli(args: Sequence[str] | None = None, run: bool = True):
    """Build the LightningCLI of LSMS (``run=False`` returns it with model, data and trainer instantiated)."""
    from datasets.refseg_datamodule import RefSegDataModule
    from lsms.module import LSMSModule

    return _lightning_cli_class()(
        LSMSModule, RefSegDataModule, args=list(args) if args is not None else None, run=run,
        save_config_kwargs={"overwrite": True},
    )


fit = lightning_command(build_lightning_cli, "fit")
validate = lightning_command(build_lightning_cli, "validate")
test = lightning_command(build_lightning_cli, "test")
predict = lightning_command(build_lightning_cli, "predict")
export = export_command("lsms", "lsms.pretrained:export_checkpoint", "LSMSModule")


def _segment(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lsms segment", description="Segment the lesion a prompt refers to, in one CT slice or 2D image."
    )
    parser.add_argument("model", help="model folder (lsms export / lsms demo)")
    parser.add_argument("image", nargs="?", help="NIfTI, DICOM file, DICOM series folder, PNG or NPY")
    parser.add_argument("--slice", type=int, default=None, help="slice index along the volume's 3rd array axis")
    parser.add_argument("--prompt", action="append", default=[], help="referring expression (repeatable)")
    parser.add_argument("--batch", help="CSV with columns image,slice_index,prompt instead of IMAGE/--prompt "
                        "(relative image paths are read from the CSV's folder)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    parser.add_argument("--already-hu", action="store_true", help="stored DICOM values are already HU")
    options = parser.parse_args(args)
    from datasets.errors import InputError

    if bool(options.batch) == bool(options.image):
        raise InputError("give either IMAGE with --prompt, or --batch CSV")
    import dataclasses

    from lsms.pretrained import from_pretrained
    from lsms.segment import SegmentationRequest, read_batch_csv, segment

    net, preprocessing, _ = from_pretrained(options.model)
    if options.already_hu:
        preprocessing = dataclasses.replace(preprocessing, already_hu=True)
    if options.batch:
        requests = read_batch_csv(options.batch)
    else:
        requests = [SegmentationRequest(Path(options.image), options.slice, tuple(options.prompt))]
    rows = segment(net, preprocessing, requests, options.out, options.threshold, progress=bool(options.batch))
    print(f"wrote {len(rows)} segmentation(s) to {options.out}")
    return 0


def _evaluate(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lsms evaluate",
        description="Score a model folder on one split of a refseg-1 manifest: true and shuffled prompts, text-blind "
        "baselines, grounding accuracy and Dice by lesion size and manifest column.",
    )
    parser.add_argument("model", help="model folder (lsms export / lsms demo)")
    parser.add_argument("manifest", help="refseg-1 manifest CSV")
    parser.add_argument("--split", default="val", help="manifest split to score (default val)")
    parser.add_argument(
        "--group-by", nargs="*", default=None,
        help="manifest columns to break Dice and grounding accuracy down by (template_id, case_id or any extra "
        "column; default: attribute, when the manifest has it)",
    )
    parser.add_argument("--cache-dir", default=None, help="preprocessing cache folder (default: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled-prompt draw (default 0)")
    parser.add_argument("--out", help="write the results JSON here")
    options = parser.parse_args(args)
    import json

    from datasets.errors import InputError
    from datasets.io import atomic_write_text
    from datasets.refseg import read_refseg_manifest
    from lsms.evaluate import breakdowns, evaluate_with_controls
    from lsms.pretrained import from_pretrained

    if options.out and Path(options.out).is_dir():
        raise InputError(f"--out {options.out} is a folder; name the results JSON file")
    rows = read_refseg_manifest(options.manifest).rows(options.split)
    if not rows:
        raise InputError(f"{options.manifest} has no rows in split {options.split!r}")
    group_by = options.group_by
    if group_by is None:
        group_by = ["attribute"] if all("attribute" in row.extra for row in rows) else []
    net, preprocessing, _ = from_pretrained(options.model)
    results = evaluate_with_controls(
        net, rows, preprocessing, cache_dir=options.cache_dir, seed=options.seed, group_by=group_by
    )
    results = {"model": str(options.model), "manifest": str(options.manifest), "split": options.split, **results}
    if options.out:
        atomic_write_text(Path(options.out), json.dumps(results, indent=2) + "\n")
    multi = results["multi_lesion"]
    if multi["expressions"]:
        controls = (f"multi-lesion ({multi['expressions']}): Dice {multi['dice_true_prompts']['mean']:.3f}, shuffled "
                    f"prompts {multi['dice_shuffled_prompts']['mean']:.3f}, grounding accuracy "
                    f"{multi['grounding_accuracy']['mean']:.3f}")
    else:
        controls = "no slice has two lesions, so the shuffled-prompt and grounding controls do not apply"
    dice = results["true_prompts"]["dice"]
    print(f"{options.split}: {results['expressions']} expressions, Dice {dice:.3f}; {controls}")
    for metric, group, text in breakdowns(results):
        print(f"{metric} by {group}: {text}")
    return 0


def _demo(args: list[str]) -> int:
    from lsms.demo import run

    print(run(args))
    return 0


COMMANDS: dict[str, Command] = {
    "fit": Command("lsms.cli:fit", "train with LightningCLI (--config configs/lsms/<name>.yaml)"),
    "validate": Command("lsms.cli:validate", "validate a checkpoint with LightningCLI"),
    "test": Command("lsms.cli:test", "test a checkpoint with LightningCLI"),
    "predict": Command("lsms.cli:predict", "predict masks with LightningCLI"),
    "export": Command("lsms.cli:export", "convert a Lightning checkpoint into a portable model folder"),
    "segment": Command("lsms.cli:_segment", "MODEL IMAGE [--slice N] --prompt TEXT ... --out DIR (or --batch CSV)"),
    "evaluate": Command("lsms.cli:_evaluate", "MODEL MANIFEST [--split val] [--group-by COL] [--out FILE.json]"),
    "demo": Command("lsms.cli:_demo", "end-to-end demo on the synthetic RefHL-Seg-style benchmark, with controls"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lsms`` console script; returns the exit status (2 for bad input)."""
    return run_commands("lsms", __import__("lsms").__doc__, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
