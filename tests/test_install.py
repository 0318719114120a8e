"""Installed anywhere, the same run: a wheel of the project, installed outside the checkout (pip install --target),
run from a folder that is not the checkout, writes the same run folder as the checkout does; the shipped recipes
are reachable by name; and the oldest Lightning the project admits runs the CLI as the locked one does."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SMALL, TRACEBACK, Workspace

LOWEST_LIGHTNING = "2.6.4"  # pyproject.toml's floor (2.6.2 and 2.6.3 were compromised releases)


def run(argv: list, cwd: Path, env: dict, log: Path, timeout: float = 300) -> str:
    with open(log, "w") as out:
        done = subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    output = log.read_text(errors="replace")
    assert done.returncode == 0 and not TRACEBACK.search(output), output[-3000:]
    return output


def run_files(run_folder: Path) -> set[str]:
    """What a run folder holds, by kind: event files and checkpoints by pattern, the rest by name."""
    names = set()
    for path in run_folder.rglob("*"):
        relative = str(path.relative_to(run_folder))
        if path.name.startswith("events.out.tfevents"):
            relative = str(path.parent.relative_to(run_folder) / "events")
        elif path.suffix == ".ckpt" and path.name != "last.ckpt":
            relative = "checkpoints/<best>.ckpt"
        names.add(relative)
    return names


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project as a wheel, installed with pip into a folder of its own (its dependencies: the venv's)."""
    folder = tmp_path_factory.mktemp("installed")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", folder / "dist", ROOT]
    subprocess.run(build, check=True, capture_output=True, timeout=300, cwd=folder)
    [wheel] = (folder / "dist").glob("fashion_mnist_lightning-*.whl")
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", folder / "site", wheel]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    return folder / "site"


@pytest.mark.slow
def test_a_wheel_run_from_another_folder_writes_the_same_run_as_the_checkout(installed, tmp_path, real_data_dir):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data").mkdir(parents=True)  # no configs/ here: the recipes come from the installed package
    (elsewhere / "data" / "fashion-mnist-uint8.pt").symlink_to(real_data_dir / "fashion-mnist-uint8.pt")
    env = {**os.environ, "PYTHONPATH": str(installed)}  # the wheel's package first, not the checkout's
    where = "import fashion_mnist_lightning as p, sys; print(p.__file__); sys.exit(0)"
    assert run([sys.executable, "-c", where], elsewhere, env, tmp_path / "where.log").startswith(str(installed))
    fit = [sys.executable, "-m", "fashion_mnist_lightning.cli", "fit", "--config", "default", *SMALL]
    fit += ["--test_after_fit", "true"]
    output = run(fit, elsewhere, env, tmp_path / "wheel.log")
    assert "test accuracy:" in output
    [wheel_run] = (elsewhere / "lightning_logs").glob("version_*")

    (tmp_path / "checkout").mkdir()
    checkout = Workspace(tmp_path / "checkout")
    checkout.run(f"fashion-mnist fit --config configs/default.yaml {' '.join(SMALL)} --test_after_fit true")
    [checkout_run] = checkout.runs()
    assert run_files(wheel_run) == run_files(checkout_run)
    assert {"config.yaml", "checkpoints/last.ckpt", "checkpoints/<best>.ckpt", "events"} <= run_files(wheel_run)
    assert "ConfusionMatrixLogger" in (wheel_run / "config.yaml").read_text()  # base.yaml was read, not skipped


def test_every_shipped_config_is_package_data_and_the_checkout_links_it():
    package = ROOT / "src" / "fashion_mnist_lightning" / "configs"
    assert (ROOT / "configs").resolve() == package.resolve()
    import tomllib

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = globs["fashion_mnist_lightning.configs"]
    shipped = {p.relative_to(package) for pattern in patterns for p in package.glob(pattern)}
    assert shipped == {p.relative_to(package) for p in package.rglob("*.yaml")}


def test_a_missing_shared_setup_is_an_error_not_a_silent_default(workspace, monkeypatch, tmp_path):
    """The package without base.yaml (a broken install): one line, exit 2, nothing trained without the logger."""
    from fashion_mnist_lightning import cli, configs

    monkeypatch.setattr(configs, "BASE", tmp_path / "missing" / "base.yaml")
    monkeypatch.chdir(workspace.path)
    assert cli.main(["fit", "--config", "configs/fast.yaml"]) == 2
    assert not (workspace.path / "lightning_logs").exists()


@pytest.mark.slow
def test_the_lowest_lightning_the_project_admits_runs_the_cli(tmp_path, workspace):
    """Lightning 2.6.4 (the floor) beside the locked one: the same fit, progress bar on, through every hook."""
    lightning = tmp_path / "lightning-lowest"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", lightning, f"lightning=={LOWEST_LIGHTNING}"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    env = {"PYTHONPATH": str(lightning)}
    check = "import lightning; print(lightning.__version__)"
    assert workspace.run([sys.executable, "-c", check], env=env).output.strip() == LOWEST_LIGHTNING
    workspace.run(f"fashion-mnist fit --config configs/fast.yaml {' '.join(SMALL)} --test_after_fit true", env=env)
    assert (workspace.runs()[0] / "checkpoints" / "last.ckpt").is_file()
