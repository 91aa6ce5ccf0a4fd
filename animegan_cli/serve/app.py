"""``animegan serve``: the FastAPI app (``create_app``) and the uvicorn server (``run_server``).

One process, one model: requests decode their uploads in the server's thread pool, the
ImageService's one engine thread batches images across requests, results are encoded
through the format table. Every answer that is not a result is JSON
``{"error": ..., "detail": ...}``. Imported only by the ``serve`` command: FastAPI,
uvicorn and prometheus_client are the ``serve`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
import threading
import time
import unicodedata
import urllib.parse
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from importlib import resources
from typing import IO, Any, cast

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request as HTTPRequest

from animegan_cli.media.colour import COLOURS, colour_problem
from animegan_cli.serve.access import SAFE_METHODS, AccessPolicy
from animegan_cli.serve.batcher import Closed, QueueFull
from animegan_cli.serve.budgets import metered, request_refusal
from animegan_cli.serve.cache import CachedResult
from animegan_cli.serve.metrics import Metrics
from animegan_cli.serve.service import ImageError, ImageService, RequestSettings, ServeSettings
from animegan_cli.serve.uploads import FormError, Upload, read_form
from animegan_cli.settings import fields
from animegan_cli.stylizer import Stylizer

# Seconds a client told "busy" should wait: about one batch on a loaded CPU.
RETRY_AFTER_S = 1
# How often a waiting request checks whether its client is still there.
DISCONNECT_POLL_S = 0.1
# Uploads decoded at once, beside the engine thread: as convert's one decoding worker.
DECODE_SLOTS = 1
# The page holds no data (its icon is inline; /favicon.ico, which browsers and tools ask for
# anyway, answers 204): see docs/serve.md.
PUBLIC_PATHS = frozenset({"/healthz", "/", "/app.js", "/favicon.ico"})
# A liveness probe answers whatever Host a load balancer sends: it tells nothing.
UNCHECKED_HOST_PATHS = frozenset({"/healthz"})
# What a page at an --allowed-origin may send and read (CORS).
CORS_HEADERS: dict[str, Any] = {
    "allow_methods": ("GET", "POST", "DELETE"), "allow_headers": ("Authorization",),
    "expose_headers": ("Content-Disposition", "Retry-After", "Server-Timing", "X-Animegan-Cached"),
}
_ERROR_NAMES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 408: "timeout", 409: "not_ready", 413: "too_large",
                415: "not_an_image", 422: "invalid", 429: "too_many", 500: "failed", 503: "busy"}
# Headers every answer of a status carries: a client told "busy" learns when to come back;
# a body that timed out is not read further, so its connection is not kept.
_STATUS_HEADERS = {503: {"Retry-After": str(RETRY_AFTER_S)}, 408: {"Connection": "close"}}
# Seconds past SIGTERM's grace the engine thread gets to stop: an idle one stops at once.
ENGINE_STOP_S = 0.5
STOPPING = "the server is stopping; try again"


class Busy(Exception):
    """503 with Retry-After: the queue is full, the model is not ready, or we are stopping."""


class ClientGone(Exception):
    """The client closed its connection while its images waited."""


@dataclass
class Outcome:
    """One upload of a request: its answer so far, or the Future of its styled pixels."""

    upload: Upload
    key: str = ""
    result: CachedResult | None = None
    error: ImageError | None = None
    cached: bool = False
    item: Any = None  # its data.PreparedImage, once prepared
    future: Future | None = None


@dataclass
class Lifecycle:
    """Where the server is in its life: warming up, ready, failed, or stopping by a deadline.

    The HTTP server (serve_transport.run_server) calls ``begin_stop`` on SIGTERM and sets
    ``on_fatal`` to stop itself; the warm-up calls ``fail`` when the model cannot run.
    """

    ready: threading.Event = field(default_factory=threading.Event)
    fatal: str | None = None
    stop_deadline: float | None = None  # time.monotonic() by which every request is answered
    engine_stopped: bool = True  # False: its thread was still in the model when we stopped
    on_fatal: Callable[[], None] = lambda: None

    def fail(self, reason: str) -> None:
        """The model cannot run: /healthz says so, and the server stops (exit status 1)."""
        self.fatal = reason
        self.on_fatal()

    def begin_stop(self, grace_s: float) -> None:
        """SIGTERM: in-flight requests have ``grace_s`` seconds, then they are answered 503."""
        if self.stop_deadline is None:
            self.stop_deadline = time.monotonic() + grace_s

    @property
    def overdue(self) -> bool:
        """The grace after SIGTERM has run out: answer now, with what there is."""
        return self.stop_deadline is not None and time.monotonic() >= self.stop_deadline

    def time_left(self, default: float) -> float:
        """Seconds until the stop deadline (``default`` when not stopping)."""
        if self.stop_deadline is None:
            return default
        return max(0.0, self.stop_deadline - time.monotonic())


def error_body(status: int, detail: str) -> dict[str, str]:
    """The JSON every non-result answer has: {"error": short name, "detail": one line}."""
    return {"error": _ERROR_NAMES.get(status, "error"), "detail": detail}


def error_response(status: int, detail: str, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    """``error_body`` as a response, with the headers its status always carries."""
    headers = {**_STATUS_HEADERS.get(status, {}), **(headers or {})}
    return JSONResponse(error_body(status, detail), status_code=status, headers=headers)


def _busy(detail: str) -> JSONResponse:
    return error_response(503, detail)


def create_app(stylizer: Stylizer, settings: ServeSettings) -> FastAPI:
    """The app for one loaded Stylizer: routes, token check, JSON errors, engine lifecycle."""
    metrics = Metrics()
    service = ImageService(stylizer, settings, metrics.observe_batch)
    metrics.watch(service)
    state = Lifecycle()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=_warm_up, args=(service, state), daemon=True).start()
        yield
        # Every request has been answered (by the stop deadline): stop the engine within
        # what is left of the grace; a batch still running past it is abandoned.
        state.engine_stopped = await run_in_threadpool(
            service.batcher.close, state.time_left(settings.grace_s) + ENGINE_STOP_S)

    app = FastAPI(title="animegan", summary="Anime-style images from photos (AnimeGANv2)",
                  lifespan=lifespan)
    _add_error_handlers(app)
    _add_middleware(app, settings)
    _add_routes(app, service, metrics, state)
    app.state.lifecycle = state  # for the HTTP server: SIGTERM's deadline, a fatal warm-up
    app.state.service, app.state.metrics = service, metrics  # for serve/jobs' routes
    return app


def _add_middleware(app: FastAPI, settings: ServeSettings) -> None:
    """Host and Origin checks outermost, then CORS for allowed origins, then the token.

    The last one added runs first: a refused Host or Origin never reaches the token check,
    and a CORS preflight (which carries no token) is answered before it.
    """
    policy = AccessPolicy.build(settings.listen_host, settings.allowed_hosts,
                                settings.allowed_origins)
    if settings.tokens:
        app.add_middleware(_TokenCheck, tokens=settings.tokens)
    if policy.origins:
        app.add_middleware(CORSMiddleware, allow_origins=sorted(policy.origins), **CORS_HEADERS)
    app.add_middleware(_AccessCheck, policy=policy)


def _warm_up(service: ImageService, state: Lifecycle) -> None:
    try:
        service.warm_up()
    except Exception as exc:  # noqa: BLE001 - any failure: a server that can never serve
        state.fail(f"the model failed to run: {type(exc).__name__}: {exc}")
        return
    service.batcher.start()
    state.ready.set()


def _add_routes(app: FastAPI, service: ImageService, metrics: Metrics, state: Lifecycle) -> None:
    page = resources.files("animegan_cli.serve") / "static"
    # Decoding far ahead of the engine only takes its cores (convert decodes in one worker).
    decoding = asyncio.Semaphore(DECODE_SLOTS)

    @app.get("/healthz", summary="The process is alive and its model can run")
    async def healthz() -> Response:
        if state.fatal:
            return error_response(500, state.fatal)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", summary="The model is loaded and warmed up")
    async def readyz() -> Response:
        if state.fatal:
            return error_response(500, state.fatal)
        if not state.ready.is_set():
            return _busy("the model is warming up")
        return JSONResponse({"status": "ready", "engine": service.stylizer.description,
                             "style": service.stylizer.style})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics_page() -> Response:
        body, media_type = metrics.render()
        return Response(body, media_type=media_type)

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        # The page offers only the sizes this server takes (--max-size; 0: no cap).
        html = (page / "index.html").read_text().replace(
            '<select id="size">', f'<select id="size" data-max-size="{service.settings.max_size}">')
        return Response(html, media_type="text/html")

    @app.get("/app.js", include_in_schema=False)
    async def script() -> Response:
        return Response((page / "app.js").read_bytes(), media_type="text/javascript")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)  # the page's icon is inline: nothing to fetch

    @app.post("/animeify", summary="Style one or more photos", openapi_extra=_FORM_SCHEMA,
              responses={200: {"description": "One image, or a ZIP for several files"}})
    async def animeify(request: HTTPRequest) -> Response:
        started = time.perf_counter()
        try:
            response = await _before_deadline(
                _animeify(request, service, metrics, state, decoding), state)
        except (FormError, ImageError) as exc:
            response = error_response(exc.status, exc.reason)
        except Busy as exc:
            response = _busy(str(exc))
        seconds = time.perf_counter() - started
        metrics.observe_request(response.status_code, seconds)
        if not isinstance(response, StreamingResponse):  # a ZIP's headers left long ago
            response.headers["Server-Timing"] = f"app;dur={seconds * 1000:.1f}"
        return response


async def _before_deadline(work: Awaitable[Response], state: Lifecycle) -> Response:
    """``work``'s answer, or Busy once SIGTERM's grace has run out (reading, decoding...).

    uvicorn would cancel the request after its own timeout and answer a plain-text 500.
    """
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if not task.done() and state.overdue:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise Busy(STOPPING)
    except asyncio.CancelledError:  # the client went away: so does its work
        task.cancel()
        raise
    return task.result()


async def _animeify(request: HTTPRequest, service: ImageService, metrics: Metrics,
                    state: Lifecycle, decoding: asyncio.Semaphore) -> Response:
    if state.fatal:
        raise Busy(state.fatal)
    if not state.ready.is_set():
        raise Busy("the model is warming up")
    settings = service.settings
    if service.batcher.full:  # busy: not even the body is read
        raise Busy(f"the queue is full ({service.batcher.depth} image(s) waiting); try again")
    with service.inflight.hold() as held:  # bodies in memory, within --max-inflight-mb
        body = metered(request.stream(), held, settings.body_timeout, settings.body_idle_timeout)
        # max_files: filled in by ServeSettings.for_model
        form = await read_form(request.headers.get("content-type", ""), body,
                               settings.max_upload_bytes, cast(int, settings.max_files),
                               settings.max_body_bytes)
        job = service.request(**_request_fields(form.fields),
                              scope=_CACHE_SCOPE_OF[settings.cache_scope](request))
        outcomes = await _start(form.files, job, service, metrics, decoding)
        for outcome in outcomes:  # decoded or answered: the uploaded bytes are not needed
            outcome.upload.data = b""
    if len(outcomes) == 1:
        return await _single(outcomes[0], job, service, metrics, request, state)
    names = unique_names([o.upload.filename for o in outcomes])
    return StreamingResponse(
        _zip_stream(outcomes, names, job, service, metrics, state),
        media_type="application/zip",
        headers={"Content-Disposition": content_disposition("attachment", "animegan.zip")},
    )


# Whose cached results a request may be answered with (--cache-scope). "client": only those
# its own address put there (uvicorn puts a local proxy's X-Forwarded-For address there), so
# neither a hit nor its timing tells one client what another uploaded. "shared": anyone's.
_CACHE_SCOPE_OF: dict[str, Callable[[HTTPRequest], str]] = {
    "client": lambda request: f"client {request.client.host if request.client else '?'}",
    "shared": lambda request: "",
}


def _request_fields(fields: dict[str, str]) -> dict[str, Any]:
    """The form's optional fields as ImageService.request's arguments (422 if malformed)."""
    unknown = set(fields) - {"format", "quality", "size", "keep_size", "colour"}
    if unknown:
        raise ImageError(422, f"unknown form field {sorted(unknown)[0]!r}")
    parsed: dict[str, Any] = {"format_": fields.get("format", "png").lower()}
    for name in ("quality", "size"):
        if fields.get(name):
            try:
                parsed[name] = int(fields[name])
            except ValueError:
                raise ImageError(422, f"{name} must be an integer, not {fields[name]!r}") from None
    if fields.get("keep_size"):
        flag = fields["keep_size"].lower()
        if flag not in ("true", "false", "1", "0", "on", "off"):
            raise ImageError(422, f"keep_size must be true or false, not {fields['keep_size']!r}")
        parsed["keep_size"] = flag in ("true", "1", "on")
    if fields.get("colour"):
        problem = colour_problem(fields["colour"], "colour")
        if problem is not None:
            raise ImageError(422, problem)
        parsed["colour"] = fields["colour"]
    return parsed


async def _start(uploads: list[Upload], job: RequestSettings, service: ImageService,
                 metrics: Metrics, decoding: asyncio.Semaphore) -> list[Outcome]:
    """Answer what the cache knows, decode the rest and queue them for the engine (all or none).

    Room in the queue is reserved before decoding: a busy server says so at once.
    """
    outcomes = [Outcome(u) for u in uploads]
    for outcome in outcomes:
        if outcome.upload.error is not None:
            outcome.error = ImageError(413, outcome.upload.error)
            continue
        outcome.key = await run_in_threadpool(service.key, job, outcome.upload.data)
        outcome.result = service.lookup(outcome.key)
        outcome.cached = outcome.result is not None
    misses = await _admit([o for o in outcomes if o.error is None and o.result is None],
                          job, service)
    try:
        service.batcher.reserve(len(misses))
    except (QueueFull, Closed) as exc:
        raise Busy(f"{exc}; try again") from None
    try:
        for outcome in misses:
            await _prepare(outcome, job, service, decoding)
    except BaseException:  # the client went away while its images were decoded
        service.batcher.release(len(misses))
        raise
    queued = [o for o in misses if o.error is None and o.result is None]
    service.batcher.release(len(misses) - len(queued))
    try:
        futures = service.submit([o.item for o in queued], reserved=True)
    except (QueueFull, Closed) as exc:
        raise Busy(f"{exc}; try again") from None
    for outcome, future in zip(queued, futures):
        outcome.future = future
    metrics.count_cached(sum(o.cached for o in outcomes))
    return outcomes


async def _admit(misses: list[Outcome], job: RequestSettings, service: ImageService
                 ) -> list[Outcome]:
    """The uploads to decode, each within the per-image budgets (one over fails alone), and
    together within --max-request-pixels (or the request is refused), told from headers."""
    total = 0
    for outcome in misses:
        try:
            total += await run_in_threadpool(service.admit, job, outcome.upload.data)
        except ImageError as exc:
            outcome.error = exc
    refusal = request_refusal(service.settings, total)
    if refusal:
        raise ImageError(413, refusal)
    return [o for o in misses if o.error is None]


async def _prepare(outcome: Outcome, job: RequestSettings, service: ImageService,
                   decoding: asyncio.Semaphore) -> None:
    """Decode one upload (one at a time across requests), or find a cached look-alike."""
    async with decoding:
        try:
            outcome.item = await run_in_threadpool(service.prepare, job, outcome.upload.data)
        except ImageError as exc:
            outcome.error = exc
            return
    outcome.result = service.similar(job, outcome.item)
    outcome.cached = outcome.result is not None


async def _finish(outcome: Outcome, job: RequestSettings, service: ImageService, metrics: Metrics,
                  request: HTTPRequest | None = None, state: Lifecycle | None = None) -> None:
    """Wait for an outcome's pixels (watching its client, if given) and encode them.

    With ``state``: an image still waiting when SIGTERM's grace runs out fails with 503.
    """
    if outcome.future is None:
        metrics.count_image("failed" if outcome.error else "converted")
        return
    wrapped = asyncio.wrap_future(outcome.future)
    while not wrapped.done():
        if state is not None and state.overdue:
            _drop([outcome], metrics)
            outcome.future, outcome.error = None, ImageError(503, STOPPING)
            return
        await asyncio.wait({wrapped}, timeout=DISCONNECT_POLL_S)
        if not wrapped.done() and request is not None and await request.is_disconnected():
            raise ClientGone
    try:  # a failed image (its pixels or its encoding) fails its entry, not the request
        pixels = wrapped.result()
        outcome.result = await run_in_threadpool(service.encode, job, outcome.item, pixels,
                                                 outcome.key)
    except ImageError as exc:
        outcome.error = exc
    outcome.future = None
    metrics.count_image("failed" if outcome.error else "converted")


def _drop(outcomes: list[Outcome], metrics: Metrics) -> None:
    """Cancel the queued images of a client that went away: they are skipped, not computed."""
    dropped = sum(o.future.cancel() for o in outcomes if o.future is not None)
    metrics.count_image("dropped", dropped)


async def _single(outcome: Outcome, job: RequestSettings, service: ImageService, metrics: Metrics,
                  request: HTTPRequest, state: Lifecycle) -> Response:
    try:
        await _finish(outcome, job, service, metrics, request, state)
    except (ClientGone, asyncio.CancelledError):
        _drop([outcome], metrics)
        raise
    if outcome.error is not None and outcome.error.status == 503:
        return _busy(outcome.error.reason)
    if outcome.error is not None:
        return error_response(outcome.error.status, outcome.error.reason)
    assert outcome.result is not None
    filename = unique_names([outcome.upload.filename])[0] + outcome.result.extension
    headers = {"X-Animegan-Cached": "true" if outcome.cached else "false",
               "Content-Disposition": content_disposition("inline", filename)}
    return Response(outcome.result.data, media_type=outcome.result.media_type, headers=headers)


async def _zip_stream(outcomes: list[Outcome], names: list[str], job: RequestSettings,
                      service: ImageService, metrics: Metrics, state: Lifecycle
                      ) -> AsyncIterator[bytes]:
    """The ZIP of a several-file request, one entry per result in upload order, streamed.

    Images still waiting when SIGTERM's grace runs out are failed entries: the ZIP is whole.
    """
    sink = ZipSink()
    records = []
    try:
        # IO[bytes]: ZipFile only writes and flushes a stream it is given, never closes it
        with zipfile.ZipFile(cast(IO[bytes], sink), "w", zipfile.ZIP_STORED) as archive:
            for outcome, stem in zip(outcomes, names):
                await _finish(outcome, job, service, metrics, state=state)
                record: dict[str, Any] = {"file": outcome.upload.filename, "status": "converted",
                                          "error": None, "cached": outcome.cached, "output": None}
                if outcome.error is not None:
                    record.update(status="failed", error=outcome.error.reason)
                else:
                    assert outcome.result is not None
                    record["output"] = stem + outcome.result.extension
                    archive.writestr(record["output"], outcome.result.data)
                records.append(record)
                yield sink.take()
            archive.writestr("results.json", json.dumps(records, indent=2, ensure_ascii=False))
        yield sink.take()
    finally:
        _drop(outcomes, metrics)  # nothing left when it ended normally


class ZipSink:
    """A write-only stream a ZipFile writes into; ``take`` hands over what was written."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


# Names: an upload's name becomes an output stem here and only here. Stems keep their
# letters in any script (ZIP entries are UTF-8, flagged so by zipfile); a header gets them
# through content_disposition, with an ASCII fallback for clients that predate RFC 6266.
_UNSAFE = re.compile(r"[^\w.-]+")


def unique_names(filenames: list[str]) -> list[str]:
    """Output stems for uploaded names: sanitised, never a path, made unique in order."""
    seen: set[str] = set()
    stems = []
    for filename in filenames:
        base = re.split(r"[/\\]", filename or "")[-1]
        base = unicodedata.normalize("NFC", base).rsplit(".", 1)[0] if "." in base[1:] else base
        stem = _UNSAFE.sub("_", base).strip("._")[:100] or "image"
        candidate, n = stem, 1
        while candidate.casefold() in seen:
            n += 1
            candidate = f"{stem}-{n}"
        seen.add(candidate.casefold())
        stems.append(candidate)
    return stems


def content_disposition(kind: str, filename: str) -> str:
    """``kind; filename="ascii"`` plus ``filename*=UTF-8''...`` when the name is not ASCII.

    HTTP headers are Latin-1 at most: a name such as 照片.png goes percent-encoded in
    ``filename*`` (RFC 6266 / 5987), which browsers and curl -J prefer.
    """
    fallback = ascii_name(filename)
    header = f'{kind}; filename="{fallback}"'
    if fallback != filename:
        header += "; filename*=UTF-8''" + urllib.parse.quote(filename, safe="")
    return header


def ascii_name(filename: str) -> str:
    """The name with accents dropped and other non-ASCII letters gone ("image" if none left)."""
    stem, dot, extension = filename.rpartition(".") if "." in filename else (filename, "", "")
    letters = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    return (_UNSAFE.sub("_", letters).strip("._") or "image") + dot + extension


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: HTTPRequest, exc: HTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, str(exc.detail), headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: HTTPRequest, exc: RequestValidationError
                               ) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def unexpected(request: HTTPRequest, exc: Exception) -> JSONResponse:
        # The details are for the operator, never for the client: Starlette re-raises the
        # exception after this answer, and uvicorn logs its traceback on stderr.
        return error_response(500, "internal error")


class _TokenCheck:
    """ASGI middleware: every path but the public ones needs ``Authorization: Bearer TOKEN``."""

    def __init__(self, app: Callable, tokens: tuple[str, ...]) -> None:
        self.app = app
        self.expected = [f"Bearer {token}".encode() for token in tokens]

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization")
        # constant time, and every token compared: which one matched takes no longer
        if given is not None and sum(hmac.compare_digest(given, e) for e in self.expected):
            await self.app(scope, receive, send)
            return
        response = error_response(401, _token_problem(given), {"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


def _token_problem(given: bytes | None) -> str:
    """What is wrong with the Authorization header, in the words a person needs."""
    if given is None:
        return "this server needs a token: send 'Authorization: Bearer TOKEN'"
    if not given.startswith(b"Bearer "):
        return "send the token as 'Authorization: Bearer TOKEN'"
    return "wrong token"


class _AccessCheck:
    """ASGI middleware: a Host the server does not go by gets 400 (DNS rebinding), a
    browser's state-changing request from another origin 403 (a cross-site form POST)."""

    def __init__(self, app: Callable, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        problem = None
        if scope["type"] == "http" and scope["path"] not in UNCHECKED_HOST_PATHS:
            problem = self._problem(scope["method"], dict(scope["headers"]))
        if problem is None:
            await self.app(scope, receive, send)
            return
        await error_response(*problem)(scope, receive, send)

    def _problem(self, method: str, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        host = headers[b"host"].decode("latin-1") if b"host" in headers else None
        if not self.policy.host_allowed(host):
            return 400, (f"this server does not answer to the host name in {host!r} "
                         "(start it with --allowed-host NAME to add one)")
        origin = headers[b"origin"].decode("latin-1") if b"origin" in headers else None
        if method in SAFE_METHODS or self.policy.origin_allowed(origin, host):
            return None
        return 403, (f"a page at {origin} may not send requests here; start the server "
                     f"with --allowed-origin {origin} to allow it")


_FORM_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"],
    "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "format": {"type": "string", "enum": ["png", "jpg", "webp"], "default": "png"},
        "quality": {"type": "integer", "minimum": 1, "maximum": 100,
                    "default": fields.QUALITY.default},
        "size": {"type": "integer", "description": "long side of the model input; 0 = native"},
        "keep_size": {"type": "boolean"},
        "colour": {"type": "string", "enum": list(COLOURS),
                   "description": "what the result keeps of the photo's colours; default: "
                                  "the server's --colour"},
    }}}}}}
