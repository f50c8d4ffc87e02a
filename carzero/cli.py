"""The ``carzero`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from datasets.cli_utils import run_cli

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carzero", description=__import__("carzero").__doc__)
    parser.add_argument("command", nargs="?", help="subcommand (coming with the model's issue)")
    return parser


def _main(args: list[str]) -> int:
    _parser().print_help()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("carzero", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
