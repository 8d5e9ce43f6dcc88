"""Runs logged to TensorBoard, written by torch's own SummaryWriter and read back with TensorBoard's
reader (latentstates.runs.trackers): steps aligned, restarts and duplicates as TensorBoard reads
them, errors naming the run and the key, and a directory of runs through the whole workflow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import small_config, snakemake

pytest.importorskip("tensorboard")

SCALARS = {
    "l2": "weights/l2",
    "grad": "train/grad_norm",
    "eval_loss": "eval/loss",
    "eval_acc": "eval/accuracy",
}


def log_run(directory, seed: int, steps: int = 40, eval_every: int = 2, switch: int | None = None) -> dict:
    """One run's scalars logged with SummaryWriter: two features that move from one level to
    another at a run-specific step (a phase change), and evaluations every `eval_every` steps.
    Returns what was logged, tag → {step: value}."""
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(seed)
    switch = switch if switch is not None else 12 + 3 * seed
    logged: dict[str, dict[int, float]] = {tag: {} for tag in SCALARS.values()}
    with SummaryWriter(str(directory)) as writer:
        for step in range(steps):
            after = step >= switch
            values = {
                "weights/l2": 3.0 + 2.0 * after + 0.1 * rng.standard_normal(),
                "train/grad_norm": 1.0 - 0.6 * after + 0.05 * rng.standard_normal(),
            }
            if step % eval_every == 0:
                values["eval/loss"] = 2.0 * np.exp(-step / 10)
                values["eval/accuracy"] = min(1.0, step / 20)
            for tag, value in values.items():
                writer.add_scalar(tag, value, step)
                logged[tag][step] = float(np.float32(value))  # TensorBoard keeps float32 scalars
    return logged


def test_scalars_are_read_by_step_with_performance_where_it_was_logged(tmp_path):
    from latentstates.runs.trackers import tensorboard_table

    logged = {f"run{s}": log_run(tmp_path / "tb" / f"run{s}", s, steps=10) for s in range(2)}
    table = tensorboard_table(tmp_path / "tb", SCALARS, ["l2", "grad"])
    assert list(table.columns) == ["run", "step", *SCALARS]
    assert table.groupby("run")["step"].apply(list).to_dict() == {
        "run0": list(range(10)),
        "run1": list(range(10)),
    }
    row = table[(table["run"] == "run1") & (table["step"] == 4)].iloc[0]
    assert row["l2"] == logged["run1"]["weights/l2"][4] and row["eval_loss"] == logged["run1"]["eval/loss"][4]
    odd = table[table["step"] % 2 == 1]
    assert odd["eval_loss"].isna().all() and odd["l2"].notna().all()  # logged every 2 steps: NaN between


def test_a_restarted_run_keeps_the_restarted_values_and_the_last_of_a_step(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from latentstates.runs.trackers import tensorboard_table

    run = tmp_path / "tb" / "run0"
    with SummaryWriter(str(run)) as w:
        for step in range(10):
            w.add_scalar("weights/l2", float(step), step)
    with SummaryWriter(str(run)) as w:  # the job restarted from step 6: TensorBoard drops 6 to 9
        for step in range(6, 12):
            w.add_scalar("weights/l2", 100.0 + step, step)
        w.add_scalar("weights/l2", 7.5, 11)  # logged twice at step 11: the last one is kept
    table = tensorboard_table(tmp_path / "tb", {"l2": "weights/l2"}, ["l2"])
    assert table["step"].tolist() == list(range(12))
    assert table["l2"].tolist() == [*map(float, range(6)), 106.0, 107.0, 108.0, 109.0, 110.0, 7.5]


def test_a_missing_tag_or_a_run_without_steps_is_named(tmp_path):
    from latentstates.runs.trackers import tensorboard_table
    from latentstates.validation import InputError, MissingInputError

    log_run(tmp_path / "tb" / "good", 0, steps=4)
    log_run(tmp_path / "tb" / "short", 1, steps=4)
    with pytest.raises(
        InputError, match=r"run 'good' logged no scalars.acc \('val/acc'\); it logged \['eval/"
    ):
        tensorboard_table(tmp_path / "tb", {**SCALARS, "acc": "val/acc"}, ["l2"])
    with pytest.raises(MissingInputError, match="run 'gone': the directory does not exist"):
        tensorboard_table(tmp_path / "tb", SCALARS, ["l2"], runs={"good": "good", "gone": "gone"})
    (tmp_path / "none").mkdir()
    with pytest.raises(InputError, match="no TensorBoard event files"):
        tensorboard_table(tmp_path / "none", SCALARS, ["l2"])
    with pytest.raises(MissingInputError, match="does not exist"):
        tensorboard_table(tmp_path / "absent", SCALARS, ["l2"])
    # features logged at steps that never coincide: no step has them all
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "apart" / "run0")) as w:
        w.add_scalar("a", 1.0, 0)
        w.add_scalar("b", 1.0, 1)
    with pytest.raises(InputError, match=r"run 'run0' has no step at which every feature \['x', 'y'\]"):
        tensorboard_table(tmp_path / "apart", {"x": "a", "y": "b"}, ["x", "y"])


def test_tracker_config_names_its_scalars(config):
    from latentstates.config import ConfigError, validate_config

    task = {"source": "tensorboard", "path": "tb", "scalars": {"l2": "weights/l2"}}
    assert validate_config({"tasks": {"tb": task}})["tasks"]["tb"]["scalars"] == {"l2": "weights/l2"}
    with pytest.raises(ConfigError, match="'tasks.tb'.*'scalars' is a required property"):
        validate_config({"tasks": {"tb": {"source": "tensorboard", "path": "tb"}}})
    with pytest.raises(
        ConfigError, match=r"'tasks.tb.hmm.features': \['l1'\] are not among the task's scalars"
    ):
        validate_config({"tasks": {"tb": {**task, "hmm": {"features": ["l1"]}}}})
    with pytest.raises(ConfigError, match="'tasks.t.write_states': .* for a tensorboard source only"):
        validate_config({"tasks": {"t": {"source": "table", "path": "t.csv", "write_states": True}}})


@pytest.mark.slow
def test_tensorboard_runs_go_through_the_whole_workflow(make_workdir, tmp_path):
    for seed in range(4):
        log_run(tmp_path / "tb" / f"seed{seed}", seed)
    task = {"source": "tensorboard", "path": str(tmp_path / "tb"), "scalars": SCALARS, "write_states": True}
    wd = make_workdir(small_config({"logged": task}))
    snakemake(wd)
    res = wd / "results" / "logged"
    metrics = pd.read_parquet(res / "metrics.parquet")
    assert sorted(metrics["run"].unique()) == [f"seed{s}" for s in range(4)] and len(metrics) == 160
    assert metrics["eval_acc"].notna().sum() == 80  # evaluations every 2 steps
    states = pd.read_parquet(res / "hmm" / "states.parquet")
    assert len(states) == 160
    import json

    model = json.loads((res / "hmm" / "model.json").read_text())
    assert model["features"] == ["l2", "grad"] and model["k"] == 2
    # the phase change at step 12 + 3 × seed is the change of state in every run
    for seed, run in states.groupby("seed"):
        changes = np.flatnonzero(np.diff(run.sort_values("step")["state"].to_numpy())) + 1
        assert changes.tolist() == [12 + 3 * seed]
    for figure in ("model_selection", "training_curves", "transition_graph"):
        assert (res / "figures" / f"{figure}.png").stat().st_size > 0
    assert "logged" in (wd / "results" / "summary.md").read_text()
    # The states written back as TensorBoard event files, read back with TensorBoard's reader.
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    from latentstates.runs.trackers import scalar_series

    for seed, run in states.groupby("seed"):
        directory = res / "tensorboard" / f"seed{seed}"
        back = scalar_series(directory)["latent_state"]
        assert (
            back.index.tolist() == run["step"].tolist()
            and back.tolist() == run["state"].astype(float).tolist()
        )
        acc = ea.EventAccumulator(str(directory), size_guidance={ea.TENSORS: 0})
        acc.Reload()
        text = tensor_util.make_ndarray(acc.Tensors("latent_states")[0].tensor_proto)[0].decode()
        assert "**2 latent states**" in text and f"(steps {12 + 3 * seed}-39)" in text
        assert acc.SummaryMetadata("latent_states").plugin_data.plugin_name == "text"


# ---------------------------------------------------------------- MLflow


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """An sqlite MLflow store written with MLflow's own client: experiment `phases`, runs seed0 to
    seed3 logging SCALARS' metrics as log_run logs them (a phase change at 12 + 3 × seed), and
    in seed0 one value logged twice at step 5 (the later one, 42.0, is kept)."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("phases", artifact_location=str(root / "artifacts"))
    for seed in range(4):
        logged = log_run(root / "tb" / f"seed{seed}", seed)  # the same values, from the same generator
        run = client.create_run(experiment, run_name=f"seed{seed}")
        t = 1_700_000_000_000
        for tag, values in logged.items():
            for step, value in values.items():
                client.log_metric(run.info.run_id, tag, value, timestamp=t + step, step=step)
        if seed == 0:
            client.log_metric(run.info.run_id, "weights/l2", 42.0, timestamp=t + 1000, step=5)
        client.set_terminated(run.info.run_id)
    return uri


def test_mlflow_runs_are_read_by_step_the_last_value_of_a_step_kept(mlflow_store):
    from latentstates.runs.trackers import mlflow_table
    from latentstates.validation import InputError

    table = mlflow_table(mlflow_store, SCALARS, ["l2", "grad"], experiment="phases")
    assert sorted(table["run"].unique()) == [f"seed{s}" for s in range(4)] and len(table) == 160
    seed0 = table[table["run"] == "seed0"].set_index("step")
    assert seed0.loc[5, "l2"] == 42.0 and seed0["eval_loss"].iloc[1::2].isna().all()
    with pytest.raises(InputError, match=r"logged no scalars.acc \('val/acc'\)"):
        mlflow_table(mlflow_store, {**SCALARS, "acc": "val/acc"}, ["l2"], experiment="phases")
    with pytest.raises(InputError, match=r"experiment: no experiment 'other' \(it has \["):
        mlflow_table(mlflow_store, SCALARS, ["l2"], experiment="other")


@pytest.mark.slow
def test_mlflow_runs_go_through_the_whole_workflow(make_workdir, mlflow_store):
    task = {"source": "mlflow", "tracking_uri": mlflow_store, "experiment": "phases", "scalars": SCALARS}
    wd = make_workdir(small_config({"tracked": task}))
    snakemake(wd)
    res = wd / "results" / "tracked"
    states = pd.read_parquet(res / "hmm" / "states.parquet")
    assert len(states) == 160
    for seed, run in states.groupby("seed"):
        if seed == 0:
            continue  # its outlier at step 5
        changes = np.flatnonzero(np.diff(run.sort_values("step")["state"].to_numpy())) + 1
        assert changes.tolist() == [12 + 3 * seed]
    assert (res / "figures" / "transition_graph.png").stat().st_size > 0
