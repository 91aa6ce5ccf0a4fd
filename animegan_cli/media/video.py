"""Video in, video out with PyAV: probe a clip, style its frames, encode them with their timestamps.

PyAV (the ``video`` extra, which bundles FFmpeg's libraries) is imported inside the
functions: the CLI starts without it, and a video input then fails alone with one line.
Frames stream through: one batch of frames (and the encoder's own look-ahead) is all that
is held, whatever the clip's length. Audio and subtitle packets are copied untouched with
their timestamps where the output container takes their codec (``Container.copies``), audio
it does not take is re-encoded, and what cannot be kept is left out with one line; each video
frame is encoded with its own pts in the input stream's time base, so a variable frame rate
(a phone clip) is kept.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image

from animegan_cli.core.errors import InputImageError, install_hint
from animegan_cli.settings import fields

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})
VIDEO_FORMAT_CHOICES = ("same", "mp4", "mkv", "webm")
# --video-smoothing: off, or a clip's statistics smoothed frame to frame (runners/clip_smoothing.py)
VIDEO_SMOOTHING_CHOICES = ("off", "stats")
SMOOTHING_OFF, SMOOTHING_STATS = VIDEO_SMOOTHING_CHOICES
VIDEO_EXTRA = f"install the video extra to convert videos ({install_hint('video')})"
METADATA_KEY = "animegan"  # the container tag holding the provenance record (mkv: ANIMEGAN)
# --video-crf, x264's CRF scale, and --frames-per-batch: declared (and explained) in
# settings/fields.py.
DEFAULT_CRF: int = fields.VIDEO_CRF.default
DEFAULT_FRAMES_PER_BATCH: int = fields.FRAMES_PER_BATCH.default
# A stream's decoded end may fall short of its header's duration by this much (a last
# frame's own duration, rounding) before the clip counts as cut short.
_SHORT_FRAMES = 2
_QUARTER_TURNS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180,
                  270: Image.Transpose.ROTATE_270}


class VideoError(InputImageError):
    """A video that cannot be converted; the message is the one-line reason."""


@dataclass(frozen=True)
class Container:
    """An output container: its muxer, video codec, the audio and subtitle codecs it takes
    as copied packets, and what audio it cannot hold becomes."""

    muxer: str
    video_codec: str
    audio_fallback: str  # audio in a codec the muxer refuses is re-encoded to this
    options: dict[str, str] = field(default_factory=dict)
    copies: frozenset[str] | None = None  # codecs copied untouched; None: any the muxer lists


# movflags=use_metadata_tags: without it the MP4 muxer drops tags it does not know.
_MP4_OPTIONS = {"movflags": "use_metadata_tags"}
# What MP4/MOV take copied. FFmpeg's list for the muxer (supported_codecs) is wider than what
# it can finish: it names PCM, but the MP4 muxer then refuses the unnamed channel layout a
# Matroska PCM stream has, and only at close() (EINVAL, after the whole clip was styled). So
# copies are limited to codecs every player reads from MP4; other audio becomes AAC, which
# keeps the sound (what a user converting a clip expects) at AAC's transparent bitrates.
_MP4_COPIES = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "mov_text"})
# VP9 for WebM: the bundled FFmpeg has libvpx-vp9 and SVT-AV1; VP9 encodes several times
# faster on a CPU at the same quality setting, and every browser plays it. WebM's own
# specification allows Opus and Vorbis audio and WebVTT text only.
CONTAINERS = {
    "mp4": Container("mp4", "libx264", "aac", _MP4_OPTIONS, _MP4_COPIES),
    "mov": Container("mov", "libx264", "aac", _MP4_OPTIONS, _MP4_COPIES),
    "mkv": Container("matroska", "libx264", "libopus"),
    "webm": Container("webm", "libvpx-vp9", "libopus", copies=frozenset({"opus", "vorbis",
                                                                           "webvtt"})),
}
# --video-format same: the input's container; AVI cannot carry a record tag nor a
# variable frame rate, so an AVI comes out as Matroska.
SAME_CONTAINER = {".mp4": ("mp4", ".mp4"), ".m4v": ("mp4", ".m4v"), ".mov": ("mov", ".mov"),
                  ".mkv": ("mkv", ".mkv"), ".webm": ("webm", ".webm"), ".avi": ("mkv", ".mkv")}


def is_video(path: Path | str) -> bool:
    """Whether a file name has a video extension."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def output_extension(path: Path, video_format: str) -> str:
    """The extension of a video input's output under ``--video-format``."""
    if video_format == "same":
        return SAME_CONTAINER.get(path.suffix.lower(), ("mkv", ".mkv"))[1]
    return f".{video_format}"


def container_for(output: Path) -> Container:
    """The container an output's extension asks for."""
    key = {".m4v": "mp4"}.get(output.suffix.lower(), output.suffix.lower().lstrip("."))
    return CONTAINERS.get(key, CONTAINERS["mkv"])


def option_checks(video_format: str, smoothing: str) -> list[tuple[bool, str]]:
    """(ok, message) for --video-format and --video-smoothing, as convert.validate checks
    its own; --video-crf's and --frames-per-batch's checks are declared with them
    (settings/fields.py)."""
    return [
        (video_format in VIDEO_FORMAT_CHOICES,
         f"--video-format must be one of {', '.join(VIDEO_FORMAT_CHOICES)}"),
        (smoothing in VIDEO_SMOOTHING_CHOICES,
         f"--video-smoothing must be one of {', '.join(VIDEO_SMOOTHING_CHOICES)}"),
    ]


def first_frames(path: Path, count: int) -> list[Image.Image]:
    """The first ``count`` frames of a clip, upright (for INT8 calibration)."""
    av = import_av()
    frames: list[Image.Image] = []
    with _opened(av, path) as container, contextlib.suppress(av.error.FFmpegError):
        for frame in container.decode(video=0):
            frames.append(upright(frame))
            if len(frames) >= count:
                break
    return frames


def upright(frame: Any) -> Image.Image:
    """A decoded frame as an RGB image, its display rotation applied to the pixels."""
    image = frame.to_image()
    turn = _QUARTER_TURNS.get(round(frame.rotation) % 360)
    return image.transpose(turn) if turn is not None else image


@dataclass(frozen=True)
class Frame:
    """A decoded frame, upright and already scaled to the model's input size."""

    image: Image.Image  # RGB
    size: tuple[int, int]  # the clip's upright frame size (what --keep-size restores)


FrameSize = Callable[[int, int], tuple[int, int]]  # upright (w, h) -> model input (w, h)


def scaled_upright(frame: Any, frame_size: FrameSize) -> Frame:
    """A decoded frame scaled for the model by FFmpeg, then turned upright.

    swscale converts YUV to RGB and scales (bicubic) in one pass: 3 ms for a 720p frame
    against 9 ms to convert it at full size plus 16 ms for Pillow's bicubic resize
    (measured on the 2-core Xeon), a tenth of the model's time per frame.
    """
    turn = _QUARTER_TURNS.get(round(frame.rotation) % 360)
    sideways = turn in (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270)
    size = (frame.height, frame.width) if sideways else (frame.width, frame.height)
    width, height = frame_size(*size)
    if sideways:
        width, height = height, width
    scaled = frame.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC")
    image = scaled.to_image()
    return Frame(image.transpose(turn) if turn is not None else image, size)


def import_av() -> Any:
    """PyAV, or VideoError saying which extra to install."""
    try:
        import av
    except ImportError:
        raise VideoError(VIDEO_EXTRA) from None
    return av


def is_ffmpeg_error(exc: BaseException) -> bool:
    """Whether PyAV raised ``exc`` for FFmpeg (its OSErrors may be about the input)."""
    av = sys.modules.get("av")
    return av is not None and isinstance(exc, av.error.FFmpegError)


def can_open(path: Path) -> bool:
    """Whether PyAV opens ``path`` as a clip with a video stream (for files named explicitly)."""
    try:
        av = import_av()
    except VideoError:
        return False
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.video) and container.format.name not in _IMAGE_DEMUXERS
    except (av.error.FFmpegError, OSError, ValueError):
        return False


# FFmpeg also opens still images (and image sequences); those are the image path's.
_IMAGE_DEMUXERS = frozenset({"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe",
                             "tiff_pipe", "gif", "apng"})


@dataclass(frozen=True)
class Probe:
    """What a container's header says about a clip's video stream (no frame decoded)."""

    frames: int  # from the header; estimated from duration x rate where it has no count
    seconds: float
    width: int
    height: int
    rotation: int


def probe(path: Path, max_pixels: int = 0) -> Probe:
    """Frame count, duration and size from the header; VideoError for what is no clip.

    The first frame is decoded for its rotation, with the decoder held to ``max_pixels``.
    """
    av = import_av()
    with _opened(av, path) as container:
        stream = container.streams.video[0]
        limit_decoder(stream, max_pixels)
        seconds = _stream_seconds(stream) or (container.duration or 0) / 1_000_000
        rate = stream.average_rate or stream.guessed_rate or 0
        frames = stream.frames or round(seconds * float(rate))
        width, height = stream.codec_context.width, stream.codec_context.height
        rotation = _rotation_of_stream(av, container)
        if rotation in (90, 270):
            width, height = height, width
        return Probe(frames, seconds, width, height, rotation)


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """VideoError for a clip whose header gives frames over --max-pixels (0 = no limit)."""
    if max_pixels and width * height > max_pixels:
        raise VideoError(
            f"frames are {width}x{height} ({width * height / 1e6:.1f} MP), over the "
            f"--max-pixels limit of {max_pixels / 1e6:g} MP; not decoded"
        )


def _rotation_of_stream(av: Any, container: Any) -> int:
    """The display rotation of the first frame (read from its side data), 0 when none."""
    with contextlib.suppress(av.error.FFmpegError):
        for frame in container.decode(video=0):
            return round(frame.rotation) % 360
    return 0


def _stream_seconds(stream: Any) -> float | None:
    """A video stream's duration from the header: MP4 has it, Matroska as a DURATION tag."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    text = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if not text:
        return None
    try:
        hours, minutes, secs = text.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(secs)
    except ValueError:
        return None


@contextlib.contextmanager
def _opened(av: Any, path: Path) -> Iterator[Any]:
    """The input container, with any open error turned into one VideoError line."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"not a video PyAV can read ({_reason(exc)})") from None
    try:
        still = _still_image_kind(container)
        if still is not None:
            article = "an" if still[0] in "AEIOU" else "a"
            raise VideoError(f"{article} {still} image, not a video; give it its image "
                             "extension to convert it as a photo")
        if not container.streams.video:
            raise VideoError("no video stream")
        yield container
    finally:
        container.close()


# HEIF and AVIF photos open with FFmpeg's MP4 demuxer; their brand tells them from a clip.
_STILL_BRANDS = {"heic": "HEIC", "heix": "HEIC", "mif1": "HEIF", "avif": "AVIF"}


def _still_image_kind(container: Any) -> str | None:
    """What image format a file under a video name is (a PNG saved as .mp4); None for a clip.

    Such a file fails with one line rather than being styled as a photo: its output is
    planned as a clip (OUT/name.mp4), and a photo written there would be no video.
    """
    demuxer = container.format.name
    if demuxer in _IMAGE_DEMUXERS:
        return "still" if demuxer == "image2" else demuxer.removesuffix("_pipe").upper()
    brand = str(container.metadata.get("major_brand", "")).strip().lower()
    return _STILL_BRANDS.get(brand)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def read_record(path: Path) -> str | None:
    """The provenance record text in a video's container tags; None without one (or PyAV)."""
    try:
        av = import_av()
    except VideoError:
        return None
    try:
        with av.open(str(path)) as container:
            tags = {key.lower(): value for key, value in container.metadata.items()}
    except (av.error.FFmpegError, OSError, ValueError):
        return None
    return tags.get(METADATA_KEY)


@dataclass(frozen=True)
class EncodeSettings:
    """How a video output is encoded: the record tag, quality, and what to do when damaged."""

    record: str  # provenance JSON stored in the container's tags
    crf: int = DEFAULT_CRF
    frames_per_batch: int = DEFAULT_FRAMES_PER_BATCH
    keep_partial: bool = False
    max_pixels: int = 0  # --max-pixels: every decoded frame is checked; 0 = no limit
    lean: bool = False  # a clip over the budget (styled in tiles): a shorter look-ahead


# The encoder's own memory per output pixel, measured with x264 (preset medium, 2 cores) on
# 3840x2160 frames: 1.5 GB with its default look-ahead (40 frames, plus its reference
# frames' interpolated planes), 0.72 GB with LEAN_LOOKAHEAD. A clip too large for the
# budget leaves its frames' tiles this much less room (pipeline/tiles.py's clip_plan).
ENCODER_BYTES_PER_PIXEL = 193
LEAN_ENCODER_BYTES_PER_PIXEL = 91
LEAN_LOOKAHEAD = "10"  # frames; x264's rc-lookahead, VP9's lag-in-frames


def encoder_bytes(width: int, height: int, lean: bool = False) -> int:
    """About what the video encoder holds for frames of ``width`` x ``height``."""
    per_pixel = LEAN_ENCODER_BYTES_PER_PIXEL if lean else ENCODER_BYTES_PER_PIXEL
    return per_pixel * width * height


# The decoder's side per frame pixel: its reference frames (H.264 keeps up to 16; 8 in
# yuv420p are 12 bytes a pixel) and the decoded RGB frames waiting for their batch. A 4K
# clip at --max-memory 2G peaked at 2057 MiB while only the encoder was counted.
DECODER_BYTES_PER_PIXEL = 12


def codec_bytes(width: int, height: int, lean: bool = False) -> int:
    """What the decoder and the encoder hold together for frames of ``width`` x ``height``."""
    return encoder_bytes(width, height, lean) + DECODER_BYTES_PER_PIXEL * width * height


@dataclass
class Transcoded:
    """What encoding one clip did: frames written, their span, and anything to say."""

    frames: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


StyleFrames = Callable[[list[Frame]], list[Image.Image]]
OnFrames = Callable[[int, int], None]  # (frames done, frames expected)


def transcode(
    source: Path,
    target: str,
    container: Container,
    style: StyleFrames,
    settings: EncodeSettings,
    frame_size: FrameSize,
    on_frames: OnFrames = lambda done, total: None,
) -> Transcoded:
    """Write ``target`` (a temp file's path) as ``source`` with every frame styled.

    Frames reach ``style`` scaled to ``frame_size`` of their upright size.

    VideoError (one line) for a clip that cannot be read, or that decodes short of its
    header's duration without ``keep_partial``.
    """
    av = import_av()
    with _opened(av, source) as inp:
        output = av.open(target, "w", format=container.muxer, options=dict(container.options))
        try:
            job = _Job(av, inp, output, container, (style, frame_size), settings, on_frames)
            done = job.run()
        finally:
            output.close()
    return done


class _Job:
    """One clip's decode -> style -> encode loop, with its streams copied beside it."""

    def __init__(self, av: Any, inp: Any, output: Any, container: Container,
                 styling: tuple[StyleFrames, FrameSize], settings: EncodeSettings,
                 on_frames: OnFrames) -> None:
        self.av, self.inp, self.output = av, inp, output
        self.container, self.settings = container, settings
        self.style, self.frame_size = styling
        self.on_frames = on_frames
        self.video = inp.streams.video[0]
        limit_decoder(self.video, settings.max_pixels)
        self.expected = _stream_seconds(self.video) or (inp.duration or 0) / 1_000_000
        rate = self.video.average_rate or self.video.guessed_rate or Fraction(30)
        self.rate = Fraction(rate)
        self.total = self.video.frames or round(self.expected * float(self.rate))
        self.result = Transcoded()
        self.encoder: Any = None  # made from the first styled frame (its size)
        self.pending: list[tuple[int, Frame]] = []
        self.held: list[Any] = []  # packets demuxed before the encoder (and header) exist
        self.last_pts: int | None = None
        self.retimed = 0  # frames whose pts was not after the one before
        self.copied: dict[int, Any] = {}  # input stream index -> output stream (copied)
        self.reencoded: dict[int, Any] = {}  # input stream index -> output stream (re-encoded)
        output.metadata[METADATA_KEY] = settings.record

    def run(self) -> Transcoded:
        """Decode, style and encode every frame; copy the other streams' packets."""
        self._add_other_streams()
        others = [self.inp.streams[i] for i in (*self.copied, *self.reencoded)]
        damaged = None
        try:
            for packet in self.inp.demux(self.video, *others):
                if packet.stream.index == self.video.index:
                    for frame in packet.decode():
                        self._add_frame(frame)
                else:
                    self._pass_on(packet)
        except self.av.error.FFmpegError as exc:
            damaged = self._decode_failure(exc)
        self._flush()
        if self.retimed:
            self.result.notes.append(
                f"{self.retimed} frame(s) had a timestamp not after the frame before; "
                "each was re-timed to follow it"
            )
        self._check_complete(damaged)
        return self.result

    def _decode_failure(self, exc: BaseException) -> str:
        """The reason a decode stopped; the decoder's own --max-pixels refusal is EINVAL."""
        limit = self.settings.max_pixels
        if limit and isinstance(exc, self.av.error.ArgumentError):
            return (f"the decoder refused a frame over the --max-pixels limit of "
                    f"{limit / 1e6:g} MP, or a damaged one: {_reason(exc)}")
        return _reason(exc)

    def _add_other_streams(self) -> None:
        plan = StreamPlan(self.av, self.output, self.container)
        for stream in self.inp.streams:
            if stream.index == self.video.index:
                continue
            kept = plan.add(stream)
            if kept is None:
                continue
            out, copied = kept
            (self.copied if copied else self.reencoded)[stream.index] = out
        self.result.notes.extend(plan.notes)

    def _pass_on(self, packet: Any) -> None:
        """Copy a packet untouched, or decode and re-encode audio the container cannot hold."""
        if self.encoder is None:  # no packet before every stream exists (the header)
            self.held.append(packet)
            return
        index = packet.stream.index
        if index in self.copied:
            if packet.dts is None:  # the demuxer's end-of-stream marker: nothing to copy
                return
            packet.stream = self.copied[index]
            self.output.mux(packet)
            return
        out = self.reencoded[index]
        for frame in packet.decode():
            frame.pts = None  # the encoder counts samples itself (its time base differs)
            self.output.mux(out.encode(frame))

    def _add_frame(self, frame: Any) -> None:
        # The real size of every decoded frame, whatever the header said, before any scaling.
        _check_frame_pixels(frame, self.settings.max_pixels, self.result.frames + 1)
        # The model sees the clip upright; no rotation is written.
        scaled = scaled_upright(frame, self.frame_size)
        pts = frame.pts if frame.pts is not None else self._next_pts()
        if self.last_pts is not None and pts <= self.last_pts:
            # The encoder refuses a timestamp that does not increase (at its flush, after the
            # whole clip). Re-timing such a frame to one frame after the last keeps every
            # picture, and a clip whose times start again (two clips joined) plays on in
            # order; dropping would lose the rest of such a clip.
            pts = self._next_pts()
            self.retimed += 1
        self.last_pts = pts
        self.pending.append((pts, scaled))
        if len(self.pending) >= self.settings.frames_per_batch:
            self._style_pending()

    def _next_pts(self) -> int:
        step = round(1 / (self.rate * self.video.time_base))
        return 0 if self.last_pts is None else self.last_pts + max(step, 1)

    def _style_pending(self) -> None:
        if not self.pending:
            return
        styled = self.style([frame for _, frame in self.pending])
        for (pts, _), image in zip(self.pending, styled):
            self._encode(pts, image)
        self.result.frames += len(self.pending)
        self.pending = []
        self.on_frames(self.result.frames, self.total)

    def _encode(self, pts: int, image: Image.Image) -> None:
        # yuv420p halves the chroma planes: odd sizes lose their last row / column.
        width, height = image.width - image.width % 2, image.height - image.height % 2
        if self.encoder is None:
            self.encoder = self._open_encoder(width, height)
        elif (width, height) != (self.encoder.width, self.encoder.height):
            raise VideoError("the frame size changes mid-clip; not supported")
        if (width, height) != image.size:
            image = image.crop((0, 0, width, height))
        frame = self.av.VideoFrame.from_image(image)
        frame.pts, frame.time_base = pts, self.video.time_base
        self.output.mux(self.encoder.encode(frame))

    def _open_encoder(self, width: int, height: int) -> Any:
        stream = self.output.add_stream(self.container.video_codec, rate=self.rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = self.video.time_base
        stream.codec_context.time_base = self.video.time_base
        crf = str(self.settings.crf)
        if self.container.video_codec == "libvpx-vp9":
            # Constant quality mode: a CRF with no bitrate cap; row-mt for the cores.
            stream.options = {"crf": crf, "b": "0", "row-mt": "1", "deadline": "good",
                              "cpu-used": "4"}
            if self.settings.lean:
                stream.options["lag-in-frames"] = LEAN_LOOKAHEAD
        else:
            stream.options = {"crf": crf, "preset": "medium"}
            if self.settings.lean:  # a 4K frame's look-ahead alone took 1.5 GB
                stream.options["rc-lookahead"] = LEAN_LOOKAHEAD
        self.encoder = stream
        held, self.held = self.held, []
        for packet in held:
            self._pass_on(packet)
        return stream

    def _flush(self) -> None:
        self._style_pending()
        if self.encoder is not None:
            self.output.mux(self.encoder.encode(None))
        for out in self.reencoded.values():
            self.output.mux(out.encode(None))

    def _check_complete(self, damaged: str | None) -> None:
        """Never a silently short video: a clip that stopped early fails, or is kept and said."""
        if self.result.frames == 0:
            raise VideoError(f"no frame could be decoded ({damaged or 'empty video stream'})")
        tb = self.video.time_base
        start = self.video.start_time or 0
        assert self.last_pts is not None  # frames > 0: one was written
        self.result.seconds = float((self.last_pts - start) * tb + 1 / self.rate)
        short = self.expected and self.result.seconds < self.expected - _SHORT_FRAMES / self.rate
        if damaged is None and not short:
            return
        why = damaged or f"ends at {self.result.seconds:.2f} s of {self.expected:.2f} s"
        if not self.settings.keep_partial:
            raise VideoError(
                f"damaged or cut short after frame {self.result.frames} ({why}); "
                "--keep-partial-video keeps what decodes"
            )
        self.result.notes.append(
            f"kept only the first {self.result.frames} frames "
            f"({self.result.seconds:.2f} s of {self.expected:.2f} s): {why}"
        )


def limit_decoder(stream: Any, max_pixels: int) -> None:
    """Make FFmpeg's decoder refuse a frame over ``max_pixels`` before it allocates it.

    A header can lie (it says 64x48, the frames are 16000x16000): only the decoder sees a
    frame's real size in time to refuse it without spending its memory.
    """
    if max_pixels:
        stream.codec_context.options = {**stream.codec_context.options,
                                        "max_pixels": str(max_pixels)}


def _check_frame_pixels(frame: Any, max_pixels: int, number: int) -> None:
    """VideoError for a decoded frame over --max-pixels (a decoder without FFmpeg's check)."""
    if max_pixels and frame.width * frame.height > max_pixels:
        raise VideoError(
            f"frame {number} is {frame.width}x{frame.height} "
            f"({frame.width * frame.height / 1e6:.1f} MP), over the --max-pixels limit of "
            f"{max_pixels / 1e6:g} MP"
        )


class StreamPlan:
    """What becomes of a clip's streams besides the styled one: copied, re-encoded, or left
    out with one line each (never the end of the clip)."""

    def __init__(self, av: Any, output: Any, container: Container) -> None:
        self.av, self.output, self.container = av, output, container
        self.notes: list[str] = []
        self._by_type = {"audio": self._audio, "subtitle": self._subtitle}

    def add(self, stream: Any) -> tuple[Any, bool] | None:
        """(output stream, copied?) for a stream that is kept; None when it is left out."""
        handle = self._by_type.get(stream.type)
        if handle is not None:
            return handle(stream)
        # A second video stream (a camera's other angle, a cover picture) would need its
        # own styling pass, doubling the clip's time; data streams are the camera's own.
        what = "only the first video stream is styled" if stream.type == "video" else (
            f"{self.container.muxer} output keeps video, audio and subtitles only")
        self.notes.append(f"{stream.type} stream {stream.index} ({_codec_name(stream)}) "
                          f"left out: {what}")
        return None

    def _copyable(self, name: str) -> bool:
        allowed = self.container.copies
        return name in self.output.supported_codecs and (allowed is None or name in allowed)

    def _audio(self, stream: Any) -> tuple[Any, bool] | None:
        name = _codec_name(stream)
        if self._copyable(name):
            return self.output.add_stream_from_template(stream), True
        fallback = self.container.audio_fallback
        shape = audio_encoding(self.av, fallback, stream)
        if shape is None:
            self.notes.append(
                f"audio stream {stream.index} ({name}, {stream.channels} channels, "
                f"{stream.rate} Hz) left out: {self.container.muxer} cannot hold {name} and "
                f"{fallback} cannot encode it (try --video-format mkv)"
            )
            return None
        rate, layout = shape
        out = self.output.add_stream(fallback, rate=rate)
        out.layout = layout
        self.notes.append(f"audio {name} re-encoded to {out.codec_context.name}: "
                          f"{self.container.muxer} cannot hold {name}")
        return out, False

    def _subtitle(self, stream: Any) -> tuple[Any, bool] | None:
        name = _codec_name(stream)
        if self._copyable(name):
            return self.output.add_stream_from_template(stream), True
        self.notes.append(
            f"subtitle stream {stream.index} ({name}) left out: "
            f"{self.container.muxer} cannot hold it (try --video-format mkv)"
        )
        return None


def _codec_name(stream: Any) -> str:
    context = stream.codec_context
    return context.name if context is not None else "unknown codec"


def audio_encoding(av: Any, codec: str, stream: Any) -> tuple[int, Any] | None:
    """(sample rate, channel layout) ``codec`` encodes ``stream``'s audio at; None when it
    cannot (16 channels for Opus), found by opening a throwaway encoder, so that the output
    never gets a stream its encoder then refuses mid-clip."""
    layout = stream.layout
    if layout.name.endswith(" channels"):  # Matroska PCM: a count, no named layout
        layout = av.AudioLayout(f"{layout.nb_channels}c")  # FFmpeg's default for the count
    context = av.CodecContext.create(codec, "w")
    rates = context.codec.audio_rates or ()
    rate = stream.rate if not rates or stream.rate in rates else (
        48000 if 48000 in rates else max(rates))
    context.sample_rate, context.layout = rate, layout
    context.format = context.codec.audio_formats[0]
    try:
        context.open()
    except av.error.FFmpegError:
        return None
    return rate, layout
