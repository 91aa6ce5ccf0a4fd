"""Every setting of ``convert`` and ``serve``, declared once: the one owner of its default.

A declaration (``Setting``) holds a setting's name, default, validation, config key (and
which tables of the config file hold it), its ``ANIMEGAN_*`` variable, its flag spelling and
its ``--help`` text. Everything else is derived from it: the click options of ``convert``,
``serve``, ``tune`` and ``info`` (cli/options.py), the config file's keys (settings/config.py),
``info``'s defaults table, and the keyword defaults of ``ConvertOptions``, ``Stylizer.load``,
``ServeSettings``, ``FaceSettings`` and the engines' options, which read ``X.default``.
A new setting is one declaration here plus its name in a command's list below.

This module sits in the lowest layer above core (see docs/architecture.md, "Layers"): it
imports nothing of the package but core. What only a higher layer knows is named, not
imported: a setting's choices are ``"module:attribute"`` (resolved by the CLI), and a help
text's ``{placeholders}`` are filled in by the CLI (cli/options.py's HELP_VALUES).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from animegan_cli.core.limits import (
    MIN_SIDE,
    MIN_TILE,
    SERVE_BODY_IDLE_TIMEOUT_S,
    SERVE_BODY_TIMEOUT_S,
    SERVE_GRACE_S,
    SERVE_HEADER_TIMEOUT_S,
    SERVE_KEEP_ALIVE_TIMEOUT_S,
    SERVE_MAX_CONNECTIONS,
    SERVE_MAX_INFLIGHT_MB,
    SERVE_MAX_OUTPUT_PIXELS,
    SERVE_MAX_REQUEST_PIXELS,
)

T = TypeVar("T")
# A value's problem as the one line a user gets ("--quality must be between 1 and 100"),
# or None when it can work.
Check = Callable[[Any], "str | None"]
CONVERT = "convert"  # the config file's tables
SERVE = "serve"


@dataclass(frozen=True, eq=False)
class Setting(Generic[T]):
    """One setting: everything the CLI, the config file and the library know about it."""

    flags: tuple[str, ...]  # click's spellings: ("--size",), ("-o", "--output"), ("--x/--no-x",)
    default: T
    help: str
    name: str = ""  # the config key and library field; "" = from the long flag (--png-level)
    param: str = ""  # click's parameter name where it differs (format_, faces_mode)
    python_type: type | None = None  # the value's type where the default does not say
    envvar: str | None = None
    config: tuple[str, ...] = ()  # the config file's tables that may hold it
    config_type: type | tuple[type, ...] | None = None  # where not the value's type
    choices: str | None = None  # "module:attribute" of the allowed values
    parse: str | None = None  # how the CLI reads its text (cli/options.py's PARSERS)
    check: Check | None = None
    click: Mapping[str, object] = field(default_factory=dict)  # metavar, is_flag, ...

    def __post_init__(self) -> None:
        if not self.name:
            long = self.flags[-1].split("/")[0]
            object.__setattr__(self, "name", long.lstrip("-").replace("-", "_"))
        if not self.param:
            object.__setattr__(self, "param", self.name)

    @property
    def flag(self) -> str:
        """The flag messages name: --size."""
        return self.flags[-1].split("/")[0]

    @property
    def value_type(self) -> type | tuple[type, ...]:
        """The type a config file's value must have."""
        if self.config_type is not None:
            return self.config_type
        if self.click.get("multiple"):
            return list
        kind = self.python_type or type(self.default)
        return (int, float) if kind is float else kind

    def problem(self, value: object) -> str | None:
        """Why ``value`` cannot work (the user's one line), or None."""
        if self.check is None or (value is None and self.default is None):
            return None
        return self.check(value)


def at_least(low: int) -> Check:
    """``--x must be at least N``."""
    return lambda value: None if value >= low else f"{{flag}} must be at least {low}"


def zero_or_more(note: str = "") -> Check:
    """``--x must be 0 or more`` (``note``: what 0 means, "(no limit)")."""
    zero = f"0 {note} " if note else "0 "
    return lambda value: None if value >= 0 else f"{{flag}} must be {zero}or more"


def more_than(low: int) -> Check:
    """``--x must be more than N``."""
    return lambda value: None if value > low else f"{{flag}} must be more than {low}"


def zero_or_at_least(low: int, note: str = "") -> Check:
    """``--x must be 0 or at least N``: 0 stands for "native" or "no limit" (``note``)."""
    zero = f"0 {note} " if note else "0 "
    return lambda value: (None if value == 0 or value >= low
                          else f"{{flag}} must be {zero}or at least {low}")


def between(low: int, high: int) -> Check:
    """``--x must be between LOW and HIGH``."""
    return lambda value: (None if low <= value <= high
                          else f"{{flag}} must be between {low} and {high}")


def problems(settings: tuple[Setting[Any], ...], values: Mapping[str, object]) -> list[str]:
    """Each declared check that ``values`` (by setting name) fails, as its one line."""
    found = []
    for setting in settings:
        problem = setting.problem(values[setting.name])
        if problem is not None:
            found.append(problem.replace("{flag}", setting.flag))
    return found


def _int(flags: str, default: int | None, help: str, **more: Any) -> Setting[Any]:
    return Setting((flags,), default, help, python_type=int, **more)


_BUDGET_HELP = "{budget_share}"  # the memory budget's default share, filled in by the CLI

# --- model: which model runs and at what size (convert, tune, serve, export) ---------------
STYLE = Setting(("--style",), "face_paint_512_v2",
                "Published style ({styles}) or a name given to `animegan weights import`",
                envvar="ANIMEGAN_STYLE", config=(CONVERT, SERVE))
WEIGHTS = Setting(("--weights",), None, "Use this checkpoint file instead of a published "
                  "style.", parse="file")
SIZE = Setting(("--size",), 512, "Long side of the model input in pixels (multiple of 4); "
               "0 = native size.", envvar="ANIMEGAN_SIZE", config=(CONVERT, SERVE),
               python_type=int, check=zero_or_at_least(MIN_SIDE))

# --- engine: how the model runs (the engines' own options read their defaults here) --------
BACKEND = Setting(("--backend",), "auto",
                  "auto = OpenVINO on CPUs with bf16 units and for int8, torch otherwise; "
                  "onnxruntime (fp32, CPU) only when asked for. `animegan info` lists the "
                  "engines installed.", envvar="ANIMEGAN_BACKEND", config=(CONVERT, SERVE),
                  choices="animegan_cli.engines.base:BACKENDS")
PRECISION = Setting(("--precision",), "auto",
                    "auto = bf16 where the CPU has AMX/AVX512-BF16 or on CUDA, else fp32; "
                    "int8 (OpenVINO only) is faster at visibly lower quality.",
                    envvar="ANIMEGAN_PRECISION", config=(CONVERT, SERVE),
                    choices="animegan_cli.engines.contract:PRECISIONS")
DEVICE = Setting(("--device",), "cpu", "cuda needs a CUDA GPU (and --backend torch or auto).",
                 envvar="ANIMEGAN_DEVICE", config=(CONVERT, SERVE),
                 choices="animegan_cli.engines.contract:DEVICES")
BATCH_SIZE = _int("--batch-size", 1, "Images of the same shape run through the model together.",
                  envvar="ANIMEGAN_BATCH_SIZE", config=(CONVERT,), check=at_least(1))
NUM_WORKERS = _int("--num-workers", 1,
                   "Processes decoding and resizing ahead of the model (0 = in the main one).",
                   envvar="ANIMEGAN_NUM_WORKERS", config=(CONVERT,), check=zero_or_more())
THREADS = _int("--threads", None, "Threads for the model (any engine); default: all cores.",
               envvar="ANIMEGAN_THREADS", config=(CONVERT, SERVE))
STREAMS = _int("--streams", 1,
               "OpenVINO: images of a batch run side by side on this many streams.",
               envvar="ANIMEGAN_STREAMS", config=(CONVERT, SERVE))
SHAPES = Setting(("--shapes",), "static",
                 "OpenVINO: compile the model for each input shape (faster; ~0.1 s per new "
                 "shape), once for any shape, or hybrid: for the shapes that repeat, one-off "
                 "shapes on the any-shape model. Same pixels either way.",
                 envvar="ANIMEGAN_SHAPES", config=(CONVERT,),
                 choices="animegan_cli.engines.contract:SHAPE_MODES")
COMPILE = Setting(("--compile",), False,
                  "torch backend: torch.compile the model (slow first batch per shape).",
                  param="compile_", click={"is_flag": True})

# --- output: what the written files are -------------------------------------------------------
FORMAT = Setting(("--format",), "same", "Output format; 'same' keeps the input's (jpeg is jpg).",
                 param="format_", envvar="ANIMEGAN_FORMAT", config=(CONVERT,),
                 choices="animegan_cli.media.outputs:FORMAT_CHOICES", parse="format")
QUALITY = _int("--quality", 95, "JPEG/WebP quality, 1-100.", envvar="ANIMEGAN_QUALITY",
               config=(CONVERT,), check=between(1, 100))
# --png-level: a zlib level 0-9, or "rle", zlib's run-length strategy (what OpenCV writes).
# The default, by measurement (benchmarks/png_level.py, docs/performance.md): at 512 px, rle
# took about 0.25x the CPU time of zlib's default level 6 (which Pillow, libpng and ffmpeg
# use) and 0.6x that of level 4, for files the size of level 4's (photos) or 5% larger than
# level 6's (flat colours). Checked by media.formats.png_level_problem.
PNG_LEVEL = Setting(("--png-level",), "rle",
                    "PNG compression: a zlib level, 0 (fastest, largest) to 9, or rle (zlib's "
                    "run-length strategy, as OpenCV writes: a quarter of level 6's time). The "
                    "pixels are the same either way: changing it leaves outputs up to date.",
                    envvar="ANIMEGAN_PNG_LEVEL", config=(CONVERT,), config_type=(int, str),
                    parse="png_level", click={"metavar": "0-9|rle", "show_default": True})
SUFFIX = Setting(("--suffix",), "", "Text added to each output file's stem.")

# --- pixels: what else decides a result's pixels (convert, serve) -----------------------------
ALIGN_CORNERS = Setting(("--align-corners/--no-align-corners",), False,
                        "Upsampling mode; the upstream command line used --no-align-corners.",
                        envvar="ANIMEGAN_ALIGN_CORNERS", config=(CONVERT, SERVE))
KEEP_SIZE = Setting(("--keep-size",), False, "Scale each result back to its input's size.",
                    envvar="ANIMEGAN_KEEP_SIZE", config=(CONVERT, SERVE),
                    click={"is_flag": True})
# Largest image (width x height) decoded by default; larger ones are refused from their
# header, before any pixel is decoded (--max-pixels). 200 MP holds any camera photo and
# most panoramas; a decompression bomb claims far more (50000x50000 is 2500 MP).
MAX_PIXELS = Setting(("--max-pixels",), 200_000_000,
                     "Refuse larger images (width x height, e.g. 50M) from their header, "
                     "before decoding; 0 = no limit.", config=(SERVE,), config_type=(int, str),
                     parse="pixels", check=zero_or_more("(no limit)"),
                     click={"metavar": "N", "show_default": True})
# What the result keeps of the photo's colours (media/colour.py; docs/colour.md).
COLOUR = Setting(("--colour",), "style",
                 "style: the model's colours; keep-brightness: the result scaled to the photo's "
                 "mean brightness (as AnimeGANv2's own test script does); keep-colours: the "
                 "photo's colours with the style's light and shade.",
                 envvar="ANIMEGAN_COLOUR", config=(CONVERT, SERVE),
                 choices="animegan_cli.media.colour:COLOURS", click={"show_default": True})



def _tile_problem(value: object) -> str | None:
    text = str(value).strip().lower()
    if text in ("auto", "off") or (text.isdigit() and int(text) >= MIN_TILE):
        return None
    return f"{{flag}} must be auto, off or a tile side of at least {MIN_TILE} pixels"


TILE = Setting(("--tile",), "auto",
               "Style an image in overlapping tiles of N pixels (with its normalisation "
               "statistics from one pass at half its size, or the largest that fits "
               "--max-memory): 'auto' tiles only what does not fit the memory budget "
               "(else refused), 'off' never tiles. See docs/tiles.md.",
               envvar="ANIMEGAN_TILE", config=(CONVERT, SERVE), config_type=(str, int),
               check=_tile_problem, click={"metavar": "auto|off|N", "show_default": True})

# --- faces: --faces and its settings (convert) ------------------------------------------------
FACES = Setting(("--faces",), "off",
                "crop: one output per face (<stem>_face<K>); paste: the whole image, each face "
                "re-styled at 512x512 and blended back. Made for the styles trained on faces "
                "({face_styles}).", param="faces_mode",
                choices="animegan_cli.faces.detect:MODES")
FACE_MARGIN = Setting(("--face-margin",), 1.3,
                      "Side of a face's square crop, times its detected box.",
                      click={"show_default": True})
# fewer false faces: see docs/faces.md
FACE_DETECTOR = Setting(("--face-detector",), "haar-alt2",
                        "OpenCV's bundled frontal-face Haar cascades: alt2 (fewer false faces) "
                        "or the default one (finds a few more).",
                        choices="animegan_cli.faces.detect:DETECTORS",
                        click={"show_default": True})
MIN_FACE = _int("--min-face", 40, "Smallest face looked for, in pixels of the input.",
                click={"show_default": True, "metavar": "PX"})
FACE_NEIGHBOURS = _int("--face-neighbours", 5,
                       "Detections a face needs (higher: fewer false faces, more missed).",
                       click={"show_default": True, "metavar": "N"})
FACES_FALLBACK = Setting(("--faces-fallback",), "fail",
                         "With --faces crop, an image without a face fails, or is converted "
                         "whole (--faces paste always styles it whole).",
                         choices="animegan_cli.faces.detect:FALLBACKS",
                         click={"show_default": True})
# Faces styled per image: each costs a 512x512 model run (about 1 s on a 2-core CPU), so a
# crowd of 400 took 412 s. 32 covers a large group photo; beyond it the largest are kept.
MAX_FACES = _int("--max-faces", 32,
                 "Faces styled per image (each is a 512x512 model run); beyond N the largest "
                 "N are used, and the run says so.", click={"show_default": True, "metavar": "N"})

# --- video: clips and animations (convert) ----------------------------------------------------
VIDEO_FORMAT = Setting(("--video-format",), "same",
                       "Container of video outputs; 'same' keeps the input's (AVI -> mkv).",
                       envvar="ANIMEGAN_VIDEO_FORMAT",
                       choices="animegan_cli.media.video:VIDEO_FORMAT_CHOICES")
# x264's CRF scale (0 = lossless, 23 = x264's default, 51 = worst). 18 is where x264's
# docs put "visually lossless": styled frames have flat colours and hard edges, which
# show blocking early, so the default is finer than x264's own.
VIDEO_CRF = _int("--video-crf", 18, "Video quality, x264's CRF scale: 0 lossless, 51 worst.",
                 envvar="ANIMEGAN_VIDEO_CRF", check=between(0, 51), click={"show_default": True})
FRAMES_PER_BATCH = _int("--frames-per-batch", 4,  # measured: see docs/video.md ("Batching")
                        "Frames of a clip or an animation run through the model together.",
                        envvar="ANIMEGAN_FRAMES_PER_BATCH", check=at_least(1),
                        click={"show_default": True})
# Off by default: measured on a static-camera clip with noise and a slow brightness ramp
# (benchmarks/video_bench.py --flicker-only; docs/video.md, "Smoothing"), the gain with the
# random-weights checkpoint is small, and it runs a clip's frames one at a time.
VIDEO_SMOOTHING = Setting(("--video-smoothing",), "off",
                          "Clips: 'stats' smooths each frame's normalisation statistics with "
                          "the frames before it (reset at scene cuts), so colour and "
                          "brightness do not pulse; 'off' styles each frame alone.",
                          envvar="ANIMEGAN_VIDEO_SMOOTHING",
                          choices="animegan_cli.media.video:VIDEO_SMOOTHING_CHOICES",
                          click={"show_default": True})
KEEP_PARTIAL_VIDEO = Setting(("--keep-partial-video",), False,
                             "Keep what decodes of a damaged or cut-short clip (and say so) "
                             "instead of failing it.", click={"is_flag": True})

# --- run: what a convert run reads, redoes and how it behaves ---------------------------------
OUTPUT = Setting(("-o", "--output"), None, "Output folder; the input tree is mirrored under it.",
                 parse="path", click={"required": True})
RECURSIVE = Setting(("--recursive/--no-recursive",), True, "Walk input folders recursively.")
NULL = Setting(("-0", "--null"), False,
               "With '-', paths on stdin are NUL-separated (find -print0).",
               click={"is_flag": True})
BASE = Setting(("--base",), None,
               "Mirror every input under OUTPUT by its path relative to DIR (rsync -R). "
               "Default: listed paths relative to the working directory, a named file by its "
               "name, a named folder's files relative to it.", parse="folder",
               click={"metavar": "DIR"})
OVERWRITE = Setting(("--overwrite",), False,
                    "Redo every output, even those that are up to date.", click={"is_flag": True})
TRUST_MTIME = Setting(("--trust-mtime",), False,
                      "An input whose size and mtime match its output's record is unchanged "
                      "(no hashing).", click={"is_flag": True})
DRY_RUN = Setting(("--dry-run",), False,
                  "List what would be converted or skipped and why; no model, no writes.",
                  click={"is_flag": True})
SINCE = Setting(("--since",), None,
                "Only inputs modified at or after DATE: 2026-11-01, 2026-11-01T12:00 (local "
                "time) or an age such as 7d, 12h.", click={"metavar": "DATE"})
NEWER_THAN = Setting(("--newer-than",), None,
                     "Only inputs modified after FILE was (like find -newer).", parse="path",
                     click={"metavar": "FILE"})
SHARD = Setting(("--shard",), None,
                "Only shard I of N (I counts from 0), split by relative path: N jobs together "
                "cover every input exactly once.", click={"metavar": "I/N"})
RAY = Setting(("--ray",), None,
              "Style on a Ray actor pool: 'local' starts Ray on this machine, 'auto' or an "
              "address (ray://host:10001) joins a cluster; bare: RAY_ADDRESS, else local. "
              "Inputs and OUTPUT must be on storage every node sees.", param="ray_address",
              click={"metavar": "[local|auto|ADDRESS]", "is_flag": False, "flag_value": ""})
REUSE_SIMILAR = _int("--reuse-similar", None,
                     "Give a near-duplicate (dHash within MAXDIST of 64 bits; 4 is strict) an "
                     "earlier image's result. Off by default: the result is not its own.",
                     click={"metavar": "MAXDIST"})
JSON = Setting(("--json",), False, "Print one JSON object per input on stdout.",
               param="as_json", click={"is_flag": True})
QUIET = Setting(("-q", "--quiet"), False, "No progress bar, no summary line.",
                click={"is_flag": True})
VERBOSE = Setting(("-v", "--verbose"), False, "Also print the engine used and where the time "
                  "went.", click={"is_flag": True})
MAX_MEMORY = Setting(("--max-memory",), None,
                     "Memory budget, e.g. 4G or 512M (default: " + _BUDGET_HELP + " of "
                     "available memory). The batch size is lowered to fit.", python_type=int,
                     parse="bytes", click={"metavar": "SIZE"})
WAIT = Setting(("--wait",), False,
               "If another run is writing to OUTPUT, wait for it (default: exit 2).",
               click={"is_flag": True})
REPORT = Setting(("--report",), None, "Write a JSON summary of the run to this file at the end.",
                 param="report_file", parse="file")

# --- serve: the server's own settings ([serve]; its model and engine come from above) -------
HOST = Setting(("--host",), "127.0.0.1",
               "Address to listen on; another than 127.0.0.1 without --token warns.",
               config=(SERVE,))
PORT = _int("--port", 8000, "Port to listen on.", config=(SERVE,))
# Chosen from benchmarks/results/serve_load_*.md: batching did not pay on these CPUs (see
# docs/serve.md); a 200 ms window, common where batching pays (GPUs), is one flag away.
MAX_BATCH_SIZE = _int("--max-batch-size", 1,
                      "Images of one shape, from any requests, run through the model together.",
                      config=(SERVE,), check=at_least(1))
BATCH_WAIT_MS = Setting(("--batch-wait-ms",), 0.0,
                        "How long the first image of a batch waits for others (200 is common "
                        "where batching pays, e.g. on a GPU).", config=(SERVE,),
                        check=zero_or_more(), click={"metavar": "MS"})
QUEUE_SIZE = _int("--queue-size", 32,
                  "Images waiting for the model; beyond it requests get 503 + Retry-After.",
                  config=(SERVE,), check=at_least(1))
MAX_UPLOAD_MB = Setting(("--max-upload-mb",), 20.0,
                        "Largest file accepted, counted while it is read (413 beyond).",
                        config=(SERVE,), check=more_than(0),
                        click={"metavar": "N"})
CACHE_MB = Setting(("--cache-mb",), 256.0,
                   "Memory for cached results (same bytes and settings => same answer); "
                   "0 = no cache.", config=(SERVE,), check=zero_or_more("(off)"),
                   click={"metavar": "N"})
CACHE_SIMILAR = _int("--cache-similar", None,
                     "Also answer a near-duplicate (dHash within MAXDIST of 64 bits) from the "
                     "cache. Off by default: the result is not its own.", config=(SERVE,),
                     check=between(0, 64),
                     click={"metavar": "MAXDIST"})
# The token is in no config table: a secret belongs in ANIMEGAN_TOKEN (or a systemd
# credential), not in a config file.
TOKEN = Setting(("--token",), None,
                "Require 'Authorization: Bearer TOKEN' on every endpoint but /healthz (and the "
                "page); several, one per client, separated by commas (each job belongs to "
                "the token that sent it). Env: ANIMEGAN_TOKEN.", envvar="ANIMEGAN_TOKEN",
                click={"show_default": False})
GRACE = Setting(("--grace",), SERVE_GRACE_S,
                "On SIGTERM/Ctrl-C, how long in-flight requests may take to finish (then they "
                "are answered 503); the whole stop takes about as long.", config=(SERVE,),
                check=zero_or_more(),
                click={"metavar": "SECONDS"})
# Who may use it (serve/access.py): lists of names and origins, and the cache's scope.
ALLOWED_HOSTS = Setting(("--allowed-host",), (),
                        "Also answer requests whose Host is NAME (e.g. the name a reverse "
                        "proxy passes on); repeatable, * = any. Default: localhost, the --host "
                        "address, and any IP address when --host is 0.0.0.0 or ::.",
                        name="allowed_hosts", python_type=str, config=(SERVE,),
                        click={"multiple": True, "metavar": "NAME"})
ALLOWED_ORIGINS = Setting(("--allowed-origin",), (),
                          "Accept POSTs from pages at ORIGIN (https://app.example.com) besides "
                          "the server's own page, with CORS headers; repeatable, * = any.",
                          name="allowed_origins", python_type=str, config=(SERVE,),
                          click={"multiple": True, "metavar": "ORIGIN"})
# See docs/serve.md, "Security".
CACHE_SCOPE = Setting(("--cache-scope",), "client",
                      "Whose cached results a request may get: only its own client address's, "
                      "or anyone's (shared: a hit tells one client what another uploaded).",
                      config=(SERVE,), choices="animegan_cli.serve.access:CACHE_SCOPES",
                      click={"show_default": True})
# Budgets under hostile clients (issue 22, items 4-6).
MAX_SIZE = _int("--max-size", None,
                "Largest size a request may ask (422 above; size=0 only for images no longer "
                "than N). Default: --size; at --size 0, the largest square side --max-memory "
                "holds. 0 = no limit but --max-memory.", config=(SERVE,),
                check=zero_or_at_least(MIN_SIDE, "(no limit)"),
                click={"metavar": "N"})
SERVE_MAX_MEMORY = Setting(("--max-memory",), None,
                           "Memory the model may plan for (e.g. 4G): an image whose estimate is "
                           "over it is refused before decoding (413). Default: " + _BUDGET_HELP
                           + " of available memory.", python_type=int, config=(SERVE,),
                           config_type=(int, str), parse="bytes", check=more_than(0),
                           click={"metavar": "SIZE"})
MAX_OUTPUT_PIXELS = Setting(("--max-output-pixels",), SERVE_MAX_OUTPUT_PIXELS,
                            "Largest answer keep_size may ask (width x height; 413 above); "
                            "0 = no limit.", config=(SERVE,), config_type=(int, str),
                            check=zero_or_more("(no limit)"), parse="pixels",
                            click={"metavar": "N", "show_default": True})
MAX_FILES = _int("--max-files", None,
                 "Files in one request (413 above). Default: half of --queue-size, so that one "
                 "request never takes the whole queue.", config=(SERVE,), click={"metavar": "N"})
MAX_REQUEST_PIXELS = Setting(("--max-request-pixels",), SERVE_MAX_REQUEST_PIXELS,
                             "Pixels the images of one request may hold together, from their "
                             "headers, before decoding (413 above); 0 = no limit.",
                             config=(SERVE,), config_type=(int, str), parse="pixels",
                             check=zero_or_more("(no limit)"),
                             click={"metavar": "N", "show_default": True})
MAX_INFLIGHT_MB = Setting(("--max-inflight-mb",), SERVE_MAX_INFLIGHT_MB,
                          "Request bodies held in memory across all requests; a body read "
                          "beyond it stops with 503 + Retry-After.", config=(SERVE,),
                          click={"metavar": "N", "show_default": True})
BODY_TIMEOUT = Setting(("--body-timeout",), SERVE_BODY_TIMEOUT_S,
                       "A request's whole body must arrive within it (408 after).",
                       config=(SERVE,), click={"metavar": "SECONDS", "show_default": True})
BODY_IDLE_TIMEOUT = Setting(("--body-idle-timeout",), SERVE_BODY_IDLE_TIMEOUT_S,
                            "Longest pause between two chunks of a body (408 after; its memory "
                            "is freed).", config=(SERVE,),
                            click={"metavar": "SECONDS", "show_default": True})
# Connections and timeouts (serve/transport.py): what a connection may hold without a request.
MAX_CONNECTIONS = _int("--max-connections", SERVE_MAX_CONNECTIONS,
                       "Open connections served at once; more are answered 503 at once. Kept "
                       "under the open-file limit, whose soft value is raised to the hard one.",
                       config=(SERVE,), check=at_least(1),
                       click={"metavar": "N", "show_default": True})
HEADER_TIMEOUT = Setting(("--header-timeout",), SERVE_HEADER_TIMEOUT_S,
                         "A request's line and headers must arrive within it; a connection "
                         "that sends nothing or trickles them is closed (408 if part came).",
                         config=(SERVE,), check=more_than(0),
                         click={"metavar": "SECONDS", "show_default": True})
KEEP_ALIVE_TIMEOUT = Setting(("--keep-alive-timeout",), SERVE_KEEP_ALIVE_TIMEOUT_S,
                             "How long an idle connection stays open after a response.",
                             config=(SERVE,), check=more_than(0),
                         click={"metavar": "SECONDS", "show_default": True})

# Jobs (serve/jobs/): big batches stored on disk, styled in the background, kept a while.
DATA_DIR = Setting(("--data-dir",), None,
                   "Folder of the job store (POST /jobs): its SQLite file, uploads and "
                   "results. Default: $XDG_DATA_HOME/animegan/jobs (~/.local/share/...).",
                   config=(SERVE,), config_type=str, parse="folder",
                   click={"metavar": "DIR"})
KEEP_RESULTS = Setting(("--keep-results",), 86400.0,
                       "How long a finished job and its results are kept (then removed, and "
                       "its URLs answer 404).", config=(SERVE,), config_type=(int, float),
                       check=more_than(0), click={"metavar": "SECONDS", "show_default": True})
JOBS_DISK_MB = Setting(("--jobs-disk-mb",), 2048.0,
                       "Disk the job store may fill with uploads and results; a job that "
                       "would go over it is refused (503 + Retry-After).", config=(SERVE,),
                       config_type=(int, float), check=more_than(0),
                       click={"metavar": "N", "show_default": True})
MAX_JOBS = _int("--max-jobs", 4,
                "Jobs queued or running at once per token (per server without --token); "
                "more are refused (429).", config=(SERVE,), check=at_least(1),
                click={"metavar": "N", "show_default": True})
MAX_JOB_FILES = _int("--max-job-files", 500,
                     "Files in one job (413 above); its body is bounded by --max-inflight-mb.",
                     config=(SERVE,), check=at_least(1),
                     click={"metavar": "N", "show_default": True})

# --- watch: following folders (convert's settings above, and these) ----------------------
# 1 s: a copy, a sync client or a scanner writes a photo in well under a second between
# chunks, and inotify's close (waited for as well) covers slower writers; SMB and FAT keep
# mtimes to 1-2 s, where the size check carries it. Each second is a second of latency.
SETTLE = Setting(("--settle",), 1.0,
                 "Style a file once its size and mtime have stayed the same this long (and, "
                 "with inotify, it was closed after its last write).", check=more_than(0),
                 click={"metavar": "SECONDS"})
POLL = Setting(("--poll",), False,
               "Poll the folders instead of inotify (network file systems); automatic where "
               "inotify cannot start.", click={"is_flag": True})

# The groups, in the order the config file's keys are listed ("known: ...").
MODEL_GROUP = (SIZE, STYLE, WEIGHTS)
ENGINE_GROUP = (BACKEND, PRECISION, DEVICE, BATCH_SIZE, NUM_WORKERS, THREADS, STREAMS, SHAPES,
                COMPILE)
OUTPUT_GROUP = (FORMAT, QUALITY, PNG_LEVEL, SUFFIX)
PIXELS_GROUP = (ALIGN_CORNERS, KEEP_SIZE, MAX_PIXELS, COLOUR, TILE)
FACES_GROUP = (FACES, FACE_MARGIN, FACE_DETECTOR, MIN_FACE, FACE_NEIGHBOURS, FACES_FALLBACK,
               MAX_FACES)  # FaceSettings' fields, in order
VIDEO_GROUP = (VIDEO_FORMAT, VIDEO_CRF, FRAMES_PER_BATCH, VIDEO_SMOOTHING, KEEP_PARTIAL_VIDEO)
RUN_GROUP = (OUTPUT, RECURSIVE, NULL, BASE, OVERWRITE, TRUST_MTIME, DRY_RUN, SINCE, NEWER_THAN,
             SHARD, RAY, REUSE_SIMILAR, JSON, QUIET, VERBOSE, MAX_MEMORY, WAIT, REPORT)
WATCH_GROUP = (SETTLE, POLL)
SERVE_GROUP = (HOST, PORT, MAX_BATCH_SIZE, BATCH_WAIT_MS, QUEUE_SIZE, MAX_UPLOAD_MB, CACHE_MB,
               CACHE_SIMILAR, TOKEN, GRACE, ALLOWED_HOSTS, ALLOWED_ORIGINS, CACHE_SCOPE, MAX_SIZE,
               SERVE_MAX_MEMORY, MAX_OUTPUT_PIXELS, MAX_FILES, MAX_REQUEST_PIXELS,
               MAX_INFLIGHT_MB, BODY_TIMEOUT, BODY_IDLE_TIMEOUT, MAX_CONNECTIONS, HEADER_TIMEOUT,
               KEEP_ALIVE_TIMEOUT, DATA_DIR, KEEP_RESULTS, JOBS_DISK_MB, MAX_JOBS, MAX_JOB_FILES)
# What Stylizer.load takes, by the same names.
STYLIZER_SETTINGS = (STYLE, WEIGHTS, SIZE, KEEP_SIZE, ALIGN_CORNERS, MAX_PIXELS, COLOUR, DEVICE,
                     BACKEND, PRECISION, THREADS, STREAMS, COMPILE, SHAPES)
GROUPS = {"engine": ENGINE_GROUP, "model": MODEL_GROUP, "output": OUTPUT_GROUP,
          "pixels": PIXELS_GROUP, "faces": FACES_GROUP, "video": VIDEO_GROUP, "run": RUN_GROUP,
          "watch": WATCH_GROUP, "serve": SERVE_GROUP}
ALL: tuple[Setting[Any], ...] = tuple(s for group in GROUPS.values() for s in group)

# Each command's options, in --help order (the option lists of cli/options.py).
CONVERT_OPTIONS = (OUTPUT, STYLE, WEIGHTS, SIZE, RECURSIVE, NULL, BASE, SUFFIX, FORMAT,
                   QUALITY, PNG_LEVEL, KEEP_SIZE, ALIGN_CORNERS, COLOUR, TILE, *FACES_GROUP,
                   BATCH_SIZE,
                   THREADS, STREAMS, DEVICE, BACKEND, PRECISION, COMPILE, SHAPES, NUM_WORKERS,
                   OVERWRITE, TRUST_MTIME, DRY_RUN, SINCE, NEWER_THAN, SHARD, RAY, REUSE_SIMILAR,
                   JSON, QUIET, VERBOSE, MAX_PIXELS, MAX_MEMORY, WAIT, REPORT, *VIDEO_GROUP)
# watch: convert's options (the same declarations) but those of one-off runs, and its own.
WATCH_OPTIONS = (*(s for s in CONVERT_OPTIONS
                   if s not in (NULL, DRY_RUN, SINCE, NEWER_THAN, SHARD, RAY, REPORT)),
                 *WATCH_GROUP)
SERVE_OPTIONS = (HOST, PORT, STYLE, WEIGHTS, SIZE, KEEP_SIZE, ALIGN_CORNERS, COLOUR, TILE,
                 THREADS, STREAMS, DEVICE, BACKEND, PRECISION, COMPILE, SHAPES, MAX_BATCH_SIZE,
                 BATCH_WAIT_MS, QUEUE_SIZE, MAX_UPLOAD_MB, MAX_PIXELS, CACHE_MB, CACHE_SIMILAR,
                 TOKEN, GRACE, ALLOWED_HOSTS, ALLOWED_ORIGINS, CACHE_SCOPE, MAX_SIZE,
                 SERVE_MAX_MEMORY, MAX_OUTPUT_PIXELS, MAX_FILES, MAX_REQUEST_PIXELS,
                 MAX_INFLIGHT_MB, BODY_TIMEOUT, BODY_IDLE_TIMEOUT, MAX_CONNECTIONS, HEADER_TIMEOUT,
                 KEEP_ALIVE_TIMEOUT, DATA_DIR, KEEP_RESULTS, JOBS_DISK_MB, MAX_JOBS, MAX_JOB_FILES)


def config_keys(table: str, settings: tuple[Setting[Any], ...] = ALL
                ) -> dict[str, type | tuple[type, ...]]:
    """The keys ``table`` ([convert], [serve]) of the config file may hold, with their types."""
    return {s.name: s.value_type for s in settings if table in s.config}
