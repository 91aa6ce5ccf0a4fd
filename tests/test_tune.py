"""tune: a tiny budget on tiny images writes a valid config that convert then uses."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from animegan_cli.cli.app import main
from animegan_cli.model.weights import DEFAULT_STYLE
from animegan_cli.pipeline import convert as convert_module
from animegan_cli.settings.config import config_path, load_config, save_config
from animegan_cli.tools.tune import PNG_LEVELS, Trial, TuneRequest, run_tune
from tests.conftest import isolate, make_image, write_random_checkpoint
from tests.test_cli import weights_server  # noqa: F401 - a fixture


@pytest.fixture(autouse=True)
def shared_ir_cache(tmp_path_factory, monkeypatch):
    """One OpenVINO IR cache for the module: conversion costs seconds, tune reuses it."""
    cache = tmp_path_factory.getbasetemp() / "tune-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))


@pytest.mark.slow
def test_run_tune_measures_in_stages_and_picks_a_measured_winner(checkpoint):
    result = run_tune(TuneRequest(size=16, budget=4, weights=checkpoint))
    assert result.winner in result.trials
    measured = [t for t in result.trials if not t.note.startswith("skipped")]
    assert all(t.images_per_second > 0 and t.peak_mb > 0 for t in measured)
    assert result.winner.num_workers is not None  # the workers stage ran
    assert result.shape == (12, 16)


@pytest.mark.slow
def test_memory_budget_stops_the_batch_search(checkpoint):
    result = run_tune(TuneRequest(size=16, budget=4, weights=checkpoint, memory_budget_mb=1))
    skipped = [t for t in result.trials if t.note.startswith("skipped")]
    assert len(skipped) == 1 and "budget" in skipped[0].note
    assert all(t.batch_size == 1 for t in result.trials if not t.note.startswith("skipped"))


@pytest.mark.slow
def test_latency_objective_keeps_batch_one(checkpoint):
    result = run_tune(TuneRequest(size=16, budget=3, weights=checkpoint, objective="latency"))
    assert result.winner.batch_size == 1


@pytest.fixture(scope="module")
def tune_run(tmp_path_factory):
    """One `animegan tune` for the module (it measures for seconds): its result and config."""
    home = tmp_path_factory.mktemp("tuned")
    checkpoint = write_random_checkpoint(home / "random_generator.pt")
    # Module scope runs before each test's isolated_env, so it isolates itself.
    with pytest.MonkeyPatch.context() as env:
        isolate(env, home)
        env.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "tune-cache"))
        result = CliRunner().invoke(main, ["tune", "--size", "16", "--budget", "3", "--weights",
                                           str(checkpoint)], catch_exceptions=False)
        written = config_path().read_text() if config_path().exists() else None
    return result, written


@pytest.fixture
def tuned(tune_run):
    """The module's tune run, with the config file it wrote in this test's config folder."""
    result, written = tune_run
    assert result.exit_code == 0, result.output
    assert written is not None, "tune wrote no config file"
    config_path().parent.mkdir(parents=True, exist_ok=True)
    config_path().write_text(written)
    return result


@pytest.mark.slow
def test_tune_cli_prints_the_table_and_writes_the_config(tuned):
    assert "| backend | precision | batch size |" in tuned.stdout
    assert re.search(r"best for throughput at 16x12: backend=\w+", tuned.stdout)
    settings = load_config()
    assert set(settings) == {"size", "backend", "precision", "batch_size", "threads", "streams",
                             "num_workers"}
    assert config_path().read_text().startswith("# Written by animegan tune")


@pytest.mark.slow
def test_dry_run_writes_nothing(checkpoint):
    result = CliRunner().invoke(main, ["tune", "--size", "16", "--budget", "2", "--weights",
                                       str(checkpoint), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "config not written" in result.stdout
    assert not config_path().exists()


@pytest.mark.slow
def test_convert_uses_the_config_env_overrides_it_flag_overrides_both(
        tuned, photo_dir, tmp_path, checkpoint, monkeypatch):
    seen = []
    real = convert_module.convert

    def spy(options, events=None):
        seen.append(options)
        return real(options, events)

    monkeypatch.setattr("animegan_cli.cli.convert.convert", spy)
    configured = load_config()
    base = ["convert", str(photo_dir), "-o", str(tmp_path / "o1"), "--weights", str(checkpoint),
            "--size", "16"]
    runner = CliRunner()
    assert runner.invoke(main, base).exit_code == 0
    assert seen[-1].batch_size == configured["batch_size"]
    assert seen[-1].backend == configured["backend"]
    monkeypatch.setenv("ANIMEGAN_BATCH_SIZE", "3")
    base[3] = str(tmp_path / "o2")
    assert runner.invoke(main, base).exit_code == 0
    assert seen[-1].batch_size == 3
    base[3] = str(tmp_path / "o3")
    assert runner.invoke(main, [*base, "--batch-size", "2"]).exit_code == 0
    assert seen[-1].batch_size == 2


@pytest.mark.slow
def test_info_reports_where_each_setting_came_from(tuned, monkeypatch):
    monkeypatch.setenv("ANIMEGAN_SIZE", "256")
    out = CliRunner().invoke(main, ["info"]).stdout
    assert re.search(r"--batch-size\s+\d+\s+\[config file\]", out)
    assert re.search(r"--size\s+256\s+\[environment \(ANIMEGAN_SIZE\)\]", out)
    assert re.search(r"--quality\s+95\s+\[built-in\]", out)
    assert re.search(r"features\s+avx2:(yes|no)", out)
    assert "torch" in out and "openvino" in out


def test_broken_config_is_a_clear_usage_error(tmp_path):
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text("[convert]\nbatch_size = oops\n")
    result = CliRunner().invoke(main, ["convert", str(tmp_path), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"config file {path}" in result.stderr and "line 2" in result.stderr
    assert CliRunner().invoke(main, ["weights", "list"]).exit_code == 0


def test_trial_settings_are_config_keys():
    trial = Trial("openvino", "fp32", 2, 2, 1)
    assert trial.settings() == {"backend": "openvino", "precision": "fp32", "batch_size": 2,
                                "threads": 2, "streams": 1, "num_workers": 1}


# ---------------------------------------------------------------- which style tune loads


@pytest.fixture
def own_weights_dir(tmp_path, monkeypatch):
    """Imports and downloads go to this test's folder, not the module's shared cache."""
    monkeypatch.setenv("ANIMEGAN_WEIGHTS_DIR", str(tmp_path / "weights"))


def test_tune_resolves_its_style_as_convert_does(tune_requests, monkeypatch):
    runner = CliRunner()
    runner.invoke(main, ["tune"])
    assert tune_requests[-1].style == DEFAULT_STYLE
    save_config({"style": "from_config"})
    runner.invoke(main, ["tune"])
    assert tune_requests[-1].style == "from_config"
    monkeypatch.setenv("ANIMEGAN_STYLE", "from_env")
    runner.invoke(main, ["tune"])
    assert tune_requests[-1].style == "from_env"
    runner.invoke(main, ["tune", "--style", "from_flag"])
    assert tune_requests[-1].style == "from_flag"


@pytest.mark.slow
@pytest.mark.parametrize("named_by", ["environment", "config file"])
def test_tune_offline_with_an_imported_style_downloads_nothing(checkpoint, monkeypatch,
                                                              own_weights_dir, named_by):
    runner = CliRunner()
    assert runner.invoke(main, ["weights", "import", str(checkpoint), "--name", "mine"]
                         ).exit_code == 0
    if named_by == "environment":
        monkeypatch.setenv("ANIMEGAN_STYLE", "mine")
    else:
        save_config({"style": "mine"})
    # ANIMEGAN_WEIGHTS_URL points at a dead address (conftest): a download would fail.
    result = runner.invoke(main, ["tune", "--size", "16", "--budget", "2", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "download" not in result.stderr


@pytest.mark.slow
def test_tune_says_it_downloads_on_stderr(own_weights_dir, weights_server):  # noqa: F811
    result = CliRunner().invoke(main, ["tune", "--size", "16", "--budget", "2", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "downloading" not in result.stdout
    assert ("animegan: style face_paint_512_v2 is not installed; downloading from "
            in result.stderr)


def test_a_png_level_trial_is_a_config_key():
    trial = Trial("openvino", "fp32", 1, 2, 1, png_level=3)
    assert trial.settings()["png_level"] == 3


@pytest.mark.slow
def test_tune_tries_fewer_threads_while_decoding_and_png_levels(checkpoint, tmp_path):
    photos = tmp_path / "photos"
    for i in range(3):
        make_image(photos / f"{i}.png", 40, 30, seed=i)
    result = run_tune(TuneRequest(size=16, budget=2, weights=checkpoint, photos=photos))
    notes = [t.note for t in result.trials]
    assert f"end to end, PNG level {PNG_LEVELS[0]}" in notes  # runs even out of time
    assert result.winner.png_level in PNG_LEVELS
    fewer = [n for n in notes if "one model thread fewer" in n]
    # Skipped only where the model had one thread already, or no decoder process ran.
    assert fewer or result.winner.threads == 1 or not result.winner.num_workers


def test_tune_leaves_the_png_level_alone_where_runs_write_no_png(tmp_path):
    from animegan_cli.tools.tune import _writes_png

    make_image(tmp_path / "a.jpg", 16, 16)
    assert not _writes_png(tmp_path)
    make_image(tmp_path / "b.png", 16, 16)
    assert _writes_png(tmp_path)


def test_tune_compares_static_and_dynamic_openvino_shapes(checkpoint, tmp_path):
    from animegan_cli.tools import tune

    result = tune.TuneResult()
    tuning = tune._Tuning(TuneRequest(size=16, weights=checkpoint), tmp_path, (12, 16), 1,
                          memory_budget_mb=1e6, per_trial=0.1, deadline=float("inf"),
                          result=result, on_trial=lambda t: None, on_message=lambda m: None)
    winner = tune._tune_shapes(tuning, Trial("openvino", "fp32", 1, 1, None))
    [dynamic] = result.trials
    assert (dynamic.shapes, dynamic.note) == ("dynamic", "dynamic shapes")
    assert winner.settings()["shapes"] in ("static", "dynamic")
    torch_trial = Trial("torch", "fp32", 1, 1, None)
    assert tune._tune_shapes(tuning, torch_trial) is torch_trial
