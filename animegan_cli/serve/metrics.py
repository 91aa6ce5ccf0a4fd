"""serve's Prometheus metrics: requests and images by status, batches, latency, queue, cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

if TYPE_CHECKING:
    from animegan_cli.serve.service import ImageService

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """One registry per app (tests make many apps in one process)."""

    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series only double the page
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("animegan_requests", "POST /animeify requests by HTTP status",
                                ["status"], registry=r)
        self.images = Counter("animegan_images", "Uploaded images by outcome "
                              "(converted, failed, dropped: client gone before its turn)",
                              ["status"], registry=r)
        self.engine_images = Counter("animegan_engine_images", "Images the model ran on",
                                     registry=r)
        self.cache_hits = Counter("animegan_cache_hits", "Images answered from the cache",
                                  registry=r)
        self.batch_size = Histogram("animegan_batch_size", "Images per model batch",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("animegan_batch_seconds", "Seconds per model batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.request_seconds = Histogram("animegan_request_seconds",
                                         "Seconds from request to answer (ZIPs: to first byte)",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("animegan_queue_depth", "Images waiting for the engine",
                                 registry=r)
        self.cache_bytes = Gauge("animegan_cache_bytes", "Bytes of results in the cache",
                                 registry=r)
        self.inflight_bytes = Gauge("animegan_inflight_bytes", "Bytes of request bodies held "
                                    "in memory, all requests (--max-inflight-mb)", registry=r)

    def watch(self, service: ImageService) -> None:
        """Read the queue depth and cache size from the service at each scrape."""
        self.queue_depth.set_function(lambda: service.batcher.depth)
        self.cache_bytes.set_function(lambda: service.cache.bytes)
        self.inflight_bytes.set_function(lambda: service.inflight.used)

    def observe_batch(self, size: int, seconds: float) -> None:
        """One batch ran on the model (called from the engine thread)."""
        self.engine_images.inc(size)
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def observe_request(self, status: int, seconds: float) -> None:
        """One POST /animeify answered."""
        self.requests.labels(status=str(status)).inc()
        self.request_seconds.observe(seconds)

    def count_image(self, status: str, n: int = 1) -> None:
        """Images of a request that ended as ``status``."""
        if n:
            self.images.labels(status=status).inc(n)

    def count_cached(self, n: int) -> None:
        """Images answered from the cache, never queued."""
        if n:
            self.cache_hits.inc(n)

    def render(self) -> tuple[bytes, str]:
        """The text exposition format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
