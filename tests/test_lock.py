"""requirements.lock pins every package `make install` installs, and agrees with pyproject.toml."""

import re
import tomllib
from pathlib import Path

import pytest
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
        if line.strip() and not line.lstrip().startswith(("#", "--hash"))
    ]
    assert all("==" in line for line in lines), [line for line in lines if "==" not in line][:3]
    assert locked(ROOT / "requirements.lock")["lightning"] >= Version("2.6.4")  # 2.6.2/2.6.3 were compromised


def test_every_pinned_package_carries_its_file_hashes_and_make_install_requires_them():
    text = (ROOT / "requirements.lock").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text)  # one entry per package: the pin and its --hash lines
    pinned = [entry for entry in entries if re.match(r"[A-Za-z0-9_.\-]+==", entry)]
    assert len(pinned) > 100 and all("--hash=sha256:" in entry for entry in pinned)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install .*--require-hashes -r \$\(LOCK\)", makefile)


def wheel(folder: Path, name: str = "vetted", version: str = "1.0") -> Path:
    """A minimal pure-Python wheel, written by hand (no build backend, no index)."""
    import zipfile

    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": "ANSWER = 42\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in files.items():
            archive.writestr(member, content)
        archive.writestr(f"{info}/RECORD", "".join(f"{member},,\n" for member in [*files, f"{info}/RECORD"]))
    return path


def test_a_file_whose_hash_differs_from_the_lock_is_refused(tmp_path):
    """What `make install` does with the lock, offline: a wheel with the pinned version but other bytes (a swapped
    release) does not install; the genuine one does."""
    import hashlib
    import subprocess
    import sys

    index = tmp_path / "index"
    index.mkdir()
    genuine = hashlib.sha256(wheel(index).read_bytes()).hexdigest()

    def install(digest: str) -> subprocess.CompletedProcess:
        lock = tmp_path / "lock.txt"
        lock.write_text(f"vetted==1.0 \\\n    --hash=sha256:{digest}\n")
        command = [sys.executable, "-m", "pip", "install", "--require-hashes", "--no-index", "--find-links", index,
                   "--target", tmp_path / "site", "--no-cache-dir", "-r", lock]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    swapped = install("0" * 64)
    assert swapped.returncode != 0 and "DO NOT MATCH THE HASHES" in swapped.stderr
    assert not (tmp_path / "site" / "vetted").exists()
    assert install(genuine).returncode == 0 and (tmp_path / "site/vetted/__init__.py").is_file()


def stated_pythons() -> list[str]:
    """The minor versions requires-python admits up to the newest CI tests (.github/workflows/ci.yml's matrix)."""
    workflow = (ROOT / ".github/workflows/ci.yml").read_text()
    return re.search(r"python: \[(.*?)\]", workflow).group(1).replace('"', "").replace(" ", "").split(",")


def test_requires_python_is_what_ci_tests():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floor = re.search(r">=\s*(3\.\d+)", project["requires-python"]).group(1)
    pythons = stated_pythons()
    assert pythons[0] == floor and pythons == [f"3.{m}" for m in range(11, 11 + len(pythons))]


@pytest.mark.parametrize("python", stated_pythons())
def test_the_lock_resolves_for_every_stated_python(python, tmp_path):
    """Every extra resolves on every Python CI runs (uv against the package index, for CI's Linux)."""
    import subprocess
    import sys

    uv = Path(sys.executable).with_name("uv")
    for platform in ("x86_64-manylinux_2_28",):
        done = subprocess.run(
            [uv, "pip", "compile", ROOT / "pyproject.toml", "--all-extras", "--python-version", python,
             "--python-platform", platform, "--no-header", "--quiet", "-o", tmp_path / "resolved.txt"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-1500:]
        assert_lock_matches(tmp_path / "resolved.txt")
