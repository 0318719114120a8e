"""A warm interpreter for the tests' ``fashion-mnist`` commands: the imports are paid once, each command is a fork.

An interpreter that starts ``fashion-mnist`` spends ~11 CPU-seconds here importing torch, Lightning, torchvision and
torch._dynamo before ``main()`` runs; the suite runs ~275 commands. This process imports them once (nothing else: no
tensor op, no thread pool, so a fork is safe), then for each request forks a child that becomes the command: its own
session (the tests' signals and ``killpg`` reach it and its DDP children), the log file as stdout and stderr, the
command's folder and environment, fresh random seeds, and the console script itself run as ``__main__`` with the
user's argv. A command that ends by returning or ``sys.exit`` then ends as an interpreter does up to its module
teardown: non-daemon threads joined, atexit handlers run, output flushed, the exit code; the teardown itself is
skipped (``os._exit``): its garbage collections walk every object the imports made, 1.5-2 CPU-seconds per command
here, and in a fork each object they touch is a page copied. An exception or a signal that ends the command takes
the interpreter's own path. The imported objects are frozen out of the collector before the forks (``gc.freeze``,
what Python's docs advise for a fork server) so that the commands' own collections skip them too. make, DDP's
other ranks and ``FRESH_INTERPRETERS=1`` (conftest.py) still end in a full teardown.

  python forkserver.py SOCKET   # listens on the Unix socket SOCKET; one connection per command (see conftest.Forked)

A request is one JSON line {"argv": [script, *args], "cwd", "env", "log"}; the answer is the child's pid, then,
once it ends, its exit code as subprocess reports it (negative: the signal that ended it). The server ends when the
pytest worker that started it does. With COMMAND_STATS=path in its environment it appends one JSON line per
command there: argv, wall seconds and CPU seconds (user + system, the command and the children it waited for).
"""

import atexit
import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import threading
import time

PRELOAD = (  # the CLI and what its commands import on first use; a module missing here is imported by the command
    "fashion_mnist_lightning.cli",
    "matplotlib.pyplot",
    "optuna",
    "optuna_integration",
    "onnxscript",
    "mlflow",
)


def read_line(connection: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("the test closed the connection mid-request")
        data += chunk
    return data


def serve(path: str) -> dict:
    """Fork one child per request and report its pid and exit code; returns only in a child: its request. When the
    server ends (the pytest worker ended or stopped it), the commands still running end with it."""
    parent, server = os.getppid(), os.getpid()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    waiting: dict[int, tuple[socket.socket, float, dict]] = {}  # pid -> (where its exit code goes, start, request)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the worker's exit: end the commands a failed test left
    try:
        return loop(listener, waiting, parent)
    finally:
        if os.getpid() == server:
            for pid in waiting:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)


def loop(listener: socket.socket, waiting: dict[int, tuple[socket.socket, float, dict]], parent: int) -> dict:
    while os.getppid() == parent:
        if select.select([listener], [], [], 0.05)[0]:
            connection, _ = listener.accept()
            request = json.loads(read_line(connection))
            pid = os.fork()
            if pid == 0:
                listener.close()
                for other in (connection, *(c for c, _, _ in waiting.values())):
                    other.close()
                return request
            connection.sendall(f"{pid}\n".encode())
            waiting[pid] = (connection, time.monotonic(), request)
        while waiting:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
            if pid == 0:
                break
            connection, start, request = waiting.pop(pid)
            connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            connection.close()
            test = request["env"].get("PYTEST_CURRENT_TEST", "")
            record(test, request["argv"], time.monotonic() - start, cpu=usage.ru_utime + usage.ru_stime)
    raise SystemExit(0)  # the pytest worker is gone


def record(test: str, argv: list, wall: float, cpu: float | None = None) -> None:
    """One line of COMMAND_STATS (if set) for a command that ended: its test, argv, wall and, if known, CPU seconds."""
    if os.environ.get("COMMAND_STATS"):
        line = {"test": test, "argv": [str(word) for word in argv], "wall": wall}
        if cpu is not None:
            line["cpu"] = cpu
        with open(os.environ["COMMAND_STATS"], "a") as stats:
            stats.write(json.dumps(line) + "\n")


def become(request: dict) -> None:
    """Turn this fork into the command of ``request``, as an interpreter started on the console script would be."""
    import random

    import numpy as np
    import torch

    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    log, null = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND), os.open(os.devnull, os.O_RDONLY)
    for source, target in ((null, 0), (log, 1), (log, 2)):
        os.dup2(source, target)
    os.close(log)
    os.close(null)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if "OMP_NUM_THREADS" in os.environ:  # read at torch's import in a new interpreter: the fork sets it instead
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    random.seed()  # a new interpreter seeds these from the OS; a fork would share the server's state
    np.random.seed()
    script = request["argv"][0]
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(script)  # what Python puts first for a script
    import runpy

    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exit:
        code = exit.code
    end(code)


def end(code) -> None:
    """End as the interpreter does after ``sys.exit(code)``, up to its module teardown (see the module's doc)."""
    threading._shutdown()  # what the interpreter does first: wait for the threads that are not daemons
    atexit._run_exitfuncs()
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # sys.exit("message"): the message, exit 1
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit((code or 0) & 0xFF)


if __name__ == "__main__":
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    gc.collect()
    gc.freeze()  # what the imports made stays out of every later collection, here and in the forks
    become(serve(sys.argv[1]))
