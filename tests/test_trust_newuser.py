"""Issue 22, "found by a new user following the README": items 15-17, 19-21 and the face cap."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from animegan_cli.cli.app import main
from animegan_cli.records.embedded import read_embedded
from animegan_cli.runners import ray_runner
from animegan_cli.settings.config import config_path, load_config
from animegan_cli.tools.tune import Trial, TuneResult
from tests.conftest import make_image

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--size", "32", "--backend", "torch", "--num-workers", "0"]


def run(*args: str, **kwargs):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, **kwargs)


def convert(inputs: list[Path], out: Path, checkpoint: Path, *extra: str):
    return run("convert", *map(str, inputs), "-o", str(out), "--weights", str(checkpoint),
               *TINY, *extra)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not p.name.startswith("."))


# ---- item 15: an input folder inside OUT -------------------------------------------------


def test_15_input_folder_inside_out_is_converted_and_outputs_never_read_back(
    tmp_path, checkpoint, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    make_image(Path("pics/new/a.jpg"), seed=1)
    make_image(Path("pics/new/sub/b.png"), seed=2)
    first = convert([Path("pics/new")], Path("pics"), checkpoint)
    assert first.exit_code == 0, first.output
    assert "converted 2, skipped 0, failed 0" in first.stderr
    assert files_under(Path("pics")) == ["a.jpg", "new/a.jpg", "new/sub/b.png", "sub/b.png"]
    second = convert([Path("pics/new")], Path("pics"), checkpoint)  # the cron job's next run
    assert second.exit_code == 0, second.output
    assert "converted 0, skipped 2, failed 0" in second.stderr
    assert files_under(Path("pics")) == ["a.jpg", "new/a.jpg", "new/sub/b.png", "sub/b.png"]


def test_15_an_output_that_would_land_inside_the_input_folder_is_a_usage_error(
    tmp_path, checkpoint, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    make_image(Path("pics/new/new/c.jpg"))  # its output, pics/new/c.jpg, is inside pics/new
    result = convert([Path("pics/new")], Path("pics"), checkpoint)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "animegan: error: input folder pics/new is inside the output folder pics, and the "
        "output of pics/new/new/c.jpg would be pics/new/c.jpg, inside that input folder: the "
        "next run would read it back as an input; choose an -o outside pics/new, or move "
        "pics/new/new/c.jpg elsewhere")
    assert files_under(Path("pics")) == ["new/new/c.jpg"]


# ---- item 16 and the face cap: --faces paste -----------------------------------------------


def _astronaut(path: Path) -> Path:
    skimage_data = pytest.importorskip("skimage.data")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(skimage_data.astronaut()).resize((300, 300)).save(path)
    return path


@pytest.mark.slow
def test_16_paste_styles_a_faceless_photo_whole_and_the_fallback_leaves_outputs_alone(
    tmp_path, checkpoint
):
    photos = tmp_path / "in"
    _astronaut(photos / "face.png")
    Image.new("RGB", (48, 32), (90, 140, 200)).save(photos / "sky.png")  # no face in it
    out = tmp_path / "out"
    first = convert([photos], out, checkpoint, "--faces", "paste")
    assert first.exit_code == 0, first.output
    assert "converted 2, skipped 0, failed 0" in first.stderr
    sky = read_embedded(out / "sky.png")
    assert sky.settings["faces"] == "paste" and sky.settings["face_count"] == 0
    assert "faces_fallback" not in sky.settings  # paste has no fallback: not recorded
    assert read_embedded(out / "face.png").settings["face_count"] == 1
    # --faces-fallback acts in crop mode only: it changes no paste output's pixels.
    again = convert([photos], out, checkpoint, "--faces", "paste", "--faces-fallback", "whole")
    assert again.exit_code == 0, again.output
    assert "converted 0, skipped 2, failed 0" in again.stderr


@pytest.mark.slow
def test_max_faces_styles_the_largest_and_says_so(tmp_path, checkpoint):
    skimage_data = pytest.importorskip("skimage.data")
    one = Image.fromarray(skimage_data.astronaut()).resize((300, 300))
    canvas = Image.new("RGB", (1020, 300), (128, 128, 128))
    for i, side in enumerate((300, 300, 260)):  # the third astronaut is the smallest
        canvas.paste(one.resize((side, side)), (340 * i, 0))
    canvas.save(tmp_path / "team.png")
    out = tmp_path / "out"
    result = convert([tmp_path / "team.png"], out, checkpoint, "--faces", "crop",
                     "--max-faces", "2")
    assert result.exit_code == 0, result.output
    assert (f"animegan: {tmp_path / 'team.png'}: 3 faces found; styling the 2 largest "
            "(--max-faces 2)") in result.stderr
    assert files_under(out) == ["team_face1.png", "team_face2.png"]
    record = read_embedded(out / "team_face1.png").settings
    assert (record["face_count"], record["faces_found"], record["max_faces"]) == (2, 3, 2)
    second = read_embedded(out / "team_face2.png").settings
    assert int(second["face_box"].split(",")[0]) < 680  # the two largest: not the third
    # A cap that leaves no face out changes nothing; one that does redoes the outputs.
    raised = convert([tmp_path / "team.png"], out, checkpoint, "--faces", "crop",
                     "--max-faces", "3", "--dry-run")
    assert "settings changed: max_faces 2 -> 3" in raised.stderr


# ---- item 17: tune saves the size it measured with the batch size --------------------------


def test_17_tune_saves_the_size_with_the_batch_size_and_convert_uses_both(monkeypatch):
    seen = []

    def measured(request, on_trial=None, on_message=None):
        seen.append(request.size)
        winner = Trial("torch", "fp32", batch_size=8, threads=2, num_workers=1,
                       images_per_second=3.0)
        return TuneResult(trials=[winner], winner=winner, shape=(192, 256))

    monkeypatch.setattr("animegan_cli.cli.tune.run_tune", measured)
    result = run("tune", "--size", "256", "--budget", "1")
    assert result.exit_code == 0, result.output
    assert seen == [256]
    saved = load_config()
    assert (saved["size"], saved["batch_size"]) == (256, 8)
    info = run("info").stdout
    assert re.search(r"--size\s+256\s+\[config file\]", info)
    assert re.search(r"--batch-size\s+8\s+\[config file\]", info)


# ---- item 19: --ray local without Ray's own noise -------------------------------------------


def _ray_convert(tmp_path: Path, checkpoint: Path, out: str, *extra: str):
    photos = tmp_path / "in"
    for i in range(2):
        make_image(photos / f"p{i}.jpg", seed=i)
    command = [sys.executable, "-m", "animegan_cli", "convert", str(photos), "-o",
               str(tmp_path / out), "--weights", str(checkpoint), "--size", "32",
               "--backend", "torch", "--precision", "fp32", "--threads", "1", "--ray", "local",
               *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_19_the_stderr_filter_drops_native_log_lines_only():
    script = (
        "import os, sys\n"
        "from animegan_cli.core import stderr_filter\nfrom animegan_cli.runners import ray_runner\n"
        "with stderr_filter.dropping_lines(ray_runner.RAY_NATIVE_LOG_LINE):\n"
        "    print('animegan: ours', file=sys.stderr, flush=True)\n"
        "    os.write(2, b'[2026-12-07 12:25:04,635 E 12109 12109] core_worker.cc:2465: '\n"
        "             b'Actor with class name\\n')\n"
        "    os.write(2, b'\\r 50%|#    | 1/2 [00:01<00:01, 1.0img/s]')\n"
        "    os.write(2, b'[2026-12-07 12:25:04,635 W 1 2] x.cc:1: split')\n"
        "    os.write(2, b' in two\\n[not ray] kept\\n')\n"
        "print('after', file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == (b"animegan: ours\n\r 50%|#    | 1/2 [00:01<00:01, 1.0img/s]"
                           b"[not ray] kept\nafter\n")


@pytest.mark.slow
def test_19_ray_local_prints_no_ray_warnings_unless_verbose(tmp_path, checkpoint):
    quiet = _ray_convert(tmp_path, checkpoint, "quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.splitlines() == [
        "animegan: ray: 2 actor(s) x 1 thread(s)",
        quiet.stderr.splitlines()[-1],
    ], quiet.stderr
    assert quiet.stderr.splitlines()[-1].startswith("converted 2, skipped 0, failed 0")
    verbose = _ray_convert(tmp_path, checkpoint, "verbose", "-v")
    assert verbose.returncode == 0, verbose.stderr
    native = [line for line in verbose.stderr.splitlines()
              if ray_runner.RAY_NATIVE_LOG_LINE.match(line.encode())]
    assert native, verbose.stderr  # -v keeps Ray's own lines (core_worker.cc's actor note)


# ---- item 20: one install hint, from the checkout --------------------------------------------


_WRONG_HINT = re.compile(r"animegan\[|pip install ['\"]?\.\[|pip install (?!-e )[^`\n&]*\.\[")


def test_20_every_install_hint_is_the_checkout_form(monkeypatch):
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "animegan_cli").rglob("*.py")),
             *sorted((ROOT / "animegan_cli" / "static").glob("*"))]
    wrong = [f"{path.relative_to(ROOT)}: {m.group(0)}" for path in texts if path.is_file()
             for m in _WRONG_HINT.finditer(path.read_text(encoding="utf-8", errors="replace"))]
    assert wrong == []
    readme = (ROOT / "README.md").read_text()
    assert readme.index("git clone") < readme.index("pip install -e .")
    import animegan_cli.serve

    monkeypatch.delitem(sys.modules, "animegan_cli.serve.app", raising=False)
    monkeypatch.delattr(animegan_cli.serve, "app", raising=False)
    monkeypatch.setitem(sys.modules, "fastapi", None)
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 2
    assert result.stderr == ('animegan: error: serve needs FastAPI and uvicorn: pip install -e '
                             '".[serve]" in the animegan checkout\n')


# ---- item 21: the small things ---------------------------------------------------------------


def test_21_format_jpeg_is_jpg(tmp_path, checkpoint):
    src = make_image(tmp_path / "in" / "a.png")
    result = convert([src], tmp_path / "out", checkpoint, "--format", "jpeg")
    assert result.exit_code == 0, result.output
    assert files_under(tmp_path / "out") == ["a.jpg"]
    again = convert([src], tmp_path / "out", checkpoint, "--format", "jpg")
    assert "converted 0, skipped 1" in again.stderr


def test_21_gifs_in_a_walk_are_converted_still_ones_as_png(tmp_path, checkpoint):
    # Issue 23 item 4 replaced the walk's "skipped N .gif file(s)" note: a still GIF in a
    # walk comes out as PNG (as a named one does), an animated one as a GIF (test_animation).
    make_image(tmp_path / "in" / "a.jpg")
    for name in ("b.gif", "sub/c.GIF"):
        make_image(tmp_path / "in" / name)
    result = convert([tmp_path / "in"], tmp_path / "out", checkpoint)
    assert result.exit_code == 0, result.output
    assert ".gif file(s)" not in result.stderr
    assert files_under(tmp_path / "out") == ["a.jpg", "b.png", "sub/c.png"]
    named = convert([tmp_path / "in" / "b.gif"], tmp_path / "named", checkpoint)
    assert named.exit_code == 0 and files_under(tmp_path / "named") == ["b.png"]


def test_21_importing_the_same_checkpoint_again_changes_nothing(checkpoint):
    first = run("weights", "import", str(checkpoint), "--name", "mine")
    assert first.exit_code == 0 and first.stderr.startswith("imported ")
    installed = Path(first.stderr.split(" as ", 1)[1].strip())
    before = installed.stat().st_mtime_ns, installed.stat().st_ino
    again = run("weights", "import", str(checkpoint), "--name", "mine")
    assert again.exit_code == 0
    assert again.stderr == (f"already imported: {installed} holds the same bytes; "
                            "nothing changed\n")
    assert (installed.stat().st_mtime_ns, installed.stat().st_ino) == before


def test_21_the_documented_config_sample_names_the_style_and_is_valid():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    sample = re.search(r"```toml\n(.*?)```", doc, re.S).group(1)
    config_path().parent.mkdir(parents=True)
    config_path().write_text(sample)
    assert load_config()["style"] == "face_paint_512_v2"


def test_21_info_columns_line_up():
    lines = run("info").stdout.splitlines()
    rows = [line for line in lines if line.startswith("  ") and not line.startswith("  --suffix")]
    starts = {re.match(r"  \S.*?\s{2,}(\S)", line).start(1) for line in rows}
    assert len(starts) == 1, starts  # every value starts in one column
    defaults = lines[lines.index("convert defaults:") + 1:]
    assert len({line.rindex("[") for line in defaults}) == 1  # and every source


def test_21_the_progress_bar_starts_with_its_total(tmp_path, checkpoint, monkeypatch):
    monkeypatch.setattr("animegan_cli.cli.convert.stderr_is_terminal", lambda: True)
    make_image(tmp_path / "in" / "a.jpg")
    make_image(tmp_path / "in" / "b.jpg", seed=1)
    result = convert([tmp_path / "in"], tmp_path / "out", checkpoint)
    assert result.exit_code == 0, result.output
    assert "0img [" not in result.stderr
    assert re.search(r"\b0/2 \[", result.stderr), result.stderr


def test_21_serve_help_and_docs_introduce_no_article():
    help_text = run("serve", "--help").stdout
    serve_doc = (ROOT / "docs" / "serve.md").read_text()
    assert "article" not in help_text.lower() and "article" not in serve_doc.lower()
