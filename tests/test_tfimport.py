"""issue 25 items 1-3: AnimeGANv2's own TensorFlow 1 checkpoints imported without
TensorFlow, run with the TF graph's resize and norm details, listed with their source."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from animegan_cli.cli.app import main
from animegan_cli.engines.openvino_engine import ir_cache_key
from animegan_cli.model import tfbundle
from animegan_cli.model.generator import Generator, resize_asymmetric
from animegan_cli.model.weights import WeightsStore, load_state_dict
from tests.conftest import photo_like
from tests.tf_bundle_writer import (
    entry_proto,
    generator_arrays,
    header_proto,
    table,
    write_bundle,
)

REPO = Path(__file__).resolve().parents[1]
PREFIX_NAME = "Hayao-99.ckpt"
DATA = f"{PREFIX_NAME}.data-00000-of-00001"


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def stored() -> list[Path]:
    """The checkpoints in the store (the isolated cache)."""
    store = Path(os.environ["XDG_CACHE_HOME"]) / "animegan"
    return sorted(store.glob("*.pt")) if store.is_dir() else []


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generator checkpoint as TensorFlow's Saver lays it out, written once per module."""
    folder = tmp_path_factory.mktemp("tf") / "generator_Hayao_weight"
    write_bundle(folder / PREFIX_NAME, generator_arrays(seed=1))
    (folder / "checkpoint").write_text(
        f'model_checkpoint_path: "/train/machine/{PREFIX_NAME}"\n'
        f'all_model_checkpoint_paths: "/train/machine/{PREFIX_NAME}"\n')
    return folder


@pytest.fixture
def bundle(good_bundle: Path, tmp_path: Path) -> Path:
    """A copy of the good bundle's folder, for a test to spoil."""
    return Path(shutil.copytree(good_bundle, tmp_path / good_bundle.name))


def assert_refused(target: Path, *reason: str) -> str:
    result = run("weights", "import", str(target))
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert line.startswith("animegan: error: "), line
    for part in reason:
        assert part in line, line
    assert stored() == []
    return line


# -- item 1: the import --------------------------------------------------------------------


def test_item1_import_a_tf_folder_maps_every_variable(bundle: Path) -> None:
    result = run("weights", "import", str(bundle))
    assert result.exit_code == 0, result.output
    assert stored() == [stored()[0]] and stored()[0].name == "hayao.pt"
    state = load_state_dict(stored()[0])
    arrays = generator_arrays(seed=1)
    root = "generator/G_MODEL/"
    # HWIO -> OIHW; depthwise H W C M -> (C*M, 1, H, W); norms as they are.
    np.testing.assert_array_equal(state["block_a.0.1.weight"].numpy(),
                                  arrays[root + "A/Conv/weights"].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(state["block_c.2.layers.1.1.weight"].numpy(),
                                  arrays[root + "C/r2/r2/w"].transpose(2, 3, 0, 1))
    np.testing.assert_array_equal(state["block_c.4.layers.3.weight"].numpy(),
                                  arrays[root + "C/r4/2/gamma"])
    np.testing.assert_array_equal(state["block_e.1.2.bias"].numpy(),
                                  arrays[root + "E/LayerNorm_1/beta"])
    np.testing.assert_array_equal(state["out_layer.0.weight"].numpy(),
                                  arrays[root + "out_layer/Conv/weights"].transpose(3, 2, 0, 1))
    resolved = WeightsStore.from_env().resolve("hayao", download=False)
    assert resolved.variant == "tf1" and resolved.name == "hayao"
    again = run("weights", "import", str(bundle / PREFIX_NAME))
    assert "already imported" in again.stderr  # the same weights: the same bytes


def test_item1_prefix_index_file_and_name(bundle: Path) -> None:
    result = run("weights", "import", str(bundle / f"{PREFIX_NAME}.index"), "--name", "mine")
    assert result.exit_code == 0, result.output
    assert [p.name for p in stored()] == ["mine.pt"]


def test_item1_a_truncated_data_shard_is_refused(bundle: Path) -> None:
    data = bundle / DATA
    data.write_bytes(data.read_bytes()[:1000])
    assert_refused(bundle, str(data), "truncated")


def test_item1_a_truncated_index_is_refused(bundle: Path) -> None:
    index = bundle / f"{PREFIX_NAME}.index"
    index.write_bytes(index.read_bytes()[:-20])
    assert_refused(bundle, str(index), "truncated")


def test_item1_a_wrong_crc_is_refused(bundle: Path) -> None:
    data = bundle / DATA
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0x01  # one bit of the first tensor (A/Conv/weights)
    data.write_bytes(bytes(raw))
    assert_refused(bundle, str(data), "crc32c", "generator/G_MODEL/A/Conv/weights")


def test_item1_a_corrupt_index_block_is_refused(bundle: Path) -> None:
    index = bundle / f"{PREFIX_NAME}.index"
    raw = bytearray(index.read_bytes())
    raw[30] ^= 0x40
    index.write_bytes(bytes(raw))
    assert_refused(bundle, str(index), "crc32c")


def test_item1_a_missing_data_shard_is_refused(bundle: Path) -> None:
    (bundle / DATA).unlink()
    assert_refused(bundle, str(bundle / DATA), "missing")


def test_item1_a_checkpoint_of_another_network_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    prefix = write_bundle(tmp_path / "disc" / "model.ckpt-10", {
        "discriminator/conv_0/conv2d/kernel": rng.normal(size=(3, 3, 3, 32)),
        "discriminator/conv_0/conv2d/bias": rng.normal(size=(32,)),
    })
    assert_refused(prefix, f"{prefix}.index", "not an AnimeGANv2 generator checkpoint",
                   "discriminator/conv_0")


def test_item1_a_generator_of_another_shape_is_refused(tmp_path: Path) -> None:
    arrays = generator_arrays()
    arrays["generator/G_MODEL/A/Conv/weights"] = np.zeros((7, 7, 3, 16), "<f4")
    del arrays["generator/G_MODEL/C/r3/1/beta"]
    prefix = write_bundle(tmp_path / "lite" / PREFIX_NAME, arrays)
    assert_refused(prefix, "missing: generator/G_MODEL/C/r3/1/beta",
                   "wrong shapes: generator/G_MODEL/A/Conv/weights (7, 7, 3, 16)")


def test_item1_a_tf2_object_based_checkpoint_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    prefix = write_bundle(tmp_path / "tf2" / "ckpt-1", {
        "model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE":
            rng.normal(size=(3, 3, 3, 32)),
        "_CHECKPOINTABLE_OBJECT_GRAPH": np.zeros(4),
    })
    assert_refused(prefix.parent, "TensorFlow 2 object-based checkpoint")


def test_item1_snappy_blocks_are_refused_with_what_is_supported(tmp_path: Path) -> None:
    prefix = tmp_path / "snappy" / "x.ckpt"
    prefix.parent.mkdir()
    raw = np.zeros(3, "<f4").tobytes()
    index = table([(b"", header_proto()),
                   (b"generator/G_MODEL/A/Conv/weights",
                    entry_proto((3,), 0, len(raw), tfbundle.masked_crc32c(raw)))],
                  compression=1)
    prefix.with_name("x.ckpt.index").write_bytes(index)
    assert_refused(prefix, "snappy-compressed", "only uncompressed")


def test_item1_big_endian_and_sliced_are_refused(tmp_path: Path) -> None:
    prefix = tmp_path / "big" / "x.ckpt"
    prefix.parent.mkdir()
    prefix.with_name("x.ckpt.index").write_bytes(table([(b"", header_proto(endianness=1))]))
    assert_refused(prefix, "big-endian")


def test_item1_crc32c_is_castagnoli_masked_as_tensorflow_stores_it() -> None:
    assert tfbundle.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert tfbundle.crc32c(b"\0" * 32) == 0x8A9136AA  # RFC 3720's test vector
    crc = tfbundle.crc32c(b"abc")
    assert tfbundle.masked_crc32c(b"abc") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32
    rng = np.random.default_rng(0)
    for size in (0, 1, 1023, 8 * 1024 - 1, 8 * 1024, 8 * 1024 + 1, 100_003):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        # The chunked, vectorised CRC is the byte-at-a-time one.
        assert tfbundle.crc32c(data) == tfbundle._crc_bytes(0xFFFFFFFF, data) ^ 0xFFFFFFFF


def test_item1_a_folder_with_several_checkpoints_names_them(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    for name in ("a.ckpt", "b.ckpt"):
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.index").write_bytes(table([(b"", header_proto())]))
    assert_refused(folder, "several checkpoints", "a.ckpt.index, b.ckpt.index")


# -- item 2: the TF graph's details, recorded with the checkpoint ---------------------------


def test_item2_resize_asymmetric_is_tf1_resize_bilinear() -> None:
    """TF1 resize_bilinear(align_corners=False): src = dst * in / out, the edge clamped."""
    def legacy(a: np.ndarray, out: int) -> np.ndarray:
        n = a.shape[-1]
        cols = []
        for j in range(out):
            src = j * n / out
            i0 = int(np.floor(src))
            i1, frac = min(i0 + 1, n - 1), src - i0
            cols.append(a[..., i0] * (1 - frac) + a[..., i1] * frac)
        return np.stack(cols, -1)

    x = torch.rand(1, 2, 5, 7)
    expected = legacy(legacy(x.numpy(), 14).swapaxes(-1, -2), 10).swapaxes(-1, -2)
    np.testing.assert_allclose(resize_asymmetric(x, torch.Size([10, 14])).numpy(), expected,
                               atol=1e-6)


def test_item2_the_variant_changes_the_graph_and_the_cached_models_name() -> None:
    torch.manual_seed(0)
    torch_graph, tf_graph = Generator(), Generator(variant="tf1")
    tf_graph.load_state_dict(torch_graph.state_dict())
    assert {m.eps for m in tf_graph.modules() if isinstance(m, torch.nn.GroupNorm)} == {1e-12}
    x = torch.rand(1, 3, 32, 24) * 2 - 1
    with torch.no_grad():
        assert not torch.allclose(torch_graph(x), tf_graph(x), atol=1e-3)
    # The default keeps the names of IRs cached before variants existed.
    assert ir_cache_key("ab" * 8, False, False).startswith("abababababababab-align0-float-")
    assert "-align0-tf1-float-" in ir_cache_key("ab" * 8, False, False, "tf1")


def test_item2_a_plain_state_dict_is_the_torch_variant(checkpoint: Path) -> None:
    resolved = WeightsStore.from_env().resolve("x", weights=checkpoint)
    assert resolved.variant == "torch"


# -- item 3: weights list --------------------------------------------------------------


def test_item3_weights_list_shows_the_tf_styles_source_and_licence(bundle: Path) -> None:
    before = run("weights", "list").stdout
    assert "hayao              not installed" in before
    assert "https://github.com/TachibanaYoshino/AnimeGANv2/tree/master/checkpoint/" \
           "generator_Shinkai_weight" in before
    assert before.count("licence: non-commercial use only") == 3
    run("weights", "import", str(bundle))
    after = run("weights", "list").stdout
    assert f"hayao              {stored()[0]}" in after
    assert "custom checkpoint" not in after


# -- Done when: the original generator, in TensorFlow, against both engines ----------------


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


# Reports, at exit, whether TensorFlow was imported by the command it runs.
_NO_TF_PROBE = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: print('tensorflow imported' if 'tensorflow' in sys.modules "
    "else 'tensorflow not imported', file=sys.stderr))\n"
    "sys.argv = ['animegan', *sys.argv[1:]]\n"
    "runpy.run_module('animegan_cli', run_name='__main__')\n"
)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="needs tensorflow-cpu (the test extra)")
def test_done_when_a_real_tf_checkpoint_matches_tensorflow_on_both_engines(tmp_path: Path):
    photo = photo_like(52, 36, seed=3)  # sides a multiple of 4: the size convert uses
    Image.fromarray(photo).save(tmp_path / "photo.png")
    np.save(tmp_path / "in.npy", (photo.astype(np.float32) / 127.5 - 1)[None])
    folder = tmp_path / "AnimeGANv2" / "checkpoint" / "generator_Hayao_weight"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, str(REPO / "tests" / "tf_reference.py"),
                    str(folder / PREFIX_NAME), str(tmp_path / "in.npy"),
                    str(tmp_path / "out.npy")], check=True, env=env, timeout=300)
    reference = (np.load(tmp_path / "out.npy")[0] + 1) * 127.5

    imported = subprocess.run([sys.executable, "-c", _NO_TF_PROBE, "weights", "import",
                               str(folder)], env=env, capture_output=True, text=True,
                              timeout=300)
    assert imported.returncode == 0, imported.stderr
    assert "tensorflow not imported" in imported.stderr
    for backend in ("torch", "openvino"):
        out = tmp_path / backend
        result = run("convert", str(tmp_path / "photo.png"), "-o", str(out), "--style",
                     "hayao", "--backend", backend, "--precision", "fp32", "--size", "0",
                     "--num-workers", "0")
        assert result.exit_code == 0, result.output
        styled = np.asarray(Image.open(out / "photo.png").convert("RGB"))
        assert psnr(styled, reference) >= 40.0, backend


def test_readme_both_styles_in_one_import_each_failure_one_line(bundle: Path,
                                                                tmp_path: Path) -> None:
    shinkai = tmp_path / "generator_Shinkai_weight"
    shinkai.mkdir()
    for path in bundle.glob(f"{PREFIX_NAME}.*"):
        shutil.copy(path, shinkai / path.name.replace("Hayao-99", "Shinkai-53"))
    missing = tmp_path / "generator_Paprika_weight"
    result = run("weights", "import", str(bundle), str(missing), str(shinkai))
    assert result.exit_code == 1
    assert [p.name for p in stored()] == ["hayao.pt", "shinkai.pt"]
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and str(missing) in errors[0]
    refused = run("weights", "import", str(bundle), str(shinkai), "--name", "x")
    assert refused.exit_code == 2


@pytest.mark.parametrize(("path", "name"), [
    ("AnimeGANv2/checkpoint/generator_Hayao_weight/Hayao-99.ckpt", "hayao"),
    ("x/generator_Shinkai_weight/model.ckpt-53", "shinkai"),
    # "paprika" is the published PyTorch conversion, checked by its blob id.
    ("generator_Paprika_weight/Paprika-54.ckpt", "paprika_tf"),
    ("runs/mystyle-12.ckpt", "mystyle"),
])
def test_item1_the_name_comes_from_the_prefix_or_its_folder(path: str, name: str) -> None:
    from animegan_cli.model.tfimport import guess_name

    assert guess_name(Path(path)) == name


def test_item3_convert_with_a_tf_style_not_imported_says_where_to_get_it(tmp_path: Path):
    photo = tmp_path / "a.png"
    Image.fromarray(photo_like(40, 28)).save(photo)
    result = run("convert", str(photo), "-o", str(tmp_path / "out"), "--style", "shinkai")
    assert result.exit_code == 2
    assert "generator_Shinkai_weight" in result.stderr
    assert "animegan weights import FOLDER" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
