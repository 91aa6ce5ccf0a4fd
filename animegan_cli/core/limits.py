"""Bounds that planning checks before any model loads; importable without torch."""

from __future__ import annotations

MIN_SIDE = 8
"""Smallest side the generator takes: two stride-2 convs, then reflection padding of 1."""

# Tiles (engines/tiling.py). With its normalisation statistics fixed, a result pixel depends
# only on input pixels at most RECEPTIVE_RADIUS away (per axis): measured by
# benchmarks/receptive_field.py (one input pixel changed, the farthest output pixel that
# moved: 48 to 51 px by its place on the 4-pixel grid of the two stride-2 convs), rounded
# up to 4. Adjacent tiles overlap by twice that (each discards its RECEPTIVE_RADIUS border
# rows, styled from reflected padding rather than the image) plus a TILE_BLEND-wide band at
# the middle where one fades into the other.
RECEPTIVE_RADIUS = 52
TILE_BLEND = 8
TILE_OVERLAP = 2 * RECEPTIVE_RADIUS + TILE_BLEND
MIN_TILE = 256
"""Smallest --tile: below it the overlap would be most of each tile's work."""

# Compiled static OpenVINO models kept at once: a run rarely has more shapes. Each holds its
# own weights and buffers, ~100 MB at 1x3x384x512 in bf16 (8 such: +665 MB RSS), growing with
# the pixels, so the pixels they are compiled for are bounded too (~0.8 GB in all). Here so
# that the warm-up (ov_warmup) plans within them without importing the engine.
MAX_COMPILED_SHAPES = 8
MAX_COMPILED_PIXELS = 8 * 384 * 512

MODEL_CACHE_BYTES = 256 << 20
"""OpenVINO's model cache (compiled models as blobs, one per shape and precision, ~8.8 MB
at bf16) is pruned to this, oldest first: ~29 shapes. Loading a cached blob took 0.05-0.17 s
where compiling took 0.13-0.40 s (docs/performance.md); 0 turns the cache off."""

# serve's budgets under hostile or careless clients (ServeSettings takes its defaults from
# here, and so do the serve command's flags: each written once). See docs/serve.md.
SERVE_MAX_OUTPUT_PIXELS = 50_000_000
"""keep_size's largest answer: a 50 MP camera's full size. Finishing costs ~5.5 bytes per
output pixel (measured: 64 MP raised peak RSS by 350 MB) and the PNG can be as large."""
SERVE_MAX_REQUEST_PIXELS = 400_000_000
"""Pixels (from the headers) one request may have decoded: 16 photos of 24 MP. Decoding runs
one upload at a time at ~70 MP/s for a flat PNG, so one request holds it ~6 s at most."""
SERVE_MAX_INFLIGHT_MB = 256.0
"""Request bodies held in memory across all requests: a dozen 20 MB files, ~100 photos."""
SERVE_BODY_TIMEOUT_S = 120.0
"""A request's whole body must arrive within it (about 150 MB at 10 Mbit/s)."""
SERVE_BODY_IDLE_TIMEOUT_S = 15.0
"""The longest pause between two chunks of a body: a stalled upload frees its memory."""
# serve: the stop's grace, connections, and the time a client may take to send a request's
# line and headers (serve_transport).
SERVE_GRACE_S = 30.0
"""Seconds in-flight requests get after SIGTERM; docs/serve.md's unit stops within 40."""
SERVE_MAX_CONNECTIONS = 512
"""Open connections served at once; more are answered 503 and closed at once."""
SERVE_HEADER_TIMEOUT_S = 10.0
"""Seconds a request's line and headers may take to arrive (slowloris)."""
SERVE_KEEP_ALIVE_TIMEOUT_S = 5.0
"""Seconds an idle connection is kept open after a response (uvicorn's default)."""
