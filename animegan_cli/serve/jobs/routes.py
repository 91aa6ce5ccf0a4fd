"""serve's job API: POST /jobs, GET /jobs/{id}, its results (a ZIP or one file), DELETE.

``attach(app)`` adds the routes, the job store and the runner to an app made by
``serve.app.create_app`` (its service, metrics and lifecycle are on ``app.state``): the
runner starts with the app and stops before the engine thread does. A job's form is
/animeify's, read by the same parser with the same per-file limits (``read_form``, the
form fields through ``parse_fields``, each image's header budgets through
``ImageService.admit``); a file refused there fails alone and the job goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import zipfile
from collections.abc import AsyncIterator, Callable
from typing import IO, Any, cast

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import Gauge
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HTTPRequest

# /animeify's form: its one parser of the fields and its schema (a field it learns is a job's)
from animegan_cli.serve.app import _FORM_SCHEMA as FORM_SCHEMA
from animegan_cli.serve.app import (
    Lifecycle,
    ZipSink,
    content_disposition,
    error_response,
    unique_names,
)
from animegan_cli.serve.app import _request_fields as request_fields
from animegan_cli.serve.budgets import metered
from animegan_cli.serve.jobs.runner import JobRunner
from animegan_cli.serve.jobs.store import (
    QUEUED,
    RUNNING,
    STATUSES,
    FileRow,
    JobStore,
    JobView,
    NewFile,
    StoreFull,
    default_data_dir,
    media_type,
)
from animegan_cli.serve.metrics import Metrics
from animegan_cli.serve.service import ImageError, ImageService, RequestSettings
from animegan_cli.serve.uploads import FormError, Upload, read_form


class _Refused(Exception):
    """A job not accepted: its HTTP status and the one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Jobs:
    """The job feature of one app: its store, its runner and what the routes need."""

    def __init__(self, service: ImageService, metrics: Metrics, state: Lifecycle) -> None:
        settings = service.settings
        self.service = service
        self.state = state
        self.store = JobStore(settings.data_dir or default_data_dir(), settings.keep_results,
                              int(settings.jobs_disk_mb * 2**20))
        self.runner = JobRunner(self.store, service, self.request_for, self._may_start,
                                settings.max_batch_size + 1)
        gauge = Gauge("animegan_jobs", "Jobs by state (queued: nothing started yet)", ["state"],
                      registry=metrics.registry)
        for status in (QUEUED, RUNNING):
            gauge.labels(state=status).set_function(self._counter(status))

    def _counter(self, status: str) -> Callable[[], float]:
        return lambda: self.store.job_counts()[status]

    def _may_start(self) -> bool:
        """A file may be started once the model is ready, and until SIGTERM (files started
        then would only be cut short: they wait for the next start)."""
        return self.state.ready.is_set() and self.state.stop_deadline is None

    def request_for(self, fields: str, scope: str) -> RequestSettings:
        """A job's settings from its stored form fields (ImageError 422 when malformed)."""
        return self.service.request(**request_fields(json.loads(fields)), scope=scope)

    def owner(self, request: HTTPRequest) -> str:
        """Whose job it is: a digest of the token sent (the token check let it in), or ""."""
        if not self.service.settings.tokens:
            return ""
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        return hashlib.sha256(token.encode()).hexdigest()

    async def submit(self, request: HTTPRequest) -> Response:
        """POST /jobs: the uploads stored, 202 with the job's id and URL."""
        if self.state.fatal:
            return error_response(503, self.state.fatal)
        owner = self.owner(request)
        settings = self.service.settings
        if self.store.active_jobs(owner) >= settings.max_jobs:
            return error_response(429, f"{settings.max_jobs} job(s) of yours are queued or "
                                       "running (--max-jobs); wait for one to finish")
        try:
            job = await self._accept(request, owner)
        except (FormError, ImageError, _Refused) as exc:
            return error_response(exc.status, exc.reason)
        self.runner.wake()
        view = self.store.job(job, owner)
        assert view is not None
        body = self.describe(view, self.store.files(job))
        return JSONResponse(body, status_code=202, headers={"Location": body["url"]})

    async def _accept(self, request: HTTPRequest, owner: str) -> str:
        settings = self.service.settings
        with self.service.inflight.hold() as held:  # the body in memory, --max-inflight-mb
            body = metered(request.stream(), held, settings.body_timeout,
                           settings.body_idle_timeout)
            form = await read_form(request.headers.get("content-type", ""), body,
                                   settings.max_upload_bytes, settings.max_job_files,
                                   settings.max_upload_bytes * settings.max_job_files + 2**20)
            fields = json.dumps(form.fields)
            scope = f"client {request.client.host if request.client else '?'}"
            job_settings = self.request_for(fields, scope)  # a bad field: 422 at once
            files = [await self._admit(upload, job_settings) for upload in form.files]
            try:
                return await run_in_threadpool(self.store.create, owner, fields, scope, files)
            except StoreFull as exc:
                raise _Refused(503, str(exc)) from None

    async def _admit(self, upload: Upload, job: RequestSettings) -> NewFile:
        """An upload within /animeify's per-file limits, or its error (it fails alone)."""
        if upload.error is not None:
            return NewFile(upload.filename, error=upload.error)
        try:
            await run_in_threadpool(self.service.admit, job, upload.data)
        except ImageError as exc:
            return NewFile(upload.filename, error=exc.reason)
        return NewFile(upload.filename, upload.data)

    def describe(self, view: JobView, files: list[FileRow]) -> dict[str, Any]:
        """GET /jobs/{id}'s answer: state, counts, and each file with its result's URL."""
        url = f"/jobs/{view.id}"
        names = unique_names([f.name for f in files])
        return {
            "id": view.id, "url": url, "state": view.state, "created": view.created,
            "finished": view.finished,
            "expires": None if view.finished is None
            else view.finished + self.store.keep_results_s,
            "counts": {"total": len(files), **{s: view.counts.get(s, 0) for s in STATUSES}},
            "results_url": f"{url}/results",
            "files": [{"index": f.index, "file": f.name, "status": f.status, "error": f.error,
                       "output": stem + f.extension if f.extension else None,
                       "url": f"{url}/files/{f.index}" if f.extension else None}
                      for f, stem in zip(files, names)],
        }

    def find(self, request: HTTPRequest, job: str) -> JobView | JSONResponse:
        view = self.store.job(job, self.owner(request))
        if view is None:  # never there, expired, or another token's: the same answer
            return error_response(404, f"no job {job!r} (it may have expired)")
        return view

    async def results(self, view: JobView) -> Response:
        """The done results as a streamed ZIP with results.json (what there is so far)."""
        files = self.store.files(view.id)
        names = unique_names([f.name for f in files])
        return StreamingResponse(
            self._zip(view.id, files, names), media_type="application/zip",
            headers={"Content-Disposition": content_disposition("attachment",
                                                                f"animegan-{view.id}.zip")})

    async def _zip(self, job: str, files: list[FileRow], names: list[str]
                   ) -> AsyncIterator[bytes]:
        sink = ZipSink()
        records = []
        # IO[bytes]: ZipFile only writes and flushes a stream it is given, never closes it
        with zipfile.ZipFile(cast(IO[bytes], sink), "w", zipfile.ZIP_STORED) as archive:
            for row, stem in zip(files, names):
                record = {"file": row.name, "status": row.status, "error": row.error,
                          "output": None}
                path = self.store.result_path(job, row)
                with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                    if path is not None:
                        data = await run_in_threadpool(path.read_bytes)
                        archive.writestr(stem + path.suffix, data)
                        record["output"] = stem + path.suffix
                records.append(record)
                yield sink.take()
            archive.writestr("results.json", json.dumps(records, indent=2, ensure_ascii=False))
        yield sink.take()

    def one_result(self, view: JobView, index: int) -> Response:
        """One file's result, or why there is none yet (409) or at all."""
        files = self.store.files(view.id)
        if not 0 <= index < len(files):
            return error_response(404, f"job {view.id} has no file {index}")
        row = files[index]
        path = self.store.result_path(view.id, row)
        if path is None or not path.exists():
            detail = f": {row.error}" if row.error else ""
            return error_response(409, f"file {index} ({row.name}) is {row.status}{detail}")
        name = unique_names([f.name for f in files])[index] + path.suffix
        return FileResponse(path, media_type=media_type(path.suffix),
                            headers={"Content-Disposition": content_disposition("inline", name)})


def attach(app: FastAPI) -> Jobs:
    """Add the job routes to an app of ``create_app``; the runner lives with the app."""
    jobs = Jobs(app.state.service, app.state.metrics, app.state.lifecycle)
    _add_routes(app, jobs)
    _run_with(app, jobs.runner)
    return jobs


def _run_with(app: FastAPI, runner: JobRunner) -> None:
    """The runner starts after the app's own start, and stops before the engine thread."""
    inner: Callable = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[Any]:
        async with inner(app_) as value:
            runner.start()
            try:
                yield value
            finally:
                await runner.stop()

    app.router.lifespan_context = lifespan


def _add_routes(app: FastAPI, jobs: Jobs) -> None:
    @app.post("/jobs", summary="Style many photos in the background: a job",
              openapi_extra=FORM_SCHEMA, status_code=202,
              responses={202: {"description": "The job's id and URL (also in Location)"}})
    async def submit_job(request: HTTPRequest) -> Response:
        return await jobs.submit(request)

    @app.get("/jobs/{job_id}", summary="A job's state, counts and files")
    async def job_status(job_id: str, request: HTTPRequest) -> Response:
        view = jobs.find(request, job_id)
        if isinstance(view, Response):
            return view
        return JSONResponse(jobs.describe(view, jobs.store.files(view.id)))

    @app.get("/jobs/{job_id}/results", summary="A job's results: a ZIP with results.json")
    async def job_results(job_id: str, request: HTTPRequest) -> Response:
        view = jobs.find(request, job_id)
        return view if isinstance(view, Response) else await jobs.results(view)

    @app.get("/jobs/{job_id}/files/{index}", summary="One result of a job")
    async def job_file(job_id: str, index: int, request: HTTPRequest) -> Response:
        view = jobs.find(request, job_id)
        return view if isinstance(view, Response) else jobs.one_result(view, index)

    @app.delete("/jobs/{job_id}", summary="Cancel a job and remove its files")
    async def delete_job(job_id: str, request: HTTPRequest) -> Response:
        view = jobs.find(request, job_id)
        if isinstance(view, Response):
            return view
        await run_in_threadpool(jobs.store.cancel, view.id)
        cancelled = jobs.store.job(view.id, view.owner)
        assert cancelled is not None
        return JSONResponse(jobs.describe(cancelled, jobs.store.files(view.id)))
