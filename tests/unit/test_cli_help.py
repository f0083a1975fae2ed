"""The command line's help reads as written: no value placeholder beside flags, brackets kept."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from tarsguard.cli import app

COMMANDS = [
    [],
    ["check"],
    ["classify"],
    ["health"],
    ["proxy"],
    ["demo"],
    ["serve"],
    ["eval", "run"],
    ["eval", "compare"],
    ["eval", "report"],
    ["traces", "tail"],
    ["traces", "stats"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "tarsguard")
def test_help_has_no_placeholder_beside_flags_and_keeps_its_brackets(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert not re.search(r"[A-Za-z] \.(?:\s|$)", result.output)  # a "[...]" swallowed as markup leaves "text ."


def test_the_environment_and_defaults_in_brackets_are_shown() -> None:
    runner = CliRunner()
    check = " ".join(runner.invoke(app, ["check", "--help"]).output.split())
    assert "[env: TARSGUARD_BASE_URL]" in check and "[env: TARSGUARD_MODEL; default: auto-detect]" in check
    run = " ".join(runner.invoke(app, ["eval", "run", "--help"]).output.split())
    assert "Model name [default: auto-detect]." in run
