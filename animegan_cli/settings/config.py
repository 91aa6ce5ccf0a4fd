"""The user's config file: defaults for ``convert`` (written by ``animegan tune``) and ``serve``."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from animegan_cli.core.atomic import atomic_write
from animegan_cli.core.errors import UsageError
from animegan_cli.settings import fields

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Settings the config file may hold, with the type each must have: views of the settings'
# declarations (settings/fields.py, each Setting's ``config`` tables). [convert] holds the
# ones a machine decides (tune writes them) plus the style choices a user sets once.
SECTION = fields.CONVERT
CONFIG_KEYS = fields.config_keys(SECTION)
# [serve]: the server's own settings; its model and engine settings come from [convert]
# (what tune measured) unless [serve] names them too. The token is not among them: a
# secret belongs in ANIMEGAN_TOKEN (or a systemd credential), not in a config file.
SERVE_KEYS = fields.config_keys(fields.SERVE)
SECTIONS = {SECTION: CONFIG_KEYS, "serve": SERVE_KEYS}
_TYPE_NAMES = {int: "an integer", str: "a string", bool: "true or false",
               list: 'a list of strings such as ["a", "b"]',
               (int, float): "a number", (int, str): 'a number or a size such as "50M"'}


_KEY_TYPE_NAMES = {"png_level": 'a level 0-9 or "rle"'}


def config_path() -> Path:
    """``$XDG_CONFIG_HOME/animegan/config.toml`` (default ``~/.config/animegan/``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "animegan" / "config.toml"


def load_config(path: Path | None = None, section: str = SECTION) -> dict[str, object]:
    """The ``[convert]`` (or ``section``'s) settings of the config file ({} when there is none).

    A file that is not valid TOML, has unknown keys or values of the wrong type is a
    UsageError naming the file and the line.
    """
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path}: {exc}") from exc
    unknown_sections = [k for k in document if k not in SECTIONS]
    if unknown_sections:
        raise UsageError(
            f"config file {path}, line {_line_of(text, unknown_sections[0])}: unknown section or "
            f"key {unknown_sections[0]!r}; settings go under [{SECTION}]"
        )
    keys = SECTIONS[section]
    settings = document.get(section, {})
    for key, value in settings.items():
        expected = keys.get(key)
        line = _line_of(text, key)
        if expected is None:
            known = ", ".join(keys)
            raise UsageError(f"config file {path}, line {line}: unknown setting {key!r} "
                             f"(known: {known})")
        # bool is an int in Python; a config saying batch_size = true is still wrong.
        wrong_bool = isinstance(value, bool) and expected is not bool
        wrong_items = isinstance(value, list) and not all(isinstance(v, str) for v in value)
        if wrong_bool or wrong_items or not isinstance(value, expected):
            name = _KEY_TYPE_NAMES.get(key) or _TYPE_NAMES.get(expected, "value")
            raise UsageError(f"config file {path}, line {line}: {key} must be {name}, "
                             f"not {value!r}")
    return dict(settings)


def save_config(settings: Mapping[str, object], path: Path | None = None,
                comment: str = "") -> Path:
    """Merge ``settings`` into the config file's [convert] section, written atomically."""
    path = path or config_path()
    merged = {**load_config(path), **settings}
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [f"[{SECTION}]"] + [f"{key} = {_toml_value(value)}" for key, value in merged.items()]
    serve = load_config(path, "serve")  # kept as it was
    if serve:
        lines += ["", "[serve]"] + [f"{key} = {_toml_value(value)}" for key, value in serve.items()]
    text = "\n".join(lines) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
    return path


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _line_of(text: str, key: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip().lstrip("[").strip()
        if stripped.startswith(key) and stripped[len(key):].lstrip()[:1] in ("=", "]", "."):
            return number
    return 1
