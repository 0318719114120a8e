"""Checkpoints that are never half-written: temporary file in the same folder, fsync, rename over the old one.

A kill -9 or a power cut at any moment leaves either the previous complete checkpoint or the new complete
one. (Lightning's own writer goes through an fsspec transaction whose temporary file may live on another
file system and is not fsynced.) The template's CLI installs this plugin unless the config brings its own
CheckpointIO (it is the ``trainer.plugins`` default, so ``--print_config`` shows it); in Python:
``Trainer(plugins=[AtomicCheckpointIO()])``.
"""

import functools
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from fashion_mnist_lightning.errors import UserError

TMP_PREFIX = ".tmp-"  # partial files of an interrupted save: hidden, and swept up by the next save
LAST = "last.ckpt"  # every run's newest state (base.yaml's second ModelCheckpoint, and the signal handler's)


@functools.cache
def umask() -> int:
    """The process's umask, read once, when first needed (reading it means setting it: put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write(file)``, then put those bytes in a temporary file beside ``path``, fsync it and rename it over
    ``path``. The bytes are built in memory first: torch.save reports a full disk as a RuntimeError about zip
    positions, a plain write as the OSError it is (ENOSPC), which the CLI turns into one line."""
    buffer = io.BytesIO()
    write(buffer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from err  # name the file the user will look for
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sync_folder(path.parent)  # make the rename itself durable


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory file descriptors
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sweep_partial_files(folder: Path, name: str) -> None:
    """Remove temporary files a killed writer of ``name`` left behind."""
    for stale in folder.glob(f"{TMP_PREFIX}{name}.*"):
        stale.unlink(missing_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        sweep_partial_files(Path(path).parent, Path(path).name)
        atomic_torch_save(checkpoint, path)


# ----------------------------------------------------------------------------------------------------
# Reading: weights_only, with one-line errors


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used, stated in one line with its fix."""


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A Lightning checkpoint loaded with ``weights_only=True`` (no code runs while loading)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; pass the path of a .ckpt file "
            "(lightning_logs/version_N/checkpoints/) or --ckpt_path last"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:120] if str(err) else 'no detail'}); "
            "pass a .ckpt written by `fashion-mnist fit`"
        ) from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path} holds no Lightning state_dict; pass a .ckpt written by `fashion-mnist fit`")
    return checkpoint


def check_matches(path: str | os.PathLike, state: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Fail in one line when a checkpoint's weights do not fit ``model`` (another network or width)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items() if torch.is_tensor(v)}
    if found == expected:
        return
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    reshaped = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    detail = "; ".join(
        f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", reshaped))
        if keys
    )
    raise CheckpointError(
        f"{path} holds a different network than the config's {type(model).__name__} ({detail}); pass {own_recipe(path)}"
    )


# What a resumed fit may set differently from its checkpoint: where the data lives and how it is loaded or
# evaluated, not what is trained (Lightning's "_instantiator" is bookkeeping).
RESUME_MAY_CHANGE = {"data_dir", "download", "data_on_device", "eval_batch_size", "predict_dir", "compile"}
# Recorded since data sets are chosen by class path and link their shape into the model; a checkpoint from before
# has none of them (Fashion-MNIST, 1x28x28, the networks' defaults), so their absence is no difference.
LINKED_SINCE = {"_class_path", "image_shape", "num_classes", "in_channels", "image_size", "mean", "std", "metrics"}


def check_same_recipe(path: str | os.PathLike, checkpoint: dict, model: dict, data: dict) -> None:
    """Fail in one line when ``fit --ckpt_path`` would continue a checkpoint with another recipe (network,
    optimizer, schedule, batch size, augmentation, ...): the weights and optimizer state would come from one run
    and everything else from another. ``model`` / ``data``: the command's hyper-parameters."""
    for prefix, saved, now in (
        ("model", checkpoint.get("hyper_parameters"), model),
        ("data", checkpoint.get("datamodule_hyper_parameters"), data),
    ):
        if not isinstance(saved, dict):
            continue  # a checkpoint from plain Python (no CLI): nothing recorded to compare
        keys = sorted((saved.keys() | now.keys()) - RESUME_MAY_CHANGE - {"_instantiator"})
        for key, before, after in (d for k in keys if (d := first_difference(k, saved.get(k), now.get(k)))):
            raise CheckpointError(
                f"{path} was trained with {prefix}.{key}={before!r} but this command sets {after!r}; to continue "
                f"that run pass {own_recipe(path)} --ckpt_path {path}; for the new recipe start a new run "
                "(no --ckpt_path)"
            )


def first_difference(key: str, a: Any, b: Any) -> tuple[str, Any, Any] | None:
    """The first dotted key below ``key`` where ``a`` and ``b`` (nested dicts of config values) differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for sub in sorted(a.keys() | b.keys()):
            found = first_difference(f"{key}.{sub}", a.get(sub), b.get(sub))
            if found:
                return found
        return None
    if a is None and key.rpartition(".")[2] in LINKED_SINCE:
        return None
    same = list(a) == list(b) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) else a == b
    return None if same else (key, a, b)


def check_same_classes(path: str | os.PathLike, checkpoint: dict, class_names: list[str], data: str) -> None:
    """Fail in one line when a checkpoint was trained on other classes than the command's data set has (another
    data set: `fashion-mnist predict` without the run's config falls back to Fashion-MNIST)."""
    trained = (checkpoint.get("hyper_parameters") or {}).get("class_names")
    if trained is not None and list(trained) != list(class_names):
        shown = ", ".join(trained[:5]) + (", ..." if len(trained) > 5 else "")
        raise CheckpointError(
            f"{path} was trained on {len(trained)} classes ({shown}), but this command's data set {data} has "
            f"{len(class_names)} others; pass {own_recipe(path)} (the data set it was trained on)"
        )


def own_recipe(path: str | os.PathLike) -> str:
    """How to name the config a checkpoint was trained with: ``--config <run>/config.yaml`` when it exists."""
    config = run_folder(path) / "config.yaml"
    return f"--config {config}" if config.is_file() else "the config it was trained with"


def run_of(path: str | os.PathLike) -> Path | None:
    """The run folder holding a checkpoint (``<run>/checkpoints/x.ckpt``), or None for a checkpoint elsewhere."""
    folder = Path(path).resolve().parent
    return folder.parent if folder.name == "checkpoints" else None


def run_folder(path: str | os.PathLike) -> Path:
    """The run folder holding a checkpoint, or for a checkpoint elsewhere its own folder (where tools write)."""
    return run_of(path) or Path(path).resolve().parent
