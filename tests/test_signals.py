"""SIGINT/SIGTERM become Interrupted; deferred() holds them over a critical section."""

from __future__ import annotations

import os
import signal

import pytest

from animegan_cli import signals
from animegan_cli.signals import Interrupted, as_interrupted, deferred, stop_on_signals


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
