"""Published checkpoints: the registry, where they live, download + verify, strict loading."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.client
import io
import os
import pickle
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from animegan_cli.core.atomic import atomic_write
from animegan_cli.core.errors import DownloadError, UsageError, WeightsError
from animegan_cli.model.originals import ORIGINALS
from animegan_cli.model.variants import DEFAULT_VARIANT, VARIANTS
from animegan_cli.settings import fields

if TYPE_CHECKING:  # imported where a checkpoint is parsed: listing and planning need neither
    import torch

    from animegan_cli.model.generator import Generator


@dataclass(frozen=True)
class Style:
    """One published checkpoint: its name, file, expected git blob id and what it suits."""

    name: str
    url_path: str
    blob_id: str
    trained_on: str
    resolution: int


# name, git blob id of the upstream file, what it was trained on, natural resolution
_PUBLISHED = [
    (
        "paprika",
        "58086c9db9fc7a9e5c2876ca31b8079599352643",
        "landscapes/scenes, Paprika film style, converted from the TensorFlow original",
        512,
    ),
    (
        "face_paint_512_v2",
        "d75102f8f201ddaf8dbe6b913b1a97585b55f838",
        "512x512 face portraits (more robust than v1)",
        512,
    ),
    (
        "face_paint_512_v1",
        "19c1a1da4d9580186109a2b055d91044e5127de6",
        "512x512 face portraits",
        512,
    ),
    (
        "celeba_distill",
        "3b7ea61b02254980831cc3bc77af30666dbc999c",
        "256x256 faces, webtoon style",
        256,
    ),
]

STYLES: dict[str, Style] = {
    name: Style(name, f"{name}.pt", blob_id, trained_on, resolution)
    for name, blob_id, trained_on, resolution in _PUBLISHED
}
DEFAULT_STYLE: str = fields.STYLE.default
# A checkpoint whose graph is not the PyTorch port's is stored as {VARIANT_KEY: variant,
# STATE_KEY: state dict}: the variant travels with the weights (and so with their blob id).
VARIANT_KEY = "generator_variant"
STATE_KEY = "state_dict"
DEFAULT_BASE_URL = "https://github.com/bryandlee/animegan2-pytorch/raw/main/weights/"

DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK_BYTES = 1 << 20
_MAX_LISTED_KEYS = 3


def git_blob_id(data: bytes) -> str:
    """Return git's blob id of ``data`` (what `git hash-object` prints)."""
    digest = hashlib.sha1(b"blob %d\0" % len(data), usedforsecurity=False)
    digest.update(data)
    return digest.hexdigest()


def _file_blob_id(path: Path) -> str:
    """Return git's blob id of a file, reading it in chunks."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size, usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def user_cache_dir() -> Path:
    """Return the per-user download dir: $XDG_CACHE_HOME/animegan or ~/.cache/animegan."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "animegan"


def engine_cache_dir(backend: str) -> Path:
    """Where an engine caches each checkpoint's converted model (OpenVINO's IR, ONNX)."""
    return user_cache_dir() / backend


def repo_weights_dir() -> Path:
    """Return the repository's weights/ folder, for checkpoints shipped beside a checkout."""
    return Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class ResolvedWeights:
    """A checkpoint chosen for a run: its file, the name outputs record, its id, its tensors.

    ``state_dict`` was parsed from the same bytes the id was computed from: the file is
    read once, and a file swapped meanwhile cannot run under the old id.
    """

    path: Path
    name: str
    checkpoint_id: str
    state_dict: dict[str, torch.Tensor] | None = field(default=None, compare=False, repr=False)
    variant: str = DEFAULT_VARIANT  # the graph it was trained in (generator.VARIANTS)
    # The verified bytes, kept when resolve(parse=False) left them unparsed (no torch yet).
    data: bytes | None = field(default=None, compare=False, repr=False)

    def parsed(self) -> ResolvedWeights:
        """These weights with their state dict and variant: parsed now (imports torch) from
        the bytes the id was computed from, when resolve(parse=False) left them."""
        if self.state_dict is not None:
            return self
        assert self.data is not None
        state, variant = _parse_with_variant(self.data, self.path)
        return dataclasses.replace(self, state_dict=state, variant=variant, data=None)


@dataclass(frozen=True)
class StyleStatus:
    """Where a published style is installed, or None when it is not."""

    style: Style
    path: Path | None


@dataclass(frozen=True)
class Imported:
    """Where ``weights import`` left a checkpoint, and whether those bytes were there already."""

    path: Path
    already: bool


class WeightsStore:
    """Checkpoint files found by name in an ordered list of folders; one folder takes writes."""

    def __init__(self, search_dirs: list[Path], cache_dir: Path, base_url: str) -> None:
        self.cache_dir = Path(cache_dir)
        dirs = [Path(d) for d in search_dirs]
        # A downloaded or imported file must be findable afterwards.
        if self.cache_dir not in dirs:
            dirs.append(self.cache_dir)
        self.search_dirs = list(dict.fromkeys(dirs))
        self.base_url = base_url

    @classmethod
    def from_env(cls) -> WeightsStore:
        """Build the store from ANIMEGAN_WEIGHTS_DIR, ANIMEGAN_WEIGHTS_URL and XDG_CACHE_HOME."""
        override = os.environ.get("ANIMEGAN_WEIGHTS_DIR", "")
        cache = user_cache_dir()
        if override:
            write_dir = Path(override).expanduser()
            search = [write_dir, repo_weights_dir(), cache]
        else:
            write_dir = cache
            search = [repo_weights_dir(), cache]
        base_url = os.environ.get("ANIMEGAN_WEIGHTS_URL", "") or DEFAULT_BASE_URL
        return cls(search, write_dir, base_url)

    def url_for(self, name: str) -> str:
        """Return the download URL of a published style."""
        return self.base_url.rstrip("/") + "/" + self._published(name).url_path

    def _published(self, name: str) -> Style:
        """Return the published style called ``name`` or raise UsageError listing the choices."""
        style = STYLES.get(name)
        if style is None:
            raise self.unknown_style(name)
        return style

    def find(self, name: str) -> Path | None:
        """Return the first ``<name>.pt`` in search order, or None."""
        for folder in self.search_dirs:
            candidate = folder / f"{name}.pt"
            if candidate.is_file():
                return candidate
        return None

    def status(self) -> list[StyleStatus]:
        """Return each published style with where it is installed."""
        return [StyleStatus(style, self.find(style.name)) for style in STYLES.values()]

    def unknown_style(self, name: str) -> UsageError:
        """The error for a name that is neither published nor imported, listing both kinds
        (for one of AnimeGANv2's TensorFlow styles: where to get it and how to import it)."""
        original = ORIGINALS.get(name)
        if original is not None:
            return UsageError(
                f"style {name} is not installed: it is AnimeGANv2's TensorFlow checkpoint; get "
                f"the folder {original.url} and run `animegan weights import FOLDER` "
                "(licence: non-commercial use only)")
        message = f"unknown style {name!r}; choose from: {', '.join(STYLES)}"
        imported = self.custom()
        if imported:
            message += f"; imported: {', '.join(imported)}"
        return UsageError(message)

    def custom(self) -> dict[str, Path]:
        """Return checkpoints imported under names of their own (not published styles)."""
        found: dict[str, Path] = {}
        for folder in self.search_dirs:
            for path in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
                if path.stem not in STYLES and not path.name.startswith("."):
                    found.setdefault(path.stem, path)
        return found

    def download(self, name: str, progress: bool = True) -> Path:
        """Download a published style into the write dir, verify its blob id, return its path."""
        style = self._published(name)
        url = self.url_for(name)
        # Stored by style name, whatever the upstream file layout, since find() looks up names.
        target = self.cache_dir / f"{style.name}.pt"

        def fetch_verified(out: BinaryIO) -> None:
            _fetch(url, name, out, Path(out.name), progress)
            out.flush()
            actual = _file_blob_id(Path(out.name))
            if actual != style.blob_id:
                raise DownloadError(
                    f"downloaded {url} but its git blob id is {actual}, expected "
                    f"{style.blob_id}; the file was deleted"
                )

        _write_file(target, fetch_verified)
        return target

    def import_file(self, source: Path, name: str | None = None, force: bool = False) -> Path:
        """Where ``import_checkpoint`` put the checkpoint (or found it already)."""
        return self.import_checkpoint(source, name, force).path

    def import_checkpoint(
        self, source: Path, name: str | None = None, force: bool = False
    ) -> Imported:
        """Copy a checkpoint into the write dir as ``<name>.pt`` after verifying it.

        A name that is already installed with other bytes is refused unless ``force``;
        importing the same bytes again changes nothing (``Imported.already``).
        """
        from animegan_cli.model import tfimport

        source = Path(source)
        prefix = tfimport.find_prefix(source)
        if prefix is not None:
            name = tfimport.guess_name(prefix) if name is None else name
            _check_name(name)
            data = checkpoint_bytes(tfimport.read_generator(prefix), tfimport.VARIANT)
            source = prefix
        else:
            name = source.stem if name is None else name
            _check_name(name)
            data = _read_bytes(source)
        if name in STYLES:
            _check_published_bytes(data, source, STYLES[name])
        _parse_checkpoint(data, source)
        target = self.cache_dir / f"{name}.pt"
        installed = self.find(name)
        if installed is not None and _same_bytes(installed, data):
            return Imported(installed, already=True)
        if installed is not None and not force:
            raise UsageError(
                f"a checkpoint named {name} is already installed at {installed}; "
                "give --force to replace it, or import under another --name"
            )
        _write_file(target, lambda out: out.write(data))
        return Imported(target, already=False)

    def resolve(
        self,
        style: str,
        weights: Path | None = None,
        download: bool = True,
        on_download: Callable[[str], None] | None = None,
        progress: bool = True,
        parse: bool = True,
    ) -> ResolvedWeights:
        """Pick and load the checkpoint for a run: a file, an imported name or a published
        style (downloaded when missing); each is read once, verified and parsed.

        ``parse=False`` leaves the parse (torch's loader) to ResolvedWeights.parsed: an
        engine whose converted model is cached by this id never needs the tensors."""
        def loaded(path: Path, name: str, blob_id: str, data: bytes) -> ResolvedWeights:
            if not parse:
                return ResolvedWeights(path, name, blob_id, data=data)
            return ResolvedWeights(path, name, blob_id, *_parse_with_variant(data, path))

        path: Path | None  # a published style's: None until found or downloaded
        if weights is not None:
            path = Path(weights)
            data = _read_bytes(path)
            blob_id = git_blob_id(data)
            return loaded(path, file_style_name(path, blob_id), blob_id, data)
        if style not in STYLES:
            custom = self.find(style)
            if custom is not None:
                # A checkpoint imported under its own name: strict-checked, identified by bytes.
                data = _read_bytes(custom)
                return loaded(custom, style, git_blob_id(data), data)
        published = self._published(style)
        path = self.find(style)
        if path is None:
            if not download:
                raise WeightsError(
                    f"style {style} is not installed; run `animegan weights download {style}`, "
                    f"or `animegan weights import FILE --name {style}` if you have the file"
                )
            if on_download is not None:
                url = self.url_for(style)
                on_download(f"style {style} is not installed; downloading from {url}")
            path = self.download(style, progress=progress)
        # Hash the same bytes that get parsed: a cached file is re-verified on every load.
        data = _read_bytes(path)
        _check_blob_id(path, git_blob_id(data), published.blob_id)
        return loaded(path, style, published.blob_id, data)


def _check_name(name: str) -> None:
    """Refuse a name that is no plain file name."""
    # Path(name).name differs from name when it holds a separator; a leading dot would
    # hide the file and could collide with our own temp files.
    if not name or Path(name).name != name or name.startswith("."):
        raise UsageError(
            f"invalid checkpoint name {name!r}: use a plain file name not starting with '.'"
        )


def checkpoint_bytes(state: Mapping[str, torch.Tensor], variant: str = DEFAULT_VARIANT) -> bytes:
    """A state dict serialised as a stored checkpoint, with its variant when not the default."""
    import torch

    payload: object = dict(state)
    if variant != DEFAULT_VARIANT:
        payload = {VARIANT_KEY: variant, STATE_KEY: dict(state)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def file_style_name(path: Path, blob_id: str) -> str:
    """The style name outputs record for a checkpoint file given with ``--weights``.

    A published style's name only when the file is that style's (by git blob id): a
    published name is never claimed for other weights. Otherwise the file's own name.
    """
    return published_name(blob_id) or Path(path).name


def published_name(blob_id: str) -> str | None:
    """The published style whose file has this git blob id, if any."""
    return next((s.name for s in STYLES.values() if s.blob_id == blob_id), None)


def _write_file(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``target`` with atomic_write; a file-system error becomes a WeightsError."""
    started = False

    def tracked(out: BinaryIO) -> None:
        nonlocal started
        started = True
        write(out)

    try:
        atomic_write(target, tracked)
    except OSError as exc:
        where = f"cannot write {target}" if started else f"cannot write to {target.parent}"
        raise WeightsError(f"{where}: {_os_reason(exc)}") from exc


def _fetch(url: str, name: str, out: BinaryIO, tmp_path: Path, progress: bool) -> None:
    """Stream ``url`` into ``out`` with a progress bar; network failures become DownloadError."""
    from tqdm import tqdm

    hint = f"(offline? use `animegan weights import FILE --name {name}`)"
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with tqdm(
                total=total,
                desc=name,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
                disable=not (progress and sys.stderr.isatty()),
                leave=False,
            ) as bar:
                while chunk := response.read(_CHUNK_BYTES):
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        # Not a network problem: keep it out of the "offline?" branch below.
                        raise WeightsError(f"cannot write {tmp_path}: {_os_reason(exc)}") from exc
                    received += len(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:
                raise DownloadError(
                    f"cannot download {name} from {url}: got {received} of {total} bytes {hint}"
                )
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code} {exc.reason}"
        raise DownloadError(f"cannot download {name} from {url}: {reason}") from exc
    except urllib.error.URLError as exc:
        reason = exc.reason if isinstance(exc.reason, str) else _os_reason(exc.reason)
        raise DownloadError(f"cannot download {name} from {url}: {reason} {hint}") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # Timeouts and resets mid-stream are OSErrors; a short body is IncompleteRead;
        # a malformed ANIMEGAN_WEIGHTS_URL is a ValueError.
        raise DownloadError(f"cannot download {name} from {url}: {_os_reason(exc)} {hint}") from exc


def _os_reason(exc: BaseException) -> str:
    """Return a short human reason for an exception, without errno noise."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _read_bytes(path: Path) -> bytes:
    """Read a checkpoint file whole; the files are small (~8.6 MB)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise WeightsError(f"checkpoint {path} does not exist") from None
    except OSError as exc:
        raise WeightsError(f"cannot read checkpoint {path}: {_os_reason(exc)}") from exc


def _same_bytes(path: Path, data: bytes) -> bool:
    """True when the file at ``path`` holds exactly ``data`` (False when it cannot be read)."""
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def _check_blob_id(path: Path, actual: str, expected: str) -> None:
    """Raise WeightsError naming the file and the fix when its blob id is not the expected one."""
    if actual == expected:
        return
    style = STYLES.get(path.stem)
    if style is not None and style.blob_id == expected:
        fix = f"delete it and run `animegan weights download {style.name}`"
    else:
        fix = "it changed or is corrupt; delete it and install it again"
    raise WeightsError(f"{path} has git blob id {actual}, expected {expected}: {fix}")


def _check_published_bytes(data: bytes, source: Path, style: Style) -> None:
    """Raise WeightsError unless ``data`` is exactly the published file of ``style``."""
    actual = git_blob_id(data)
    if actual == style.blob_id:
        return
    match = published_name(actual)
    if match is not None:
        raise WeightsError(
            f"{source} is the published {match} checkpoint, not {style.name}; "
            f"import it with --name {match}"
        )
    raise WeightsError(
        f"{source} is not the published {style.name} checkpoint (git blob id {actual}, "
        f"expected {style.blob_id}); import it under another --name"
    )


@functools.cache
def _expected_shapes() -> dict[str, torch.Size]:
    """Return the Generator's state-dict keys and shapes, computed once."""
    from animegan_cli.model.generator import Generator

    return {key: value.shape for key, value in Generator().state_dict().items()}


def _load_failure(exc: Exception) -> str:
    """Turn a torch.load exception into a one-line reason."""
    if isinstance(exc, pickle.UnpicklingError):
        # The useful line of torch's multi-paragraph message names the refused object.
        detail = next(
            (
                line.strip()
                for line in str(exc).splitlines()[1:]
                if line.strip() and not line.startswith(("Please file", "Check the documentation"))
            ),
            "",
        )
        if "GLOBAL" in detail:
            reason = "it holds Python objects besides tensors; refused: loading could run code"
        else:
            reason = "not a valid checkpoint; the safe loader refused it"
        return f"{reason} ({detail})" if detail else reason
    if isinstance(exc, EOFError):
        return "the file is empty or truncated"
    first = (str(exc).splitlines() or [""])[0]
    # torch's zip reader appends a paragraph of advice after the first sentence.
    first = first.split(". ")[0].rstrip(".")
    # Other types (KeyError, ValueError) say little without their name.
    if not isinstance(exc, RuntimeError) or not first:
        first = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return f"the file is corrupt, truncated or not a PyTorch checkpoint ({first})"


def _parse_checkpoint(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    """Unpickle checkpoint bytes safely and check them strictly against the Generator."""
    return _parse_with_variant(data, path)[0]


def _unwrap(state: object, source: str) -> tuple[object, str]:
    """A stored checkpoint's state dict and variant (a plain state dict: the default)."""
    if not isinstance(state, Mapping) or set(state) != {VARIANT_KEY, STATE_KEY}:
        return state, DEFAULT_VARIANT
    variant = state[VARIANT_KEY]
    if variant not in VARIANTS:
        raise WeightsError(f"{source} is for a generator variant this version does not know "
                           f"({variant!r}); upgrade animegan or import the checkpoint again")
    return state[STATE_KEY], variant


def _parse_with_variant(data: bytes, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The checked state dict and the variant of checkpoint bytes."""
    import torch

    try:
        with warnings.catch_warnings():
            # Hostile or foreign pickles make torch warn about protocols; the error says enough.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch.load raises many unrelated types (UnpicklingError, RuntimeError, EOFError,
        # ValueError, ...) for a bad file; to the user they all mean "this file is unusable".
        raise WeightsError(f"cannot load checkpoint {path}: {_load_failure(exc)}") from exc
    state, variant = _unwrap(state, str(path))
    return _check_state_dict(state, str(path)), variant


def _listed(items: list[str]) -> str:
    """Return the first few items joined, with a count of the rest."""
    shown = ", ".join(items[:_MAX_LISTED_KEYS])
    rest = len(items) - _MAX_LISTED_KEYS
    return f"{shown} (+{rest} more)" if rest > 0 else shown


def _check_state_dict(state: object, source: str) -> dict[str, torch.Tensor]:
    """Return ``state`` as float32 tensors if it matches the Generator exactly, else raise."""
    import torch

    if not isinstance(state, Mapping):
        raise WeightsError(
            f"{source} is not an AnimeGANv2 checkpoint: expected a state dict, "
            f"got {type(state).__name__}"
        )
    expected = _expected_shapes()
    bad_values = [
        str(key)
        for key, value in state.items()
        if not isinstance(key, str)
        or not isinstance(value, torch.Tensor)
        or not value.is_floating_point()
    ]
    if bad_values:
        raise WeightsError(
            f"{source} is not an AnimeGANv2 checkpoint: not a float tensor: {_listed(bad_values)}"
        )
    problems = []
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    misshaped = [
        f"{key} {tuple(state[key].shape)} != {tuple(shape)}"
        for key, shape in expected.items()
        if key in state and state[key].shape != shape
    ]
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if misshaped:
        problems.append(f"wrong shapes: {_listed(misshaped)}")
    if problems:
        raise WeightsError(f"{source} is not an AnimeGANv2 checkpoint: {'; '.join(problems)}")
    # One NaN or inf weight turns every output black (or into noise) without an error.
    non_finite = [key for key in expected if not torch.isfinite(state[key]).all()]
    if non_finite:
        raise WeightsError(
            f"{source} holds non-finite weights (NaN or inf) in: {_listed(non_finite)}"
        )
    return {key: state[key].to(torch.float32) for key in expected}


def load_state_dict(path: Path, expected_blob_id: str | None = None) -> dict[str, torch.Tensor]:
    """Load a checkpoint safely, verify its blob id if given, check it strictly; float32."""
    path = Path(path)
    data = _read_bytes(path)
    # Hash the same bytes that get parsed, so a file swapped in between cannot slip through.
    if expected_blob_id is not None:
        _check_blob_id(path, git_blob_id(data), expected_blob_id)
    return _parse_checkpoint(data, path)


def load_generator(
    state_dict: dict[str, torch.Tensor], align_corners: bool = False,
    variant: str = DEFAULT_VARIANT,
) -> Generator:
    """Build a Generator from a state dict, in eval mode with gradients off."""
    from animegan_cli.model.generator import Generator

    state = _check_state_dict(state_dict, "state dict")
    model = Generator(align_corners=align_corners, variant=variant)
    model.load_state_dict(state, strict=True)
    model.eval()
    model.requires_grad_(False)
    return model
