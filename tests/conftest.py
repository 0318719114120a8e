"""Shared fixtures: a tiny synthetic IDX data set, the real data, and a workspace to run commands as users do.

A command test runs the ``fashion-mnist`` console script in a fresh folder that looks like a clone of this repo
(``configs/`` and ``data/`` linked in), with the flags a user types, the progress bar on, the default callbacks
and logger: only size limits are added. Output goes to a file; every run has a timeout, so a hang fails the
test instead of the CI run.
"""

import atexit
import gzip
import json
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from fashion_mnist_lightning.data import files as data
from fashion_mnist_lightning.runs.precision import cpu_has_bf16
from helpers.forkserver import record as record_command

# `make test` runs the suite in parallel workers (pytest-xdist). Each worker's torch, and every command it starts,
# gets its share of the cores: OpenMP threads that outnumber the cores spin against each other and slow a run
# down several-fold, which would turn the tests' timeouts into noise.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // WORKERS)))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA_DIR = ROOT / "data"
FASHION_MNIST = Path(sys.executable).with_name("fashion-mnist")  # the console script, as a user runs it
TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
SMALL = (
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=12",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.limit_predict_batches=2",
)  # size limits only


def precision_fix(config: str) -> list[str]:
    """What a run's note tells a user of a CPU that emulates bfloat16 (runs/precision.py): for a bf16 recipe
    there, ``--trainer.precision=32-true`` (a step 11x faster); elsewhere nothing. The tests then run what that
    user runs; tests/test_precision.py checks the note itself."""
    recipe = yaml.safe_load((ROOT / "configs" / f"{config}.yaml").read_text()) or {}
    bf16 = str(recipe.get("trainer", {}).get("precision", "")).startswith("bf16")
    return ["--trainer.precision=32-true"] if bf16 and cpu_has_bf16() is False else []


def write_synthetic_idx(folder: Path, n_train: int = 600, n_test: int = 100, gz: bool = True) -> dict:
    """Write the four IDX files of a tiny random data set; return {stem: sha256 of the decompressed file}."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    hashes = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator)
        labels = (torch.arange(n) % 10).to(torch.uint8)
        for stem, tensor in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            raw = data.encode_idx(tensor)
            hashes[stem] = data.sha256(raw)
            if gz:
                with gzip.open(folder / f"{stem}.gz", "wb") as f:
                    f.write(raw)
            else:
                (folder / stem).write_bytes(raw)
    return hashes


@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
    """Hide the Debian system copy so only what a test writes is found."""
    monkeypatch.setattr(data, "SYSTEM_DATA_DIR", tmp_path / "no-system-copy")


@pytest.fixture
def synthetic_dir(tmp_path, monkeypatch, no_system_data) -> Path:
    """A data_dir holding a tiny synthetic Fashion-MNIST whose hashes are the pinned ones for this test."""
    folder = tmp_path / "data"
    monkeypatch.setattr(data, "IDX_SHA256", write_synthetic_idx(folder))
    return folder


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real data set, cached by `make data`. Outside CI a missing copy skips; in CI it fails."""
    try:
        data.prepare(REAL_DATA_DIR, download=False)
    except data.DataError as err:
        if os.environ.get("CI"):
            pytest.fail(f"real Fashion-MNIST is required in CI: {err}")
        pytest.skip(f"real Fashion-MNIST not present ({err}); run `make data`")
    return REAL_DATA_DIR


# ----------------------------------------------------------------------------------------------------
# running commands as a user does

# `fashion-mnist` commands fork from a warm interpreter (tests/helpers/forkserver.py): the same console script, argv,
# folder, environment, output file, exit code and signals, without the ~11 CPU-seconds of imports each new interpreter
# pays here. make, torchrun, DDP's other ranks, the installed-wheel tests and a command whose PYTHON* variables differ
# from the server's (a PYTHONPATH shim: what it imports is the point) still start real interpreters.
# FRESH_INTERPRETERS=1 runs every command in a new one.
FORK = os.environ.get("FRESH_INTERPRETERS", "") in ("", "0")
_server: dict = {}


def forkserver() -> str:
    """The socket of this pytest process's fork server, started on first use (its imports take ~11 s)."""
    if "socket" not in _server:
        folder = Path(tempfile.mkdtemp(prefix="forkserver-"))
        path = folder / "socket"
        with open(folder / "server.log", "w") as log:
            process = subprocess.Popen(
                [sys.executable, str(ROOT / "tests/helpers/forkserver.py"), str(path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        atexit.register(process.terminate)  # the server ends the commands still running (a failed test's)
        deadline = time.monotonic() + 300
        while not path.exists():
            assert process.poll() is None, (folder / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the fork server did not start in 300 s"
            time.sleep(0.05)
        _server["socket"] = str(path)
        _server["imports"] = python_variables(os.environ)
    return _server["socket"]


def python_variables(env: dict) -> dict:
    """The variables that change what an interpreter imports (PYTHONPATH, PYTHONHOME, ...)."""
    return {k: v for k, v in env.items() if k.startswith("PYTHON")}


class Forked:
    """A command forked by the fork server, with the part of subprocess.Popen the tests use: pid, poll, wait
    (raising subprocess.TimeoutExpired), send_signal, terminate, kill, returncode."""

    def __init__(self, argv: list[str], cwd: Path, env: dict, log: Path):
        self.args, self.returncode, self._buffer = argv, None, b""
        self._connection = socket.socket(socket.AF_UNIX)
        self._connection.connect(forkserver())
        request = {"argv": argv, "cwd": str(cwd), "env": env, "log": str(log)}
        self._connection.sendall(json.dumps(request).encode() + b"\n")
        self.pid = int(self._line(timeout=60))

    def _line(self, timeout: float | None) -> bytes | None:
        while b"\n" not in self._buffer:
            if not select.select([self._connection], [], [], timeout)[0]:
                return None
            chunk = self._connection.recv(4096)
            if not chunk:
                raise ConnectionError("the fork server ended; see its server.log")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def poll(self) -> int | None:
        return self.wait(timeout=0) if self.returncode is None else self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            line = self._line(timeout)
            if line is None:
                if timeout == 0:
                    return None
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.returncode = int(line)
            self._connection.close()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def launch(argv: list[str], cwd: Path, env: dict, log: Path) -> "subprocess.Popen | Forked":
    """Start ``argv`` in ``cwd`` with output to ``log``, in its own session; `fashion-mnist` forks (see FORK)."""
    if argv[0] == "fashion-mnist":
        argv = [str(FASHION_MNIST), *argv[1:]]
        if FORK and python_variables(env) == _server.get("imports", python_variables(os.environ)):
            log.write_text("")
            return Forked(argv, cwd, env, log)
    with open(log, "w") as out:
        return subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


@dataclass
class Result:
    returncode: int
    output: str  # stdout and stderr interleaved, as a terminal shows them
    log: Path

    def lines(self, prefix: str) -> list[str]:
        return [line.strip() for line in self.output.splitlines() if line.strip().startswith(prefix)]

    @property
    def error(self) -> str:
        """The one `error:` line; fails the test unless there is exactly one."""
        errors = self.lines("error:")
        assert len(errors) == 1, f"expected one error line, got {errors}:\n{self.output[-2000:]}"
        return errors[0]


class Workspace:
    """A folder that looks like a clone: ``configs/`` and ``data/`` link to the repo's, runs land in it."""

    def __init__(self, path: Path):
        self.path = path
        (path / "configs").symlink_to(ROOT / "configs")
        (path / "data").symlink_to(REAL_DATA_DIR)
        self.count = 0

    def run(
        self, command: str | list[str], *, timeout: float = 240, env: dict | None = None, expect: int | None = 0
    ) -> Result:
        """Run ``command`` (a shell-like string or argv; ``fashion-mnist`` is the console script) and return
        its exit code and output. ``expect`` checks the exit code; every run is checked for tracebacks."""
        process, log = self.start(command, env=env)
        argv, start = process.args, time.monotonic()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the whole group: DDP children included
            process.wait()
            pytest.fail(
                f"{' '.join(argv)} did not finish in {timeout} s (a hang); log: {log}\n"
                f"{log.read_text(errors='replace')[-3000:]}"
            )
        result = Result(process.returncode, log.read_text(errors="replace"), log)
        if not isinstance(process, Forked):  # the fork server records its own, with their CPU seconds
            record_command(os.environ.get("PYTEST_CURRENT_TEST", ""), argv, time.monotonic() - start)
        assert not TRACEBACK.search(result.output), f"{' '.join(argv)} printed a traceback:\n{result.output[-4000:]}"
        if expect is not None:
            assert result.returncode == expect, (
                f"{' '.join(argv)} exited {result.returncode}, expected {expect}:\n{result.output[-3000:]}"
            )
        return result

    def start(self, command: str | list[str], env: dict | None = None) -> tuple["subprocess.Popen | Forked", Path]:
        """Start ``command`` in the background (for signals); output to a log file."""
        argv = command.split() if isinstance(command, str) else list(command)
        self.count += 1
        log = self.path / f"command-{self.count}.log"
        return launch(argv, self.path, {**os.environ, **(env or {})}, log), log

    def runs(self) -> list[Path]:
        """lightning_logs/version_N, by N."""
        folders = (self.path / "lightning_logs").glob("version_*")
        return sorted(folders, key=lambda p: int(p.name.removeprefix("version_")))


@pytest.fixture
def workspace(tmp_path, real_data_dir) -> Workspace:
    return Workspace(tmp_path)


@pytest.fixture
def in_process(workspace, monkeypatch, capsys):
    """Run a `fashion-mnist ...` command line through the same ``main()`` the console script calls, inside this
    test's process, in the workspace: for commands refused before any work, where a new interpreter would only add
    its start-up (about 6 s of imports). Returns a Result with the exit code and stdout + stderr."""
    from fashion_mnist_lightning import cli

    monkeypatch.chdir(workspace.path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() puts the current folder on it

    def run(command: str, expect: int | None = 0) -> Result:
        words = shlex.split(command)
        assert words[0] == "fashion-mnist"
        try:
            code = cli.main(words[1:])
        except SystemExit as done:  # --help, --print_config
            code = done.code or 0
        captured = capsys.readouterr()
        result = Result(code, captured.out + captured.err, workspace.path / "in-process.log")
        assert not TRACEBACK.search(result.output), result.output[-3000:]
        if expect is not None:
            assert code == expect, f"{command} exited {code}, expected {expect}:\n{result.output[-3000:]}"
        return result

    return run


@pytest.fixture(scope="session")
def trained(tmp_path_factory, real_data_dir) -> Path:
    """One finished, tested run of configs/default.yaml (2 short epochs), shared by the tools' tests: its folder."""
    workspace = Workspace(tmp_path_factory.mktemp("trained"))
    workspace.run(
        "fashion-mnist fit --config configs/default.yaml --trainer.max_epochs=2 "
        "--trainer.limit_train_batches=15 --trainer.limit_val_batches=2 --test_after_fit true"
    )
    return workspace.runs()[0]


def last_checkpoint_of(tmp_path_factory, name: str, command: str) -> Path:
    """Run one toy-size fit in a fresh workspace; its last checkpoint."""
    workspace = Workspace(tmp_path_factory.mktemp(name))
    workspace.run(command)
    return workspace.runs()[0] / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def trained_vgg(tmp_path_factory, real_data_dir) -> Path:
    """A short run of VGGNet (BatchNorm, dropout) at toy size: its last checkpoint."""
    return last_checkpoint_of(
        tmp_path_factory,
        "trained-vgg",
        "fashion-mnist fit --config configs/default.yaml --model.network fashion_mnist_lightning.network.VGGNet "
        "--model.network.init_args.width=8 --trainer.max_epochs=1 --trainer.limit_train_batches=10 "
        "--trainer.limit_val_batches=1",
    )


@pytest.fixture(scope="session")
def trained_airnet(tmp_path_factory, real_data_dir) -> Path:
    """A short run of configs/strong.yaml (AirNet, lookahead) at toy size: its last checkpoint."""
    return last_checkpoint_of(
        tmp_path_factory,
        "trained-airnet",
        "fashion-mnist fit --config configs/strong.yaml --model.network.init_args.widths=[8,16,16] "
        "--trainer.max_epochs=1 --trainer.limit_train_batches=12 --trainer.limit_val_batches=1 "
        "--trainer.check_val_every_n_epoch=1 " + " ".join(precision_fix("strong")),
    )


def free_port() -> int:
    """A loopback port nothing listens on (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the command ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            if process is not None:
                os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def progress(log: Path, epoch: int) -> int:
    """The newest batch count the progress bar printed for ``epoch`` in a command's log."""
    counts = re.findall(rf"Epoch {epoch}: +\d+%\|[^|]*\| (\d+)/", log.read_text(errors="replace"))
    return int(counts[-1]) if counts else 0


def finish(process: subprocess.Popen, log: Path, timeout: float = 240) -> Result:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"the command did not finish in {timeout} s (a hang); log: {log}")
    result = Result(process.returncode, log.read_text(errors="replace"), log)
    assert not TRACEBACK.search(result.output), f"printed a traceback:\n{result.output[-4000:]}"
    return result


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=True)["state_dict"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def epoch_scalars(run: Path) -> dict[str, list[float]]:
    """A run's per-epoch curves from its TensorBoard events: what a bit-identical resume must reproduce."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in ("train/acc", "train/loss_epoch", "val/acc")}


# `make test` gives whole files to workers (pytest-xdist's loadfile) in collection order: the longest files go first,
# so the last minutes are not one worker finishing a long file alone (seconds summed per file, 2026-12-02, after the
# fork server's fast exit)
LONGEST_FIRST = (
    "test_readme.py",  # 744 s
    "test_sweep.py",  # 347 s
    "test_cli.py",  # 302 s
    "test_ddp.py",  # 282 s
    "test_configs_ddp.py",  # 278 s
    "test_configs.py",  # 235 s
    "test_configs_strong.py",  # 166 s
    "test_resume.py",  # 160 s
    "test_slurm.py",  # ~150 s (new in #28: one Slurm cluster for the file, jobs one after another)
    "test_finetune.py",  # ~150 s (new in #27: not yet measured in a whole run)
    "test_gpu_check.py",  # 149 s
    "test_strong.py",  # 99 s
    "test_serve.py",  # 93 s
    "test_image_folder.py",  # 85 s
    "test_backbones.py",  # ~60 s (new in #27)
    "test_loggers.py",  # 79 s
)


def pytest_collection_modifyitems(items: list) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort: each file keeps its order
