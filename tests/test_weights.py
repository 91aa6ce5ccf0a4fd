"""Tests for the checkpoint registry, store, download and strict loading (offline)."""

from __future__ import annotations

import functools
import http.server
import io
import os
import pickle
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from animegan_cli.core.errors import DownloadError, UsageError, WeightsError
from animegan_cli.model import weights
from animegan_cli.model.generator import Generator
from animegan_cli.model.weights import (
    DEFAULT_STYLE,
    STYLES,
    ResolvedWeights,
    Style,
    WeightsStore,
    git_blob_id,
    load_generator,
    load_state_dict,
)

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "spec" / "golden" / "golden_generator.pt"


def _checkpoint_bytes(state: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def checkpoint_bytes() -> bytes:
    """A random-weight checkpoint in the official format."""
    torch.manual_seed(0)
    return _checkpoint_bytes(Generator().state_dict())


@pytest.fixture(scope="module")
def other_checkpoint_bytes() -> bytes:
    """A second, different random-weight checkpoint."""
    torch.manual_seed(1)
    return _checkpoint_bytes(Generator().state_dict())


@pytest.fixture
def checkpoint(tmp_path: Path, checkpoint_bytes: bytes) -> Path:
    path = tmp_path / "src" / "mine.pt"
    path.parent.mkdir()
    path.write_bytes(checkpoint_bytes)
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the cache at tmp_path, hide the repo weights dir; return the cache dir."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("ANIMEGAN_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("ANIMEGAN_WEIGHTS_URL", raising=False)
    monkeypatch.setattr(weights, "repo_weights_dir", lambda: tmp_path / "repo")
    return tmp_path / "xdg" / "animegan"


@pytest.fixture
def testy(monkeypatch: pytest.MonkeyPatch, checkpoint_bytes: bytes) -> Style:
    """Register the generated checkpoint as a published style named 'testy'."""
    style = Style("testy", "testy.pt", git_blob_id(checkpoint_bytes), "tests", 256)
    monkeypatch.setitem(STYLES, "testy", style)
    return style


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; /truncated/* promises more bytes than it sends."""

    def do_GET(self) -> None:
        if self.path.startswith("/truncated/"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: Path) -> Iterator[Path]:
    """A local HTTP server on an ephemeral port serving the returned folder."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_Handler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A short poll interval keeps shutdown() from costing half a second per test.
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    monkeypatch.setenv("ANIMEGAN_WEIGHTS_URL", f"http://127.0.0.1:{httpd.server_port}/")
    yield served
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _dir_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- registry and helpers ---------------------------------------------------------------


def test_git_blob_id_matches_git() -> None:
    assert git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert git_blob_id(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


def test_styles_table_holds_the_four_published_checkpoints() -> None:
    assert list(STYLES) == ["paprika", "face_paint_512_v2", "face_paint_512_v1", "celeba_distill"]
    assert DEFAULT_STYLE in STYLES
    assert STYLES["paprika"].blob_id == "58086c9db9fc7a9e5c2876ca31b8079599352643"
    assert STYLES["celeba_distill"].resolution == 256
    assert STYLES["face_paint_512_v1"].resolution == 512
    for name, style in STYLES.items():
        assert style.name == name
        assert style.url_path == f"{name}.pt"
        assert len(style.blob_id) == 40 and int(style.blob_id, 16) >= 0


def test_default_url_points_at_upstream(env: Path) -> None:
    store = WeightsStore.from_env()
    assert store.url_for("paprika") == (
        "https://github.com/bryandlee/animegan2-pytorch/raw/main/weights/paprika.pt"
    )


def test_user_cache_dir_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.user_cache_dir() == tmp_path / "xdg" / "animegan"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")
    assert weights.user_cache_dir() == tmp_path / "home" / ".cache" / "animegan"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert weights.user_cache_dir() == tmp_path / "home" / ".cache" / "animegan"


# --- strict loading ------------------------------------------------------------------------


@pytest.mark.skipif(not GOLDEN.is_file(), reason="shared/spec golden files not present")
def test_golden_checkpoint_loads_strictly() -> None:
    state = load_state_dict(GOLDEN)
    assert len(state) == 77
    assert sum(t.numel() for t in state.values()) == 2_143_552
    assert all(t.dtype == torch.float32 for t in state.values())
    load_generator(state)


def test_load_generator_is_frozen_in_eval(checkpoint: Path) -> None:
    state = load_state_dict(checkpoint)
    model = load_generator(state, align_corners=True)
    assert not model.training
    assert model.align_corners is True
    assert not any(p.requires_grad for p in model.parameters())
    key = "out_layer.0.weight"
    torch.testing.assert_close(model.state_dict()[key], state[key])


def test_half_precision_checkpoint_becomes_float32(tmp_path: Path) -> None:
    path = tmp_path / "half.pt"
    torch.save({k: v.half() for k, v in Generator().state_dict().items()}, path)
    state = load_state_dict(path)
    assert {t.dtype for t in state.values()} == {torch.float32}


def test_wrong_keys_rejected(tmp_path: Path) -> None:
    state = Generator().state_dict()
    state["extra.weight"] = state.pop("block_a.0.1.weight")
    del state["out_layer.0.weight"]
    path = tmp_path / "keys.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert str(path) in message
    assert "missing keys: block_a.0.1.weight, out_layer.0.weight" in message
    assert "unexpected keys: extra.weight" in message


def test_module_prefixed_keys_are_listed_briefly(tmp_path: Path) -> None:
    path = tmp_path / "prefixed.pt"
    torch.save({f"module.{k}": v for k, v in Generator().state_dict().items()}, path)
    with pytest.raises(WeightsError, match=r"missing keys: .*\(\+74 more\)") as info:
        load_state_dict(path)
    assert "\n" not in str(info.value)


def test_wrong_shapes_rejected(tmp_path: Path) -> None:
    state = Generator().state_dict()
    state["block_c.1.layers.2.weight"] = torch.zeros(128, 256, 1, 1)
    path = tmp_path / "shapes.pt"
    torch.save(state, path)
    with pytest.raises(
        WeightsError,
        match=r"wrong shapes: block_c\.1\.layers\.2\.weight "
        r"\(128, 256, 1, 1\) != \(256, 256, 1, 1\)",
    ):
        load_state_dict(path)


@pytest.mark.parametrize(
    "payload",
    [
        [1, 2, 3],
        {"block_a.0.1.weight": 1.0},
        {"block_a.0.1.weight": torch.zeros(3, dtype=torch.long)},
    ],
    ids=["list", "float-value", "int-tensor"],
)
def test_non_state_dicts_rejected(tmp_path: Path, payload: object) -> None:
    path = tmp_path / "odd.pt"
    torch.save(payload, path)
    with pytest.raises(WeightsError, match="is not an AnimeGANv2 checkpoint"):
        load_state_dict(path)


class _Evil:
    """Unpickling this runs a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_that_runs_code_rejected(tmp_path: Path, writer: str) -> None:
    pwned = tmp_path / "pwned"
    evil = {"block_a.0.1.weight": _Evil(f"touch {pwned}")}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(evil, path)
    else:
        # Protocol 2 is what torch writes; newer protocols are refused even earlier.
        path.write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(WeightsError, match="could run code") as info:
        load_state_dict(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert not pwned.exists()


@pytest.mark.parametrize("cut", ["empty", "half", "garbage"])
def test_corrupt_file_rejected(tmp_path: Path, checkpoint_bytes: bytes, cut: str) -> None:
    data = {
        "empty": b"",
        "half": checkpoint_bytes[: len(checkpoint_bytes) // 2],
        "garbage": b"not a checkpoint\n" * 10,
    }[cut]
    path = tmp_path / "bad.pt"
    path.write_bytes(data)
    with pytest.raises(WeightsError, match="cannot load checkpoint") as info:
        load_state_dict(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        load_state_dict(tmp_path / "nope.pt")


def test_expected_blob_id_checked_on_load(checkpoint: Path, checkpoint_bytes: bytes) -> None:
    load_state_dict(checkpoint, git_blob_id(checkpoint_bytes))
    with pytest.raises(WeightsError, match="expected 0{40}"):
        load_state_dict(checkpoint, "0" * 40)


def test_tampered_cached_file_rejected_on_every_load(
    env: Path, testy: Style, checkpoint_bytes: bytes
) -> None:
    env.mkdir(parents=True)
    cached = env / "testy.pt"
    cached.write_bytes(checkpoint_bytes)
    store = WeightsStore.from_env()
    resolved = store.resolve("testy", download=False)
    load_state_dict(resolved.path, resolved.checkpoint_id)

    # Same length, one byte flipped deep in the tensor data: still a loadable file.
    tampered = bytearray(checkpoint_bytes)
    tampered[len(tampered) // 2] ^= 0xFF
    cached.write_bytes(bytes(tampered))
    actual = git_blob_id(bytes(tampered))
    for attempt in (
        lambda: load_state_dict(resolved.path, resolved.checkpoint_id),
        lambda: store.resolve("testy", download=False),
    ):
        with pytest.raises(WeightsError) as info:
            attempt()
        message = str(info.value)
        assert str(cached) in message
        assert testy.blob_id in message and actual in message
        assert "animegan weights download testy" in message


# --- store: lookup, status, import -------------------------------------------------------


def test_lookup_order(
    tmp_path: Path, env: Path, monkeypatch: pytest.MonkeyPatch, checkpoint_bytes: bytes
) -> None:
    override = tmp_path / "override"
    monkeypatch.setenv("ANIMEGAN_WEIGHTS_DIR", str(override))
    store = WeightsStore.from_env()
    assert store.search_dirs == [override, tmp_path / "repo", env]
    assert store.cache_dir == override
    assert store.find("mine") is None
    for folder in store.search_dirs:
        folder.mkdir(parents=True)
        (folder / "mine.pt").write_bytes(checkpoint_bytes)
    for folder in store.search_dirs:
        assert store.find("mine") == folder / "mine.pt"
        (folder / "mine.pt").unlink()
    assert store.find("mine") is None


def test_without_override_writes_to_user_cache(tmp_path: Path, env: Path) -> None:
    store = WeightsStore.from_env()
    assert store.search_dirs == [tmp_path / "repo", env]
    assert store.cache_dir == env


def test_status_reports_installed_styles(env: Path, testy: Style, checkpoint_bytes: bytes) -> None:
    env.mkdir(parents=True)
    (env / "testy.pt").write_bytes(checkpoint_bytes)
    status = {s.style.name: s.path for s in WeightsStore.from_env().status()}
    assert status == {
        "paprika": None,
        "face_paint_512_v2": None,
        "face_paint_512_v1": None,
        "celeba_distill": None,
        "testy": env / "testy.pt",
    }


def test_import_custom_checkpoint(env: Path, checkpoint: Path, checkpoint_bytes: bytes) -> None:
    store = WeightsStore.from_env()
    path = store.import_file(checkpoint, "my_style")
    assert path == env / "my_style.pt"
    assert path.read_bytes() == checkpoint_bytes
    assert store.find("my_style") == path
    assert store.import_file(checkpoint) == env / "mine.pt"
    assert _dir_entries(env) == ["mine.pt", "my_style.pt"]


def test_imported_checkpoints_get_the_mode_a_plain_open_gives_not_0600(
    env: Path, checkpoint: Path
) -> None:
    old = os.umask(0o022)
    try:
        path = WeightsStore.from_env().import_file(checkpoint, "shared_style")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # others on the machine can read it


def test_import_rejects_incompatible_checkpoint(env: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"w": torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match="unexpected keys: w"):
        WeightsStore.from_env().import_file(bad, "bad")
    assert _dir_entries(env) == []


@pytest.mark.parametrize("name", ["", "a/b", "../x", ".hidden"])
def test_import_rejects_bad_names(env: Path, checkpoint: Path, name: str) -> None:
    with pytest.raises(UsageError, match="invalid checkpoint name"):
        WeightsStore.from_env().import_file(checkpoint, name)


def test_import_published_name_verifies_bytes(
    env: Path, testy: Style, checkpoint: Path, tmp_path: Path, other_checkpoint_bytes: bytes
) -> None:
    store = WeightsStore.from_env()
    assert store.import_file(checkpoint, "testy") == env / "testy.pt"

    wrong = tmp_path / "wrong.pt"
    wrong.write_bytes(other_checkpoint_bytes)
    with pytest.raises(WeightsError, match="is not the published paprika checkpoint"):
        store.import_file(wrong, "paprika")
    assert store.find("paprika") is None


def test_import_under_another_published_name_says_which(
    env: Path, testy: Style, checkpoint: Path
) -> None:
    with pytest.raises(
        WeightsError,
        match="is the published testy checkpoint, not paprika; import it with --name testy",
    ):
        WeightsStore.from_env().import_file(checkpoint, "paprika")
    assert _dir_entries(env) == []


# --- download -----------------------------------------------------------------------------


def test_download_success(server: Path, env: Path, testy: Style, checkpoint_bytes: bytes) -> None:
    (server / "testy.pt").write_bytes(checkpoint_bytes)
    path = WeightsStore.from_env().download("testy", progress=True)
    assert path == env / "testy.pt"
    assert path.read_bytes() == checkpoint_bytes
    assert _dir_entries(env) == ["testy.pt"]


def test_download_hash_mismatch_leaves_nothing(
    server: Path, env: Path, testy: Style, other_checkpoint_bytes: bytes
) -> None:
    (server / "testy.pt").write_bytes(other_checkpoint_bytes)
    store = WeightsStore.from_env()
    with pytest.raises(DownloadError) as info:
        store.download("testy", progress=False)
    message = str(info.value)
    assert message == (
        f"downloaded {store.url_for('testy')} but its git blob id is "
        f"{git_blob_id(other_checkpoint_bytes)}, expected {testy.blob_id}; the file was deleted"
    )
    assert _dir_entries(env) == []


def test_download_http_404(server: Path, env: Path, testy: Style) -> None:
    with pytest.raises(
        DownloadError,
        match=r"cannot download testy from http://127\.0\.0\.1:\d+/"
        r"testy\.pt: HTTP 404",
    ):
        WeightsStore.from_env().download("testy", progress=False)
    assert _dir_entries(env) == []


def test_download_truncated_body(
    server: Path, env: Path, monkeypatch: pytest.MonkeyPatch, testy: Style
) -> None:
    monkeypatch.setitem(STYLES, "testy", Style("testy", "truncated/testy.pt", "0" * 40, "t", 256))
    with pytest.raises(DownloadError, match="cannot download testy"):
        WeightsStore.from_env().download("testy", progress=False)
    assert _dir_entries(env) == []


def test_download_server_down_is_fast(
    env: Path, monkeypatch: pytest.MonkeyPatch, testy: Style
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("ANIMEGAN_WEIGHTS_URL", f"http://127.0.0.1:{port}/")
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        WeightsStore.from_env().download("testy", progress=False)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert message.startswith(f"cannot download testy from http://127.0.0.1:{port}/testy.pt: ")
    assert "animegan weights import FILE --name testy" in message
    assert _dir_entries(env) == []


def test_download_unknown_style(env: Path) -> None:
    with pytest.raises(UsageError, match="unknown style 'nope'"):
        WeightsStore.from_env().download("nope")


# --- resolve ------------------------------------------------------------------------------


def test_resolve_downloads_missing_style(
    server: Path, env: Path, testy: Style, checkpoint_bytes: bytes
) -> None:
    (server / "testy.pt").write_bytes(checkpoint_bytes)
    store = WeightsStore.from_env()
    messages: list[str] = []
    resolved = store.resolve("testy", on_download=messages.append, progress=False)
    assert resolved == ResolvedWeights(env / "testy.pt", "testy", testy.blob_id)
    assert messages == [f"style testy is not installed; downloading from {store.url_for('testy')}"]

    (server / "testy.pt").unlink()
    assert store.resolve("testy", on_download=messages.append) == resolved
    assert len(messages) == 1


def test_resolve_without_download_explains_how_to_install(env: Path, testy: Style) -> None:
    with pytest.raises(WeightsError) as info:
        WeightsStore.from_env().resolve("testy", download=False)
    message = str(info.value)
    assert "animegan weights download testy" in message
    assert "animegan weights import FILE --name testy" in message


def test_resolve_unknown_style(env: Path) -> None:
    with pytest.raises(UsageError) as info:
        WeightsStore.from_env().resolve("nope")
    assert str(info.value) == (
        "unknown style 'nope'; choose from: paprika, face_paint_512_v2, face_paint_512_v1, "
        "celeba_distill"
    )


def test_resolve_explicit_weights(env: Path, checkpoint: Path, checkpoint_bytes: bytes) -> None:
    resolved = WeightsStore.from_env().resolve(DEFAULT_STYLE, weights=checkpoint, download=False)
    # Named as outputs record it: the file's own name, not a style (issue 9: --weights).
    assert resolved == ResolvedWeights(checkpoint, "mine.pt", git_blob_id(checkpoint_bytes))


def test_resolve_explicit_weights_checked_strictly(env: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"w": torch.zeros(1)}, bad)
    store = WeightsStore.from_env()
    with pytest.raises(WeightsError, match="not an AnimeGANv2 checkpoint"):
        store.resolve(DEFAULT_STYLE, weights=bad)
    with pytest.raises(WeightsError, match="does not exist"):
        store.resolve(DEFAULT_STYLE, weights=tmp_path / "missing.pt")


# --- non-finite weights -------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_single_non_finite_weight_is_refused_at_load(tmp_path: Path, checkpoint_bytes: bytes,
                                                       bad: float) -> None:
    state = torch.load(io.BytesIO(checkpoint_bytes))
    key = list(state)[7]
    state[key].view(-1)[3] = bad
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        load_state_dict(path)
    assert str(info.value) == f"{path} holds non-finite weights (NaN or inf) in: {key}"
    with pytest.raises(WeightsError, match="non-finite"):
        WeightsStore.from_env().import_file(path, "broken")
