"""convert --ray: arguments, the actor's work (in-process), and real runs on a local Ray."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from animegan_cli.cli.app import main
from animegan_cli.core.errors import UsageError
from animegan_cli.pipeline import convert as convert_module
from animegan_cli.pipeline.convert import ConvertOptions, convert, engine_spec
from animegan_cli.pipeline.lock import output_lock
from animegan_cli.pipeline.results import ConvertEvents, Summary
from animegan_cli.records.embedded import read_embedded
from animegan_cli.records.manifest import MANIFEST_NAME, Manifest
from animegan_cli.records.selection import Selection
from animegan_cli.runners import ray_runner
from tests.conftest import make_image

ROOT = Path(__file__).resolve().parents[1]


def _photos(root: Path, count: int, size: int = 48) -> Path:
    for i in range(count):
        make_image(root / f"p{i:02d}.jpg", size + 8 * (i % 3), size, seed=i)
    return root


def _options(tmp_path: Path, checkpoint: Path, inputs: Path, out: str, **extra) -> ConvertOptions:
    fields = dict(weights=checkpoint, size=64, backend="torch", precision="fp32", threads=1)
    fields.update(extra)
    return ConvertOptions(inputs=[str(inputs)], output=tmp_path / out, **fields)


def _outputs(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*")) if p.is_file() and not p.name.startswith(".")
    }


def _records(out: Path) -> dict[str, dict]:
    """Each output's manifest record (provenance), by output name."""
    return {key: e.provenance.to_dict() for key, e in Manifest.load(out).entries.items()}


def _leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.startswith(".animegan-tmp-")]


# ---- arguments: no Ray started ------------------------------------------------------------


def test_ray_value_that_is_not_an_address_is_a_usage_error(tmp_path, checkpoint, photo_dir):
    # `convert a.jpg --ray photos -o out`: --ray took the folder meant as an input.
    result = CliRunner().invoke(main, ["convert", str(photo_dir / "a.jpg"), "--ray",
                                       str(photo_dir), "-o",
                                       str(tmp_path / "out"), "--weights", str(checkpoint)])
    assert result.exit_code == 2
    assert f"--ray {photo_dir}: not local, auto or an address" in result.output
    assert not (tmp_path / "out").exists()


def test_without_ray_installed_one_line_names_the_extra(tmp_path, checkpoint, photo_dir,
                                                        monkeypatch):
    real = ray_runner.importlib.util.find_spec
    monkeypatch.setattr(ray_runner.importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    result = CliRunner().invoke(main, ["convert", str(photo_dir), "-o", str(tmp_path / "out"),
                                       "--weights", str(checkpoint), "--ray", "local"])
    assert result.exit_code == 2
    assert result.output.strip() == f"animegan: error: {ray_runner.RAY_EXTRA}"


def test_dry_run_plans_without_ray(tmp_path, checkpoint, photo_dir, monkeypatch):
    def no_ray():
        raise AssertionError("a dry run must not start Ray")

    monkeypatch.setattr(ray_runner, "_import_ray", no_ray)
    real = ray_runner.importlib.util.find_spec
    monkeypatch.setattr(ray_runner.importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    result = CliRunner().invoke(main, ["convert", str(photo_dir), "-o", str(tmp_path / "out"),
                                       "--weights", str(checkpoint), "--ray", "--dry-run",
                                       "--json"])
    assert result.exit_code == 0, result.output
    statuses = [json.loads(line)["status"] for line in result.output.splitlines()
                if line.startswith("{")]
    assert statuses == ["would-convert"] * 3


def test_bare_ray_flag_is_accepted_after_the_inputs(tmp_path, checkpoint, photo_dir):
    ctx = main.make_context("animegan", ["convert", str(photo_dir), "-o", "out", "--ray"])
    sub = ctx.command.get_command(ctx, "convert")
    params = sub.make_context("convert", [str(photo_dir), "-o", "out", "--ray"]).params
    assert params["ray_address"] == ""
    params = sub.make_context("convert", [str(photo_dir), "-o", "out", "--ray", "auto"]).params
    assert params["ray_address"] == "auto"


def test_actor_threads_follow_threads_else_the_smallest_node():
    spec = engine_spec(ConvertOptions(inputs=["x"], output=Path("o"), backend="torch",
                                      precision="fp32"))
    assert ray_runner.actor_threads(spec, [8.0, 2.0]) == 2
    assert ray_runner.actor_threads(spec, [0.0, 4.0]) == 4  # a head with num-cpus 0
    assert ray_runner.actor_threads(dataclasses.replace(spec, threads=3), [8.0]) == 3
    with pytest.raises(UsageError, match="--threads 4: no Ray node has that many CPUs"):
        ray_runner.actor_threads(dataclasses.replace(spec, threads=4), [2.0, 2.0])


# ---- the actor's work, in this process --------------------------------------------------


def _planned_targets(options: ConvertOptions):
    spec = engine_spec(options)
    plan, _ = convert_module._plan(options, spec, Selection(), Summary(), ConvertEvents())
    return convert_module._targets(plan.decisions), spec


def _actor(options: ConvertOptions, spec) -> ray_runner.StylizeActor:
    config = ray_runner.ActorConfig(options, spec, None, [], os.getpid())
    return ray_runner.StylizeActor(config)


def _batch(targets) -> dict[str, np.ndarray]:
    return {"work": np.array([r["work"] for r in ray_runner.work_items(targets)], dtype=object)}


def _statuses(returned) -> list[dict]:
    return [json.loads(s) for s in returned["status"]]


def test_a_retried_batch_writes_nothing_twice(tmp_path, checkpoint):
    photos = _photos(tmp_path / "in", 3)
    options = _options(tmp_path, checkpoint, photos, "out")
    options.output.mkdir()
    targets, spec = _planned_targets(options)
    batch = _batch(targets)  # the stats at planning travel with the work
    with output_lock(options.output):
        actor = _actor(options, spec)
        first = _statuses(actor(batch))
        written = {p: os.stat(p).st_ino for p in options.output.glob("*.jpg")}
        again = _statuses(actor(batch))  # Ray's retry after the actor died having written
    assert [s["result"]["status"] for s in first] == ["converted"] * 3
    assert [s["result"]["status"] for s in again] == ["converted"] * 3
    assert {p: os.stat(p).st_ino for p in options.output.glob("*.jpg")} == written
    lines = (options.output / MANIFEST_NAME).read_text().splitlines()
    assert len(lines) == 3


def test_two_calls_at_once_on_one_actor_take_turns_on_the_model(tmp_path, checkpoint):
    photos = _photos(tmp_path / "in", 6)
    options = _options(tmp_path, checkpoint, photos, "out", batch_size=1)
    options.output.mkdir()
    targets, spec = _planned_targets(options)
    with output_lock(options.output):
        actor = _actor(options, spec)
        running, overlapped = [0], []
        model_run = actor.stylizer.run

        def run(batch):  # the real model, watched: two calls in it at once would be a race
            running[0] += 1
            overlapped.append(running[0] > 1)
            time.sleep(0.02)  # long enough for the other thread to arrive
            try:
                return model_run(batch)
            finally:
                running[0] -= 1

        actor.stylizer.run = run
        with ThreadPoolExecutor(2) as pool:  # as Ray Data calls it: two batches at once
            done = list(pool.map(actor, [_batch(targets[:3]), _batch(targets[3:])]))
    assert len(overlapped) == 6 and not any(overlapped)
    assert [s["result"]["status"] for d in done for s in _statuses(d)] == ["converted"] * 6
    plain = _options(tmp_path, checkpoint, photos, "plain", batch_size=1)
    convert(plain)
    assert _outputs(options.output) == _outputs(plain.output)


def test_overwrite_still_rewrites_an_up_to_date_output(tmp_path, checkpoint):
    photos = _photos(tmp_path / "in", 1)
    options = _options(tmp_path, checkpoint, photos, "out")
    convert(options)
    before = os.stat(options.output / "p00.jpg").st_ino
    options = dataclasses.replace(options, overwrite=True)
    targets, spec = _planned_targets(options)
    with output_lock(options.output):
        [status] = _statuses(_actor(options, spec)(_batch(targets)))
    assert status["result"]["status"] == "converted"
    assert os.stat(options.output / "p00.jpg").st_ino != before  # same record, new file


def test_an_out_the_worker_does_not_share_stops_the_run(tmp_path, checkpoint):
    photos = _photos(tmp_path / "in", 1)
    options = _options(tmp_path, checkpoint, photos, "out")
    options.output.mkdir()
    targets, spec = _planned_targets(options)
    # No lock file with the driver's pid: this worker's OUT is another folder.
    [status] = _statuses(_actor(options, spec)(_batch(targets)))
    assert "is not the driver's on node" in status["fatal"]
    assert ray_runner.SHARED_STORAGE in status["fatal"]
    assert _outputs(options.output) == {}


def test_an_input_the_worker_cannot_see_fails_alone_naming_it(tmp_path, checkpoint):
    photos = _photos(tmp_path / "in", 2)
    options = _options(tmp_path, checkpoint, photos, "out")
    options.output.mkdir()
    targets, spec = _planned_targets(options)
    batch = _batch(targets)
    (photos / "p00.jpg").unlink()  # planned on the driver, absent where the actor runs
    with output_lock(options.output):
        rows = _statuses(_actor(options, spec)(batch))
    by_input = {Path(r["result"]["input"]).name: r["result"] for r in rows}
    assert by_input["p01.jpg"]["status"] == "converted"
    assert by_input["p00.jpg"]["status"] == "failed"
    assert "file not found" in by_input["p00.jpg"]["error"]
    assert ray_runner.SHARED_STORAGE in by_input["p00.jpg"]["error"]


# ---- real runs on a local Ray --------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module's runs (start-up is slow and memory-heavy)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 << 20,
             log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_outputs_are_those_of_a_plain_convert_and_a_rerun_skips_all(
    tmp_path, checkpoint, local_ray
):
    photos = _photos(tmp_path / "in", 6)
    make_image(photos / "sub" / "alpha.png", 40, 30, mode="RGBA", seed=7)
    (photos / "same.jpg").write_bytes((photos / "p00.jpg").read_bytes())
    (photos / "bad.jpg").write_bytes(b"not an image")
    plain = convert(_options(tmp_path, checkpoint, photos, "plain", png_level=3))
    seen = []
    options = _options(tmp_path, checkpoint, photos, "ray", ray="local", png_level=3)
    summary = convert(options, ConvertEvents(on_result=seen.append))
    assert (summary.converted, summary.failed, summary.reused) == (8, 1, 1)
    assert (plain.converted, plain.failed, plain.reused) == (8, 1, 1)
    assert "2 Ray actor(s) x 1 thread(s)" in summary.engine
    assert _outputs(options.output) == _outputs(tmp_path / "plain")  # pixels and metadata
    assert _records(options.output) == _records(tmp_path / "plain")
    [bad] = [r for r in seen if r.status == "failed"]
    assert bad.input.name == "bad.jpg" and bad.error == plain.failures[0].error
    rerun = convert(options)
    assert (rerun.converted, rerun.skipped, rerun.failed) == (0, 8, 1)


def _stylize_actor_pids(ray) -> list[int]:
    from ray._private import state

    return [
        a["Pid"] for a in state.actors().values()
        if "StylizeActor" in a.get("ActorClassName", "") and a.get("State") == "ALIVE"
    ]


@pytest.mark.slow
def test_two_node_cluster_with_an_actor_killed_loses_nothing(tmp_path, checkpoint):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the module's local Ray, if a test started it
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 << 20})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=80 << 20)
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        photos = _photos(tmp_path / "in", 16, size=96)
        convert(_options(tmp_path, checkpoint, photos, "plain", size=128))
        reported, inodes, killed = [], {}, []

        def on_result(result):
            reported.append(result.input)
            inodes[result.output] = os.stat(result.output).st_ino
            if not killed:
                pids = _stylize_actor_pids(ray)
                killed.append(pids[0])
                os.kill(pids[0], signal.SIGKILL)  # the actor dies mid-run, batches in flight

        options = _options(tmp_path, checkpoint, photos, "ray", size=128, ray="auto")
        summary = convert(options, ConvertEvents(on_result=on_result))
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert killed
    assert (summary.converted, summary.failed) == (16, 0)
    assert sorted(reported) == sorted(photos.glob("*.jpg"))  # each input reported once
    assert {p: os.stat(p).st_ino for p in inodes} == inodes  # none rewritten after reported
    assert _outputs(options.output) == _outputs(tmp_path / "plain")
    assert _records(options.output) == _records(tmp_path / "plain")
    assert _leftovers(options.output) == []


def _session_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_stopped_driver_leaves_whole_outputs_and_a_rerun_converts_the_rest(
    tmp_path, checkpoint, local_ray, sig
):
    photos = _photos(tmp_path / "in", 24, size=160)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "animegan_cli", "convert", str(photos), "-o", str(out),
               "--weights", str(checkpoint), "--size", "256", "--backend", "torch",
               "--precision", "fp32", "--threads", "1", "--ray", "local", "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                              start_new_session=True, text=True)
    try:
        first = driver.stdout.readline()  # the first image is written: the run is under way
        assert json.loads(first)["status"] == "converted"
        driver.send_signal(sig)  # Ctrl-C, or the driver's machine losing it (kill -9)
        _, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    deadline = time.monotonic() + 30
    while sig == signal.SIGINT and _session_alive(driver.pid) and time.monotonic() < deadline:
        time.sleep(0.5)  # Ray's processes stop after the driver
    lingering = _session_alive(driver.pid)
    if lingering:  # after a kill -9, Ray's agents outlive their node: not this test's point
        os.killpg(driver.pid, signal.SIGKILL)
    if sig == signal.SIGINT:
        assert driver.returncode == 130, stderr
        assert not lingering, "Ray processes outlived the driver"
        assert _leftovers(out) == []
    done = _outputs(out)
    assert 1 <= len(done) < 24
    for name in done:  # whatever is there is whole and recorded
        with Image.open(out / name) as img:
            img.load()
        assert read_embedded(out / name) is not None
    options = _options(tmp_path, checkpoint, photos, "out", size=256, ray="local")
    rerun = convert(options)
    assert (rerun.converted, rerun.skipped) == (24 - len(done), len(done))
    assert _leftovers(out) == []
