"""OpenVINO's CPU plugin must not leave a thread with an unmapped alternate signal stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from animegan_cli.engines import signal_stack

ROOT = Path(__file__).resolve().parents[1]

# An engine made on the main thread and freed on another (as the garbage collector may do),
# then a signal with a handler: before signal_stack, the kernel could not use the main
# thread's (unmapped) stack and the process died with SIGSEGV.
CHILD = """
import gc, signal, subprocess, sys, tempfile, threading
from pathlib import Path
import faulthandler, torch
faulthandler.enable()
from animegan_cli.engines import signal_stack
from animegan_cli.model.generator import Generator
from animegan_cli.engines.openvino_engine import OpenVINOEngine
before = signal_stack.current()
engines = [OpenVINOEngine(Generator().eval(), "1" * 40, "fp32", 1, Path(tempfile.mkdtemp()))]
engines[0].run(torch.zeros(1, 3, 64, 72, dtype=torch.uint8))
assert signal_stack.current() == before, (before, signal_stack.current())
freer = threading.Thread(target=lambda: (engines.clear(), gc.collect()))
freer.start(); freer.join()
signal.signal(signal.SIGCHLD, lambda *_: None)
for _ in range(3):
    subprocess.Popen([sys.executable, "-c", "pass"]).wait()
print("survived")
"""


def test_a_thread_keeps_its_signal_stack_across_the_body():
    before = signal_stack.current()
    with signal_stack.kept():
        pass
    assert signal_stack.current() == before


def test_an_engine_freed_on_another_thread_leaves_signals_working(tmp_path: Path):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "survived"
