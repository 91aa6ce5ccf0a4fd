"""Finding the inputs (images and clips): walking files and folders, or reading a list of paths."""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from animegan_cli.core.errors import UsageError, install_hint
from animegan_cli.media import kinds
from animegan_cli.settings import fields

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
HEIF_EXTENSIONS = frozenset({".heic", ".heif"})
HEIF_EXTRA = "install the heif extra to read {} (" + install_hint("heif") + ")"
NOT_FOUND = "file not found (or a broken link)"  # the decoder's wording for the same case
_KINDS = {
    stat.S_IFIFO: "a named pipe",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def supported_extensions() -> frozenset[str]:
    """Extensions accepted as input; HEIC/HEIF only when pillow-heif is installed."""
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        return IMAGE_EXTENSIONS
    return IMAGE_EXTENSIONS | HEIF_EXTENSIONS


@dataclass(frozen=True)
class InputFile:
    """An input to convert: where it is, its path relative to the root it was found under,
    and its kind (media/kinds.py: an image, a clip, an animation)."""

    path: Path
    relative: Path
    # Why it fails before anything is read (vanished, not a regular file, needs an extra):
    # planning turns such an input into a failure without opening it.
    error: str | None = None
    kind: str = kinds.IMAGE  # a key of kinds.KINDS

    @property
    def styled_whole(self) -> bool:
        """Whether its kind's runner styles it whole (a clip, an animation), not the loop."""
        return kinds.is_file_unit(self.kind)


@dataclass(frozen=True)
class ListedPath:
    """A path read from a list (stdin): mirrored from the working directory, may be missing."""

    path: str


# Files a folder walk leaves out, each kind said once with its count: (suffixes, why).
# (GIFs are walked: an animated one is the animation kind's, a still one an image's.)
LEFT_OUT = {
    "heif": (HEIF_EXTENSIONS, HEIF_EXTRA.format("them")),
}


@dataclass
class Discovery:
    """The inputs found, the input folders inside OUT, and the walked files left out."""

    files: list[InputFile] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)  # LEFT_OUT kind -> files
    # Walked folders inside the output folder: no output may land inside one of them.
    inside_output: list[Path] = field(default_factory=list)

    @property
    def needs_heif(self) -> int:
        """Walked .heic/.heif files left out for want of the heif extra."""
        return self.left_out.get("heif", 0)

    def notes(self) -> list[str]:
        """What the run should say once about files it left out."""
        return [f"skipped {count} {'/'.join(sorted(LEFT_OUT[kind][0]))} file(s): "
                f"{LEFT_OUT[kind][1]}" for kind, count in self.left_out.items()]


def read_path_list(stream: BinaryIO, null_separated: bool = False) -> list[str]:
    """Read newline- (or NUL-) separated paths from a byte stream, skipping empty entries.

    Names are decoded as the file system does (``os.fsdecode``), so a name that is not valid
    UTF-8 survives, in any locale, as the same bytes.
    """
    data = stream.read()
    if null_separated:
        return [os.fsdecode(p) for p in data.split(b"\0") if p]
    # Only "\n" (and a CRLF's "\r") ends a line: splitlines() would also split on
    # form feeds and other separators, which are legal in file names.
    lines = (p.removesuffix(b"\r") for p in data.split(b"\n"))
    return [os.fsdecode(p) for p in lines if p]


def discover_inputs(
    sources: Iterable[str | Path | ListedPath],
    recursive: bool = fields.RECURSIVE.default,
    exclude: Path | None = None,
    extensions: frozenset[str] | None = None,
    base: Path | None = None,
) -> list[InputFile]:
    """The inputs of ``find_inputs`` (without its count of left-out files)."""
    return find_inputs(sources, recursive, exclude, extensions, base).files


def find_inputs(
    sources: Iterable[str | Path | ListedPath],
    recursive: bool = fields.RECURSIVE.default,
    exclude: Path | None = None,
    extensions: frozenset[str] | None = None,
    base: Path | None = None,
) -> Discovery:
    """Expand files, folders and listed paths into a de-duplicated list of inputs, in order.

    A file named explicitly is taken whatever its extension (the decoder will say if it is
    not an image); files found by walking a folder must have an image extension. A walk
    never enters ``exclude`` (the output folder) and a list takes nothing under it; a named
    folder inside it is walked (and listed in ``inside_output``). A named path that
    does not exist is a usage error; a listed one fails alone. Relative paths (the output's
    place under OUT): a named folder's files relative to it, a named file its name, a listed
    path relative to the working directory; with ``base``, every input relative to ``base``.
    """
    finder = _Finder(
        supported_extensions() if extensions is None else extensions,
        kinds.walked_suffixes() if extensions is None else frozenset(),
        recursive,
        _Exclusion.of(exclude),
        os.path.abspath(base) if base is not None else None,
    )
    seen: set[str] = set()
    for source in sources:
        for item in finder.expand(source):
            key = os.path.abspath(item.path)
            if key not in seen:
                seen.add(key)
                finder.found.files.append(item)
    return finder.found


def mirrored(path: str | Path, base: str) -> Path:
    """``path`` relative to the folder ``base``; outside it, its absolute path without the
    leading ``/`` (rsync -R's rule), so that an output path never climbs out with ``..``."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute, base)
    if relative == os.curdir or relative.split(os.sep, 1)[0] == os.pardir:
        relative = absolute.lstrip(os.sep)
    return Path(relative)


@dataclass(frozen=True)
class _Exclusion:
    """The output folder: as given, resolved, and its (device, inode) if it exists yet."""

    given: Path | None = None
    path: Path | None = None
    ident: tuple[int, int] | None = None

    @classmethod
    def of(cls, folder: Path | None) -> _Exclusion:
        if folder is None:
            return cls()
        try:
            st = os.stat(folder)
        except OSError:
            return cls(folder, folder.resolve())
        return cls(folder, folder.resolve(), (st.st_dev, st.st_ino))

    def contains(self, path: Path) -> bool:
        return self.path is not None and _is_within(path.resolve(), self.path)

    def is_folder(self, entry: os.DirEntry[str]) -> bool:
        # A (device, inode) test per folder: resolving each of a deep tree's folders would
        # cost a stat per component of its path.
        if self.ident is None:
            return False
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.ident


@dataclass
class _Finder:
    extensions: frozenset[str]
    others: frozenset[str]  # the other kinds' suffixes taken from walks (media/kinds.py)
    recursive: bool
    excluded: _Exclusion
    base: str | None
    found: Discovery = field(default_factory=Discovery)

    @functools.cached_property
    def cwd(self) -> str:
        """Where listed paths are mirrored from without a base (asked once, when needed)."""
        return os.getcwd()

    def expand(self, source: str | Path | ListedPath) -> Iterable[InputFile]:
        """The inputs one source stands for: a walked folder's images, or the file itself."""
        listed = isinstance(source, ListedPath)
        root = Path(source.path if isinstance(source, ListedPath) else source)
        base = self.cwd if self.base is None and listed else self.base
        try:
            st: os.stat_result | None = os.stat(root)
        except (FileNotFoundError, NotADirectoryError):
            if not root.is_symlink():
                if base is None or not listed:
                    raise UsageError(f"input not found: {root}") from None
                return [InputFile(root, mirrored(root, base), NOT_FOUND)]
            st = None  # a broken link: listed, and the decoder reports it
        except OSError:
            st = None  # a link loop, a folder we may not enter: the decoder says which
        if st is not None and stat.S_ISDIR(st.st_mode):
            return self._folder(root, base)
        if listed and self.excluded.contains(root):
            return []  # an earlier run's output, listed by a `find` over a tree holding OUT
        relative = mirrored(root, base) if base is not None else Path(root.name)
        error = self._named_file_error(root, st)
        kind = self._kind(root, named=True) if error is None else kinds.IMAGE
        return [InputFile(root, relative, error, kind)]

    def _kind(self, path: Path, named: bool) -> str:
        """The input's kind (kinds.kind_of); only images when the caller chose the suffixes."""
        if not self.others:
            return kinds.IMAGE
        return kinds.kind_of(path, named, self.extensions)

    def _folder(self, root: Path, base: str | None) -> Iterator[InputFile]:
        if self.excluded.path is not None and root.resolve() == self.excluded.path:
            raise UsageError(
                f"the output folder {self.excluded.given} is also an input folder; "
                "choose another -o"
            )
        for path, error in self._walk(root):
            relative = mirrored(path, base) if base is not None else path.relative_to(root)
            kind = self._kind(path, named=False) if error is None else kinds.IMAGE
            yield InputFile(path, relative, error, kind)

    def _named_file_error(self, path: Path, st: os.stat_result | None) -> str | None:
        if st is not None and not stat.S_ISREG(st.st_mode):
            return _not_regular(st)
        suffix = path.suffix.lower()
        if suffix in HEIF_EXTENSIONS and suffix not in self.extensions:
            return f"a .heic/.heif file: {HEIF_EXTRA.format('it')}"
        return None

    def _walk(self, root: Path) -> Iterator[tuple[Path, str | None]]:
        """Image files under root (with a reason if not regular files), in sorted order.

        Depth-first with an explicit stack: a tree thousands of folders deep is walked like
        any other. Symlinked folders are not followed: that is how loops and escapes happen.
        """
        if self.excluded.path is not None and _is_within(root.resolve(), self.excluded.path):
            # Walked all the same (`convert pics/new -o pics`); refuse_outputs_inside checks
            # that no output lands in it, so that no output is walked as an input next time.
            self.found.inside_output.append(root)
        stack = [iter(_sorted_entries(root))]
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False  # a symlink loop, say: listed, so that the decoder reports it
            if is_dir:
                if self.recursive and not entry.is_symlink() and not self.excluded.is_folder(entry):
                    stack.append(iter(_sorted_entries(entry.path)))
                continue
            suffix = Path(entry.name).suffix.lower()
            if suffix in self.extensions or suffix in self.others:
                yield Path(entry.path), _entry_error(entry)
            else:
                self._count_left_out(suffix)

    def _count_left_out(self, suffix: str) -> None:
        kind = next((k for k, (suffixes, _) in LEFT_OUT.items() if suffix in suffixes), None)
        if kind is not None:
            self.found.left_out[kind] = self.found.left_out.get(kind, 0) + 1


def refuse_outputs_inside(
    walked: list[Path], inputs: list[InputFile], planned: list[Path], out_dir: Path
) -> None:
    """UsageError when an output would land inside a walked input folder that is inside
    OUT: the next run would read it back as an input (and style its own output again)."""
    roots = [(folder, folder.resolve()) for folder in walked]
    for item, output in zip(inputs, planned):
        parent = output.parent.resolve()
        for given, resolved in roots:
            if _is_within(parent, resolved):
                raise UsageError(
                    f"input folder {given} is inside the output folder {out_dir}, and the "
                    f"output of {item.path} would be {output}, inside that input folder: the "
                    f"next run would read it back as an input; choose an -o outside {given}, "
                    f"or move {item.path} elsewhere"
                )


def _sorted_entries(folder: str | Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError:
        return []


def _entry_error(entry: os.DirEntry[str]) -> str | None:
    """Why a walked entry is not an input (not a regular file), or None."""
    try:
        if entry.is_file():  # from the directory listing alone unless it is a link
            return None
        return _not_regular(entry.stat())
    except OSError:
        return None  # a broken link or a loop: the decoder reports it


def _not_regular(st: os.stat_result) -> str:
    kind = _KINDS.get(stat.S_IFMT(st.st_mode))
    return f"not a regular file ({kind})" if kind else "not a regular file"


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents
