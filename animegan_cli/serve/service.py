"""What ``animegan serve`` does with one uploaded image, without any web framework.

``ImageService`` owns the Stylizer, the Batcher (the one engine thread) and the result
cache. ``lookup`` answers from the cache; ``admit`` checks an upload's budgets from its
header (serve_budgets); ``prepare`` decodes and sizes an upload exactly
as ``convert`` decodes a file (Stylizer.prepare) and tells the HTTP status of a bad one;
``submit`` queues prepared images for the engine; ``encode`` finishes and encodes a result
through the format table. serve.py calls these from request handlers; decoding and
encoding run in the server's thread pool, the model only in the engine thread.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from animegan_cli.core.errors import InputImageError, UsageError
from animegan_cli.core.failures import PER_ITEM_ERRORS, item_failure_reason
from animegan_cli.engines import tiling
from animegan_cli.engines.base import supports_norm_stats
from animegan_cli.media import data
from animegan_cli.media.formats import DEFAULT_PNG_LEVEL, FORMATS, OutputFormat, size_problem
from animegan_cli.media.outputs import format_key
from animegan_cli.serve.access import (
    CACHE_SCOPES,
    DEFAULT_CACHE_SCOPE,
    DEFAULT_LISTEN_HOST,
    origin_problem,
)
from animegan_cli.serve.batcher import Batcher
from animegan_cli.serve.budgets import InflightBytes, image_refusal, model_fits
from animegan_cli.serve.cache import CachedResult, ResultCache, cache_key
from animegan_cli.settings import fields
from animegan_cli.stylizer import PixelSettings, Stylizer

SERVED_FORMATS = tuple(key for key, fmt in FORMATS.items() if fmt.offered)
MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


# ServeSettings' names of the settings it calls otherwise.
_ATTRIBUTES = {"grace": "grace_s", "host": "listen_host"}
# The declared serve settings ServeSettings holds that carry a check of their own.
_CHECKED = tuple(s for s in fields.SERVE_GROUP if s.check is not None)


@dataclass(frozen=True)
class ServeSettings:
    """The server's limits and batching; resolved once by the CLI."""

    max_batch_size: int = fields.MAX_BATCH_SIZE.default
    batch_wait_ms: float = fields.BATCH_WAIT_MS.default
    queue_size: int = fields.QUEUE_SIZE.default
    max_upload_mb: float = fields.MAX_UPLOAD_MB.default
    cache_mb: float = fields.CACHE_MB.default
    cache_similar: int | None = None
    token: str | None = None
    grace_s: float = fields.GRACE.default
    # Who may talk to it (serve_access.py): the names it answers, the origins it accepts,
    # and whose cached results a request may get.
    listen_host: str = DEFAULT_LISTEN_HOST
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    cache_scope: str = DEFAULT_CACHE_SCOPE
    # Budgets under hostile clients (issue 22, items 4-6); None: derived by for_model().
    max_size: int | None = None  # largest `size` a request may ask; None: --size (0: memory's)
    max_memory: int | None = None  # bytes the model plans for; None: resources.default_budget()
    # An upload over --max-memory styled in tiles instead of refused (engines/tiling.py);
    # "off" once for_model finds the engine cannot (no normalisation statistics).
    tile: str = fields.TILE.default
    # keep_size's largest answer; 0 = no limit
    max_output_pixels: int = fields.MAX_OUTPUT_PIXELS.default
    max_files: int | None = None  # files in one request; None: half of queue_size
    # decoded per request; 0 = no limit
    max_request_pixels: int = fields.MAX_REQUEST_PIXELS.default
    # request bodies in memory, all requests
    max_inflight_mb: float = fields.MAX_INFLIGHT_MB.default
    body_timeout: float = fields.BODY_TIMEOUT.default  # seconds for a whole request body
    body_idle_timeout: float = fields.BODY_IDLE_TIMEOUT.default  # seconds between two chunks of it
    # Connections and timeouts (serve_transport): what a client may hold without a request.
    max_connections: int = fields.MAX_CONNECTIONS.default
    header_timeout: float = fields.HEADER_TIMEOUT.default
    keep_alive_timeout: float = fields.KEEP_ALIVE_TIMEOUT.default
    # Jobs (serve/jobs/): where they are kept, for how long, and how many.
    data_dir: Path | None = None  # None: jobs.store.default_data_dir()
    keep_results: float = fields.KEEP_RESULTS.default
    jobs_disk_mb: float = fields.JOBS_DISK_MB.default
    max_jobs: int = fields.MAX_JOBS.default
    max_job_files: int = fields.MAX_JOB_FILES.default

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> ServeSettings:
        """The settings of the serve group's values by setting name (settings/fields.py);
        --port is the listener's, not the server's."""
        kwargs = {_ATTRIBUTES.get(k, k): v for k, v in values.items() if k != "port"}
        kwargs["token"] = kwargs.get("token") or None  # an empty ANIMEGAN_TOKEN is no token
        return cls(**kwargs)  # type: ignore[arg-type]

    def validate(self) -> None:
        """UsageError for values that cannot work."""
        # Each setting's own check is declared with it (settings/fields.py); here, those
        # that weigh one setting against another.
        values = {s.name: getattr(self, _ATTRIBUTES.get(s.name, s.name)) for s in _CHECKED}
        checks = (
            *((False, problem) for problem in fields.problems(_CHECKED, values)),
            *self._budget_checks(),
        )
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        self._validate_access()

    def _validate_access(self) -> None:
        if self.cache_scope not in CACHE_SCOPES:
            raise UsageError(f"--cache-scope must be one of: {', '.join(CACHE_SCOPES)}")
        for origin in self.allowed_origins:
            problem = origin_problem(origin)
            if problem is not None:
                raise UsageError(f"--allowed-origin: {problem}")

    def _budget_checks(self) -> tuple[tuple[bool, str], ...]:
        return (
            (self.max_files is None or 1 <= self.max_files <= self.queue_size,
             "--max-files must be between 1 and --queue-size"),
            (self.max_inflight_mb >= self.max_upload_mb,
             "--max-inflight-mb must be at least --max-upload-mb (or no such file can come)"),
            (self.body_timeout > 0 and self.body_idle_timeout > 0,
             "--body-timeout and --body-idle-timeout must be more than 0"),
        )

    def for_model(self, size: int, precision: str, can_tile: bool = False) -> ServeSettings:
        """These settings with the derived limits filled in, for a model at ``size``
        (``can_tile``: its engine takes normalisation statistics, so --tile can work).

        UsageError when --max-size is below --size (requests without a size would be
        refused) or one batch at --size needs more than --max-memory.
        """
        from animegan_cli.pipeline.resources import default_budget, largest_size_within

        self.validate()
        max_memory = default_budget() if self.max_memory is None else self.max_memory
        tile = self.tile if can_tile else tiling.OFF
        if self.max_size is not None:
            max_size = self.max_size
        elif tile != tiling.OFF:  # a native-size server: tiles hold any size --max-pixels lets in
            max_size = size
        else:  # a native-size server: the largest square the budget holds
            max_size = size or largest_size_within(max_memory, precision)
        resolved = dataclasses.replace(
            self, max_size=max_size, max_memory=max_memory, tile=tile,
            max_files=self.max_files or max(1, self.queue_size // 2))
        if max_size and size > max_size:
            raise UsageError(f"--max-size {max_size} is below --size {size}: requests "
                             "without a size would all be refused")
        problem = model_fits(size, self.max_batch_size, precision, max_memory)
        if problem:
            raise UsageError(problem)
        return resolved

    @property
    def tokens(self) -> tuple[str, ...]:
        """The tokens a client may send (--token, several separated by commas)."""
        return tuple(t.strip() for t in (self.token or "").split(",") if t.strip())

    @property
    def max_upload_bytes(self) -> int:
        """The per-file upload limit in bytes."""
        return int(self.max_upload_mb * 2**20)

    @property
    def max_body_bytes(self) -> int:
        """The per-request body limit: every file at its limit, plus the form's fields."""
        return self.max_upload_bytes * (self.max_files or self.queue_size) + 2**20


class ImageError(Exception):
    """An upload that cannot be styled: the HTTP status for it alone, and the CLI's reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def can_tile(stylizer: Stylizer) -> bool:
    """Whether --tile can work for the server's model (ServeSettings.for_model's can_tile)."""
    return supports_norm_stats(stylizer.spec) and not stylizer.pixels.align_corners


@dataclass(frozen=True)
class RequestSettings:
    """What one request asks for besides its images: the output and the pixel settings."""

    output: OutputFormat
    quality: int
    stylizer: Stylizer  # the server's, or a view of it with this request's size/keep_size
    scope: str = ""  # whose cached results it may get ("" = anyone's; see serve_access)

    @property
    def settings(self) -> dict[str, object]:
        """Everything besides the upload's bytes that decides the answer (the cache key's),
        and whose cache entries it may see: one client never hits another's."""
        return {**self.stylizer.settings, "format": self.output.pil_name,
                "quality": self.quality if self.output.lossy else None, "scope": self.scope}


@dataclass
class Prepared:
    """An upload decoded for the model, with the key its result is cached under."""

    item: data.PreparedImage
    key: str


class ImageService:
    """The model, its engine thread and the cache, as serve's request handlers use them."""

    def __init__(self, stylizer: Stylizer, settings: ServeSettings,
                 on_batch: Callable[[int, float], None]) -> None:
        self.stylizer = stylizer
        self.settings = settings = settings.for_model(
            stylizer.pixels.size, stylizer.spec.precision, can_tile(stylizer))
        self._tiled: dict[int, tiling.TilePlan] = {}  # id of an item styled in tiles -> how
        self.inflight = InflightBytes(int(settings.max_inflight_mb * 2**20))
        self.cache = ResultCache(int(settings.cache_mb * 2**20), settings.cache_similar)
        self.batcher = Batcher(self._run_batch, settings.max_batch_size,
                               settings.batch_wait_ms / 1000, settings.queue_size, on_batch)

    def request(self, format_: str = "png", quality: int = fields.QUALITY.default,
                size: int | None = None, keep_size: bool | None = None,
                scope: str = "", colour: str | None = None) -> RequestSettings:
        """The settings a form's fields ask for; ImageError (422) for values that cannot work."""
        format_ = format_key(format_)  # jpeg is jpg, as in convert's --format
        if format_ not in SERVED_FORMATS:
            raise ImageError(422, f"unknown format {format_!r}; choose from: "
                                  + ", ".join(SERVED_FORMATS))
        if not 1 <= quality <= 100:
            raise ImageError(422, "quality must be between 1 and 100")
        if size and self.settings.max_size and size > self.settings.max_size:
            raise ImageError(422, f"size {size} is over this server's --max-size of "
                                  f"{self.settings.max_size}; ask for {self.settings.max_size} "
                                  "or less")
        base = self.stylizer
        pixels = PixelSettings(base.pixels.size if size is None else size,
                               base.pixels.keep_size if keep_size is None else keep_size,
                               base.pixels.align_corners, base.pixels.max_pixels,
                               base.pixels.colour if colour is None else colour)
        try:
            pixels.validate()
        except UsageError as exc:
            raise ImageError(422, str(exc).replace("--size", "size")) from None
        stylizer = base if pixels == base.pixels else Stylizer(
            base.engine, base.spec, base.checkpoint, pixels)
        return RequestSettings(FORMATS[format_], quality, stylizer, scope)

    def key(self, request: RequestSettings, upload: bytes) -> str:
        """The cache key of an upload under a request's settings."""
        return cache_key(upload, self.stylizer.checkpoint_id, request.settings)

    def lookup(self, key: str) -> CachedResult | None:
        """An exact cached result (BLAKE2b of the bytes), or None."""
        return self.cache.get(key)

    def admit(self, request: RequestSettings, upload: bytes) -> int:
        """An upload's pixels from its header; ImageError 413 when it is over a budget.

        Checked before decoding: --max-pixels, --max-size for size 0, the memory estimate of
        its model input against --max-memory, keep_size's --max-output-pixels. 0 for an
        upload whose header cannot be read: ``prepare`` says why.
        """
        try:
            with data.own_pixel_limit(), Image.open(io.BytesIO(upload)) as img:
                width, height = img.size
        except PER_ITEM_ERRORS:  # fails in prepare, behind the per-item boundary
            return 0
        try:
            data.check_pixels(width, height, request.stylizer.pixels.max_pixels)
        except InputImageError as exc:
            raise ImageError(413, str(exc)) from None
        refusal = image_refusal(self.settings, request.stylizer.pixels, width, height,
                                self.stylizer.spec.precision)
        if refusal:
            raise ImageError(413, refusal)
        return width * height

    def prepare(self, request: RequestSettings, upload: bytes) -> data.PreparedImage:
        """Decode and size an upload as convert would; ImageError with 415/413/422 if bad.

        415: not an image; 413: over --max-pixels, told from the header before decoding;
        422: too small, a broken image (whatever its decoder raised), or a result the
        output format cannot hold (WebP's 16383 px a side), told from the header.
        """
        try:
            with data.own_pixel_limit(), Image.open(io.BytesIO(upload)) as img:
                width, height = img.size
        except PER_ITEM_ERRORS as exc:
            raise ImageError(415, data.describe_error(exc)) from None
        max_pixels = request.stylizer.pixels.max_pixels
        try:
            item = request.stylizer.prepare(upload)
        except InputImageError as exc:
            status = 413 if max_pixels and width * height > max_pixels else 422
            raise ImageError(status, str(exc)) from None
        self._check_output_size(request, item)
        return item

    def _check_output_size(self, request: RequestSettings, item: data.PreparedImage) -> None:
        """ImageError (422) for a result the output format cannot hold, before the model runs."""
        keep_size = request.stylizer.pixels.keep_size
        width, height = item.original_size if keep_size else (item.shape[1], item.shape[0])
        problem = size_problem(self._output_format(request, item), width, height)
        if problem is not None:
            fix = "drop keep_size" if keep_size else "use a smaller size"
            raise ImageError(422, f"{problem}; use another format or {fix}")

    def similar(self, request: RequestSettings, item: data.PreparedImage) -> CachedResult | None:
        """With --cache-similar: a cached look-alike's result (dHash), or None."""
        if self.cache.similar is None:
            return None
        from animegan_cli.pipeline.similar import dhash

        assert item.pixels is not None  # prepared
        return self.cache.find_similar(self._group(request, item), dhash(item.pixels))

    def submit(self, items: Sequence[data.PreparedImage], reserved: bool = False,
               low: bool = False) -> list[Future]:
        """Queue prepared images for the engine, all or none (QueueFull, Closed); ``low``:
        a job's, run after every request's image waiting (Batcher.submit). An image over
        --max-memory (admitted by its tile plan) runs alone, in tiles."""
        return self.batcher.submit([(self._batch_key(item), item) for item in items],
                                   reserved, low)

    def _batch_key(self, item: data.PreparedImage) -> Hashable:
        plan = self.stylizer.tile_plan(item, self.settings.tile, self.settings.max_memory)
        if plan is None:
            return item.shape
        self._tiled[id(item)] = plan
        return ("tiles", id(item))

    def encode(self, request: RequestSettings, item: data.PreparedImage, pixels: object,
               key: str | None) -> CachedResult:
        """Finish, encode through the format table and cache one styled result (``key``
        None: not cached, as a job's results, kept on disk instead)."""
        from animegan_cli.media.outputs import encode_image

        fmt = self._output_format(request, item)
        buffer = io.BytesIO()
        try:
            image = request.stylizer.finish(item, pixels)  # type: ignore[arg-type]
            encode_image(image, buffer, fmt, request.quality, png_level=DEFAULT_PNG_LEVEL)
        except InputImageError as exc:  # the format cannot hold it
            raise ImageError(422, str(exc)) from None
        except PER_ITEM_ERRORS as exc:  # this result alone fails; the request goes on
            raise ImageError(500, f"cannot encode the result: {item_failure_reason(exc)}"
                             ) from None
        result = CachedResult(buffer.getvalue(), MEDIA_TYPES[fmt.pil_name], fmt.extension)
        if key is None:
            return result
        dhash_value = None
        if self.cache.similar is not None:
            from animegan_cli.pipeline.similar import dhash

            assert item.pixels is not None  # prepared
            dhash_value = dhash(item.pixels)
        self.cache.put(key, result, self._group(request, item), dhash_value)
        return result

    @staticmethod
    def _output_format(request: RequestSettings, item: data.PreparedImage) -> OutputFormat:
        if item.alpha is not None and not request.output.holds_alpha:
            return FORMATS["png"]  # as convert does: transparency is never flattened away
        return request.output

    def warm_up(self) -> None:
        """Run the model once, so that the first request does not pay for its start."""
        side = self.stylizer.pixels.size or fields.SIZE.default
        gray = Image.new("RGB", (side, side), (128, 128, 128))
        item = self.stylizer.prepare(gray)
        self._run_batch([item])

    def _group(self, request: RequestSettings, item: data.PreparedImage) -> tuple:
        return (tuple(sorted(request.settings.items(), key=lambda kv: kv[0])), item.shape)

    def _run_batch(self, items: Sequence[data.PreparedImage]) -> list[object]:
        """The engine thread's work: one batch; a non-finite result fails its image alone."""
        from animegan_cli.engines.base import NON_FINITE_REASON, NonFiniteOutput

        try:
            plan = self._tiled.pop(id(items[0]), None)
            if plan is not None:
                return [self.stylizer.run_tiled(items[0], plan, batch_size=1)]  # planned for one
            return list(self.stylizer.run(items))
        except NonFiniteOutput as exc:
            bad = set(exc.bad)
            return [ImageError(500, NON_FINITE_REASON) if i in bad else pixels
                    for i, pixels in enumerate(exc.pixels)]
        except PER_ITEM_ERRORS as exc:  # the batch's images fail; the engine thread goes on
            reason = f"the model failed on it: {item_failure_reason(exc)}"
            return [ImageError(500, reason) for _ in items]
