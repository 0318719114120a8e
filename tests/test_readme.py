"""The README is a test: every command in its ```bash blocks, and every `make help` target, runs here as written in
a folder that looks like a fresh clone, in README order, progress bar on, with only size limits added (fewer
epochs and batches). A command added to the README without a way to run it here fails
`test_every_readme_command_is_covered`."""

import os
import re
import shlex
import shutil
import signal
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FASHION_MNIST, REAL_DATA_DIR, ROOT, Workspace, free_port, precision_fix
from fashion_mnist_lightning.data.files import CACHE_NAME, load_cache
from helpers.photos import write_photo_folder
from helpers.weights import offline_hub
from test_lock import assert_lock_matches

README = ROOT / "README.md"
FIT_LIMITS = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=12",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
]
EVAL_LIMITS = ["--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2", "--trainer.limit_predict_batches=2"]
MAKE_LIMITS = {
    "train": FIT_LIMITS,
    "predict": EVAL_LIMITS,
    "bench": ["--smoke"],
    "bench-serve": ["--rounds=1", "--requests=5"],
}
SERVERS = {"tensorboard": "/data/runs", "dashboard": "/api/studies", "serve": "/health"}  # make target -> a URL path
ELSEWHERE_LINES = {"curl": "tests/test_serve.py"}  # README "Serving"'s curl lines: run as written against a server
THE_SUITE = {"test", "test-fast"}  # the targets that run this very suite: never from inside it
# a README `make` runs as typed in a fresh shell: not with the variables of the `make test ARGS=...` that runs this
FRESH_MAKE = {"MAKEFLAGS": "", "MAKEOVERRIDES": "", "MAKELEVEL": "", "ARGS": ""}
ELSEWHERE = {"rename": "tests/test_rename.py"}  # targets that change the clone itself: run as written in a copy there
# `make test` distributes whole files (pytest-xdist's loadfile): these tests run on one worker, in README order,
# in one clone. (loadgroup's xdist_group mark does not hold with pytest 9 and xdist 3.8: the group gets split.)


def readme_commands() -> list[str]:
    """Every command line in the README's ```bash blocks, comments stripped, in order."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.DOTALL)
    lines = (line.split(" #")[0].strip() for block in blocks for line in block.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def readme_files() -> dict[str, str]:
    """The files the README asks a user to write: ```python blocks whose first line is `# <name>.py`."""
    blocks = re.findall(r"```python\n# (\S+\.py)\n(.*?)```", README.read_text(), re.DOTALL)
    return dict(blocks)


def make_targets() -> list[str]:
    targets = re.findall(r"^([a-z][a-z-]*):.*## ", (ROOT / "Makefile").read_text(), re.MULTILINE)
    return sorted(set(targets))


class Clone(Workspace):
    """Like a fresh clone: the repo's files copied (mtimes kept, so make sees the venv as up to date), the
    environment and the data linked."""

    def __init__(self, path: Path):
        self.path, self.count = path, 0
        for name in ("Makefile", "pyproject.toml", "requirements.lock", "README.md"):
            shutil.copy2(ROOT / name, path / name)
        for name in ("src", "benchmarks", ".ci"):
            shutil.copytree(ROOT / name, path / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        for name in (".venv", "configs", "tests"):
            (path / name).symlink_to(ROOT / name)
        (path / "data").mkdir()  # the clone's own: caches of the user's photos land here
        (path / "data" / CACHE_NAME).symlink_to(REAL_DATA_DIR / CACHE_NAME)
        write_photo_folder(path / "photos", per_class=30, size=(40, 48), fmt="mixed")  # README "Make it yours"
        self.hub = offline_hub(path / "hf", "resnet18.a1_in1k")  # finetune.yaml's weights, as a first online run
        # leaves them in the Hugging Face cache; every command runs with this cache and the hub offline
        for name, text in readme_files().items():
            (path / name).write_text(text)
        stamp = ROOT / ".venv/.installed"
        assert stamp.exists() and all(
            stamp.stat().st_mtime >= (ROOT / name).stat().st_mtime for name in ("pyproject.toml", "requirements.lock")
        ), "run `make install` first"
        images = load_cache(REAL_DATA_DIR)["test_images"][:6]
        (path / "my_photos").mkdir()
        for i, image in enumerate(images):  # a few of the user's own pictures: dark on white, bigger, in colour
            picture = np.kron(255 - image.numpy(), np.ones((3, 3), dtype=np.uint8))
            Image.fromarray(np.stack([picture] * 3, axis=-1)).save(path / "my_photos" / f"photo_{i}.jpg")


@pytest.fixture(scope="module")
def clone(tmp_path_factory, real_data_dir) -> Clone:
    return Clone(tmp_path_factory.mktemp("clone"))


def with_limits(command: str) -> tuple[dict[str, str], list[str]]:
    """(environment, argv) of a README command with the size limits a test may add. The user's own flags stay;
    a limit is only added where the command does not set that key itself."""
    words = shlex.split(command)
    env = dict(w.split("=", 1) for w in words if re.fullmatch(r"[A-Z_]+=\S*", w) and words.index(w) == 0)
    words = words[len(env) :]

    def missing(limits: list[str], given: list[str]) -> list[str]:
        return [flag for flag in limits if not any(w.startswith(flag.split("=")[0]) for w in given)]

    if words[0] in ("fashion-mnist", "torchrun"):
        sub = next((w for w in words if w in ("fit", "validate", "test", "predict")), None)
        if sub is None or "--print_config" in words or "--help" in words:
            return env, words
        return env, words + missing(FIT_LIMITS if sub == "fit" else EVAL_LIMITS, words)
    if words[0] == "make":
        extra = MAKE_LIMITS.get(words[1], [])
        if words[1] == "train":  # and what the run's note tells a user whose CPU emulates the recipe's bf16
            config = next((w.split("=", 1)[1] for w in words if w.startswith("CONFIG=")), "configs/default.yaml")
            extra = extra + precision_fix(Path(config).stem)
        if extra:
            user = shlex.split(next((w.split("=", 1)[1] for w in words if w.startswith("ARGS=")), ""))
            words = [w for w in words if not w.startswith("ARGS=")] + ["ARGS=" + " ".join(user + missing(extra, user))]
    return env, words


def serve(clone: Clone, argv: list[str], path: str, port: int) -> None:
    """Start a server command, wait until http://localhost:port{path} answers, then stop it."""
    process, log = clone.start(argv, env=FRESH_MAKE)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"{' '.join(argv)} exited: {log.read_text()[-1500:]}"
            try:
                with urllib.request.urlopen(f"http://localhost:{port}{path}", timeout=5) as response:
                    assert response.status == 200
                    return
            except OSError:
                assert time.monotonic() < deadline, f"{' '.join(argv)} did not serve within 120 s"
                time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def run_command(clone: Clone, command: str) -> None:
    words = shlex.split(command)
    if words[0] == "make" and words[1] in THE_SUITE:
        return  # this suite is what `make test` runs (see test_the_suite_targets_are_what_ci_runs)
    if words[0] == "make" and words[1] in ELSEWHERE:
        assert command in (ROOT / ELSEWHERE[words[1]]).read_text()  # run there, as written, in a copy of its own
        return
    if words[0] in ELSEWHERE_LINES:
        assert "README.md" in (ROOT / ELSEWHERE_LINES[words[0]]).read_text()  # that test reads them from here
        return
    if words[0] == "make" and words[1] in SERVERS:
        port = free_port()
        serve(clone, [*words, f"PORT={port}"], SERVERS[words[1]], port)
        return
    if words[:2] == ["fashion-mnist", "serve"]:
        port = free_port()
        serve(clone, [*words, "--port", str(port)], "/health", port)
        return
    env, argv = with_limits(command)
    if argv[0] == "torchrun":
        argv[0] = str(FASHION_MNIST.with_name("torchrun"))
    lock = clone.path / "requirements.lock"
    stamp = lock.stat().st_mtime
    result = clone.run(argv, env={**env, **FRESH_MAKE, **clone.hub}, timeout=900)
    if words[:2] == ["make", "lock"]:
        assert_lock_matches(lock)  # a fresh lock from the index: still what pyproject.toml asks for
        os.utime(lock, (stamp, stamp))  # else make would see a newer lock and reinstall the shared venv
    check_promise(clone, words, result.output)


def check_promise(clone: Clone, words: list[str], output: str) -> None:
    """What the README promises for some commands, beyond exit 0 and no traceback."""
    if words[:2] == ["fashion-mnist", "fit"] and any(w.startswith(("my_", "photos")) or "metrics" in w for w in words):
        run = clone.runs()[-1]  # README "Make it yours": the run trained what the command named
        saved = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
        if "my_net.TinyNet" in words:
            assert saved["hyper_parameters"]["network"]["class_path"] == "my_net.TinyNet"
        if "my_data.NoisySquares" in words:
            assert saved["hyper_parameters"]["class_names"] == ["dark", "light"]
        if "photos" in words:
            assert saved["hyper_parameters"]["class_names"] == ["circle", "square", "triangle"]
        if any("f1_macro" in w for w in words):
            assert re.search(r"^test f1_macro: 0\.\d{4}$", output, re.MULTILINE)
    if words[:2] == ["make", "train"]:
        assert "test accuracy:" in output and "best checkpoint:" in output
    if words[:2] == ["make", "help"]:
        assert all(f"make {target}" in output for target in make_targets())
    if "--help" in words:
        assert "--trainer.max_epochs" in output and "--model.optimizer" in output
    if "--print_config" in words:
        assert "AtomicCheckpointIO" in output and "ConfusionMatrixLogger" in output
    if "predict" in words and any("predict_dir" in w or "IMAGES=" in w for w in words):
        newest = max(
            clone.path.glob("lightning_logs/version_*/evaluations/predict_*/predictions.csv"),
            key=lambda p: p.stat().st_mtime,
        )
        assert sum(1 for _ in newest.open()) == 1 + 6  # a header and one row per photo
    if words[:2] == ["make", "clean"]:
        assert not list((clone.path / "src").glob("*.egg-info"))


COMMANDS = readme_commands()


def test_every_readme_command_is_covered():
    for command in COMMANDS:
        head = shlex.split(command)
        head = [w for w in head if not re.fullmatch(r"[A-Z_]+=\S*", w)][0]
        assert head in ("fashion-mnist", "make", "torchrun", *ELSEWHERE_LINES), f"no runner for: {command}"


def test_every_make_target_is_in_the_readme():
    shown = {shlex.split(c)[1] for c in COMMANDS if c.startswith("make ")} | {"help"}
    missing = [t for t in make_targets() if t not in shown]
    assert not missing, f"make targets the README does not show (so no test runs them): {missing}"


def test_the_files_the_readme_asks_for_are_found():
    assert set(readme_files()) == {"my_net.py", "my_data.py"}


def test_the_suite_targets_are_what_ci_runs():
    assert "make test" in (ROOT / ".ci/run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:.*\n\t\$\(PY\) -m pytest", makefile, re.MULTILINE)
    assert re.search(r"^test:.*\n\t\$\(PY\) -m pytest .*--dist loadfile", makefile, re.MULTILINE)  # README order
    assert re.search(r"^test-fast:.*\n\t\$\(PY\) -m pytest .*-m \"not slow\"", makefile, re.MULTILINE)
    assert "make test" in COMMANDS


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command(clone, command):
    run_command(clone, command)
