"""The config file: reading, validation with file and line, merge-writes, its precedence."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from animegan_cli.cli.app import main
from animegan_cli.core.errors import AnimeganError, UsageError
from animegan_cli.pipeline.convert import ConvertOptions
from animegan_cli.settings.config import config_path, load_config, save_config


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

    monkeypatch.setattr("animegan_cli.cli.convert.convert", fake_convert)
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


def test_png_level_is_a_number_or_rle_from_the_config_the_env_or_the_flag(convert_options,
                                                                          tmp_path, monkeypatch):
    command = ["convert", str(tmp_path), "-o", str(tmp_path / "out")]
    runner = CliRunner()
    runner.invoke(main, command)
    assert convert_options[-1].png_level == "rle"  # the built-in default
    save_config({"png_level": 6})
    runner.invoke(main, command)
    assert convert_options[-1].png_level == 6
    monkeypatch.setenv("ANIMEGAN_PNG_LEVEL", "RLE")
    runner.invoke(main, command)
    assert convert_options[-1].png_level == "rle"
    result = runner.invoke(main, [*command, "--png-level", "fast"])
    assert result.exit_code == 2 and "must be between 0 and 9, or rle" in result.output
    config_path().write_text("[convert]\npng_level = true\n")
    result = runner.invoke(main, command)
    assert 'png_level must be a level 0-9 or "rle"' in result.output


def test_info_reports_where_each_setting_came_from(monkeypatch):
    save_config({"batch_size": 3})
    monkeypatch.setenv("ANIMEGAN_SIZE", "256")
    out = CliRunner().invoke(main, ["info"]).stdout
    assert re.search(r"--batch-size\s+3\s+\[config file\]", out)
    assert re.search(r"--size\s+256\s+\[environment \(ANIMEGAN_SIZE\)\]", out)
    assert re.search(r"--quality\s+95\s+\[built-in\]", out)


# ---------------------------------------------------------------------------- [serve] (issue 12)


def test_serve_section_is_read_and_checked_like_convert():
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text('[convert]\nbatch_size = 2\n\n[serve]\nport = 9000\nbatch_wait_ms = 50\n')
    assert load_config(section="serve") == {"port": 9000, "batch_wait_ms": 50}
    assert load_config() == {"batch_size": 2}
    path.write_text("[serve]\nport = 1\n\nbatch_size = 4\n")  # convert's, not serve's
    with pytest.raises(UsageError, match="line 4: unknown setting 'batch_size'"):
        load_config(section="serve")
    path.write_text('[serve]\nqueue_size = "many"\n')
    with pytest.raises(UsageError, match="line 2: queue_size must be an integer"):
        load_config(section="serve")


def test_tune_saving_convert_settings_keeps_the_serve_section():
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text("[serve]\nport = 9000\nmax_upload_mb = 2.5\n")
    save_config({"batch_size": 4})
    assert load_config() == {"batch_size": 4}
    assert load_config(section="serve") == {"port": 9000, "max_upload_mb": 2.5}


@pytest.fixture
def serve_loads(monkeypatch):
    """The Stylizer.load calls the serve command makes, without loading or serving anything."""
    seen: list[dict] = []

    def fake_load(style, **kwargs):
        seen.append({"style": style, **kwargs})
        raise AnimeganError("stopped by the test")

    monkeypatch.setattr("animegan_cli.stylizer.Stylizer.load", fake_load)
    return seen


def test_serve_takes_convert_engine_settings_and_its_own_section_overrides(serve_loads):
    save_config({"backend": "torch", "size": 256, "threads": 2, "batch_size": 8})
    path = config_path()
    path.write_text(path.read_text() + "\n[serve]\nsize = 384\n")
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 1 and "stopped by the test" in result.output
    load = serve_loads[-1]
    assert (load["backend"], load["threads"], load["size"]) == ("torch", 2, 384)
    CliRunner().invoke(main, ["serve", "--size", "128"])
    assert serve_loads[-1]["size"] == 128


def test_a_bad_serve_setting_in_the_file_is_refused_before_the_model_loads(serve_loads):
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text("[serve]\nqueue_size = 0\n")
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 2 and "--queue-size must be at least 1" in result.output
    assert serve_loads == []
