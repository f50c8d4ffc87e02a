"""Command line of the synthetic benchmarks: ``python -m datasets.synthetic refhl --out DIR [options]``.

Exit status 0 on success, 2 on bad input (one line on stderr; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from datasets.cli_utils import run_cli, setup_logging
from datasets.synthetic.output import add_generator_arguments
from datasets.synthetic.phantom import SUPPORTED_ORIENTATIONS
from datasets.synthetic.refhl import generate_refhl
from datasets.synthetic.spec import REFHL_V1

__all__ = ["build_parser", "main"]

PROGRAM = "python -m datasets.synthetic"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per benchmark)."""
    parser = argparse.ArgumentParser(prog=PROGRAM, description="Generate synthetic medvl benchmarks.")
    commands = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    refhl = commands.add_parser(
        "refhl", help="RefHL-Seg-style referring liver-lesion segmentation on CT phantoms (spec v1)",
        description="Write CT phantoms (NIfTI), lesion label volumes, manifest.csv (refseg-1), benchmark.json and "
        "README.md into --out.",
    )
    add_generator_arguments(refhl, ("train", "val", "test"), "cases", REFHL_V1.cases)
    refhl.add_argument(
        "--orientation", choices=SUPPORTED_ORIENTATIONS, default="RAS",
        help="array order of the stored volumes; the world-space content is the same (default: RAS)",
    )
    for name, (_, summary) in DELEGATED.items():
        commands.add_parser(name, help=f"{summary}; see `{PROGRAM} {name} --help`", add_help=False)
    return parser


# Generators with their own command line: ``python -m datasets.synthetic <name> --out DIR ...`` runs ``module:main``.
DELEGATED = {
    "cxr": ("datasets.synthetic.cxr", "chest radiographs with the 14 ChestX-ray14 findings and reports (CARZero demo)"),
    "ct3d": ("datasets.synthetic.ct3d", "3D chest CT with CT-RATE's 18 abnormalities and reports (BrgSA demo)"),
}


def main(argv: list[str]) -> int:
    """Parse ``argv`` and generate; returns the exit status."""
    if argv and argv[0] in DELEGATED:
        import importlib

        return importlib.import_module(DELEGATED[argv[0]][0]).main(list(argv[1:]))
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        spec = dataclasses.replace(
            REFHL_V1, train_cases=args.train_cases, val_cases=args.val_cases, test_cases=args.test_cases
        )
    except ValueError as err:
        from datasets.errors import InputError

        raise InputError(str(err)) from err
    info = generate_refhl(args.out, spec, seed=args.seed, orientation=args.orientation, overwrite=args.overwrite)
    counts = ", ".join(f"{split}: {c['cases']} cases, {c['rows']} rows" for split, c in info["splits"].items())
    print(f"wrote {args.out} ({counts})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(PROGRAM, main))
