"""The package's error types.

Every error caused by user input (a file, a table row, a command-line argument) is a :class:`InputError`: its message
names the culprit and says what was expected. Command-line entry points turn it into one line on stderr and exit
status 2 (see :mod:`datasets.cli_utils`).
"""

from __future__ import annotations

__all__ = ["MedvlError", "InputError", "MissingDependencyError"]


class MedvlError(Exception):
    """Base class of all errors raised on purpose by medvl."""


class InputError(MedvlError, ValueError):
    """Bad user input: a file, row, column or argument that does not meet the documented format."""


class MissingDependencyError(MedvlError, ImportError):
    """An optional dependency is needed; the message names the pip extra that provides it."""

    def __init__(self, what: str, extra: str, package: str, message: str | None = None) -> None:
        super().__init__(
            message or f"{what} needs the optional package `{package}`: install it with `pip install 'medvl[{extra}]'`"
        )
        self.extra = extra
        self.package = package
