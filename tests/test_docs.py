"""The docs follow the code: every command and option of the CLI is documented, and the
README's test command is the one CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import click
import typer.main

from cardsync.cli import app

ROOT = Path(__file__).resolve().parent.parent


def commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            found.update(commands(command, path + " "))
        else:
            found[path] = command
    return found


def test_every_command_and_option_is_in_the_cli_reference():
    reference = (ROOT / "docs" / "cli.md").read_text()
    headings = re.findall(r"^## `cardsync ([^`]*)`", reference, flags=re.M)
    for path, command in commands(typer.main.get_command(app)).items():
        heading = next((h for h in headings if h == path or h.startswith(path + " ")), None)
        assert heading is not None, f"`cardsync {path}` is missing from docs/cli.md"
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--"):
                    assert opt in heading, f"{opt} of `cardsync {path}` is not in docs/cli.md"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "scripts/test.sh" in readme.split("## Set it up")[0]
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_example_config_documents_every_key():
    from cardsync.config import ENTRA, ORGANIZATION
    from cardsync.config import ROOT as SCHEMA

    example = (ROOT / "config.example.toml").read_text()
    for table in (SCHEMA, ORGANIZATION, ENTRA):
        for key in table.fields:
            assert re.search(rf"^#? ?\[*(organizations\.)?{key}( =|\]|$)", example, re.M), (
                f"{key} is not in config.example.toml"
            )
