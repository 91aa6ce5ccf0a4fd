"""Issue 28: serve's jobs (POST /jobs ...), end to end with a real uvicorn server.

Each server runs `python -m animegan_cli serve` (tests/test_serve.Server) on its own
--data-dir; the store is checked from outside through its SQLite file and folders. The fast
tests at the end check the store's recovery rules and the Batcher's priority in-process.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_image, write_random_checkpoint
from tests.test_serve import Server, photo_bytes, pixels

TERMINAL = ("done", "failed", "cancelled")


def png(width: int = 40, height: int = 28, seed: int = 0) -> bytes:
    return photo_bytes(width, height, seed, "PNG")


def job_files(files: list[tuple[str, bytes]]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in files]


def submit(server: Server, files: list[tuple[str, bytes]], data: dict | None = None,
           headers: dict | None = None) -> dict:
    reply = server.client.post("/jobs", files=job_files(files), data=data or {},
                               headers=headers)
    assert reply.status_code == 202, reply.text
    assert reply.headers["location"] == reply.json()["url"]
    return reply.json()


def wait_for(server: Server, job: dict, until=lambda j: j["state"] in TERMINAL,
             headers: dict | None = None, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = server.client.get(job["url"], headers=headers).json()
        if until(state):
            return state
        time.sleep(0.1)
    raise AssertionError(f"job never got there: {state}\n" + server.log.getvalue().decode())


def store_rows(data_dir: Path, job_id: str) -> list[tuple[int, str, int]]:
    """(index, status, runs) of each file, read from the store's SQLite file."""
    with sqlite3.connect(data_dir / "jobs.sqlite3") as db:
        return db.execute("SELECT idx, status, runs FROM files WHERE job = ? ORDER BY idx",
                          (job_id,)).fetchall()


class TokenServer(Server):
    """A server with several tokens (ANIMEGAN_TOKEN="a,b"): readiness asked with the first."""

    def _wait_ready(self, env: dict[str, str]) -> None:
        super()._wait_ready({"ANIMEGAN_TOKEN": env["ANIMEGAN_TOKEN"].split(",")[0]})


@pytest.fixture(scope="module")
def module_checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("ck") / "random.pt")


@pytest.fixture(scope="module")
def jobs_server(module_checkpoint, tmp_path_factory):
    home = tmp_path_factory.mktemp("jobs-home")
    env = {"XDG_CACHE_HOME": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "config")}
    running = Server(module_checkpoint, "--data-dir", str(home / "data"), "--max-size", "512",
                     "--max-upload-mb", "0.2", "--max-pixels", "1M", env=env)
    running.data_dir = home / "data"  # type: ignore[attr-defined]
    yield running
    running.stop()


@pytest.mark.slow
def test_a_20_file_job_completes_with_animeifys_pixels(jobs_server):
    uploads = [(f"photo{i}.png", png(40 + i, 28, seed=i)) for i in range(20)]
    before = jobs_server.metric("animegan_engine_images_total")
    fields = {"format": "png", "colour": "keep-colours"}  # any field of /animeify's
    job = submit(jobs_server, uploads, fields)
    assert job["state"] in ("queued", "running") and job["counts"]["total"] == 20
    state = wait_for(jobs_server, job)
    assert state["state"] == "done" and state["counts"]["done"] == 20
    assert jobs_server.metric("animegan_engine_images_total") - before == 20
    archive = zipfile.ZipFile(io.BytesIO(jobs_server.client.get(state["results_url"]).content))
    records = json.loads(archive.read("results.json"))
    assert [r["output"] for r in records] == [f"photo{i}.png" for i in range(20)]
    for (name, data), entry in zip(uploads, state["files"]):
        direct = jobs_server.client.post("/animeify", files=job_files([(name, data)]),
                                         data=fields)
        assert direct.status_code == 200
        one = jobs_server.client.get(entry["url"])
        assert one.headers["content-type"] == "image/png"
        assert np.array_equal(pixels(one.content), pixels(direct.content))
        assert archive.read(entry["output"]) == one.content
    assert all(runs == 1 for _, _, runs in store_rows(jobs_server.data_dir, job["id"]))


@pytest.mark.slow
def test_a_mixed_job_reports_its_bad_files_and_keeps_the_good_ones(jobs_server):
    uploads = [("good.png", png(seed=1)), ("text.png", b"not an image"),
               ("huge.png", os.urandom(300_000)), ("thin.png", png(400, 4)),
               ("broken.png", png(seed=2)[:200]), ("good2.jpg", photo_bytes(40, 28, 3))]
    state = wait_for(jobs_server, submit(jobs_server, uploads))
    assert state["state"] == "done"
    by_name = {f["file"]: f for f in state["files"]}
    assert [f["status"] for f in state["files"]] == [
        "done", "failed", "failed", "failed", "failed", "done"]
    assert by_name["text.png"]["error"] == "not an image, or a format that cannot be read"
    assert "--max-upload-mb" in by_name["huge.png"]["error"]
    assert "too small" in by_name["thin.png"]["error"]
    assert by_name["broken.png"]["error"].startswith("cannot decode")
    assert state["counts"] == {"total": 6, "queued": 0, "running": 0, "done": 2, "failed": 4,
                               "cancelled": 0}
    archive = zipfile.ZipFile(io.BytesIO(jobs_server.client.get(state["results_url"]).content))
    assert sorted(archive.namelist()) == ["good.png", "good2.png", "results.json"]
    refused = jobs_server.client.get(f"{state['url']}/files/1")
    assert refused.status_code == 409 and refused.json()["error"] == "not_ready"


@pytest.mark.slow
def test_a_bad_form_is_refused_whole_and_the_api_is_in_the_schema(jobs_server):
    reply = jobs_server.client.post("/jobs", files=job_files([("a.png", png())]),
                                    data={"format": "gif"})
    assert reply.status_code == 422 and "unknown format 'gif'" in reply.json()["detail"]
    missing = jobs_server.client.get("/jobs/0123456789abcdef0123456789abcdef")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    paths = jobs_server.client.get("/openapi.json").json()["paths"]
    assert set(paths["/jobs"]) == {"post"}
    form = paths["/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form == paths["/animeify"]["post"]["requestBody"]["content"][
        "multipart/form-data"]["schema"]  # the same form, new fields included
    assert set(paths["/jobs/{job_id}"]) == {"get", "delete"}
    assert set(paths["/jobs/{job_id}/results"]) == {"get"}
    assert set(paths["/jobs/{job_id}/files/{index}"]) == {"get"}
    metrics = jobs_server.client.get("/metrics").text
    assert 'animegan_jobs{state="queued"}' in metrics
    assert 'animegan_jobs{state="running"}' in metrics


@pytest.mark.slow
def test_a_request_goes_before_a_big_jobs_images(jobs_server):
    uploads = [(f"big{i}.jpg", photo_bytes(300, 200, seed=20 + i)) for i in range(12)]
    job = submit(jobs_server, uploads, {"size": "512"})
    before = wait_for(jobs_server, job, lambda j: j["counts"]["done"] >= 1)["counts"]["done"]
    reply = jobs_server.client.post("/animeify", files=job_files([("now.png", png(seed=9))]))
    assert reply.status_code == 200
    after = jobs_server.client.get(job["url"]).json()
    # It waited for the job's images already in the engine, at most, not for the job.
    assert after["state"] == "running" and after["counts"]["done"] <= before + 3
    assert jobs_server.client.delete(job["url"]).status_code == 200


@pytest.mark.slow
def test_cancel_stops_the_job_and_removes_its_files(jobs_server):
    uploads = [(f"slow{i}.jpg", photo_bytes(300, 200, seed=40 + i)) for i in range(12)]
    job = submit(jobs_server, uploads, {"size": "512"})
    wait_for(jobs_server, job, lambda j: j["counts"]["done"] >= 1)
    reply = jobs_server.client.delete(job["url"])
    assert reply.status_code == 200 and reply.json()["state"] == "cancelled"
    assert not (jobs_server.data_dir / job["id"]).exists()
    runs = sum(r for _, _, r in store_rows(jobs_server.data_dir, job["id"]))
    time.sleep(1.5)  # nothing more is styled for it
    assert sum(r for _, _, r in store_rows(jobs_server.data_dir, job["id"])) == runs < 12
    state = jobs_server.client.get(job["url"]).json()
    assert state["state"] == "cancelled" and state["counts"]["cancelled"] >= 1
    assert jobs_server.client.get(f"{job['url']}/files/0").status_code == 409
    assert not (jobs_server.data_dir / job["id"]).exists()  # no late result wrote it back


@pytest.mark.slow
def test_kill_9_and_sigterm_mid_job_resume_and_every_file_is_styled_once(
        module_checkpoint, tmp_path):
    data_dir = tmp_path / "data"
    args = ("--data-dir", str(data_dir), "--max-size", "512")
    uploads = [(f"p{i}.jpg", photo_bytes(300, 200, seed=60 + i)) for i in range(12)]
    server = Server(module_checkpoint, *args)
    job = submit(server, uploads, {"size": "512"})
    wait_for(server, job, lambda j: j["counts"]["done"] >= 2)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(30)
    finished = {i: runs for i, status, runs in store_rows(data_dir, job["id"]) if status == "done"}
    assert 2 <= len(finished) < 12 and set(finished.values()) == {1}

    server = Server(module_checkpoint, *args)  # the same folder: the job goes on
    wait_for(server, job, lambda j: j["counts"]["done"] >= len(finished) + 2)
    assert server.stop() == 0  # SIGTERM mid-job: a clean stop
    finished.update((i, runs) for i, status, runs in store_rows(data_dir, job["id"])
                    if status == "done")
    assert len(finished) < 12

    server = Server(module_checkpoint, *args)
    try:
        state = wait_for(server, job)
    finally:
        server.stop()
    assert state["state"] == "done" and state["counts"]["done"] == 12
    rows = store_rows(data_dir, job["id"])
    assert all(status == "done" for _, status, _ in rows)
    # A finished file was never styled again; one cut short by a stop at most once more.
    assert all(runs == finished[i] for i, _, runs in rows if i in finished)
    assert all(1 <= runs <= 3 for _, _, runs in rows)
    results = sorted(p.name for p in (data_dir / job["id"]).iterdir())
    assert results == sorted(f"result-{i}.png" for i in range(12))  # one each, uploads gone
    for i in range(len(uploads)):
        with Image.open(data_dir / job["id"] / f"result-{i}.png") as img:
            assert max(img.size) == 512


@pytest.mark.slow
def test_jobs_expire_after_keep_results(module_checkpoint, tmp_path):
    data_dir = tmp_path / "data"
    server = Server(module_checkpoint, "--data-dir", str(data_dir), "--keep-results", "1")
    try:
        job = submit(server, [("a.png", png())])
        assert wait_for(server, job)["state"] == "done"
        assert (data_dir / job["id"]).exists()
        time.sleep(2.5)
        gone = server.client.get(job["url"])
        assert gone.status_code == 404
        assert not (data_dir / job["id"]).exists()
        assert server.client.get(f"{job['url']}/results").status_code == 404
    finally:
        server.stop()


@pytest.mark.slow
def test_each_job_belongs_to_its_token_and_limits_hold(module_checkpoint, tmp_path):
    data_dir = tmp_path / "data"
    alice, bob = ({"Authorization": f"Bearer {t}"} for t in ("alice-secret", "bob-secret"))
    server = TokenServer(module_checkpoint, "--data-dir", str(data_dir), "--max-jobs", "1",
                    "--max-size", "512", "--jobs-disk-mb", "0.5",
                    env={"ANIMEGAN_TOKEN": "alice-secret,bob-secret"})
    try:
        slow = [(f"s{i}.jpg", photo_bytes(300, 200, seed=80 + i)) for i in range(4)]
        job = submit(server, slow, {"size": "512"}, headers=alice)
        assert server.client.get(job["url"]).status_code == 401
        for path in (job["url"], f"{job['url']}/results", f"{job['url']}/files/0"):
            refused = server.client.get(path, headers=bob)
            assert refused.status_code == 404, path
        assert server.client.delete(job["url"], headers=bob).status_code == 404
        # --max-jobs 1: alice's second job waits for her first; bob's own is taken.
        second = server.client.post("/jobs", files=job_files([("a.png", png())]), headers=alice)
        assert second.status_code == 429 and second.json()["error"] == "too_many"
        theirs = submit(server, [("b.png", png(seed=5))], headers=bob)
        assert wait_for(server, job, headers=alice)["state"] == "done"
        assert wait_for(server, theirs, headers=bob)["state"] == "done"
        # --jobs-disk-mb 0.5: a job that would take the store over it is refused.
        full = server.client.post("/jobs", files=job_files([(f"big{i}.png", os.urandom(190_000))
                                                            for i in range(3)]), headers=bob)
        assert full.status_code == 503 and "--jobs-disk-mb" in full.json()["detail"]
        assert full.headers["retry-after"] == "1"
    finally:
        server.stop()


@pytest.mark.slow
def test_the_page_sends_a_folder_as_a_job_and_shows_its_progress(jobs_server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    folder = tmp_path / "holiday"
    folder.mkdir()
    for i in range(3):
        make_image(folder / f"photo{i}.png", 40, 28, seed=90 + i)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(jobs_server.url + "/")
            page.set_input_files("#folder", str(folder))
            page.wait_for_selector(".job.done", timeout=60_000)
            assert page.locator(".job.done .status").inner_text().strip() == "job done: 3 of 3 done"
            assert page.locator(".job.done progress").get_attribute("value") == "3"
            assert page.locator(".job.done a[download]").count() == 1
        finally:
            browser.close()


# --- fast, in-process ----------------------------------------------------------------------

def test_a_file_left_running_with_its_result_on_disk_is_done_not_styled_again(tmp_path):
    from animegan_cli.serve.jobs.store import JobStore, NewFile

    store = JobStore(tmp_path / "data", keep_results_s=60, disk_bytes=2**20)
    assert not (tmp_path / "data").exists()  # nothing on disk before the first job
    job = store.create("", "{}", "", [NewFile("a.png", b"a"), NewFile("b.png", b"b"),
                                      NewFile("c.png", error="too big")])
    first, second = store.claim(), store.claim()
    assert (first.index, second.index) == (0, 1) and store.claim() is None
    (tmp_path / "data" / job / "result-0.png").write_bytes(b"styled")  # renamed, not committed
    store.close()

    reopened = JobStore(tmp_path / "data", keep_results_s=60, disk_bytes=2**20)
    assert reopened.resume() == 1  # b goes back to the queue; a is done
    rows = {row.name: row.status for row in reopened.files(job)}
    assert rows == {"a.png": "done", "b.png": "queued", "c.png": "failed"}
    claim = reopened.claim()
    assert claim is not None and claim.index == 1 and reopened.claim() is None
    view = reopened.job(job, "")
    assert view is not None and view.state == "running"
    assert reopened.job(job, "someone else") is None
    reopened.finish(claim, b"styled b", ".png")
    view = reopened.job(job, "")
    assert view is not None and view.state == "done" and view.finished is not None


def test_a_store_over_its_disk_budget_refuses_a_job_and_leaves_nothing(tmp_path):
    from animegan_cli.serve.jobs.store import JobStore, NewFile, StoreFull

    store = JobStore(tmp_path, keep_results_s=60, disk_bytes=10)
    store.create("", "{}", "", [NewFile("a", b"12345")])
    with pytest.raises(StoreFull, match="--jobs-disk-mb"):
        store.create("", "{}", "", [NewFile("b", b"123456")])
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1


def test_a_jobs_image_waits_while_a_requests_image_does():
    import threading

    from animegan_cli.serve.batcher import Batcher

    order: list[str] = []
    gate = threading.Event()

    def run(payloads):
        gate.wait(5)
        order.extend(payloads)
        return payloads

    batcher = Batcher(run, max_batch_size=1, queue_size=1)
    first = batcher.submit([("s", "job0")], low=True)
    batcher.start()
    time.sleep(0.1)  # job0 runs, held at the gate
    later = batcher.submit([("s", "job1"), ("s", "job2")], low=True)  # no room counted
    request = batcher.submit([("s", "request")])
    gate.set()
    for future in first + later + request:
        future.result(5)
    batcher.close(5)
    assert order == ["job0", "request", "job1", "job2"]


def test_several_tokens_and_the_default_data_dir(monkeypatch, tmp_path):
    from animegan_cli.serve.jobs.store import default_data_dir
    from animegan_cli.serve.service import ServeSettings

    assert ServeSettings(token="alice-secret, bob-secret").tokens == ("alice-secret",
                                                                      "bob-secret")
    assert ServeSettings(token=None).tokens == ()
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "animegan" / "jobs"
