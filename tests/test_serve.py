"""``animegan serve`` end to end: a real uvicorn server in a subprocess, talked to with httpx.

Slow (each server imports torch and warms the model up). The fast pieces (naming, form
fields, the error JSON) are tested in-process at the end, without a server.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_image, photo_like

ROOT = Path(__file__).resolve().parents[1]
# Both sides of every comparison run the same engine: torch fp32 is deterministic on CPU.
ENGINE = ["--backend", "torch", "--precision", "fp32", "--size", "128"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m animegan_cli serve ...` on a free port; waits until /readyz says ready."""

    def __init__(self, checkpoint: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "animegan_cli", "serve", "--weights", str(checkpoint),
                   *ENGINE, "--port", str(self.port), *args]
        self.log = io.BytesIO()
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        threading.Thread(target=self._drain, daemon=True).start()
        self.client = httpx.Client(base_url=self.url, timeout=60)
        try:
            self._wait_ready(env or {})
        except BaseException:
            self.process.kill()
            self.process.wait()
            raise

    def _drain(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            self.log.write(line)

    def _wait_ready(self, env: dict[str, str]) -> None:
        token = env.get("ANIMEGAN_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.getvalue().decode()
            try:
                if self.client.get("/readyz", headers=headers).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("server not ready: " + self.log.getvalue().decode())

    def metric(self, name: str, headers: dict[str, str] | None = None) -> float:
        """A metric's value from /metrics (0 when absent)."""
        for line in self.client.get("/metrics", headers=headers).text.splitlines():
            if not line.startswith("#") and line.rsplit(" ", 1)[0] == name:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.client.close()
        return self.process.wait(60)


@pytest.fixture(scope="module")
def module_checkpoint(tmp_path_factory) -> Path:
    from tests.conftest import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("ck") / "random.pt")


@pytest.fixture(scope="module")
def server(module_checkpoint, tmp_path_factory):
    home = tmp_path_factory.mktemp("serve-home")
    env = {"XDG_CACHE_HOME": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "config")}
    # --max-size 512: a request asks size 512 to make its images slow (see below).
    running = Server(module_checkpoint, "--max-upload-mb", "0.2", "--max-pixels", "1M",
                     "--max-size", "512", env=env)
    yield running
    running.stop()


def photo_bytes(width: int = 300, height: int = 200, seed: int = 0, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo_like(width, height, seed), "RGB").save(buffer, fmt)
    return buffer.getvalue()


def server_ms(reply: httpx.Response) -> float:
    """The milliseconds the server says it spent (its Server-Timing header)."""
    return float(reply.headers["server-timing"].split("dur=")[1])


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGBA" if "A" in img.getbands() else "RGB"))


def convert_pixels(folder: Path, checkpoint: Path, tmp_path: Path,
                   *args: str) -> dict[str, np.ndarray]:
    """What `animegan convert` writes for a folder, as pixel arrays by output name."""
    out = tmp_path / "convert-out"
    subprocess.run([sys.executable, "-m", "animegan_cli", "convert", str(folder), "-o", str(out),
                    "--weights", str(checkpoint), *ENGINE, "--format", "png", "-q", *args],
                   check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return {p.name: pixels(p.read_bytes()) for p in out.glob("*.png")}


@pytest.mark.slow
def test_one_file_comes_back_as_an_image_equal_to_converts(server, module_checkpoint, tmp_path):
    folder = tmp_path / "in"
    make_image(folder / "photo.jpg", 300, 200, seed=11)
    make_image(folder / "clear.png", 200, 300, mode="RGBA", seed=12)
    expected = convert_pixels(folder, module_checkpoint, tmp_path)
    for name in ("photo.jpg", "clear.png"):
        upload = {"files": (name, (folder / name).read_bytes())}
        reply = server.client.post("/animeify", files=upload)
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == "image/png"
        assert np.array_equal(pixels(reply.content), expected[Path(name).stem + ".png"])


@pytest.mark.slow
def test_several_files_come_back_as_a_zip_in_order_with_a_bad_one_failing_alone(server):
    files = [("files", ("a.jpg", photo_bytes(seed=21))),
             ("files", ("notes.txt", b"not an image at all")),
             ("files", ("../../etc/a.jpg", photo_bytes(seed=22))),
             ("files", ("tiny.png", photo_bytes(1000, 4, fmt="PNG")))]
    reply = server.client.post("/animeify", files=files, data={"format": "jpg", "quality": "80"})
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(reply.content))
    assert archive.namelist() == ["a.jpg", "a-2.jpg", "results.json"]  # no path, made unique
    records = json.loads(archive.read("results.json"))
    assert [r["status"] for r in records] == ["converted", "failed", "converted", "failed"]
    assert records[1]["error"] == "not an image, or a format that cannot be read"
    assert "too small" in records[3]["error"]
    with Image.open(io.BytesIO(archive.read("a.jpg"))) as img:
        assert img.format == "JPEG"


@pytest.mark.slow
@pytest.mark.parametrize(("case", "status", "reason"), [
    ("pdf", 415, "not an image, or a format that cannot be read"),
    ("sliver", 422, "too small"),
    ("huge", 413, "is 1500x1000 (2 MP), over the --max-pixels limit of 1 MP; not decoded"),
    ("heavy", 413, "over the --max-upload-mb limit of 0.2 MB"),
])
def test_a_single_bad_file_gets_its_status_and_the_clis_reason(server, case, status, reason):
    flat = io.BytesIO()
    Image.new("RGB", (1500, 1000), (9, 99, 199)).save(flat, "PNG")  # small file, many pixels
    upload = {"pdf": b"%PDF-1.4 not an image", "sliver": photo_bytes(1000, 4, fmt="PNG"),
              "huge": flat.getvalue(), "heavy": os.urandom(300_000)}[case]
    reply = server.client.post("/animeify", files={"files": ("x.png", upload)})
    assert reply.status_code == status
    body = reply.json()
    assert set(body) == {"error", "detail"} and reason in body["detail"]


@pytest.mark.slow
def test_every_other_error_is_json_too(server):
    assert server.client.get("/nothing-here").json() == {"error": "not_found",
                                                         "detail": "Not Found"}
    assert server.client.get("/animeify").status_code == 405
    assert set(server.client.get("/animeify").json()) == {"error", "detail"}
    for data in ({"format": "gif"}, {"quality": "0"}, {"size": "abc"}, {"size": "3"}):
        reply = server.client.post("/animeify", files={"files": ("a.jpg", photo_bytes())},
                                   data=data)
        assert reply.status_code == 422 and set(reply.json()) == {"error", "detail"}, data
    reply = server.client.post("/animeify", json={"files": []})
    assert reply.status_code == 415 and "multipart/form-data" in reply.json()["detail"]


@pytest.mark.slow
def test_a_repeated_upload_is_a_cache_hit_that_never_reaches_the_engine(server):
    upload = {"files": ("same.jpg", photo_bytes(seed=31))}
    first = server.client.post("/animeify", files=upload)
    engine_before = server.metric("animegan_engine_images_total")
    hits_before = server.metric("animegan_cache_hits_total")
    second = server.client.post("/animeify", files=upload)
    assert first.headers["x-animegan-cached"] == "false"
    assert second.headers["x-animegan-cached"] == "true"
    assert second.content == first.content
    assert server.metric("animegan_engine_images_total") == engine_before
    assert server.metric("animegan_cache_hits_total") == hits_before + 1
    other = server.client.post("/animeify", files=upload, data={"format": "webp"})
    assert other.headers["x-animegan-cached"] == "false"  # other settings, other key


@pytest.mark.slow
def test_health_readiness_metrics_docs_and_the_page(server):
    assert server.client.get("/healthz").json() == {"status": "ok"}
    ready = server.client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["engine"] == "torch cpu fp32"
    text = server.client.get("/metrics").text
    for name in ("animegan_requests_total", "animegan_batch_size_bucket",
                 "animegan_request_seconds_bucket", "animegan_queue_depth",
                 "animegan_cache_hits_total"):
        assert name in text
    assert server.client.get("/openapi.json").json()["paths"]["/animeify"]["post"]
    assert server.client.get("/docs").status_code == 200
    page = server.client.get("/")
    assert page.status_code == 200 and "app.js" in page.text and "http" not in page.text
    assert "fetch(" in server.client.get("/app.js").text


@pytest.mark.slow
def test_a_client_that_goes_away_has_its_queued_images_dropped(server):
    engine_before = server.metric("animegan_engine_images_total")
    files = [("files", (f"{i}.jpg", photo_bytes(600, 400, seed=100 + i))) for i in range(12)]
    with httpx.Client(timeout=60) as client:
        # size 512: slow enough per image that most still wait when the client leaves.
        with client.stream("POST", server.url + "/animeify", files=files,
                           data={"size": "512"}) as reply:
            assert reply.status_code == 200  # the ZIP has started; leave without reading it
    deadline = time.monotonic() + 30
    while server.metric("animegan_queue_depth") and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    computed = server.metric("animegan_engine_images_total") - engine_before
    assert server.metric('animegan_images_total{status="dropped"}') > 0
    assert computed < 12


@pytest.mark.slow
def test_a_token_guards_every_endpoint_but_healthz(module_checkpoint):
    running = Server(module_checkpoint, env={"ANIMEGAN_TOKEN": "s3cret"})
    try:
        client = running.client
        assert client.get("/healthz").status_code == 200
        for path in ("/readyz", "/metrics", "/docs", "/openapi.json"):
            reply = client.get(path)
            assert reply.status_code == 401 and reply.json()["error"] == "unauthorized", path
        wrong = client.post("/animeify", files={"files": ("a.jpg", photo_bytes())},
                            headers={"Authorization": "Bearer s3cre7"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        right = client.post("/animeify", files={"files": ("a.jpg", photo_bytes())},
                            headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200
    finally:
        assert running.stop() == 0


@pytest.mark.slow
def test_a_full_queue_answers_503_at_once_and_serves_normally_after(module_checkpoint):
    running = Server(module_checkpoint, "--queue-size", "1", "--cache-mb", "0")
    try:
        def post(seed: int) -> httpx.Response:
            files = {"files": (f"{seed}.jpg", photo_bytes(600, 400, seed=seed))}
            return httpx.post(running.url + "/animeify", files=files, timeout=120)

        replies: list[httpx.Response] = []
        threads = [threading.Thread(target=lambda s=s: replies.append(post(s)))
                   for s in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = sorted(r.status_code for r in replies)
        assert set(statuses) == {200, 503}, statuses
        busy = [r for r in replies if r.status_code == 503]
        assert all(r.headers["retry-after"] == "1" and r.json()["error"] == "busy" for r in busy)
        # Server-side time (the client's includes its own upload); the median, as a machine
        # shared by other jobs stalls any process now and then.
        busy_ms = sorted(server_ms(r) for r in busy)
        assert busy_ms[len(busy_ms) // 2] < 250, busy_ms
        assert post(99).status_code == 200  # still serving
    finally:
        assert running.stop() == 0


@pytest.mark.slow
def test_batched_images_from_several_clients_equal_converts(module_checkpoint, tmp_path):
    folder = tmp_path / "in"
    for i in range(4):
        make_image(folder / f"p{i}.png", 300, 200, seed=40 + i)
    expected = convert_pixels(folder, module_checkpoint, tmp_path)
    running = Server(module_checkpoint, "--max-batch-size", "4", "--batch-wait-ms", "1500")
    try:
        replies: dict[str, httpx.Response] = {}

        def post(name: str) -> None:
            files = {"files": (name, (folder / name).read_bytes())}
            replies[name] = httpx.post(running.url + "/animeify", files=files, timeout=120)

        threads = [threading.Thread(target=post, args=(f"p{i}.png",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert running.metric("animegan_batch_size_sum") / running.metric(
            "animegan_batch_size_count") > 1  # they did share batches
        for name, reply in replies.items():
            assert np.array_equal(pixels(reply.content), expected[name]), name
    finally:
        running.stop()


@pytest.mark.slow
def test_sigterm_finishes_in_flight_requests_then_exits_0(module_checkpoint):
    running = Server(module_checkpoint, "--cache-mb", "0")
    files = [("files", (f"{i}.jpg", photo_bytes(600, 400, seed=200 + i))) for i in range(4)]
    replies: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: replies.append(
        httpx.post(running.url + "/animeify", files=files, timeout=120)))
    sender.start()
    deadline = time.monotonic() + 30
    while not running.metric("animegan_queue_depth") and time.monotonic() < deadline:
        time.sleep(0.05)
    running.process.send_signal(signal.SIGTERM)
    sender.join(120)
    assert running.process.wait(60) == 0
    assert replies and replies[0].status_code == 200
    records = json.loads(zipfile.ZipFile(io.BytesIO(replies[0].content)).read("results.json"))
    assert [r["status"] for r in records] == ["converted"] * 4
    with pytest.raises(httpx.TransportError):
        httpx.get(running.url + "/healthz", timeout=2)


@pytest.mark.slow
def test_the_page_uploads_two_photos_and_shows_two_results(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    photos = [make_image(tmp_path / f"page{i}.jpg", 300, 200, seed=300 + i) for i in range(2)]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.set_input_files("#files", [str(path) for path in photos])
            page.wait_for_function("document.querySelectorAll('.pair.done').length == 2",
                                   timeout=60_000)
            assert page.locator(".pair.done .result img").count() == 2
            assert page.locator(".pair.done .result a[download]").count() == 2
            widths = page.eval_on_selector_all(".result img", "els => els.map(e => e.naturalWidth)")
            assert widths == [128, 128]
        finally:
            browser.close()


def test_upload_names_never_become_paths_and_collisions_are_numbered():
    from animegan_cli.serve.app import unique_names

    assert unique_names(["../../etc/passwd", "C:\\Users\\x\\photo.JPG", "photo.jpg", "",
                         "Photo.png", ".hidden", "a b?.jpg"]) == [
        "passwd", "photo", "photo-2", "image", "Photo-3", "hidden", "a_b"]


def test_the_page_is_package_data_a_wheel_ships():
    import tomllib

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["animegan_cli.serve"]
    static = ROOT / "animegan_cli" / "serve" / "static"
    shipped = {p.name for g in globs for p in (ROOT / "animegan_cli" / "serve").glob(g)}
    assert shipped == {p.name for p in static.iterdir()} >= {"index.html", "app.js"}
    assert "src=\"app.js\"" in (static / "index.html").read_text()


def test_serve_without_its_extra_says_what_to_install(monkeypatch):
    from click.testing import CliRunner

    import animegan_cli.serve
    from animegan_cli.cli.app import main

    monkeypatch.delitem(sys.modules, "animegan_cli.serve.app", raising=False)
    monkeypatch.delattr(animegan_cli.serve, "app", raising=False)
    monkeypatch.setitem(sys.modules, "fastapi", None)
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 2
    assert result.output == ('animegan: error: serve needs FastAPI and uvicorn: '
                             'pip install -e ".[serve]" in the animegan checkout\n')


def test_serve_help_does_not_import_the_web_stack():
    code = ("import sys; from animegan_cli.cli.app import main\n"
            "try: main(['serve', '--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'animegan_cli.serve.app')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert out.strip().endswith("[]")


def test_form_fields_become_request_arguments_or_a_422():
    from animegan_cli.serve.app import _request_fields
    from animegan_cli.serve.service import ImageError

    assert _request_fields({"format": "JPG", "quality": "80", "size": "256",
                            "keep_size": "true"}) == {"format_": "jpg", "quality": 80,
                                                      "size": 256, "keep_size": True}
    for fields in ({"quality": "high"}, {"keep_size": "maybe"}, {"colour": "red"}):
        with pytest.raises(ImageError) as caught:
            _request_fields(fields)
        assert caught.value.status == 422
