"""The CLI convention: one line and exit status 2 for bad input, the traceback only with --debug."""

from __future__ import annotations

import pytest

from datasets.cli_utils import EXIT_BAD_INPUT, Command, max_time_override, run_cli, run_commands
from datasets.errors import InputError


def _bad_input(args: list[str]) -> int:
    raise InputError(f"row 3 of {args[0]}: column 'text' is empty,\n expected a referring expression")


def test_bad_input_prints_one_line_and_exits_2(capsys):
    assert run_cli("prog", _bad_input, ["manifest.csv"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("prog: error: row 3 of manifest.csv") and "Traceback" not in err


def test_missing_file_names_the_file(capsys, tmp_path):
    def read(args: list[str]) -> int:
        open(args[0])
        return 0

    assert run_cli("prog", read, [str(tmp_path / "nope.nii.gz")]) == EXIT_BAD_INPUT
    assert "nope.nii.gz" in capsys.readouterr().err


def test_debug_reraises_with_traceback():
    with pytest.raises(InputError):
        run_cli("prog", _bad_input, ["manifest.csv", "--debug"])


def test_success_returns_status():
    assert run_cli("prog", lambda args: None, []) == 0
    assert run_cli("prog", lambda args: 3, []) == 3


def test_max_time_override_formats_days_hours_minutes_seconds():
    assert max_time_override(6) == ["--trainer.max_time", "00:00:06:00"]
    assert max_time_override(90.5) == ["--trainer.max_time", "00:01:30:30"]


def test_run_commands_dispatches_lists_and_names_the_failing_command(capsys) -> None:
    commands = {
        "count": Command("builtins:len", "length of the argument list"),
        "absent": Command("medvl_module_that_does_not_exist:main", "an extra that is not installed"),
    }
    assert run_commands("tool", "A tool.", commands, ["count", "a", "b", "c"]) == 3  # len(["a", "b", "c"])
    assert run_commands("tool", "A tool.", commands, ["--help"]) == 0
    usage = capsys.readouterr().out
    assert usage.startswith("A tool.") and "count              length of the argument list" in usage
    assert run_commands("tool", "A tool.", commands, ["frobnicate"]) == 2
    assert capsys.readouterr().err.strip() == "tool: error: unknown command 'frobnicate'; choose from: count, absent"
    assert run_commands("tool", "A tool.", commands, ["absent"]) == 2
    assert "tool absent: error: `tool absent` is not available in this installation" in capsys.readouterr().err
