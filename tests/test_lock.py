"""requirements.lock pins every package `make install` installs, and agrees with pyproject.toml."""

import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def locked(lock: Path) -> dict[str, Version]:
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", lock.read_text(), re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower(): Version(version) for name, version in pins}


def wanted() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += [Requirement(r) for r in extra if not r.startswith(project["name"])]
    return requirements


def assert_lock_matches(lock: Path) -> None:
    """Every dependency of pyproject.toml (all extras) is pinned in ``lock`` to a version its specifier allows."""
    pins = locked(lock)
    for requirement in wanted():
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{requirement.name} is in pyproject.toml but not in {lock.name}: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock.name} pins {requirement.name}=={pins[name]}, pyproject.toml asks {requirement.specifier}: "
            "run `make lock`"
        )


def test_the_lock_agrees_with_pyproject():
    assert_lock_matches(ROOT / "requirements.lock")


def test_the_lock_pins_every_package_exactly():
    lines = [
        line
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert all("==" in line for line in lines), [line for line in lines if "==" not in line][:3]
    assert locked(ROOT / "requirements.lock")["lightning"] >= Version("2.6.4")  # 2.6.2/2.6.3 were compromised
