"""The command-line convention shared by every medvl entry point.

Bad input ends with exit status 2 and one line on stderr naming the culprit; there is no traceback unless
``--debug`` is given. Unexpected errors keep their traceback (they are bugs, not bad input).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from datasets.errors import InputError, MissingDependencyError

__all__ = [
    "EXIT_BAD_INPUT",
    "Command",
    "export_command",
    "lightning_command",
    "max_time_override",
    "run_cli",
    "run_commands",
    "setup_logging",
]

EXIT_BAD_INPUT = 2


def max_time_override(minutes: float) -> list[str]:
    """LightningCLI arguments setting ``trainer.max_time`` (``DD:HH:MM:SS``) to ``minutes``, rounded to seconds."""
    seconds = round(minutes * 60)
    return ["--trainer.max_time", f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"]


def setup_logging(verbose: bool = False) -> None:
    """Send library logs to stderr at INFO (DEBUG with ``verbose``) and silence known third-party noise."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:  # transformers' weight-loading bar would break the one-line error convention on stderr
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return
    transformers_logging.disable_progress_bar()


def run_cli(program: str, main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(args)`` under the package's error convention and return the exit status.

    Args:
        program: name printed before the message, e.g. ``"lsms segment"``.
        main: function taking the argument list (without ``--debug``) and returning an exit status or None.
        argv: arguments; defaults to ``sys.argv[1:]``.

    Returns:
        0 on success, 2 for bad input (:class:`InputError`, :class:`MissingDependencyError`, missing files).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    try:
        status = main(args)
    except (InputError, MissingDependencyError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        if debug:
            raise
        print(f"{program}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return int(status or 0)


def _one_line(err: BaseException) -> str:
    text = str(err) if not isinstance(err, OSError) or not err.filename else f"{err.strerror}: {err.filename}"
    return " ".join(text.split())


class Command(NamedTuple):
    """A subcommand of a model's script: ``target`` is ``"module:function"``, the function taking the argument list
    after the command name and returning an exit status; ``help`` is its line in the usage."""

    target: str
    help: str


def _usage(program: str, summary: str, commands: Mapping[str, Command]) -> str:
    lines = [summary.strip(), "", f"usage: {program} <command> [arguments] [--debug]", "", "commands:"]
    lines += [f"  {name:<18} {command.help}" for name, command in commands.items()]
    lines.append(f"\n`{program} <command> --help` describes a command; --debug shows tracebacks for bad input.")
    return "\n".join(lines)


def _load(program: str, name: str, target: str) -> Callable[[list[str]], int]:
    module, function = target.split(":")
    try:
        implementation = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:
            raise
        raise InputError(f"`{program} {name}` is not available in this installation: module {module} is missing"
                         ) from err
    return getattr(implementation, function)


def run_commands(
    program: str, summary: str, commands: Mapping[str, Command], argv: Sequence[str] | None = None
) -> int:
    """The ``main`` of a model's script: ``program <command> [arguments]`` under :func:`run_cli`'s convention.

    A command's module is imported only when it runs (``lsms evaluate`` does not pay for importing Lightning's CLI).
    No command, ``-h`` or ``--help`` prints the usage; an unknown command is bad input (exit status 2).

    Args:
        program: the script's name, e.g. ``"lsms"``.
        summary: first lines of the usage (what the model is).
        commands: ``name -> Command``, in the order the usage lists them.
        argv: arguments; defaults to ``sys.argv[1:]``.

    Returns:
        The command's exit status; 2 for bad input and usage errors of argparse / jsonargparse.
    """
    args = list(sys.argv[1:] if argv is None else argv)

    def dispatch(args: list[str]) -> int:
        if not args or args[0] in ("-h", "--help"):
            print(_usage(program, summary, commands))
            return 0
        name, rest = args[0], args[1:]
        if name not in commands:
            raise InputError(f"unknown command {name!r}; choose from: {', '.join(commands)}")
        command = _load(program, name, commands[name].target)
        setup_logging()
        return command(rest)

    name = f"{program} {args[0]}" if args and args[0] in commands else program
    try:
        return run_cli(name, dispatch, args)
    except SystemExit as exit_:  # argparse / jsonargparse usage errors and --help
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else EXIT_BAD_INPUT)


_NO_LAST_CHECKPOINT = r'.*ckpt_path="last"\) is set, but there is no last checkpoint'


def _resumes_from_last(args: Sequence[str]) -> bool:
    """Whether the arguments ask LightningCLI for ``--ckpt_path last``."""
    pairs = zip(args, [*args[1:], ""])
    return any(arg == "--ckpt_path=last" or (arg == "--ckpt_path" and value == "last") for arg, value in pairs)


def lightning_command(build_lightning_cli: Callable[[Sequence[str] | None], object], subcommand: str
                      ) -> Callable[[list[str]], int]:
    """A command running LightningCLI's ``subcommand`` (``fit``, ``validate``, ...) on the arguments after it.

    Run from the script itself, LightningCLI reads ``sys.argv`` (it warns when given both).
    """

    def command(args: list[str]) -> int:
        arguments = [subcommand, *args]
        with warnings.catch_warnings():
            if _resumes_from_last(args):
                warnings.filterwarnings("error", message=_NO_LAST_CHECKPOINT)
            try:
                build_lightning_cli(None if arguments == sys.argv[1:] else arguments)
            except Warning as warning:  # Lightning only warns, then trains from scratch
                raise InputError(
                    "--ckpt_path last: no last.ckpt where this run's ModelCheckpoint saves. Without a fixed dirpath "
                    "a restarted run looks in a new logger version folder; set ModelCheckpoint's dirpath (and "
                    "save_last: true, see docs/scaling.md), or pass the .ckpt file, or leave out --ckpt_path to start "
                    "afresh"
                ) from warning
        return 0

    command.__doc__ = f"LightningCLI ``{subcommand}`` with the arguments after the command."
    return command


def export_command(program: str, export_target: str, module_name: str) -> Callable[[list[str]], int]:
    """``<program> export CKPT OUT [--overwrite]``: a Lightning checkpoint to a portable model folder.

    Args:
        program: the script's name.
        export_target: ``"module:function"`` of the model's ``export_checkpoint(checkpoint, out, overwrite)``.
        module_name: the LightningModule whose checkpoints it reads, for the help text.
    """

    def command(args: list[str]) -> int:
        parser = argparse.ArgumentParser(prog=f"{program} export",
                                         description="Convert a Lightning .ckpt to a model folder.")
        parser.add_argument("checkpoint",
                            help=f"{module_name} checkpoint (.ckpt) from `{program} fit`; read with weights_only=True")
        parser.add_argument("out", help="model folder to write")
        parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
        options = parser.parse_args(args)
        export = _load(program, "export", export_target)
        print(f"wrote {export(options.checkpoint, options.out, overwrite=options.overwrite)}")
        return 0

    command.__doc__ = f"``{program} export CKPT OUT``: a {module_name} checkpoint to a portable model folder."
    return command
