"""Make the template your project: rename the import package, the distribution and the command everywhere.

    make rename NAME=my_project        # or: python scripts/rename.py my_project

``fashion_mnist_lightning`` becomes ``my_project`` (src/ is moved), ``fashion-mnist-lightning`` and the console
script ``fashion-mnist`` become ``my-project``, in every file git tracks (code, configs, tests, README, Makefile,
CI). Names of the data set itself (the Debian package dataset-fashion-mnist, its folder, the cache file) stay.
Run it on a clean work tree: it changes files in place; `git diff` shows what it did, `git checkout .` undoes it.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE, DISTRIBUTION, COMMAND = "fashion_mnist_lightning", "fashion-mnist-lightning", "fashion-mnist"
# the command, but not the data set's own names: dataset-fashion-mnist, .../fashion-mnist/, fashion-mnist-uint8.pt
COMMAND_WORD = re.compile(r"(?<![\w.-])(?<!datasets/)fashion-mnist(?![\w/.-])")


def rename_text(text: str, package: str) -> str:
    dashed = package.replace("_", "-")
    text = text.replace(PACKAGE, package).replace(DISTRIBUTION, dashed)
    return COMMAND_WORD.sub(dashed, text)


def tracked_files(root: Path) -> list[Path]:
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    return [root / name for name in listing.decode().split("\0") if name]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not re.fullmatch(r"[a-z][a-z0-9_]*", args[0]) or args[0] == PACKAGE:
        print("usage: make rename NAME=my_project (a new Python package name: lower case, digits, _)", file=sys.stderr)
        return 2
    package, source = args[0], ROOT / "src" / PACKAGE
    if not source.is_dir():
        print(f"error: {source} does not exist: this copy was renamed already", file=sys.stderr)
        return 2
    changed = 0
    for path in tracked_files(ROOT):
        if path.is_symlink() and PACKAGE in os.readlink(path):  # configs -> src/<package>/configs
            target = os.readlink(path).replace(PACKAGE, package)
            path.unlink()
            path.symlink_to(target)
            continue
        if path.resolve() == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary files (images) carry no names
        renamed = rename_text(text, package)
        if renamed != text:
            path.write_text(renamed, encoding="utf-8")
            changed += 1
    source.rename(ROOT / "src" / package)
    print(f"renamed {PACKAGE} -> {package} in {changed} files and moved src/{PACKAGE} to src/{package};")
    print(f"the command is now `{package.replace('_', '-')}`; `make install` (or make train) reinstalls it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
