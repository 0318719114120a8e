"""The configured logger, read from the CLI's config before anything is built: where its runs live, and what
MLflow needs (an optional extra, its local file store's opt-in, a server that answers)."""

import os
import re
from pathlib import Path

from jsonargparse import Namespace

from fashion_mnist_lightning.errors import UserError


class LoggerError(UserError, ValueError):
    """The configured logger cannot work: a missing optional package, a server that does not answer."""


def logger_init_args(config: Namespace) -> Namespace | None:
    """The configured logger's init_args when it has run folders (save_dir/name/version), else None."""
    logger = config.trainer.get("logger")
    init = logger.get("init_args") if isinstance(logger, Namespace) else None
    return init if init is not None and "version" in init else None


def logger_root(config: Namespace) -> Path | None:
    init = logger_init_args(config)
    return None if init is None else Path(init.get("save_dir") or ".") / (init.get("name") or "")


def mlflow_init_args(config: Namespace) -> Namespace | None:
    """The init_args of a configured ``MLFlowLogger``, else None."""
    logger = config.trainer.get("logger")
    if isinstance(logger, Namespace) and str(logger.get("class_path", "")).endswith(".MLFlowLogger"):
        return logger.get("init_args") or Namespace()
    return None


def mlflow_store(config: Namespace) -> tuple[str, str, Path]:
    """(tracking URI, experiment name, the local folder of its runs), as MLFlowLogger and Lightning resolve them:
    without a tracking URI the file store in ``save_dir``; with a server, checkpoints under ``default_root_dir``."""
    init = mlflow_init_args(config)
    uri = init.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or f"file:{init.get('save_dir')}"
    local = uri.removeprefix("file:") if uri.startswith("file:") else config.trainer.get("default_root_dir") or "."
    return uri, init.get("experiment_name") or "lightning_logs", Path(local)


def prepare_mlflow(config: Namespace) -> None:
    """``--trainer.logger MLFlowLogger``: MLflow is an optional extra, so its absence is one line with the fix.
    ``save_dir`` '.' (base.yaml's TensorBoard value, which the class switch carries over) becomes MLflow's own
    default ``./mlruns``. The local file store, what MLflow uses without a tracking URI, is in maintenance mode in
    recent MLflow and refused unless MLFLOW_ALLOW_FILE_STORE=true: set for that case, unless the user set it.
    With a tracking server the run's local files (checkpoints, config.yaml) go under ``lightning_logs/`` rather
    than Lightning's default, the current folder."""
    init = mlflow_init_args(config)
    if init is None:
        return
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise LoggerError(
            "--trainer.logger MLFlowLogger needs MLflow, an optional extra: pip install -e '.[mlflow]' "
            "(or pip install mlflow-skinny)"
        ) from None
    if Path(init.get("save_dir") or ".") == Path("."):
        init.save_dir = "./mlruns"
    uri = mlflow_store(config)[0]
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    elif config.trainer.get("default_root_dir") is None:
        config.trainer.default_root_dir = "lightning_logs"
    if uri.startswith(("http://", "https://")):
        check_server(uri)


def check_server(uri: str) -> None:
    """A tracking server that does not answer is one line now, not a traceback after minutes of MLflow's retries
    (which stay on for the run itself)."""
    from mlflow.tracking import MlflowClient

    once = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
    saved = {key: os.environ.get(key) for key in once}
    os.environ.update(once)
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - refused, DNS, TLS, authentication: the run could not log
        errno = re.findall(r"\[Errno -?\d+\][^'\")]*", str(err))  # the socket's own words, if any
        reason = errno[-1] if errno else (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise LoggerError(
            f"the MLflow tracking server {uri} does not answer ({reason}); "
            "check --trainer.logger.tracking_uri and that the server runs"
        ) from None
    finally:
        for key, value in saved.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value
