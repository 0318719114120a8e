"""Any logger: `--trainer.logger CSVLogger` and `--trainer.logger MLFlowLogger` (its local file store, or a tracking
URI) run end to end as TensorBoard does: scalars, hyper-parameters, the figures through the logger's own API (CSV
has none: PNGs in the run folder), `--ckpt_path last` resuming the newest run, `report`'s learning curves, and
validate/test after a fit. MLflow is an optional extra. Runs the console script in a workspace (conftest)."""

import csv
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, Workspace
from fashion_mnist_lightning.extras.report import read_curves

LIMITS = "--trainer.limit_train_batches=10 --trainer.limit_val_batches=2"  # size only; fast.yaml: 1 epoch
CSV_FIT = f"fashion-mnist fit --config configs/fast.yaml --trainer.logger CSVLogger {LIMITS}"
MLFLOW_FIT = f"fashion-mnist fit --config configs/fast.yaml --trainer.logger MLFlowLogger {LIMITS}"
PNG = b"\x89PNG\r\n\x1a\n"


def resumed_run(tmp_path_factory, fit: str) -> Workspace:
    """One epoch, then `--ckpt_path last` to a second epoch with a test of the best checkpoint."""
    workspace = Workspace(tmp_path_factory.mktemp("run"))
    workspace.first = workspace.run(fit)
    workspace.resumed = workspace.run(f"{fit} --trainer.max_epochs=2 --ckpt_path last --test_after_fit true")
    return workspace


def test_tensorboard_stays_the_default_logger():
    logger = yaml.safe_load((ROOT / "configs/base.yaml").read_text())["trainer"]["logger"]
    assert logger["class_path"] == "lightning.pytorch.loggers.TensorBoardLogger"


# ----------------------------------------------------------------------------------------------------
# CSVLogger: lightning_logs/version_N/{metrics.csv, hparams.yaml, figures/*.png}


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory, real_data_dir) -> Workspace:
    return resumed_run(tmp_path_factory, CSV_FIT)


def csv_rows(path: Path, key: str) -> list[tuple[int | None, float]]:
    """(epoch, value) of every row of a metrics.csv that has ``key`` (epoch None: logged outside Lightning's loop)."""
    with path.open(newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get(key)]
    return [(int(row["epoch"]) if row["epoch"] else None, float(row[key])) for row in rows]


def test_csv_run_records_scalars_hyperparameters_and_figures_as_pngs(csv_run):
    [run] = csv_run.runs()
    assert "resuming lightning_logs/version_0/checkpoints/last.ckpt" in csv_run.resumed.output
    assert not list(run.glob("events.out.tfevents*"))  # no TensorBoard beside it
    recipe = yaml.safe_load((run / "config.yaml").read_text())
    assert recipe["trainer"]["logger"]["class_path"] == "lightning.pytorch.loggers.CSVLogger"
    assert [epoch for epoch, _ in csv_rows(run / "metrics.csv", "val/acc")] == [0, 1]
    assert csv_rows(run / "metrics.csv", "test/acc") and csv_rows(run / "metrics.csv", "hp/val_acc_best")
    hparams = yaml.safe_load((run / "hparams.yaml").read_text())
    assert hparams["trainer"]["max_epochs"] == 1 and hparams["model"]["optimizer"]["class_path"] == "torch.optim.Adam"
    for figure in ("val_confusion_matrix", "val_sample_predictions", "test_confusion_matrix"):
        pngs = sorted((run / "figures").glob(f"{figure}_step*.png"))
        assert pngs and all(p.read_bytes()[:8] == PNG for p in pngs), figure
    assert len(list((run / "figures").glob("val_sample_predictions_step*.png"))) == 2  # one per epoch
    assert (run / "confusion_matrix_test.png").read_bytes()[:8] == PNG


def test_csv_resume_keeps_the_rows_of_the_first_epoch(csv_run):
    """Lightning's CSVLogger deletes a non-empty folder's metrics.csv when it opens it; the resumed run keeps it."""
    [run] = csv_run.runs()
    assert {epoch for epoch, _ in csv_rows(run / "metrics.csv", "train/loss_step")} == {0, 1}
    assert "will be deleted" not in csv_run.resumed.output


def test_csv_report_draws_the_learning_curves_from_metrics_csv(csv_run):
    [run] = csv_run.runs()
    csv_run.run("fashion-mnist report --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt")
    assert (run / "report/learning_curves.png").read_bytes()[:8] == PNG
    curves = read_curves(run)
    assert [epoch for epoch, _ in curves["val/acc"]] == [1, 2] and [e for e, _ in curves["train/loss_epoch"]] == [1, 2]
    assert [value for _, value in curves["val/acc"]] == [v for _, v in csv_rows(run / "metrics.csv", "val/acc")]


def test_csv_validate_and_test_after_a_fit_write_their_own_evaluation_folders(csv_run):
    [run] = csv_run.runs()
    csv_run.run("fashion-mnist validate --config configs/fast.yaml --trainer.logger CSVLogger --ckpt_path last")
    csv_run.run("fashion-mnist test --config configs/fast.yaml --trainer.logger CSVLogger --ckpt_path best")
    evaluated = csv_rows(run / "evaluations/validate_0/metrics.csv", "val/acc")[-1][1]
    assert evaluated == pytest.approx(csv_rows(run / "metrics.csv", "val/acc")[-1][1], abs=1e-6)
    assert csv_rows(run / "evaluations/test_0/metrics.csv", "test/acc")
    assert (run / "evaluations/test_0/confusion_matrix_test.png").is_file()
    assert [p.name for p in csv_run.runs()] == ["version_0"]


# ----------------------------------------------------------------------------------------------------
# MLFlowLogger: mlruns/<experiment_id>/<run_id>/ (MLflow's file store; checkpoints/ and config.yaml inside)


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory, real_data_dir) -> Workspace:
    return resumed_run(tmp_path_factory, MLFLOW_FIT)


@pytest.fixture
def client(monkeypatch):
    """MLflow's own client, reading a workspace's store the way the MLflow UI would."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the file store is in maintenance mode in MLflow 3
    return lambda uri: MlflowClient(uri)


def mlflow_runs(client, workspace: Workspace, evaluations: bool = False) -> tuple:
    """(the client, the runs of the `lightning_logs` experiment in the workspace's mlruns/, oldest first): the
    training runs, or with ``evaluations`` the child runs of validate/test."""
    store = client(f"file:{workspace.path / 'mlruns'}")
    experiment = store.get_experiment_by_name("lightning_logs")
    found = store.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return store, [run for run in found if ("mlflow.parentRunId" in run.data.tags) == evaluations]


def test_mlflow_run_records_scalars_params_and_figures_as_artifacts(mlflow_run, client):
    store, [run] = mlflow_runs(client, mlflow_run)
    run_id = run.info.run_id
    assert run.info.status == "FINISHED" and f"/{run_id}/checkpoints/last.ckpt" in mlflow_run.resumed.output
    assert [m.step for m in store.get_metric_history(run_id, "val/acc")] == [9, 19]  # both epochs, one run
    assert store.get_metric_history(run_id, "test/acc") and store.get_metric_history(run_id, "hp/test_acc")
    assert run.data.params["trainer/max_epochs"] == "1"  # the run's plan when it started
    assert run.data.params["model/optimizer/class_path"] == "torch.optim.Adam"  # configs/fast.yaml's
    for figure in ("val/confusion_matrix", "val/sample_predictions", "test/confusion_matrix"):
        logged = [a.path for a in store.list_artifacts(run_id, figure)]
        assert logged and all(path.endswith(".png") for path in logged), figure
    assert len(store.list_artifacts(run_id, "val/sample_predictions")) == 2  # one per epoch
    folder = Path(run.info.artifact_uri.removeprefix("file://")).parent
    assert folder == mlflow_run.path / "mlruns" / run.info.experiment_id / run_id
    assert (folder / "checkpoints/last.ckpt").is_file() and (folder / "confusion_matrix_test.png").is_file()
    assert not (mlflow_run.path / "lightning_logs").exists()


def test_mlflow_report_draws_the_learning_curves_from_the_file_store(mlflow_run, client):
    store, [run] = mlflow_runs(client, mlflow_run)
    folder = mlflow_run.path / "mlruns" / run.info.experiment_id / run.info.run_id
    mlflow_run.run(f"fashion-mnist report --ckpt_path {folder / 'checkpoints/last.ckpt'}")
    assert (folder / "report/learning_curves.png").read_bytes()[:8] == PNG
    curves = read_curves(folder)
    assert [epoch for epoch, _ in curves["val/acc"]] == [1, 2]
    logged = store.get_metric_history(run.info.run_id, "val/acc")
    assert [value for _, value in curves["val/acc"]] == [metric.value for metric in logged]


def test_mlflow_validate_and_test_after_a_fit_are_child_runs(mlflow_run, client):
    store, [trained] = mlflow_runs(client, mlflow_run)
    mlflow_run.run("fashion-mnist validate --config configs/fast.yaml --trainer.logger MLFlowLogger --ckpt_path last")
    mlflow_run.run("fashion-mnist test --config configs/fast.yaml --trainer.logger MLFlowLogger --ckpt_path best")
    store, [validate, test] = mlflow_runs(client, mlflow_run, evaluations=True)
    for child, name in ((validate, "validate"), (test, "test")):
        assert child.data.tags["mlflow.parentRunId"] == trained.info.run_id and child.info.run_name == name
    evaluated = store.get_metric_history(validate.info.run_id, "val/acc")[-1].value
    assert evaluated == pytest.approx(store.get_metric_history(trained.info.run_id, "val/acc")[-1].value, abs=1e-6)
    assert store.get_metric_history(test.info.run_id, "test/acc")
    assert [a.path for a in store.list_artifacts(test.info.run_id, "test/confusion_matrix")]


@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")  # MLflow's SQL store, on read
def test_mlflow_tracking_uri_keeps_local_files_in_lightning_logs_and_resumes(workspace, client):
    """A tracking URI other than a folder (a team's server; here an SQLite database, which needs no server):
    metrics go there, the run's checkpoints under lightning_logs/<experiment_id>/<run_id>/."""
    fit = f"{MLFLOW_FIT} --trainer.logger.tracking_uri sqlite:///mlflow.db --trainer.limit_train_batches=4"
    workspace.run(fit)
    workspace.run(f"{fit} --trainer.max_epochs=2 --ckpt_path last")
    store = client(f"sqlite:///{workspace.path / 'mlflow.db'}")
    experiment = store.get_experiment_by_name("lightning_logs")
    [run] = store.search_runs([experiment.experiment_id])
    assert [m.step for m in store.get_metric_history(run.info.run_id, "val/acc")] == [3, 7]
    checkpoints = workspace.path / "lightning_logs" / experiment.experiment_id / run.info.run_id / "checkpoints"
    names = sorted(p.name for p in checkpoints.iterdir())
    assert len(names) == 2 and names[0].startswith("epoch") and names[1] == "last.ckpt"
    assert (checkpoints.parent / "config.yaml").is_file() and not (workspace.path / run.info.experiment_id).exists()


def test_mlflow_server_that_does_not_answer_is_one_line(workspace):
    result = workspace.run(f"{MLFLOW_FIT} --trainer.logger.tracking_uri http://127.0.0.1:9", timeout=60, expect=2)
    assert "tracking server http://127.0.0.1:9 does not answer" in result.error and "tracking_uri" in result.error
    assert not (workspace.path / "lightning_logs").exists() and not (workspace.path / "mlruns").exists()


def test_mlflow_without_the_extra_installed_is_one_line_with_the_fix(workspace):
    """`mlflow` is an optional extra: a package that fails to import as a missing one does stands in for it."""
    shim = workspace.path / "no-mlflow" / "mlflow"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'mlflow'\", name='mlflow')\n")
    result = workspace.run(MLFLOW_FIT, env={"PYTHONPATH": str(shim.parent)}, expect=2)
    assert "pip install -e '.[mlflow]'" in result.error
    assert not (workspace.path / "lightning_logs").exists() and not (workspace.path / "mlruns").exists()
