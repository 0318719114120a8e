"""A warm interpreter for the tests' ``fashion-mnist`` commands: the imports are paid once, each command is a fork.

An interpreter that starts ``fashion-mnist`` spends ~11 CPU-seconds here importing torch, Lightning, torchvision and
torch._dynamo before ``main()`` runs; the suite runs ~275 commands. This process imports them once (nothing else: no
tensor op, no thread pool, so a fork is safe), then for each request forks a child that becomes the command: its own
session (the tests' signals and ``killpg`` reach it and its DDP children), the log file as stdout and stderr, the
command's folder and environment, fresh random seeds, and the console script itself run as ``__main__`` with the
user's argv, ending in the interpreter's own shutdown (threads joined, atexit handlers, exit code or signal).

  python forkserver.py SOCKET   # listens on the Unix socket SOCKET; one connection per command (see conftest.Forked)

A request is one JSON line {"argv": [script, *args], "cwd", "env", "log"}; the answer is the child's pid, then,
once it ends, its exit code as subprocess reports it (negative: the signal that ended it). The server ends when the
pytest worker that started it does.
"""

import contextlib
import importlib
import json
import os
import select
import signal
import socket
import sys

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
    waiting: dict[int, socket.socket] = {}  # pid -> the connection its exit code goes to
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the worker's exit: end the commands a failed test left
    try:
        return loop(listener, waiting, parent)
    finally:
        if os.getpid() == server:
            for pid in waiting:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)


def loop(listener: socket.socket, waiting: dict[int, socket.socket], parent: int) -> dict:
    while os.getppid() == parent:
        if select.select([listener], [], [], 0.05)[0]:
            connection, _ = listener.accept()
            request = json.loads(read_line(connection))
            pid = os.fork()
            if pid == 0:
                listener.close()
                for other in (connection, *waiting.values()):
                    other.close()
                return request
            connection.sendall(f"{pid}\n".encode())
            waiting[pid] = connection
        while waiting:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            connection = waiting.pop(pid)
            connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            connection.close()
    raise SystemExit(0)  # the pytest worker is gone


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

    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    become(serve(sys.argv[1]))
