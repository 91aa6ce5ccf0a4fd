"""The config file: reading, validation with file and line, atomic merge-writes."""

from __future__ import annotations

import pytest

from animegan_cli.config import config_path, load_config, save_config
from animegan_cli.errors import UsageError


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
