"""The ``brgsa`` command line: ``brgsa <command> [arguments]``.

Subcommands live in :data:`COMMANDS` as ``name -> Command("module:function", help)``; the function takes the argument
list after the command name and returns an exit status. Its module is imported only when the command runs, so
``brgsa metrics`` does not pay for importing Lightning. To add a command, add one entry.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple

from datasets.cli_utils import run_cli
from datasets.errors import InputError

__all__ = ["Command", "COMMANDS", "main"]


class Command(NamedTuple):
    """A subcommand: ``target`` is ``"module:function"``, the function taking the remaining arguments."""

    target: str
    help: str


COMMANDS: dict[str, Command] = {
    "metrics": Command("brgsa.metrics:main", "per-class and macro metrics of per-volume scores against CT-RATE labels"),
    "summarize": Command("brgsa.summarize:main", "summarise reports into short finding sentences (rules or local LLM)"),
    "prepare": Command("brgsa.prepare:main", "preprocess CT volumes into the cache (parallel, resumable)"),
}


def _usage() -> str:
    lines = [__import__("brgsa").__doc__.strip(), "", "usage: brgsa <command> [arguments] [--debug]", "", "commands:"]
    lines += [f"  {name:<18} {command.help}" for name, command in COMMANDS.items()]
    lines.append("\n`brgsa <command> --help` describes a command; --debug shows tracebacks for bad input.")
    return "\n".join(lines)


def _dispatch(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        raise InputError(f"unknown command {name!r}; choose from: {', '.join(COMMANDS)}")
    module, function = COMMANDS[name].target.split(":")
    return getattr(importlib.import_module(module), function)(rest)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``brgsa`` script; returns the exit status (2 for bad input)."""
    args = list(sys.argv[1:] if argv is None else argv)
    program = f"brgsa {args[0]}" if args and args[0] in COMMANDS else "brgsa"
    return run_cli(program, _dispatch, args)


if __name__ == "__main__":
    sys.exit(main())
