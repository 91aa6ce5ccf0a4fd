"""``animegan tune``: measure the engine settings, print the table, save the fastest."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from animegan_cli.cli.common import CommandEntry, model_options, raise_for, stderr_is_terminal
from animegan_cli.core.errors import AnimeganError
from animegan_cli.settings import fields
from animegan_cli.settings.config import load_config, save_config
from animegan_cli.tools.tune import Trial, TuneRequest, TuneResult, run_tune

_TUNE_KEYS = {s.name for s in fields.MODEL_GROUP}  # tune reads the model settings' keys


@click.command("tune")
@model_options
@click.option("--budget", type=float, default=120.0, help="Seconds to spend measuring.")
@click.option("--photos", type=click.Path(path_type=Path, exists=True, file_okay=False),
              default=None, help="Tune on these photos (default: generated ones).")
@click.option("--objective", type=click.Choice(["throughput", "latency"]),
              default="throughput", help="Most images per second, or fastest single image.")
@click.option("--dry-run", is_flag=True, help="Print the table and winner; write nothing.")
def tune_command(style: str, weights: Path | None, size: int, budget: float,
                 photos: Path | None, objective: str, dry_run: bool) -> None:
    """Measure engine, precision, batch size, threads and workers; save the fastest.

    Writes the winner, with the --size it was measured at, to the config file that convert
    reads its defaults from.

    \b
    Example:
        animegan tune --size 512 --budget 120 --photos ./photos
    """
    from tqdm import tqdm

    request = TuneRequest(size=size, budget=budget, photos=photos, objective=objective,
                          style=style, weights=weights)
    bar = tqdm(total=round(budget), unit="s", file=sys.stderr, desc="tuning",
               disable=not stderr_is_terminal(), bar_format="{l_bar}{bar}| {n:.0f}/{total} s")
    started = time.perf_counter()

    def on_trial(trial: Trial) -> None:
        bar.n = min(time.perf_counter() - started, budget)
        bar.refresh()

    try:
        result = run_tune(request, on_trial=on_trial,
                          on_message=lambda m: tqdm.write(f"animegan: {m}", file=sys.stderr))
    except AnimeganError as exc:
        raise_for(exc)
    finally:
        bar.close()
    click.echo(tune_table(result))
    winner = result.winner
    assert winner is not None
    click.echo(f"\nbest for {objective} at {result.shape[1]}x{result.shape[0]}: "
               + ", ".join(f"{k}={v}" for k, v in winner.settings().items()))
    if dry_run:
        click.echo("dry run: config not written")
        return
    comment = (f"Written by animegan tune on {time.strftime('%Y-%m-%d %H:%M')}: {objective} "
               f"at --size {size}, {winner.images_per_second:.2f} img/s measured.")
    # The batch size (and the engine's speed) hold at the size measured: saved together, so
    # that convert's default size is the one they were measured at.
    path = save_config({"size": size, **winner.settings()}, comment=comment)
    click.echo(f"wrote {path} (size={size} with the settings measured at it)")

def tune_table(result: TuneResult) -> str:
    """The trials as a Markdown table: engine, batch size, throughput, memory, latency."""
    rows = ["| backend | precision | batch size | threads | streams | workers | img/s "
            "| peak memory (MB) | latency per batch (ms) | note |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for t in result.trials:
        workers = "-" if t.num_workers is None else str(t.num_workers)
        latency = f"{t.latency_ms:.0f}" if t.latency_ms else "-"
        rows.append(f"| {t.backend} | {t.precision} | {t.batch_size} | {t.threads} "
                    f"| {t.streams} | {workers} "
                    f"| {t.images_per_second:.2f} | {t.peak_mb:.0f} | {latency} | {t.note} |")
    return "\n".join(rows)


def tune_config_defaults(ctx: click.Context) -> dict[str, dict[str, Any]]:
    """tune measures the model convert will run: the same style and size."""
    return {"tune": {k: v for k, v in load_config().items() if k in _TUNE_KEYS}}


ENTRY = CommandEntry(tune_command, tune_config_defaults)
