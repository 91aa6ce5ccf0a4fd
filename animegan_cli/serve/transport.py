"""serve's HTTP transport: uvicorn with a connection cap, a deadline for each request's head,
JSON for its protocol-level errors, the open-file limit raised, and a stop within --grace.

uvicorn's h11 protocol keeps a connection that sends nothing, or trickles its headers, open
for ever (its one timer, keep-alive, is armed only after a response), and accepts every
connection until the process runs out of file descriptors: then nothing, /healthz included,
is answered. ``GuardedProtocol`` closes a connection whose request line and headers have not
arrived within --header-timeout, answers connections beyond --max-connections with 503 at
once, and answers malformed requests with the same JSON as the app. ``run_server`` raises
the soft open-file limit to the hard one and keeps the cap under it, and on SIGTERM gives
in-flight requests --grace seconds in all (serve.Lifecycle answers them 503 after it).
"""

from __future__ import annotations

import asyncio
import functools
import http
import json
import os
import resource
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from animegan_cli.serve.app import RETRY_AFTER_S, Lifecycle, error_body
from animegan_cli.serve.service import ServeSettings

# File descriptors the process needs besides its connections: the listening socket, logs,
# the model's files, OpenVINO's cache and plugins, connections being refused (9 at idle with
# torch on CPU, measured; the rest is room for what comes and goes).
FD_RESERVE = 128
# Seconds uvicorn waits past --grace before it cancels requests (and answers them a
# plain-text 500): the app answers every request by the grace itself; this is a safety net.
SHUTDOWN_MARGIN_S = 1.0
# A connection over the cap is answered 503 at once and its request read (and dropped) for
# this long before closing: closing with the request unread would reset the connection, and
# the client could lose the 503.
REFUSED_LINGER_S = 1.0
# Tried when the hard limit is "unlimited", which the soft limit may not be (fs.nr_open).
UNLIMITED_FD_TARGET = 1 << 20


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may hold: a place under the cap, and time to send a head."""

    max_connections: int
    header_timeout: float


def json_response_bytes(status: int, detail: str,
                        headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A whole HTTP/1.1 response with the app's error JSON, closing the connection."""
    body = json.dumps(error_body(status, detail)).encode()
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
             "content-type: application/json", f"content-length: {len(body)}",
             "connection: close", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap, a request-head deadline and JSON 400s."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.head_timer: asyncio.TimerHandle | None = None
        self.refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self._refuse(transport)
            return
        super().connection_made(transport)
        self._arm_head_timer()  # a new connection must send a head, keep-alive or not

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # read only so that closing does not reset the connection
        if self.head_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()  # a new request began after a kept-alive pause
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()  # its head is complete (or broken: answered 400)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self.refused:
            return  # never counted, nothing began
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        # uvicorn's own is plain text; the reason h11 gave is not passed on to here.
        self.transport.write(json_response_bytes(400, "malformed HTTP request line or headers"))
        self.transport.close()

    def _refuse(self, transport: asyncio.Transport) -> None:
        self.transport, self.refused = transport, True
        cap = self.limits.max_connections
        detail = f"too many connections (--max-connections {cap}); try again"
        transport.write(json_response_bytes(503, detail, [("retry-after", str(RETRY_AFTER_S))]))
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(REFUSED_LINGER_S, transport.close)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self.head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # part of a head came: say why it is closed
            detail = (f"the request line and headers did not arrive within "
                      f"{self.limits.header_timeout:g} s (--header-timeout)")
            self.transport.write(json_response_bytes(408, detail))
        self.transport.close()


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (systemd's soft default is 1024).

    Returns the soft limit in force afterwards.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_FD_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass  # keep what we have; the cap is fitted under it
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fit_connections(requested: int, open_files: int) -> tuple[int, str | None]:
    """The connection cap that fits the open-file limit, and a line saying so if lowered."""
    if open_files == resource.RLIM_INFINITY or requested <= open_files - FD_RESERVE:
        return requested, None
    fitted = max(1, open_files - FD_RESERVE)
    return fitted, (f"--max-connections lowered from {requested} to {fitted}: the open-file "
                    f"limit is {open_files} (raise it with LimitNOFILE= or ulimit -n)")


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app when SIGTERM/Ctrl-C starts the stop."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_stop = on_stop

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_stop()
        super().handle_exit(sig, frame)


def run_server(app: FastAPI, host: str, port: int, settings: ServeSettings,
               on_message: Callable[[str], None], log_level: str = "info") -> str | None:
    """Serve until SIGTERM/Ctrl-C, or until the model turns out unable to run.

    Returns None after a requested stop, or why the server could never serve.
    """
    lifecycle: Lifecycle = app.state.lifecycle
    cap, lowered = fit_connections(settings.max_connections, raise_open_file_limit())
    if lowered:
        on_message(lowered)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, lifespan="on",
        http=functools.partial(GuardedProtocol,  # type: ignore[arg-type]
                               limits=ConnectionLimits(cap, settings.header_timeout)),
        timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]
        timeout_graceful_shutdown=settings.grace_s + SHUTDOWN_MARGIN_S,  # type: ignore[arg-type]
    )
    server = _Server(config, lambda: lifecycle.begin_stop(settings.grace_s))

    def stop_for_good() -> None:  # the warm-up failed: nothing to wait for
        lifecycle.begin_stop(0)
        server.should_exit = True

    lifecycle.on_fatal = stop_for_good
    # uvicorn re-raises the signal that stopped it once it has shut down; a stop asked for
    # is a clean exit (status 0), so the handlers it restores afterwards ignore it.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    server.run()
    if not lifecycle.engine_stopped and not lifecycle.fatal:
        # The engine thread is still inside the model, past the grace: a normal exit would
        # run torch's C++ destructors under it and abort (SIGABRT). Leave at once instead.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return lifecycle.fatal
