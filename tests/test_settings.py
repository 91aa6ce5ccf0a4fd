"""Issue 23 item 1: every setting declared once (settings/fields.py), the rest derived.

These check a seam rather than a user-visible bug: the click options of convert and serve,
the config file's keys and the library's keyword defaults all come from the declarations,
and a new setting is one declaration. (On the code before the redesign the module they
import does not exist.) The one-line messages users get are pinned here too.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from animegan_cli.cli import options as cli_options
from animegan_cli.cli.app import main
from animegan_cli.cli.convert import convert_command
from animegan_cli.cli.serve import serve_command
from animegan_cli.faces.detect import FaceSettings
from animegan_cli.pipeline.convert import ConvertOptions, validate
from animegan_cli.serve.service import ServeSettings
from animegan_cli.settings import config, fields
from animegan_cli.settings.fields import Setting

PACKAGE = Path(__file__).resolve().parents[1] / "animegan_cli"
# Options of a command that are not settings: none. Arguments (INPUTS) are not options.
COMMANDS = [(convert_command, fields.CONVERT_OPTIONS), (serve_command, fields.SERVE_OPTIONS)]


def _options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option)]


@pytest.mark.parametrize(("command", "declared"), COMMANDS, ids=["convert", "serve"])
def test_every_option_is_a_declared_setting_and_every_setting_an_option(command, declared):
    options = _options(command)
    assert [o.name for o in options] == [s.param for s in declared]
    for option, setting in zip(options, declared):
        assert option.opts + option.secondary_opts == [
            flag for spelling in setting.flags for flag in spelling.split("/")], setting.name
        assert option.envvar == setting.envvar, setting.name
        assert option.help == cli_options.help_text(setting), setting.name
        if not (option.multiple or option.required):
            assert option.default == cli_options.shown_default(setting), setting.name
        if setting.choices is not None:
            assert list(option.type.choices) == cli_options.choices(setting), setting.name


def test_each_declared_default_is_what_a_bare_run_gets():
    """The click default, read back through the option's parser, is the declared value."""
    # Under the root's context settings: a context without them would leave click's cached
    # help option of convert without -h (and docs/cli.md "out of date").
    root = click.Context(main, info_name="animegan", **main.context_settings)
    ctx = convert_command.make_context("convert", ["IN", "-o", "OUT"], parent=root)
    for setting in fields.CONVERT_OPTIONS:
        if setting.click.get("required"):
            continue
        assert ctx.params[setting.param] == setting.default, setting.name


@pytest.mark.parametrize(("table", "keys", "command"), [
    ("convert", config.CONFIG_KEYS, convert_command),
    ("serve", config.SERVE_KEYS, serve_command),
])
def test_config_keys_are_views_of_the_declarations(table, keys, command):
    declared = {s.name: s.value_type for s in fields.ALL if table in s.config}
    assert keys == declared and list(keys) == list(declared)
    # Every key names an option of the command the table is for.
    params = {o.name for o in _options(command)}
    by_name = {s.name: s.param for s in fields.ALL if table in s.config}
    assert {by_name[key] for key in keys} <= params


def test_convert_options_defaults_are_the_declared_ones():
    options = ConvertOptions(inputs=["x"], output=Path("out"))
    for setting in fields.CONVERT_OPTIONS:
        held = setting.name in ConvertOptions.__dataclass_fields__
        if held and setting not in (fields.OUTPUT, *fields.FACES_GROUP):  # faces: below
            assert getattr(options, setting.name) == setting.default, setting.name
    faces = FaceSettings()
    assert [getattr(faces, f.name) for f in dataclasses.fields(FaceSettings)] == [
        s.default for s in fields.FACES_GROUP]


def _library_names() -> dict[str, list[Setting]]:
    """Parameter and field names that hold a declared setting's value in the library."""
    names: dict[str, list[Setting]] = {}
    aliases = [(s.name, s) for s in fields.ALL]
    aliases += [(s.param, s) for s in fields.ALL if s.param != s.name]
    aliases += [(f.name, s) for f, s in zip(dataclasses.fields(FaceSettings), fields.FACES_GROUP)]
    aliases += [("grace_s", fields.GRACE), ("listen_host", fields.HOST)]
    for name, setting in aliases:
        if setting.default not in (None, False, "", ()):  # no value: nothing to repeat
            names.setdefault(name, []).append(setting)
    return names


def _written_defaults(tree: ast.AST):
    """(name, literal, line) of every keyword default and class-level field default."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
            for arg, default in pairs:
                yield arg.arg, default, default.lineno
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) \
                        and item.value is not None:
                    yield item.target.id, item.value, item.lineno


def _repeated_literals() -> list[str]:
    names = _library_names()
    declared_flags = {flag for s in fields.ALL for flag in s.flags}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "settings" / "fields.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(PACKAGE.parent)
        for name, value, line in _written_defaults(tree):
            if not isinstance(value, ast.Constant):
                continue
            for setting in names.get(name, []):
                same = type(value.value) is type(setting.default) and value.value == setting.default
                if same:
                    found.append(f"{where}:{line}: {name} = {value.value!r} ({setting.flag})")
        # A declared flag spelled again by hand (click.option("--size", default=...)).
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                    and node.args[0].value in declared_flags \
                    and any(k.arg == "default" for k in node.keywords):
                found.append(f"{where}:{node.lineno}: {node.args[0].value} declared again")
    return found


def test_no_declared_default_is_written_again_in_the_package():
    assert _repeated_literals() == []


def test_the_scan_finds_a_default_written_twice(tmp_path, monkeypatch):
    """The scan is not vacuous: a module repeating 512 and 'static' is caught."""
    module = tmp_path / "animegan_cli" / "extra.py"
    module.parent.mkdir()
    module.write_text("from dataclasses import dataclass\n\n"
                      "@dataclass\nclass X:\n    size: int = 512\n\n"
                      "def f(shapes: str = 'static', quality=95): ...\n", encoding="utf-8")
    monkeypatch.setitem(globals(), "PACKAGE", tmp_path / "animegan_cli")
    found = _repeated_literals()
    assert [line.split(": ", 1)[1] for line in found] == [
        "size = 512 (--size)", "shapes = 'static' (--shapes)", "quality = 95 (--quality)"]


def test_a_setting_added_later_is_one_declaration(tmp_path, monkeypatch):
    """A new Setting gets a click option (flag, variable, default, help), a config key and its
    check from the declaration alone."""
    new = Setting(("--tile-size",), 256, "Style large images in tiles of this side.",
                  python_type=int, envvar="ANIMEGAN_TILE_SIZE", config=(fields.CONVERT,),
                  check=fields.at_least(64))
    seen = {}

    @click.command(context_settings={"show_default": True})
    @cli_options.options((*fields.MODEL_GROUP, new))
    def command(**params):
        seen.update(params)

    help_text = CliRunner().invoke(command, ["--help"]).output
    assert "[default: 256]" in help_text
    assert "--tile-size INTEGER" in help_text and "Style large images in tiles" in help_text
    assert CliRunner().invoke(command, []).exit_code == 0 and seen["tile_size"] == 256
    CliRunner().invoke(command, [], env={"ANIMEGAN_TILE_SIZE": "128"})
    assert seen["tile_size"] == 128
    CliRunner().invoke(command, [], default_map={"tile_size": 512})
    assert seen["tile_size"] == 512
    keys = fields.config_keys(fields.CONVERT, (*fields.ALL, new))
    assert keys["tile_size"] is int and list(keys)[-1] == "tile_size"
    assert fields.problems((new,), {"tile_size": 32}) == ["--tile-size must be at least 64"]


# The messages users got before the declarations, word for word.
CONVERT_MESSAGES = [
    ({"batch_size": 0}, "--batch-size must be at least 1"),
    ({"size": 4}, "--size must be 0 or at least 8"),
    ({"quality": 101}, "--quality must be between 1 and 100"),
    ({"num_workers": -1}, "--num-workers must be 0 or more"),
    ({"max_pixels": -1}, "--max-pixels must be 0 (no limit) or more"),
    ({"video_crf": 52}, "--video-crf must be between 0 and 51"),
    ({"frames_per_batch": 0}, "--frames-per-batch must be at least 1"),
]


@pytest.mark.parametrize(("values", "message"), CONVERT_MESSAGES)
def test_convert_checks_keep_their_messages(values, message, tmp_path):
    from animegan_cli.core.errors import UsageError

    with pytest.raises(UsageError) as caught:
        validate(ConvertOptions(inputs=[str(tmp_path)], output=tmp_path / "o", **values))
    assert str(caught.value) == message


SERVE_MESSAGES = [
    ({"max_batch_size": 0}, "--max-batch-size must be at least 1"),
    ({"batch_wait_ms": -1}, "--batch-wait-ms must be 0 or more"),
    ({"queue_size": 0}, "--queue-size must be at least 1"),
    ({"max_upload_mb": 0}, "--max-upload-mb must be more than 0"),
    ({"cache_mb": -1}, "--cache-mb must be 0 (off) or more"),
    ({"cache_similar": 65}, "--cache-similar must be between 0 and 64"),
    ({"grace_s": -1}, "--grace must be 0 or more"),
    ({"max_connections": 0}, "--max-connections must be at least 1"),
    ({"header_timeout": 0}, "--header-timeout must be more than 0"),
    ({"keep_alive_timeout": 0}, "--keep-alive-timeout must be more than 0"),
    ({"max_size": 4}, "--max-size must be 0 (no limit) or at least 8"),
    ({"max_memory": 0}, "--max-memory must be more than 0"),
    ({"max_output_pixels": -1}, "--max-output-pixels must be 0 (no limit) or more"),
    ({"max_request_pixels": -1}, "--max-request-pixels must be 0 (no limit) or more"),
]


@pytest.mark.parametrize(("values", "message"), SERVE_MESSAGES)
def test_serve_checks_keep_their_messages(values, message):
    from animegan_cli.core.errors import UsageError

    with pytest.raises(UsageError) as caught:
        ServeSettings(**values).validate()
    assert str(caught.value) == message


def test_a_bad_value_from_the_cli_is_the_declared_line(tmp_path):
    result = CliRunner().invoke(main, ["convert", str(tmp_path), "-o", str(tmp_path / "o"),
                                       "--quality", "0"])
    assert result.exit_code == 2
    assert "animegan: error: --quality must be between 1 and 100" in result.output
