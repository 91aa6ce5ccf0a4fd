"""The documented pipeline and cron lines, run as written, do what the docs say.

The shell blocks are read from the docs themselves (README.md and docs/*.md), so a doc
edit that breaks them fails here. Only their folders (/srv/photos, /srv/anime, /var/log)
and the command's absolute path are replaced with test ones.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_image

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PIPELINE_MARK = "animegan convert - --null --base /srv/photos"
NIGHTLY_MARK = "--trust-mtime --quiet >>/var/log/animegan.log"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed"),
]


def code_blocks() -> list[str]:
    blocks = []
    for doc in DOCS:
        blocks += re.findall(r"```(?:sh|cron)\n(.*?)```", doc.read_text(), re.S)
    return blocks


def documented(mark: str) -> str:
    found = [b for b in code_blocks() if mark in b]
    assert found, f"no documented block contains {mark!r}"
    return found[0]


def cron_lines() -> list[str]:
    block = documented(NIGHTLY_MARK)
    return [line.split(None, 5)[5] for line in block.splitlines()
            if line.strip() and not line.startswith("#")]


@pytest.fixture
def world(tmp_path: Path, checkpoint: Path):
    """/srv/photos with odd names, a command on PATH, and paths to put in the blocks."""
    photos, anime, log = tmp_path / "srv" / "photos", tmp_path / "srv" / "anime", tmp_path / "log"
    log.mkdir()
    names = ["plain.jpg", "with space.jpg", "ünïcödé.jpg", "new\nline.jpg", "sub/deep.jpg"]
    for i, name in enumerate(names):
        make_image(photos / name, 40, 28, seed=i)
    make_image(Path(os.fsdecode(bytes(photos) + b"/latin1-\xe9.jpg")), 40, 28, seed=9)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # `animegan` on PATH as the docs assume; it reads its list first, so that a test can make
    # a listed file vanish between `find` and the run, deterministically.
    shim = bin_dir / "animegan"
    shim.write_text(
        "#!/bin/sh\n"
        'list="$(mktemp)"; [ "$1" = convert ] && [ "$2" = - ] && cat >"$list"\n'
        '[ -n "$VANISH" ] && rm -f "$VANISH"\n'
        f'exec {sys.executable} -m animegan_cli "$@" <"$list"\n'
    )
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "ANIMEGAN_SIZE": "32", "ANIMEGAN_NUM_WORKERS": "0", "ANIMEGAN_BACKEND": "torch"}
    env.pop("VANISH", None)
    # The documented lines name no checkpoint: import the test one as the default style's
    # stand-in under a name of its own and select it by the environment.
    subprocess.run([sys.executable, "-m", "animegan_cli", "weights", "import", str(checkpoint),
                    "--name", "house"], env=env, check=True, capture_output=True)
    env["ANIMEGAN_STYLE"] = "house"
    return photos, anime, log, bin_dir, env


def run_block(block: str, world, **extra_env: str) -> subprocess.CompletedProcess:
    photos, anime, log, bin_dir, env = world
    script = (block.replace("/srv/photos", str(photos)).replace("/srv/anime", str(anime))
              .replace("/var/log", str(log))
              .replace("/home/me/.venv/bin/animegan", str(bin_dir / "animegan")))
    return subprocess.run(["bash", "-o", "pipefail", "-c", script], env={**env, **extra_env},
                          capture_output=True, timeout=300)


def tsv(result: subprocess.CompletedProcess) -> list[list[str]]:
    return [line.split("\t") for line in result.stdout.decode().splitlines()]


def age(path: Path, days: float) -> None:
    when = time.time() - days * 86400
    os.utime(path, (when, when))


def test_the_documented_pipeline_over_nights(world):
    photos, anime, *_ = world
    pipeline = documented(PIPELINE_MARK)

    first = run_block(pipeline, world)
    assert first.returncode == 0, first.stderr
    rows = tsv(first)
    # jq prints a newline in a name as \n: six photos, every one converted.
    assert len(rows) == 6 and {r[0] for r in rows} == {"converted"}
    assert (anime / "with space.jpg").is_file() and (anime / "sub" / "deep.jpg").is_file()
    assert (anime / "new\nline.jpg").is_file()
    assert Path(os.fsdecode(bytes(anime) + b"/latin1-\xe9.jpg")).is_file()

    # A quiet night: nothing changed in the last two days -> nothing printed, exit 0.
    for path in photos.rglob("*.jpg"):
        age(path, 3)
    quiet = run_block(pipeline, world)
    assert (quiet.returncode, quiet.stdout) == (0, b""), quiet.stderr

    # A renamed photo gets a copy of its earlier result; a vanished file fails alone.
    renamed = photos / "renamed.jpg"
    (photos / "plain.jpg").rename(renamed)
    age(renamed, 0)
    gone = photos / "with space.jpg"
    age(gone, 0)
    night = run_block(pipeline, world, VANISH=str(gone))
    assert night.returncode == 1, night.stderr
    by_input = {row[1]: row for row in tsv(night)}
    assert by_input[str(renamed)] == ["converted", str(renamed), str(anime / "plain.jpg")]
    assert by_input[str(gone)] == ["failed", str(gone), "file not found (or a broken link)"]
    assert (anime / "renamed.jpg").read_bytes() == (anime / "plain.jpg").read_bytes()
    assert len(list(anime.rglob("[!.]*.jpg"))) == 7  # no second output for any photo


def test_the_documented_cron_lines(world):
    photos, anime, log, *_ = world
    nightly, weekly = cron_lines()
    assert run_block(nightly, world).returncode == 0
    assert run_block(weekly, world).returncode == 0
    assert len(list(anime.rglob("[!.]*.jpg"))) == 6
    text = (log / "animegan.log").read_bytes()
    assert b"Traceback" not in text and b"error" not in text
    # A photo added since: the next night's run converts it, and only it.
    make_image(photos / "late.jpg", 40, 28, seed=20)
    assert run_block(nightly, world).returncode == 0
    assert (anime / "late.jpg").is_file() and len(list(anime.rglob("[!.]*.jpg"))) == 7
