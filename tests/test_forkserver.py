"""The tests' fork server (tests/helpers/forkserver.py) runs a command as a new interpreter would: same output,
exit code, folder, environment, signals and end (threads joined, atexit handlers, output flushed); a PYTHONPATH shim
still gets a new interpreter."""

import os
import signal
import subprocess
import sys

import pytest

import conftest
from conftest import Forked, wait_for

PRINT = "fashion-mnist fit --config configs/default.yaml --trainer.max_epochs=3 --print_config"


@pytest.mark.skipif(not conftest.FORK, reason="FRESH_INTERPRETERS=1: every command starts a new interpreter")
def test_a_forked_command_prints_and_exits_as_a_new_interpreter_does(workspace, monkeypatch):
    forked = workspace.run(PRINT)
    assert "max_epochs: 3" in forked.output
    monkeypatch.setattr(conftest, "FORK", False)
    fresh = workspace.run(PRINT)
    assert forked.output == fresh.output  # the config, read relative to the folder, and every default

    monkeypatch.setattr(conftest, "FORK", True)
    refused = workspace.run("fashion-mnist fit --trainer.maxepochs=3", expect=2)
    assert "did you mean 'trainer.max_epochs'" in refused.error  # the one line


@pytest.mark.skipif(not conftest.FORK, reason="FRESH_INTERPRETERS=1: every command starts a new interpreter")
def test_a_forked_command_has_its_own_session_and_signals(workspace):
    process, log = workspace.start("fashion-mnist fit --config configs/default.yaml")
    assert isinstance(process, Forked)
    wait_for(lambda: os.getsid(process.pid) == process.pid, 30, "a session of its own", process)
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=0.1)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL and process.poll() == -signal.SIGKILL


def test_a_pythonpath_shim_gets_a_new_interpreter(workspace):
    process, _ = workspace.start("fashion-mnist --help", env={"PYTHONPATH": str(workspace.path)})
    assert isinstance(process, subprocess.Popen)
    assert process.wait(timeout=120) == 0


END = """
import atexit, sys, threading, time
sys.path.insert(0, {helpers!r})
from forkserver import end
atexit.register(lambda: print("atexit ran", flush=True))
threading.Thread(target=lambda: (time.sleep(0.5), print("thread joined", flush=True))).start()
print("buffered, not flushed", end="")
end({code!r})
"""


@pytest.mark.parametrize("code, status", [(None, 0), (3, 3), ("bye", 1)])
def test_a_forked_command_ends_as_sys_exit_would_without_the_module_teardown(code, status):
    """The fork server's fast exit: threads joined, then atexit handlers, output flushed, sys.exit's exit status."""
    program = END.format(helpers=str(conftest.ROOT / "tests/helpers"), code=code)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == status
    assert done.stdout == "buffered, not flushedthread joined\natexit ran\n"
    assert done.stderr == ("bye\n" if code == "bye" else "")
