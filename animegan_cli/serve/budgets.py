"""What a serve request may cost: per image, per request, across requests, and in time.

Every check here runs before the costly step it guards: an image's memory and output size
from its header, before decoding; a request's pixels before any of its images is decoded
or queued; bytes of request bodies as each chunk arrives, against one budget shared by all
requests; the time a body may take (in all, and between two chunks). The memory estimate
is convert's (``resources.estimate_peak``). The limits are ``ServeSettings``' fields.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from animegan_cli.core.units import format_bytes
from animegan_cli.engines import tiling
from animegan_cli.media import data
from animegan_cli.pipeline.resources import BASE_BYTES, estimate_peak, largest_size_within
from animegan_cli.serve.uploads import FormError

if TYPE_CHECKING:
    from animegan_cli.serve.service import ServeSettings
    from animegan_cli.stylizer import PixelSettings


def model_fits(size: int, batch: int, precision: str, budget: int) -> str | None:
    """Why a server at --size cannot run one batch within --max-memory, or None if it can."""
    need = estimate_peak(size * size, batch, precision)
    if need <= budget:
        return None
    at = f"--size {size}" if size else "native size"
    return (f"{at} with --max-batch-size {batch} needs about {format_bytes(need)} of memory, "
            f"more than --max-memory {format_bytes(budget)}; raise --max-memory or lower "
            "--size or --max-batch-size")


def image_refusal(settings: ServeSettings, pixels: PixelSettings, width: int, height: int,
                  precision: str) -> str | None:
    """Why an image of ``width`` x ``height`` (from its header) is not decoded, or None."""
    for check in (_over_max_size, _over_memory, _over_output):
        reason = check(settings, pixels, width, height, precision)
        if reason:
            return reason
    return None


def _over_max_size(settings: ServeSettings, pixels: PixelSettings, width: int, height: int,
                   precision: str) -> str | None:
    # A `size` field over --max-size is refused with the form (422); size 0 asks for the
    # image's own long side, known only now.
    if pixels.size or not settings.max_size or max(width, height) <= settings.max_size:
        return None
    return (f"at size 0 (native) this {width}x{height} image would run at "
            f"{max(width, height)} px, over this server's --max-size of {settings.max_size}; "
            f"send size={settings.max_size} or less")


def _over_memory(settings: ServeSettings, pixels: PixelSettings, width: int, height: int,
                 precision: str) -> str | None:
    assert settings.max_memory is not None  # ServeSettings.for_model filled it in
    batch = settings.max_batch_size
    try:
        tw, th = data.target_size(width, height, pixels.size)
        need = estimate_peak(tw * th, batch, precision)
    except OverflowError:  # a size with hundreds of digits: nothing could hold it
        tw = th = need = 0
    if 0 < need <= settings.max_memory or (need and _tiled(settings, pixels, tw, th, precision)):
        return None
    # The engine runs up to --max-batch-size images of a shape together: each gets a share.
    share = BASE_BYTES + (settings.max_memory - BASE_BYTES) // batch
    side = largest_size_within(share, precision)
    fix = f"send size={side} or less" if side >= 64 else "raise the server's --max-memory"
    needs = f"needs about {format_bytes(need)}" if need else "needs far more memory"
    return (f"{needs} of memory at {tw}x{th} ({tw * th / 1e6:.1f} MP model input), more "
            f"than this server's --max-memory of {format_bytes(settings.max_memory)}; {fix}")


def _tiled(settings: ServeSettings, pixels: PixelSettings, width: int, height: int,
           precision: str) -> bool:
    """Whether a model input over --max-memory is styled in tiles instead (--tile)."""
    assert settings.max_memory is not None
    plan = tiling.plan_tiles(width, height, settings.tile, settings.max_memory, precision,
                             pixels.align_corners)
    return plan is not None


def _over_output(settings: ServeSettings, pixels: PixelSettings, width: int, height: int,
                 precision: str) -> str | None:
    limit = settings.max_output_pixels
    if not pixels.keep_size or not limit or width * height <= limit:
        return None
    return (f"keep_size would answer {width}x{height} ({width * height / 1e6:.1f} MP), over "
            f"this server's --max-output-pixels of {limit / 1e6:g} MP; send keep_size=false "
            "or a smaller image")


def request_refusal(settings: ServeSettings, total_pixels: int) -> str | None:
    """Why a request whose images hold ``total_pixels`` together is refused, or None."""
    limit = settings.max_request_pixels
    if not limit or total_pixels <= limit:
        return None
    return (f"the images of this request hold {total_pixels / 1e6:.0f} MP together, over "
            f"this server's --max-request-pixels of {limit / 1e6:g} MP; send fewer or smaller "
            "images per request")


class InflightBytes:
    """Bytes of request bodies read into memory, across all requests, within one budget.

    Used from the event loop only (body chunks arrive there), so it needs no lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[_Held]:
        """What one request holds; all of it given back when the block ends."""
        held = _Held(self)
        try:
            yield held
        finally:
            held.release()


class _Held:
    def __init__(self, pool: InflightBytes) -> None:
        self.pool = pool
        self.bytes = 0

    def take(self, count: int) -> None:
        """Count ``count`` more bytes; FormError 503 when the budget has no room for them."""
        pool = self.pool
        if pool.used + count > pool.limit:
            raise FormError(503, f"the server holds {format_bytes(pool.used)} of uploads "
                                 f"already, its --max-inflight-mb of {format_bytes(pool.limit)} "
                                 "is spent; try again")
        pool.used += count
        self.bytes += count

    def release(self) -> None:
        """Give back everything held (the bodies are decoded, or the request is over)."""
        self.pool.used -= self.bytes
        self.bytes = 0


async def metered(body: AsyncIterator[bytes], held: _Held, total_s: float, idle_s: float
                  ) -> AsyncIterator[bytes]:
    """A request body's chunks, each counted against the budget, within both timeouts.

    FormError 408 when no chunk comes for ``idle_s`` or the body is not in after
    ``total_s``; reading stops there (the request's memory is freed with it).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_s
    chunks = body.__aiter__()
    while True:
        left = deadline - loop.time()
        wait = min(idle_s, left)
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), max(wait, 0))
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise FormError(408, _timeout_reason(wait < idle_s, total_s, idle_s)) from None
        held.take(len(chunk))
        yield chunk


def _timeout_reason(whole: bool, total_s: float, idle_s: float) -> str:
    if whole:
        return (f"the request body did not arrive within {total_s:g} s (--body-timeout); "
                "send fewer or smaller files per request")
    return (f"the request body stalled: nothing came for {idle_s:g} s "
            "(--body-idle-timeout); send it again")
