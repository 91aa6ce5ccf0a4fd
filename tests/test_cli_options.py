"""Option bundles: convert and tune declare the model options once, with one meaning."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from animegan_cli.cli.app import main
from animegan_cli.cli.convert import convert_command
from animegan_cli.cli.tune import tune_command
from animegan_cli.settings.config import save_config

MODEL_OPTIONS = ("style", "weights", "size")


def option(command: click.Command, name: str) -> click.Option:
    return next(p for p in command.params if isinstance(p, click.Option) and p.name == name)


@pytest.mark.parametrize("name", MODEL_OPTIONS)
def test_tune_and_convert_share_each_model_option(name):
    ours, theirs = option(tune_command, name), option(convert_command, name)
    assert ours is not theirs  # each command has its own Option object
    # Flags, type, default, environment variable, help: everything click knows of it.
    assert ours.to_info_dict() == theirs.to_info_dict()
    assert ours.envvar is not None or name == "weights"


def test_tune_takes_its_size_as_convert_does(tune_requests, monkeypatch):
    runner = CliRunner()
    runner.invoke(main, ["tune"])
    assert tune_requests[-1].size == 512
    save_config({"size": 384})
    runner.invoke(main, ["tune"])
    assert tune_requests[-1].size == 384
    monkeypatch.setenv("ANIMEGAN_SIZE", "256")
    runner.invoke(main, ["tune"])
    assert tune_requests[-1].size == 256
    runner.invoke(main, ["tune", "--size", "128"])
    assert tune_requests[-1].size == 128


def test_a_bad_size_variable_is_blamed_on_it_in_tune_too(monkeypatch):
    monkeypatch.setenv("ANIMEGAN_SIZE", "big")
    result = CliRunner().invoke(main, ["tune"])
    assert result.exit_code == 2
    assert result.stderr.startswith("animegan: error: invalid value for ANIMEGAN_SIZE "
                                    "(environment): ")
