"""``animegan serve``: load the model, then run the HTTP server (imported only here)."""

from __future__ import annotations

from typing import Any

import click

from animegan_cli.cli.common import (
    CommandEntry,
    raise_for,
    refuse_style_with_weights,
    say,
    stderr_is_terminal,
)
from animegan_cli.cli.options import EXIT_FAILED, EXIT_USAGE, CommandError, by_param, options
from animegan_cli.core.errors import AnimeganError, install_hint
from animegan_cli.serve.access import LOCAL_HOSTS
from animegan_cli.settings import fields
from animegan_cli.settings.config import SERVE_KEYS, load_config

_SERVE_EXTRA = frozenset({"fastapi", "starlette", "uvicorn", "prometheus_client",
                          "python_multipart", "multipart"})


@click.command("serve")
@options(fields.SERVE_OPTIONS)
def serve_command(**params: Any) -> None:
    """Serve the model over HTTP: POST /animeify, POST /jobs, a page at /, /metrics.

    One process holds one model; an engine thread batches images across requests. A full
    queue answers 503 with Retry-After; SIGTERM finishes in-flight requests, then exits 0.

    \b
    Example:
        animegan serve --port 8000
        curl -F files=@photo.jpg http://127.0.0.1:8000/animeify -o anime.png
    """
    refuse_style_with_weights(params["weights"])
    try:
        from animegan_cli.serve import app as serve
        from animegan_cli.serve import transport as serve_transport
        from animegan_cli.serve.jobs import routes as serve_jobs
        from animegan_cli.serve.service import ServeSettings, can_tile
        from animegan_cli.stylizer import Stylizer
    except ModuleNotFoundError as exc:
        if exc.name not in _SERVE_EXTRA:
            raise
        raise CommandError(f"serve needs FastAPI and uvicorn: {install_hint('serve')}",
                           EXIT_USAGE) from None
    settings = ServeSettings.from_values(by_param(params, (*fields.SERVE_GROUP, fields.TILE)))
    host, port = params["host"], params["port"]
    try:
        settings.validate()
        stylizer = Stylizer.load(**by_param(params, fields.STYLIZER_SETTINGS),
                                 progress=stderr_is_terminal(), on_message=say)
        settings = settings.for_model(params["size"], stylizer.spec.precision,
                                      can_tile(stylizer))
    except AnimeganError as exc:
        raise_for(exc)
    if host not in LOCAL_HOSTS and not settings.token:
        click.echo(f"animegan: warning: listening on {host} without --token: anyone who can "
                   "reach this port can use the model", err=True)
    click.echo(f"animegan: serving {stylizer.style} on {stylizer.description} at "
               f"http://{host}:{port}/", err=True)
    app = serve.create_app(stylizer, settings)
    serve_jobs.attach(app)  # POST /jobs: big batches in the background, kept on disk
    fatal = serve_transport.run_server(app, host, port, settings, on_message=say)
    if fatal:  # a server that can never serve must not look healthy: say why, exit 1
        raise CommandError(fatal, EXIT_FAILED)


def serve_config_defaults(ctx: click.Context) -> dict[str, dict[str, Any]]:
    """serve runs the model convert runs (what tune measured), unless [serve] says otherwise."""
    settings = load_config()
    serve_settings = load_config(section="serve")
    return {"serve": {**{k: v for k, v in settings.items() if k in SERVE_KEYS}, **serve_settings}}


ENTRY = CommandEntry(serve_command, serve_config_defaults)
