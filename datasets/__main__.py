"""``python -m datasets``: data-layer commands.

* ``check MANIFEST [--quick | --full] [--workers N] [--report FILE] [--write-filtered OUT.csv]``: check a
  ``refseg-1`` manifest and its files, listing every problem; exit status 2 if any (see :mod:`datasets.check`).
* ``lvit ROOT --out MANIFEST``: convert an LViT-layout dataset to a ``refseg-1`` manifest (see :mod:`datasets.lvit`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from datasets.cli_utils import EXIT_BAD_INPUT, run_cli, setup_logging
from datasets.errors import InputError

PROGRAM = "python -m datasets"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description="medvl data-layer commands")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check a refseg-1 manifest and every file it names")
    check.add_argument("manifest", help="refseg-1 CSV")
    depth = check.add_mutually_exclusive_group()
    depth.add_argument("--quick", action="store_true", help="headers only (default)")
    depth.add_argument("--full", action="store_true", help="also decode every image and mask")
    check.add_argument("--workers", type=int, default=1, help="threads checking images in parallel (default 1)")
    check.add_argument("--report", help="write the report as JSON to this file")
    check.add_argument("--write-filtered", metavar="OUT_CSV", help="write a copy of the manifest without bad rows")
    lvit = commands.add_parser("lvit", help="convert an LViT-layout dataset to a refseg-1 manifest")
    lvit.add_argument("root", help="folder holding Train_Folder, Val_Folder, Test_Folder")
    lvit.add_argument("--out", required=True, help="manifest CSV to write")
    mimic = commands.add_parser("mimic-cxr", help="convert MIMIC-CXR's split, metadata and report files to pairs-1")
    mimic.add_argument("--split-csv", required=True, help="mimic-cxr-2.0.0-split.csv[.gz]")
    mimic.add_argument("--metadata-csv", required=True, help="mimic-cxr-2.0.0-metadata.csv[.gz] (ViewPosition)")
    mimic.add_argument("--reports-root", required=True, help="folder holding the reports' files/ tree")
    mimic.add_argument("--out", required=True, help="pairs-1 manifest to write (image paths relative to MIMIC-CXR-JPG)")
    mimic.add_argument("--chexpert-csv", help="mimic-cxr-2.0.0-chexpert.csv[.gz]: with --labels-out, also write the "
                       "validate split's frontal images' labels (validation data for carzero fit)")
    mimic.add_argument("--labels-out", help="CheXpert-style label table to write (needs --chexpert-csv)")
    return parser


def _check(args: argparse.Namespace) -> int:
    from datasets.check import check_manifest, write_filtered_manifest, write_report

    outputs = [Path(name).resolve() for name in (args.report, args.write_filtered) if name]
    if Path(args.manifest).resolve() in outputs or len(set(outputs)) < len(outputs):
        raise InputError("--report, --write-filtered and the manifest must be three different files; one would "
                         "overwrite another")
    report = check_manifest(args.manifest, full=args.full, workers=args.workers)
    for problem in report.problems:
        print(problem)
    status = f"{len(report.problems)} problem(s) in {len(report.bad_rows)} of {report.rows} rows" if report.problems \
        else f"no problems in {report.rows} rows"
    print(f"{report.manifest} ({report.mode} check, sha256 {report.sha256}): {status}")
    if args.report:
        write_report(report, args.report)
        print(f"report written to {args.report}")
    if args.write_filtered:
        kept = write_filtered_manifest(report, args.write_filtered)
        print(f"filtered manifest written to {args.write_filtered}: {kept} of {report.rows} rows kept")
    return EXIT_BAD_INPUT if report.problems else 0


def _lvit(args: argparse.Namespace) -> int:
    from datasets.lvit import lvit_to_manifest

    out = lvit_to_manifest(args.root, args.out)
    print(f"manifest written to {out}")
    return 0


def _mimic_cxr(args: argparse.Namespace) -> int:
    from datasets.mimic_cxr import mimic_cxr_to_pairs, mimic_cxr_validation_labels

    if bool(args.chexpert_csv) != bool(args.labels_out):
        raise InputError("--chexpert-csv and --labels-out go together")
    counts = mimic_cxr_to_pairs(args.split_csv, args.metadata_csv, args.reports_root, args.out)
    print(f"pairs-1 manifest written to {args.out}: {counts['images']} images of {counts['studies']} studies "
          f"({counts['without_impression']} studies without IMPRESSION, {counts['without_findings']} without FINDINGS)")
    if args.labels_out:
        written = mimic_cxr_validation_labels(args.split_csv, args.metadata_csv, args.chexpert_csv, args.labels_out)
        print(f"validation labels written to {args.labels_out}: {written} frontal images of the validate split")
    return 0


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    return {"check": _check, "lvit": _lvit, "mimic-cxr": _mimic_cxr}[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad input or a manifest with problems)."""
    return run_cli(PROGRAM, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
