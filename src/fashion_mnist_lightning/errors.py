"""Mistakes a user can fix: one exception family, one line on stderr, one way to print it.

Every command (LightningCLI's and the tools) raises a ``UserError`` subclass for a mistake and ``main`` prints it
once as ``error: <one line naming the problem and the fix>``, exit 2. For jsonargparse's own messages
``explain`` adds a did-you-mean, built from the parser's valid keys and the keys the user actually typed.
"""

import difflib
import sys
from pathlib import Path

import yaml


class UserError(Exception):
    """A mistake the user can fix, stated in one line with the fix."""


class ConfigError(UserError, ValueError):
    """A config or command-line mistake (typo, wrong type, unknown class, a value a class rejects)."""


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def fail(error: BaseException | str, code: int) -> int:
    print(f"\nerror: {first_line(error) if isinstance(error, BaseException) else error}", file=sys.stderr, flush=True)
    return code


def explain(error: BaseException, words: list[str], valid: set[str]) -> str:
    """jsonargparse's message on one line, with the closest valid key for a key of the user's that it names."""
    message = " ".join(str(error).split())
    named = [key for key in user_keys(words) if key not in valid and key.rsplit(".", 1)[-1] in message]
    close = difflib.get_close_matches(named[0], sorted(valid), n=1, cutoff=0.6) if named else []
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{message[:400]}{hint}; `fashion-mnist fit --help` lists the valid keys and types"


def user_keys(words: list[str]) -> list[str]:
    """The dotted keys a command line sets: its --flags and the keys in its --config files."""
    keys = []
    for i, word in enumerate(words):
        if word.startswith("--config="):
            keys += config_keys(Path(word.removeprefix("--config=")))
        elif word == "--config" and i + 1 < len(words):
            keys += config_keys(Path(words[i + 1]))
        elif word.startswith("--"):
            keys.append(word[2:].split("=", 1)[0])
    return keys


def config_keys(path: Path, tree: dict | None = None, prefix: str = "") -> list[str]:
    if tree is None:
        try:
            tree = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            return []
    keys = []
    for key, value in (tree or {}).items() if isinstance(tree, dict) else ():
        name = f"{prefix}{str(key).removesuffix('+')}"  # callbacks+: appends to a list
        nested = isinstance(value, dict) and "class_path" not in value
        keys += config_keys(path, value, f"{name}.") if nested else [name]
    return keys
