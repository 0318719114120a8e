"""The shipped configs as package data: base.yaml (read before every --config) and the recipes, found with
importlib.resources in a wheel as in a checkout (the checkout's top-level ``configs`` links here)."""

from importlib import resources
from pathlib import Path

CONFIGS = resources.files(__name__)
BASE = CONFIGS / "base.yaml"


def shipped(value: str) -> str:
    """``strong`` (no such file in the current folder) -> the installed strong.yaml; anything else as given."""
    name = value.removesuffix(".yaml")
    if Path(value).exists() or not (CONFIGS / f"{name}.yaml").is_file():
        return value
    return str(CONFIGS / f"{name}.yaml")


def with_shipped(words: list[str]) -> list[str]:
    """A command line with every ``--config NAME`` of a shipped recipe replaced by its file."""
    out = []
    for i, word in enumerate(words):
        if word.startswith("--config="):
            word = "--config=" + shipped(word.removeprefix("--config="))
        elif i and words[i - 1] == "--config":
            word = shipped(word)
        out.append(word)
    return out
