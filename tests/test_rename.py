"""`make rename NAME=my_project` (README "Make it yours" (e)) in a copy of the template: afterwards nothing is
called fashion_mnist_lightning, the renamed package imports, and its command trains."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REAL_DATA_DIR, ROOT, TRACEBACK

COMMAND = "make rename NAME=my_project"  # as README shows it


def git(folder, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.fixture
def copy(tmp_path):
    """The template as a user's fresh clone has it: the files git tracks (and new ones not yet committed)."""
    listing = git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard").splitlines()
    for name in listing:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_symlink():  # configs/ links to the package's configs
            (tmp_path / name).symlink_to(os.readlink(ROOT / name))
        elif (ROOT / name).is_file():
            shutil.copy2(ROOT / name, tmp_path / name)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    return tmp_path


def test_make_rename_renames_package_distribution_and_command_and_the_result_trains(copy):
    done = subprocess.run(COMMAND.split(), cwd=copy, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "src/my_project" in done.stdout
    assert not (copy / "src/fashion_mnist_lightning").exists() and (copy / "src/my_project/cli.py").is_file()
    assert (copy / "configs" / "default.yaml").is_file()  # the link follows the package
    files = [p for p in copy.rglob("*") if p.is_file() and ".git" not in p.relative_to(copy).parts]
    left = [str(p.relative_to(copy)) for p in files if b"fashion_mnist_lightning" in p.read_bytes()]
    assert left == ["scripts/rename.py"], left  # only the tool itself still knows the old name
    pyproject = (copy / "pyproject.toml").read_text()
    assert 'name = "my-project"' in pyproject and 'my-project = "my_project.cli:main"' in pyproject
    assert "apt-get install dataset-fashion-mnist" in (copy / "README.md").read_text()  # the data set keeps its name
    assert "my-project fit --config configs/default.yaml" in (copy / "README.md").read_text()

    (copy / "data").mkdir()
    (copy / "data/fashion-mnist-uint8.pt").symlink_to(REAL_DATA_DIR / "fashion-mnist-uint8.pt")
    log = copy / "fit.log"
    with open(log, "w") as out:
        fit = subprocess.run(
            [sys.executable, "-m", "my_project.cli", "fit", "--config", "configs/fast.yaml", "--trainer.max_epochs=1",
             "--trainer.limit_train_batches=5", "--trainer.limit_val_batches=1"],
            cwd=copy, stdout=out, stderr=subprocess.STDOUT, timeout=240,
            env={"PYTHONPATH": str(copy / "src"), "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    output = log.read_text()
    assert fit.returncode == 0 and not TRACEBACK.search(output), output[-2000:]
    saved = (copy / "lightning_logs/version_0/config.yaml").read_text()
    assert "my_project.datamodule.FashionMNISTDataModule" in saved and "fashion_mnist_lightning" not in saved

    again = subprocess.run(COMMAND.split(), cwd=copy, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "renamed already" in again.stderr  # a second run changes nothing
