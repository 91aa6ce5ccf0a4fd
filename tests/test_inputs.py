"""Tests for discovering input files and reading path lists."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from animegan_cli.core.errors import UsageError
from animegan_cli.media.data import PreprocessSettings, prepare_image
from animegan_cli.media.inputs import (
    HEIF_EXTENSIONS,
    IMAGE_EXTENSIONS,
    ListedPath,
    discover_inputs,
    find_inputs,
    read_path_list,
    supported_extensions,
)
from tests.conftest import make_image


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def listing(text: str) -> io.BytesIO:
    return io.BytesIO(os.fsencode(text))


def rels(found) -> list[str]:
    return [item.relative.as_posix() for item in found]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    touch(root / "b.jpg")
    touch(root / "a.png")
    touch(root / "nested" / "deeper" / "d.webp")
    touch(root / "nested" / "c.bmp")
    touch(root / "z.tif")
    return root


def test_supported_extensions_are_lowercase_dotted_and_include_common_formats():
    exts = supported_extensions()
    assert IMAGE_EXTENSIONS <= exts
    assert {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"} <= exts
    assert all(e.startswith(".") and e == e.lower() for e in exts)


def test_recursive_walk_finds_nested_files(tree: Path):
    found = discover_inputs([tree])
    assert rels(found) == [
        "a.png", "b.jpg", "nested/c.bmp", "nested/deeper/d.webp", "z.tif",
    ]
    assert all(item.path == tree / item.relative for item in found)


def test_no_recursive_takes_only_top_level(tree: Path):
    assert rels(discover_inputs([tree], recursive=False)) == ["a.png", "b.jpg", "z.tif"]


def test_extension_filter_is_case_insensitive(tmp_path: Path):
    root = tmp_path / "in"
    for name in ["A.JPG", "b.Jpeg", "c.TIFF", "d.PnG", "notes.txt", "e.jpg.bak", "README",
                 "f.gif", ".hidden"]:
        touch(root / name)
    # GIFs are walked too (issue 23 item 4): animated, an animation; still, an image.
    assert rels(discover_inputs([root])) == ["A.JPG", "b.Jpeg", "c.TIFF", "d.PnG", "f.gif"]


def test_custom_extension_set_is_honoured(tree: Path):
    assert rels(discover_inputs([tree], extensions=frozenset({".jpg"}))) == ["b.jpg"]


def test_explicit_file_with_odd_extension_is_kept(tmp_path: Path):
    odd = touch(tmp_path / "scan.dat")
    noext = touch(tmp_path / "photo")
    found = discover_inputs([odd, noext])
    assert [item.path for item in found] == [odd, noext]
    assert rels(found) == ["scan.dat", "photo"]


def test_non_image_files_in_folder_ignored_but_named_one_kept(tmp_path: Path):
    root = tmp_path / "in"
    touch(root / "a.jpg")
    odd = touch(root / "raw.dat")
    assert rels(discover_inputs([root])) == ["a.jpg"]
    assert rels(discover_inputs([root, odd])) == ["a.jpg", "raw.dat"]


def test_output_folder_inside_input_tree_is_not_walked(tree: Path):
    out = tree / "out"
    touch(out / "b.jpg")
    touch(out / "sub" / "x.png")
    found = discover_inputs([tree], exclude=out)
    assert not any(item.relative.parts[0] == "out" for item in found)
    assert len(found) == 5


def test_exclude_given_as_relative_path(tree: Path, monkeypatch: pytest.MonkeyPatch):
    touch(tree / "out" / "b.jpg")
    monkeypatch.chdir(tree)
    found = discover_inputs(["."], exclude=Path("out"))
    assert "out/b.jpg" not in rels(found)
    assert "b.jpg" in rels(found)


def test_exclude_not_yet_created_is_fine(tree: Path):
    assert len(discover_inputs([tree], exclude=tree / "not-there")) == 5


def test_walk_order_is_sorted_and_stable(tmp_path: Path):
    root = tmp_path / "in"
    # Created out of order so that directory order cannot hide a missing sort.
    for name in ["m.jpg", "c.jpg", "x/b.jpg", "a.jpg", "x/a.jpg", "k.png", "b.jpg"]:
        touch(root / name)
    first = rels(discover_inputs([root]))
    assert first == ["a.jpg", "b.jpg", "c.jpg", "k.png", "m.jpg", "x/a.jpg", "x/b.jpg"]
    assert first == sorted(first, key=lambda r: Path(r).parts)
    assert rels(discover_inputs([root])) == first


def test_same_file_named_twice_listed_once(tree: Path):
    a = tree / "a.png"
    found = discover_inputs([a, a, tree / "." / "a.png", tree / "nested" / ".." / "a.png"])
    assert [item.path for item in found] == [a]


def test_file_and_its_folder_deduplicated(tree: Path):
    found = discover_inputs([tree, tree / "b.jpg"])
    assert rels(found).count("b.jpg") == 1
    assert len(found) == 5
    found = discover_inputs([tree / "b.jpg", tree])
    assert len(found) == 5
    assert rels(found)[0] == "b.jpg"


def test_folder_named_twice_deduplicated(tree: Path):
    assert len(discover_inputs([tree, tree, tree / "nested"])) == 5


def test_relative_paths_mirror_the_tree_for_each_root(tree: Path, tmp_path: Path):
    other = tmp_path / "other"
    touch(other / "q" / "r.jpg")
    found = discover_inputs([tree / "nested", other])
    assert rels(found) == ["c.bmp", "deeper/d.webp", "q/r.jpg"]
    assert found[1].path == tree / "nested" / "deeper" / "d.webp"


def test_missing_input_raises_usage_error_naming_it(tree: Path):
    missing = tree / "no-such-photo.jpg"
    with pytest.raises(UsageError, match="no-such-photo.jpg"):
        discover_inputs([tree, missing])


def test_directory_named_like_an_image_is_walked(tmp_path: Path):
    root = tmp_path / "in"
    touch(root / "x.jpg" / "inner.png")
    touch(root / "y.jpg")
    assert rels(discover_inputs([root])) == ["x.jpg/inner.png", "y.jpg"]
    assert rels(discover_inputs([root], recursive=False)) == ["y.jpg"]


def test_directory_named_like_an_image_given_explicitly_is_walked(tmp_path: Path):
    folder = tmp_path / "album.jpg"
    touch(folder / "p.png")
    assert rels(discover_inputs([folder])) == ["p.png"]


def test_symlink_loop_is_not_followed(tmp_path: Path):
    root = tmp_path / "in"
    touch(root / "a.jpg")
    touch(root / "sub" / "b.jpg")
    os.symlink(root, root / "sub" / "loop")
    os.symlink(root / "sub", root / "back")
    result: list = []
    # A walk that follows the links never ends (or takes exponential time): bound it.
    worker = threading.Thread(target=lambda: result.append(discover_inputs([root])), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "discover_inputs did not terminate on a symlink loop"
    assert rels(result[0]) == ["a.jpg", "sub/b.jpg"]


def test_symlinked_folder_to_outside_is_not_followed(tmp_path: Path):
    root = tmp_path / "in"
    touch(root / "a.jpg")
    outside = tmp_path / "elsewhere"
    touch(outside / "secret.jpg")
    os.symlink(outside, root / "link")
    assert rels(discover_inputs([root])) == ["a.jpg"]


def test_symlinked_file_in_folder_is_listed(tmp_path: Path):
    root = tmp_path / "in"
    root.mkdir()
    target = touch(tmp_path / "real.jpg")
    os.symlink(target, root / "alias.jpg")
    assert rels(discover_inputs([root])) == ["alias.jpg"]


def test_broken_symlink_with_image_name_is_listed_and_reported_later(tmp_path: Path):
    root = tmp_path / "in"
    make_image(root / "good.jpg")
    os.symlink(root / "gone.jpg", root / "broken.jpg")
    found = discover_inputs([root])
    assert rels(found) == ["broken.jpg", "good.jpg"]
    result = prepare_image(0, found[0].path, PreprocessSettings(size=32))
    assert result.pixels is None
    assert result.error and "not found" in result.error


def test_file_symlink_loop_is_listed_and_reported_later(tmp_path: Path):
    root = tmp_path / "in"
    root.mkdir()
    os.symlink(root / "b.jpg", root / "a.jpg")
    os.symlink(root / "a.jpg", root / "b.jpg")
    found = discover_inputs([root])
    assert rels(found) == ["a.jpg", "b.jpg"]
    result = prepare_image(0, found[0].path, PreprocessSettings(size=32))
    assert result.error and "symbolic links" in result.error


def test_broken_symlink_named_explicitly_is_kept(tmp_path: Path):
    link = tmp_path / "dangling.jpg"
    os.symlink(tmp_path / "nothing.jpg", link)
    assert [item.path for item in discover_inputs([link])] == [link]


def test_empty_folder_gives_empty_list(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    assert discover_inputs([tmp_path / "empty"]) == []


def test_read_path_list_newline_separated():
    text = "a.jpg\nfolder with spaces/b c.jpg\n\n/abs/x.png\r\nlast.webp"
    assert read_path_list(listing(text)) == [
        "a.jpg", "folder with spaces/b c.jpg", "/abs/x.png", "last.webp",
    ]


def test_read_path_list_empty_stream():
    assert read_path_list(listing("")) == []
    assert read_path_list(listing("\n\n"), null_separated=False) == []
    assert read_path_list(listing("\0\0"), null_separated=True) == []


def test_read_path_list_nul_separated_keeps_spaces_and_newlines():
    text = "a b.jpg\0line\nbreak.png\0\0trailing space .jpg\0"
    assert read_path_list(listing(text), null_separated=True) == [
        "a b.jpg", "line\nbreak.png", "trailing space .jpg",
    ]


def test_read_path_list_nul_paths_feed_discover(tmp_path: Path):
    weird = touch(tmp_path / "new\nline.jpg")
    spaced = touch(tmp_path / "with space.png")
    text = f"{weird}\0{spaced}\0"
    found = discover_inputs(read_path_list(listing(text), null_separated=True))
    assert [item.path for item in found] == [weird, spaced]


def test_read_path_list_newline_mode_splits_only_on_line_breaks():
    # Form feeds, U+001C-1E, U+0085 and U+2028/9 are legal in file names: not separators.
    text = "odd\u2028name.jpg\nform\x0cfeed.png\r\ngs\x1dsep\x85.png\n"
    assert read_path_list(listing(text)) == [
        "odd\u2028name.jpg", "form\x0cfeed.png", "gs\x1dsep\x85.png",
    ]


def test_read_path_list_keeps_names_that_are_not_utf8():
    raw = b"caf\xe9.jpg\nok.png\r\n"
    assert read_path_list(io.BytesIO(raw)) == [os.fsdecode(b"caf\xe9.jpg"), "ok.png"]
    assert os.fsencode(read_path_list(io.BytesIO(b"\xff\xfe.jpg\0"), True)[0]) == b"\xff\xfe.jpg"


def test_listed_paths_mirror_the_working_directory(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch(tmp_path / "a" / "x.jpg")
    touch(tmp_path / "b" / "x.jpg")
    found = discover_inputs([ListedPath("a/x.jpg"), ListedPath("./b/x.jpg")])
    assert rels(found) == ["a/x.jpg", "b/x.jpg"]
    # A named file is still named by its name; a listed folder is mirrored from here too.
    assert rels(discover_inputs(["a/x.jpg", ListedPath("b")])) == ["x.jpg", "b/x.jpg"]


def test_base_mirrors_named_and_listed_inputs_and_never_climbs(tmp_path: Path, monkeypatch):
    touch(tmp_path / "photos" / "sub" / "x.jpg")
    touch(tmp_path / "photos" / "y.jpg")
    elsewhere = touch(tmp_path / "elsewhere" / "z.jpg")
    monkeypatch.chdir(tmp_path / "photos" / "sub")
    base = tmp_path / "photos"
    found = discover_inputs(
        [ListedPath("x.jpg"), "../y.jpg", base / "sub", ListedPath("../../elsewhere/z.jpg")],
        base=base,
    )
    assert rels(found) == ["sub/x.jpg", "y.jpg", str(elsewhere).lstrip("/")]
    assert rels(discover_inputs([ListedPath("../../elsewhere/z.jpg")])) == [
        str(elsewhere).lstrip("/")
    ]
    assert all(".." not in item.relative.parts for item in found)


def test_listed_missing_path_fails_alone_named_one_is_a_usage_error(tmp_path: Path):
    good = touch(tmp_path / "good.jpg")
    found = discover_inputs([ListedPath(str(tmp_path / "gone.jpg")), ListedPath(str(good))])
    assert [(item.path.name, item.error) for item in found] == [
        ("gone.jpg", "file not found (or a broken link)"), ("good.jpg", None),
    ]
    with pytest.raises(UsageError, match="input not found: .*gone.jpg"):
        discover_inputs([tmp_path / "gone.jpg"])


def test_listed_files_inside_the_output_folder_are_left_out(tmp_path: Path):
    photo = touch(tmp_path / "x.jpg")
    earlier = touch(tmp_path / "out" / "x.jpg")
    found = discover_inputs([ListedPath(str(photo)), ListedPath(str(earlier))],
                            exclude=tmp_path / "out", base=tmp_path)
    assert rels(found) == ["x.jpg"]


def test_only_regular_files_are_inputs(tmp_path: Path):
    root = tmp_path / "in"
    touch(root / "a.jpg")
    os.mkfifo(root / "pipe.jpg")
    os.symlink("/dev/zero", root / "zero.png")
    os.symlink(root / "a.jpg", root / "alias.jpg")
    errors = {item.relative.name: item.error for item in discover_inputs([root])}
    assert errors == {"a.jpg": None, "alias.jpg": None,
                      "pipe.jpg": "not a regular file (a named pipe)",
                      "zero.png": "not a regular file (a character device)"}
    named = discover_inputs([root / "zero.png", ListedPath(str(root / "pipe.jpg"))])
    assert [item.error for item in named] == ["not a regular file (a character device)",
                                              "not a regular file (a named pipe)"]


def test_heif_files_without_the_extra_are_counted_or_fail_when_named(tmp_path: Path):
    root = tmp_path / "in"
    touch(root / "a.jpg")
    for name in ["p.heic", "q.HEIF", "sub/r.heic"]:
        touch(root / name)
    found = find_inputs([root], extensions=IMAGE_EXTENSIONS)
    assert rels(found.files) == ["a.jpg"]
    assert found.notes() == ["skipped 3 .heic/.heif file(s): install the heif extra to read "
                             'them (pip install -e ".[heif]" in the animegan checkout)']
    named = discover_inputs([root / "p.heic"], extensions=IMAGE_EXTENSIONS)
    assert named[0].error == ("a .heic/.heif file: install the heif extra to read it "
                              '(pip install -e ".[heif]" in the animegan checkout)')
    assert find_inputs([root], extensions=IMAGE_EXTENSIONS | HEIF_EXTENSIONS).notes() == []


def test_walk_of_a_tree_deeper_than_the_recursion_limit(tmp_path: Path, deep_folder: Path):
    touch(deep_folder / "x.jpg")
    touch(tmp_path / "in" / "top.jpg")
    found = discover_inputs([tmp_path / "in"], exclude=tmp_path / "out")
    assert rels(found) == ["/".join(["d"] * 1100 + ["x.jpg"]), "top.jpg"]


def test_walk_does_not_enter_the_output_folder_by_any_name(tmp_path: Path):
    root = tmp_path / "in"
    touch(root / "a.jpg")
    touch(root / "nested" / "out" / "old.jpg")
    found = discover_inputs([root], exclude=root / "nested" / ".." / "nested" / "out")
    assert rels(found) == ["a.jpg"]
