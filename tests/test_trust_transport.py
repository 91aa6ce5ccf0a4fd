"""Issue 22, serve's transport: connections, timeouts, protocol errors, start-up and stop.

Items 7 (idle/trickling connections, the connection cap, the open-file limit), 10 (a model
that cannot run), 11 (client mistakes as 4xx JSON, no internals in a 500) and 12 (SIGTERM
within --grace). Real uvicorn servers on 127.0.0.1 in subprocesses (slow), raw sockets for
what an HTTP client would not send; the app through httpx where no server is needed.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from tests.test_serve import ENGINE, ROOT, Server, free_port, photo_bytes

TINY = ["--size", "64"]  # after ENGINE's --size: the last one wins
INVALID_SIZE = "99999999999999999999"


@pytest.fixture(scope="module")
def module_checkpoint(tmp_path_factory) -> Path:
    from tests.conftest import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("ck") / "random.pt")


@pytest.fixture(scope="module")
def home_env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("transport-home")
    return {"XDG_CACHE_HOME": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "config")}


def serve_command(checkpoint: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "animegan_cli", "serve", "--weights", str(checkpoint),
            *ENGINE, *TINY, "--port", str(free_port()), *args]


def raw_connection(server: Server, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a timeout fails the test)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def json_answer(raw: bytes) -> tuple[int, dict[str, str], dict]:
    """Status, headers and JSON body of one raw HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert headers["content-type"].startswith("application/json"), raw
    return int(lines[0].split()[1]), headers, json.loads(body)


@pytest.mark.slow
def test_item7_idle_and_trickling_connections_are_closed_and_the_rest_capped(
        module_checkpoint, home_env):
    server = Server(module_checkpoint, *TINY, "--max-connections", "6", "--header-timeout",
                    "2", "--keep-alive-timeout", "1", env=home_env)
    try:
        server.client.close()  # its kept-alive connection would count
        time.sleep(1.5)
        idle = [raw_connection(server) for _ in range(6)]
        time.sleep(0.3)
        # Over the cap: a 503 at once, not a hang behind the idle ones.
        extra = raw_connection(server, timeout=5)
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = json_answer(read_all(extra))
        assert status == 503 and headers["retry-after"] == "1" and body["error"] == "busy"
        assert "--max-connections 6" in body["detail"]
        # Connections that never send anything are closed after --header-timeout.
        assert [read_all(sock) for sock in idle] == [b""] * 6
        # A client trickling its headers (slowloris) is closed too, told why.
        trickler = raw_connection(server)
        try:
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
                trickler.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass  # closed under us: what is expected
        status, _, body = json_answer(read_all(trickler))
        assert status == 408 and "--header-timeout" in body["detail"]
        # After a response, an idle kept-alive connection goes after --keep-alive-timeout.
        kept = raw_connection(server)
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b'{"status":"ok"}' in read_all(kept)
        assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
    finally:
        assert server.stop() == 0


@pytest.mark.slow
def test_item7_the_open_file_limit_is_raised_and_the_cap_fitted_under_it(
        module_checkpoint, home_env):
    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 400))  # systemd's shape: soft < hard

    process = subprocess.Popen(
        serve_command(module_checkpoint, "--max-connections", "1000"), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, preexec_fn=low_soft_limit,
        env={**os.environ, "PYTHONPATH": str(ROOT), **home_env})
    try:
        lines = []
        for line in process.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if "Uvicorn running" in line or len(lines) > 50:
                break
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        soft, hard = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits).groups()  # type: ignore[union-attr]
        assert (soft, hard) == ("400", "400")
        assert any("--max-connections lowered from 1000 to" in line for line in lines), lines
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


@pytest.mark.slow
def test_item10_a_size_convert_refuses_is_refused_at_start(module_checkpoint, home_env):
    done = subprocess.run(serve_command(module_checkpoint, "--size", "12000"),
                          capture_output=True, text=True, timeout=90,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **home_env})
    assert done.returncode == 2
    assert "--size 12000" in done.stderr and "needs about" in done.stderr
    assert "more than --max-memory" in done.stderr


@pytest.mark.slow
def test_item10_a_warm_up_that_fails_says_why_on_stderr_and_exits_1(module_checkpoint,
                                                                     home_env):
    # The model cannot run: a warm-up that raises, as it does where the engine cannot
    # allocate its buffers.
    code = ("import sys\n"
            "from animegan_cli.serve import service as image_service\n"
            "def boom(self): raise RuntimeError('cannot allocate the engine buffers')\n"
            "image_service.ImageService.warm_up = boom\n"
            "from animegan_cli.cli.app import main\n"
            "main(sys.argv[1:])\n")
    command = [sys.executable, "-c", code, *serve_command(module_checkpoint)[3:]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **home_env})
    assert done.returncode == 1, done.stderr
    assert ("animegan: error: the model failed to run: RuntimeError: cannot allocate the "
            "engine buffers") in done.stderr


def _bare_app():
    """The app on a stand-in model, without a server or lifespan: its lifecycle set by hand."""
    from animegan_cli.serve.app import create_app
    from animegan_cli.serve.service import ServeSettings

    stand_in = SimpleNamespace(pixels=SimpleNamespace(size=64, align_corners=False),  # no engine
                               spec=SimpleNamespace(precision="fp32", backend="torch"))
    return create_app(stand_in, ServeSettings())  # type: ignore[arg-type]


def _get(app, *paths: str) -> list[httpx.Response]:
    async def fetch() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return [await client.get(path) for path in paths]

    return asyncio.run(fetch())


def test_item10_healthz_and_readyz_tell_a_model_that_cannot_run():
    app = _bare_app()
    assert _get(app, "/healthz")[0].json() == {"status": "ok"}
    app.state.lifecycle.fail("the model failed to run: RuntimeError: no memory")
    for reply in _get(app, "/healthz", "/readyz"):
        assert reply.status_code == 500
        assert reply.json() == {"error": "failed",
                                "detail": "the model failed to run: RuntimeError: no memory"}


def test_item11_an_internal_error_says_internal_error_and_nothing_else():
    app = _bare_app()
    app.state.lifecycle.ready.set()  # /readyz then asks the stand-in model its name: fails
    reply = _get(app, "/readyz")[0]
    assert reply.status_code == 500
    assert reply.json() == {"error": "failed", "detail": "internal error"}


@pytest.mark.slow
def test_item11_client_mistakes_are_4xx_json_without_internals(module_checkpoint, home_env):
    server = Server(module_checkpoint, *TINY, env=home_env)
    try:
        image = {"files": ("a.png", photo_bytes(40, 28, fmt="PNG"))}
        reply = server.client.post("/animeify", files=image, data={"size": INVALID_SIZE})
        assert 400 <= reply.status_code < 500
        assert set(reply.json()) == {"error", "detail"}
        assert "Error" not in reply.json()["detail"]  # no exception type, no traceback
        boundary = "b" * 300
        reply = server.client.post(
            "/animeify", content=f"--{boundary}\r\n".encode(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert reply.status_code == 400 and reply.json()["error"] == "bad_request"
        # uvicorn/h11's own 400s (request line, headers) are the same JSON.
        for raw in (b"NOT AN HTTP REQUEST\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"):
            sock = raw_connection(server)
            sock.sendall(raw)
            status, _, body = json_answer(read_all(sock))
            assert status == 400 and body["error"] == "bad_request", raw
        assert server.client.post("/animeify", files=image).status_code == 200
    finally:
        assert server.stop() == 0


@pytest.mark.slow
def test_item12_sigterm_stops_within_grace_and_answers_in_flight_requests(module_checkpoint,
                                                                         home_env):
    grace = 3
    server = Server(module_checkpoint, "--grace", str(grace), "--cache-mb", "0",
                    "--size", "512", env=home_env)
    replies: dict[str, httpx.Response | Exception] = {}

    def post(name: str, files: list) -> None:
        try:
            replies[name] = httpx.post(server.url + "/animeify", files=files, timeout=120)
        except httpx.HTTPError as exc:
            replies[name] = exc

    # Far more work than the grace: a ZIP of 12 images at 512, then one image behind it.
    many = [("files", (f"{i}.jpg", photo_bytes(600, 400, seed=500 + i))) for i in range(12)]
    senders = [threading.Thread(target=post, args=("zip", many))]
    senders.append(threading.Thread(target=post, args=(
        "one", [("files", ("one.jpg", photo_bytes(600, 400, seed=600)))])))
    senders[0].start()
    deadline = time.monotonic() + 60
    while server.metric("animegan_queue_depth") < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    senders[1].start()
    time.sleep(0.5)
    stopped_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0
    took = time.monotonic() - stopped_at
    for sender in senders:
        sender.join(60)
    assert took < grace + 5, f"the stop took {took:.1f} s for --grace {grace}"
    archive = replies["zip"]
    assert isinstance(archive, httpx.Response) and archive.status_code == 200, archive
    records = json.loads(zipfile.ZipFile(io.BytesIO(archive.content)).read("results.json"))
    assert len(records) == 12
    assert {r["status"] for r in records} <= {"converted", "failed"}
    assert any(r["error"] == "the server is stopping; try again" for r in records)
    single = replies["one"]
    assert isinstance(single, httpx.Response), single
    assert single.status_code in (200, 503), single.text
    if single.status_code == 503:
        assert single.json()["error"] == "busy" and single.headers["retry-after"] == "1"
