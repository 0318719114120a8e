"""Mistakes a user can fix: one exception family, one line on stderr, one way to print it.

Every command (LightningCLI's and the tools) raises a ``UserError`` subclass for a mistake and ``main`` prints it
once as ``error: <one line naming the problem and the fix>``, exit 2. For jsonargparse's own messages
``explain`` adds a did-you-mean, built from the parser's valid keys and the keys the user actually typed.
"""

import difflib
import importlib
import inspect
import re
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


def fail(error: BaseException | str, code: int, rank: int = 0) -> int:
    """Print ``error`` as the one ``error:`` line (another DDP process's own copy names its rank) and return
    ``code``."""
    label = "error" if rank == 0 else f"error (process {rank})"
    print(f"\n{label}: {first_line(error) if isinstance(error, BaseException) else error}", file=sys.stderr, flush=True)
    return code


def explain(error: BaseException, words: list[str], valid: set[str]) -> str:
    """jsonargparse's message on one line. A value of the wrong type says which key and what it takes; a key that
    is not there gets the closest valid key (among the chosen class's own arguments for a class_path's key)."""
    message = " ".join(str(error).split())
    typed = user_keys(words)  # reads the --config files: once
    unknown = re.search(r"Option '([^']+)' is not accepted", message) or UNKNOWN.search(message)
    if unknown is None and (problem := wrong_value(message, typed)):
        return f"{problem}; `fashion-mnist fit --help` lists the keys and their types"
    valid = valid | chosen_class_keys(message)
    if unknown is not None and unknown.lastindex and (section := re.search(r'Parser key "([^"]+)"', message)):
        key = f"{section.group(1)}.{unknown.group(1)}"  # an argument the chosen class does not have, as typed
        key = next((k for k in typed if k.replace(".init_args.", ".") == key), key)
        close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"--{key} is not an argument of the chosen class{hint}; `fashion-mnist fit --help` lists the keys"
    named = [key for key in typed if key not in valid and key.rsplit(".", 1)[-1] in message]
    close = difflib.get_close_matches(named[0], sorted(valid), n=1, cutoff=0.6) if named else []
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{message[:400]}{hint}; `fashion-mnist fit --help` lists the valid keys and types"


UNKNOWN = re.compile(r"Unrecognized arguments|No action for key|is not expected|unexpected keyword")


def wrong_value(message: str, typed: list[str]) -> str | None:
    """'--data.channels: expected int, got 'abc'' from jsonargparse's nested 'Parser key ...: Expected a <class
    'int'>. Got value: abc', or None when the message is not about a value's type."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    if not keys:
        return None
    key = keys[0]
    for inner in keys[1:]:  # a class_path's own argument: data + channels -> data.channels
        key = inner if inner.startswith(key + ".") else f"{key}.{inner}"
    key = next((k for k in typed if k.replace(".init_args.", ".") == key.replace(".init_args.", ".")), key)
    tail = message[message.rindex(f'Parser key "{keys[-1]}"') :]
    missing = re.search(r"Expected a path but (\S+) either not accessible or invalid", tail)
    if missing and "." in missing.group(1):  # a class path that does not import
        return f"--{key}: {missing.group(1)} cannot be imported (no such module or class); check the class path"
    end = r"(?= - | Got value| Given value|$)"
    values = re.findall(rf"Given value: (.+?){end}", tail) + re.findall(rf"Got value: (.+?){end}", tail)
    given = next((v.strip().rstrip(".") for v in values if not v.startswith(("NestedArg(", "Namespace("))), None)
    if given is None:
        return None
    if "Subtypes: [" in tail:  # a Union: its members, brackets balanced (tuple[int, int] has its own)
        start, depth = tail.index("Subtypes: [") + len("Subtypes: ["), 1
        end = start
        while depth and end < len(tail):
            depth += {"[": 1, "]": -1}.get(tail[end], 0)
            end += 1
        members = re.split(r",\s*(?![^\[]*\])", tail[start : end - 1])
        kinds = [re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", m).strip() for m in members]
        expected = " or ".join(k for k in kinds if k != "NoneType")
    elif found := re.search(r"Expected an? typing\.Literal\[([^\]]*)\]", tail):  # a choice: name them
        expected = "one of " + found.group(1)
    elif found := re.search(r"Expected an? <class '(\w+)'>", tail):
        expected = found.group(1)
    else:
        return None
    return f"--{key}: expected {expected}, got {given}"


def chosen_class_keys(message: str) -> set[str]:
    """The keys of the class a message's 'Problem with given class_path' names, under the key that chose it."""
    chosen = re.search(r'Parser key "([^"]+)":.*?Problem with given class_path \'([\w.]+)\'', message)
    if chosen is None:
        return set()
    section, path = chosen.groups()
    module, _, name = path.rpartition(".")
    try:
        parameters = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return set()
    names = [p for p in parameters if p not in ("self", "args", "kwargs")]
    return {f"{section}.{p}" for p in names} | {f"{section}.init_args.{p}" for p in names}


def config_path(words: list[str], i: int) -> Path | None:
    """The file ``words[i]`` passes as a config (``--config=FILE``, or ``--config`` then ``FILE``), or None."""
    if words[i].startswith("--config="):
        return Path(words[i].removeprefix("--config="))
    if words[i] == "--config" and i + 1 < len(words):
        return Path(words[i + 1])
    return None


def user_keys(words: list[str]) -> list[str]:
    """The dotted keys a command line sets: its --flags and the keys in its --config files."""
    keys = []
    for i, word in enumerate(words):
        if (path := config_path(words, i)) is not None:
            keys += config_keys(path)
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
