"""The docs: docs/cli.md is what --help says, every command is documented, every link resolves."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import click
import pytest

from animegan_cli.cli.app import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def _gen_cli():
    spec = importlib.util.spec_from_file_location("gen_cli", DOCS / "gen_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _command_paths(group: click.Group, prefix: str = "animegan") -> list[str]:
    paths = []
    for name in sorted(group.commands):
        command = group.commands[name]
        paths.append(f"{prefix} {name}")
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, f"{prefix} {name}"))
    return paths


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a `# comment` in a block is not a heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _section(page: Path, heading: str) -> str:
    """The text under a level-2 heading of a page, up to the next one."""
    return page.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose_lines(page.read_text()):
        match = HEADING.match(line)
        if match:
            slug = _slug(match.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_cli_md_is_what_the_help_texts_say_now():
    rendered = _gen_cli().render()
    assert (DOCS / "cli.md").read_text() == rendered, (
        "docs/cli.md is out of date with the commands' --help: run `python docs/gen_cli.py`"
    )


def test_cli_md_does_not_depend_on_this_machine(tmp_path, monkeypatch):
    plain = _gen_cli().render()
    (tmp_path / "animegan").mkdir()
    (tmp_path / "animegan" / "config.toml").write_text('[convert]\nbatch_size = 4\n')
    (tmp_path / "mine.pt").write_bytes(b"")  # an imported checkpoint: --style's help lists it
    for name, value in {"XDG_CONFIG_HOME": tmp_path, "ANIMEGAN_WEIGHTS_DIR": tmp_path,
                        "ANIMEGAN_SIZE": "256", "COLUMNS": "40"}.items():
        monkeypatch.setenv(name, str(value))
    assert _gen_cli().render() == plain


@pytest.mark.parametrize("path", _command_paths(main))
def test_every_command_is_in_the_readme_command_list_and_in_cli_md(path):
    commands = _section(README, "Commands")
    assert re.search(rf"^- `{re.escape(path)}( |`)", commands, re.M), (
        f"README.md's command list has no line for `{path}`"
    )
    assert f"\n## `{path}`\n" in (DOCS / "cli.md").read_text()


def test_every_module_is_in_the_architecture_module_table():
    table = _section(DOCS / "architecture.md", "Modules")
    package = ROOT / "animegan_cli"
    # A subpackage has its own row (`engines/`); each module is named by its path under it.
    names = [p.parent.relative_to(package).as_posix() + "/" if p.name == "__init__.py"
             and p.parent != package else p.relative_to(package).as_posix()
             for p in sorted(package.rglob("*.py"))]
    missing = [name for name in names if f"| `{name}` |" not in table]
    assert not missing, f"docs/architecture.md's module table lacks: {', '.join(missing)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_and_heading_that_exist(page):
    broken = []
    for line in _prose_lines(page.read_text()):
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target):
                continue  # https:, mailto:
            path_part, _, anchor = target.partition("#")
            linked = (page.parent / path_part).resolve() if path_part else page
            if not linked.exists():
                broken.append(f"{target}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)
