"""SIGINT/SIGTERM become Interrupted; deferred() holds them; a closed stdout acts as SIGPIPE."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import signal
import sys

import pytest

from animegan_cli.cli.app import main
from animegan_cli.core import signals
from animegan_cli.core.signals import Interrupted, as_interrupted, deferred, stop_on_signals


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_raises_interrupted_with_the_shell_status(sig, status):
    before = signal.getsignal(sig)
    with pytest.raises(Interrupted) as info:
        with stop_on_signals():
            os.kill(os.getpid(), sig)
            for _ in range(1000):
                pass
    assert info.value.signum == sig
    assert info.value.exit_status == status
    assert isinstance(info.value, KeyboardInterrupt)
    assert signal.getsignal(sig) is before


def test_deferred_holds_a_signal_until_the_block_ends():
    reached = []
    with pytest.raises(Interrupted) as info:
        with stop_on_signals():
            with deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):
                    pass
                reached.append("end of block")
            reached.append("after block")
    assert reached == ["end of block"]
    assert info.value.signum == signal.SIGTERM


def test_deferred_without_a_signal_is_transparent():
    with stop_on_signals():
        with deferred():
            value = 1
    assert value == 1


def test_plain_keyboard_interrupt_counts_as_sigint():
    exc = as_interrupted(KeyboardInterrupt())
    assert exc.signum == signal.SIGINT and exc.exit_status == 130
    term = Interrupted(signal.SIGTERM)
    assert as_interrupted(term) is term


@pytest.fixture
def restored_handlers():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    signals._State.holding, signals._State.early = False, None


def test_a_signal_while_starting_is_held_until_the_run_can_stop(restored_handlers):
    signals.hold_early()
    os.kill(os.getpid(), signal.SIGTERM)  # would end the process without hold_early
    reached = []
    with pytest.raises(Interrupted) as info:
        with stop_on_signals():
            reached.append("body")
    assert info.value.signum == signal.SIGTERM and reached == []


def test_commands_that_do_not_stop_cleanly_get_the_default_handling_back(restored_handlers):
    signals.hold_early()
    signals.release_early()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ------------------------------------------- a reader that goes away (`| head`), in-process
# The same endings as tests/test_cli_errors.py's pipe tests (slow: real pipes, subprocesses).


class ClosedPipe(io.StringIO):
    """A stdout whose reader went away: every write fails with EPIPE."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


@pytest.mark.parametrize("command", [["weights", "list"], ["info"]])
def test_a_closed_stdout_ends_the_command_quietly_with_the_sigpipe_status(
        monkeypatch, capsys, command):
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    with pytest.raises(SystemExit) as info:
        main(command, prog_name="animegan")
    assert info.value.code == 128 + signal.SIGPIPE
    assert capsys.readouterr().err == ""


def test_a_closed_stdout_stops_a_json_run_like_a_signal(tmp_path, photo_dir, checkpoint,
                                                        monkeypatch, capsys):
    report = tmp_path / "report.json"
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    with pytest.raises(SystemExit) as info:
        main(["convert", str(photo_dir), "-o", str(tmp_path / "out"), "--weights",
              str(checkpoint), "--size", "32", "--num-workers", "0", "--backend", "torch",
              "--json", "--report", str(report)], prog_name="animegan")
    assert info.value.code == 141
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(r"stopped by SIGPIPE; \d+ image\(s\) not converted", err)
    account = json.loads(report.read_text())
    assert account["exit_status"] == 141 and account["interrupted_by"] == "SIGPIPE"
