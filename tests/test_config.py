"""The config file: reading, validation with file and line, merge-writes, its precedence."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from animegan_cli.cli import main
from animegan_cli.config import config_path, load_config, save_config
from animegan_cli.convert import ConvertOptions
from animegan_cli.errors import AnimeganError, UsageError


def test_path_follows_xdg_config_home(isolated_env):
    assert config_path() == isolated_env / "config" / "animegan" / "config.toml"


def test_missing_file_means_no_settings():
    assert load_config() == {}


def test_save_then_load_round_trips_and_merges():
    save_config({"batch_size": 4, "backend": "openvino"}, comment="by a test")
    save_config({"threads": 1, "align_corners": True})
    assert load_config() == {"batch_size": 4, "backend": "openvino", "threads": 1,
                             "align_corners": True}
    assert not [p for p in config_path().parent.iterdir() if p.name.startswith(".config.")]


@pytest.mark.parametrize(
    "text,message",
    [
        ("[convert]\nbatch_size = \n", "Invalid value (at line 2"),
        ("[convert]\nsize = 512\nbatch_size = \"big\"\n",
         "line 3: batch_size must be an integer, not 'big'"),
        ("[convert]\nbatch_size = true\n", "line 2: batch_size must be an integer"),
        ("[convert]\n\nturbo = 1\n", "line 3: unknown setting 'turbo'"),
        ("[other]\nx = 1\n", "line 1: unknown section or key 'other'"),
    ],
)
def test_broken_file_names_the_file_and_line(text, message):
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(UsageError) as error:
        load_config()
    assert str(path) in str(error.value)
    assert message in str(error.value)


# ------------------------------------- how commands use it (tests/test_tune.py: after a real tune)


@pytest.fixture
def convert_options(monkeypatch):
    """The ConvertOptions the convert command builds, without converting anything."""
    seen: list[ConvertOptions] = []

    def fake_convert(options, events=None):
        seen.append(options)
        raise AnimeganError("stopped by the test")

    monkeypatch.setattr("animegan_cli.cli.convert", fake_convert)
    return seen


def test_convert_uses_the_config_env_overrides_it_flag_overrides_both(convert_options, tmp_path,
                                                                       monkeypatch):
    save_config({"batch_size": 4, "backend": "openvino"})
    command = ["convert", str(tmp_path), "-o", str(tmp_path / "out")]
    runner = CliRunner()
    runner.invoke(main, command)
    assert (convert_options[-1].batch_size, convert_options[-1].backend) == (4, "openvino")
    monkeypatch.setenv("ANIMEGAN_BATCH_SIZE", "3")
    runner.invoke(main, command)
    assert (convert_options[-1].batch_size, convert_options[-1].backend) == (3, "openvino")
    runner.invoke(main, [*command, "--batch-size", "2"])
    assert convert_options[-1].batch_size == 2


def test_info_reports_where_each_setting_came_from(monkeypatch):
    save_config({"batch_size": 3})
    monkeypatch.setenv("ANIMEGAN_SIZE", "256")
    out = CliRunner().invoke(main, ["info"]).stdout
    assert re.search(r"--batch-size\s+3\s+\[config file\]", out)
    assert re.search(r"--size\s+256\s+\[environment \(ANIMEGAN_SIZE\)\]", out)
    assert re.search(r"--quality\s+95\s+\[built-in\]", out)
