"""The command-line convention shared by every medvl entry point.

Bad input ends with exit status 2 and one line on stderr naming the culprit; there is no traceback unless
``--debug`` is given. Unexpected errors keep their traceback (they are bugs, not bad input).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence

from datasets.errors import InputError, MissingDependencyError

__all__ = ["EXIT_BAD_INPUT", "max_time_override", "run_cli", "setup_logging"]

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
