"""Early forecast: causal, better than the naive forecast on a known HMM, calibrated, usable live."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO
from latentstates.forecast.evaluation import evaluate, summarise
from latentstates.forecast.model import Forecaster
from latentstates.settings import ForecastSettings, HMMSettings, TaskSpec
from latentstates.states.model import GaussianHMM, StateModel, ZScores

FEATURES = ["f0", "f1", "f2"]
# A left-to-right chain 0 → 1 → 2 with a detour 0 → 3 → 1 that some runs take; a run has
# converged once it is in state 2, so its state path alone sets its convergence time.
STARTS = [1.0, 0.0, 0.0, 0.0]
TRANSITIONS = [
    [0.80, 0.14, 0.00, 0.06],
    [0.00, 0.93, 0.07, 0.00],
    [0.00, 0.00, 1.00, 0.00],
    [0.00, 0.05, 0.00, 0.95],
]
MEANS = [[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [3.0, 3.0, 0.0], [0.0, 0.0, 3.0]]
COVS = [np.eye(3).tolist()] * 4
LENGTH = 80
# Simulated futures, 2,000 draws, 80 % intervals.
SIMULATE = ForecastSettings.defaults(method="simulate", level=0.8, samples=2000)


def _known_hmm() -> GaussianHMM:
    return GaussianHMM.from_json(
        {"covariance": "full", "starts": STARTS, "transitions": TRANSITIONS, "means": MEANS, "covs": COVS}
    )


def _simulate_runs(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for run in range(n):
        s = 0
        for t in range(LENGTH):
            if t:
                s = rng.choice(4, p=TRANSITIONS[s])
            x = rng.multivariate_normal(MEANS[s], COVS[s])
            rows.append(
                {"seed": run, "checkpoint": t, "step": t, "eval_acc": float(s == 2), **dict(zip(FEATURES, x))}
            )
    return pd.DataFrame(rows)


def _identity_zscore(hmm: GaussianHMM, runs: list[int]) -> StateModel:
    """The known model lives in raw units: normalising statistics of 0 and 1."""
    scores = ZScores("run", runs, [[0.0] * 3] * len(runs), [[1.0] * 3] * len(runs))
    return StateModel(hmm, "full", FEATURES, train_runs=runs, zscore=scores)


@pytest.fixture(scope="module")
def known():
    fitted = _simulate_runs(300, seed=1)
    model = _identity_zscore(_known_hmm(), list(range(300)))
    fc = Forecaster.fit(model, fitted, threshold=0.5, detour_states=[3])
    return fc, _simulate_runs(300, seed=2)


_FORECASTS: dict = {}


def _forecast_all(fc, test, method, fraction):
    """(|error| ours, |error| naive, covered) over the test runs not yet converged at t; computed
    once per (method, fraction) for the module's known model (two tests read the same forecasts)."""
    key = (id(fc), method, fraction)
    if key not in _FORECASTS:
        _FORECASTS[key] = _forecast_runs(fc, test, method, fraction)
    return _FORECASTS[key]


def _forecast_runs(fc, test, method, fraction):
    t = int(fraction * LENGTH)
    errors, naive, covered = [], [], []
    for _, g in test.groupby("seed"):
        acc = g["eval_acc"].to_numpy()
        truth = int(np.flatnonzero(acc > 0.5)[0]) if (acc > 0.5).any() else LENGTH
        settings = ForecastSettings.defaults(method=method, level=0.8, samples=500)
        out = fc.forecast(g[FEATURES].to_numpy()[:t], acc[:t], settings)
        if out.converged:
            assert out.predicted == truth == out.low == out.high  # known once converged
            continue
        assert out.predicted >= t  # not converged by t-1: conditioned on later
        errors.append(abs(out.predicted - truth))
        naive.append(abs(fc.baseline() - truth))
        covered.append(out.low <= truth <= out.high)
    assert len(errors) >= 50
    return np.array(errors), np.array(naive), np.array(covered)


@pytest.mark.parametrize("method", ["simulate", "regression"])
@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_forecast_beats_the_naive_forecast_on_a_known_hmm(known, method, fraction):
    fc, test = known
    errors, naive, _ = _forecast_all(fc, test, method, fraction)
    assert errors.mean() < 0.85 * naive.mean()


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_simulated_interval_covers_at_the_nominal_rate(known, fraction):
    """Under the true model the simulated futures are the predictive distribution: 80 % means 80 %."""
    fc, test = known
    _, _, covered = _forecast_all(fc, test, "simulate", fraction)
    se = np.sqrt(0.8 * 0.2 / len(covered))
    assert abs(covered.mean() - 0.8) < 3 * se, covered.mean()


def test_detour_flag_and_current_state_on_a_known_path(known):
    fc, _ = known
    rng = np.random.default_rng(0)
    path = [0] * 5 + [3] * 10 + [1] * 5
    x = np.array([rng.multivariate_normal(MEANS[s], np.eye(3) * 0.05) for s in path])
    out = fc.forecast(x, np.zeros(len(x)), SIMULATE)
    assert out.state == 1 and out.in_detour and not out.converged
    assert out.low <= out.predicted <= out.high and out.predicted >= len(x)
    direct = fc.forecast(x[:5], np.zeros(5), SIMULATE)
    assert direct.state == 0 and not direct.in_detour


def test_forecast_at_t_ignores_later_checkpoints():
    metrics = _simulate_runs(12, seed=3)
    model = _identity_zscore(_known_hmm(), list(range(12)))
    hmm = HMMSettings.defaults(covariance="full", max_iter=10, tol=0.1, var_floor=1e-5, covariance_prior=1e-2)
    settings = ForecastSettings.defaults(fractions=[0.25, 0.5], folds=3, restarts=1, samples=200, seed=0)
    before = evaluate(metrics, model, 0.5, settings, hmm)
    t_max = int(0.5 * LENGTH)
    altered = metrics.copy()
    late = (altered["seed"] == 4) & (altered["checkpoint"] >= t_max)
    altered.loc[late, FEATURES] = np.random.default_rng(9).normal(0, 50, (late.sum(), 3))
    after = evaluate(altered, model, 0.5, settings, hmm)
    cols = ["predicted", "low", "high", "state", "converged_by_t"]
    a = before[before["seed"] == 4].reset_index(drop=True)
    b = after[after["seed"] == 4].reset_index(drop=True)
    pd.testing.assert_frame_equal(a[cols], b[cols])
    table = summarise(before)
    assert set(table["method"]) == {"simulate", "regression"} and (table["runs"] == 12).all()


def test_a_fold_too_small_for_its_k_states_is_skipped_with_a_warning(caplog):
    """Two runs of five checkpoints and K = 4: the HMM fitted on the one run outside a fold can
    fail; that fold's run is then not forecast (a warning says so), the other still is."""
    metrics = _simulate_runs(2, seed=3)
    metrics = metrics[metrics["checkpoint"] < 5]
    model = _identity_zscore(_known_hmm(), [0, 1])
    hmm = HMMSettings.defaults(covariance="full", max_iter=10, tol=0.1, var_floor=1e-5, covariance_prior=1e-2)
    settings = ForecastSettings.defaults(fractions=[0.5], folds=3, restarts=1, samples=100, seed=0)
    with caplog.at_level("WARNING", logger="latentstates"):
        out = evaluate(metrics, model, 0.5, settings, hmm)
    assert "every HMM fit with K = 4 on the 1 runs without fold 0 failed" in caplog.text
    assert "seeds [0] are not forecast" in caplog.text
    assert set(out["seed"]) == {1} and len(summarise(out)) == 2  # simulate and regression


@pytest.mark.slow
def test_command_line_on_a_run_still_training(tiny_run, tmp_path):
    """Start a real training run, and forecast it while it is writing checkpoints."""
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    task_cfg = config["tasks"]["sparse_parity"]
    task_cfg["data"]["n_train"] = 100_000  # same model, ~3,000 steps per epoch: seconds per epoch
    # Training outlasts the forecast however loaded the machine is (it is killed at the end);
    # 2,000 epochs of seconds each, whose checkpoints (a few kB) the disk-space check must admit.
    task_cfg["train"]["epochs"] = 2_000
    ckpt = tmp_path / "seed7" / "checkpoints"
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from latentstates.config import validate_config;"
        "from latentstates.runs.train import train_run;"
        "from latentstates.settings import TaskSpec;"
        "cfg = validate_config({'tasks': {'t': json.loads(sys.argv[2])}})['tasks']['t'];"
        "train_run(TaskSpec.from_dict(cfg), 7, sys.argv[3], device='cpu', progress=False)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(REPO / "src"), json.dumps(task_cfg), str(ckpt)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        staging = ckpt.with_name("checkpoints.partial")
        deadline = time.monotonic() + 900  # generous: CI machines may be loaded
        while len(list(staging.glob("ckpt_*.pt"))) < 4:
            assert proc.poll() is None, "training ended before the forecast ran"
            assert time.monotonic() < deadline, "no checkpoints written"
            time.sleep(0.05)
        cmd = [
            sys.executable,
            "-m",
            "latentstates.forecast",
            str(tiny_run / "results" / "sparse_parity"),
            str(ckpt),
            "--config",
            str(tiny_run / "config.yaml"),
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        assert proc.poll() is None, "the forecast must have run while training was still going"
        assert "checkpoints seen:" in out.stdout and "current state:" in out.stdout
        assert "forecast convergence" in out.stdout or "converged at checkpoint" in out.stdout
        res = subprocess.run([*cmd, "--json"], capture_output=True, text=True, env=env, check=True)
        data = json.loads(res.stdout)
        assert data["t"] >= 2 and data["low"] <= data["predicted"] <= data["high"]
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_command_line_on_a_metrics_table_and_bad_input(tiny_run, tmp_path):
    res = tiny_run / "results" / "modular_addition"
    table = pd.read_parquet(res / "runs" / "seed1" / "metrics.parquet")
    part = tmp_path / "partial.csv"
    table[table["checkpoint"] < 10].to_csv(part, index=False)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    base = [sys.executable, "-m", "latentstates.forecast", str(res)]
    cfg = ["--config", str(tiny_run / "config.yaml")]
    out = subprocess.run(
        [*base, str(part), *cfg, "--json"], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(out.stdout)["t"] == 10
    gap = tmp_path / "gap.csv"
    table[table["checkpoint"] != 0].to_csv(gap, index=False)
    bad = subprocess.run([*base, str(gap), *cfg], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and str(gap) in bad.stderr
    missing = subprocess.run(
        [*base, str(Path(tmp_path) / "nope" / "checkpoints"), *cfg, "--seed", "1"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert missing.returncode != 0 and "nope/checkpoints: no such file or directory" in missing.stderr


def test_without_eval_accuracy_nothing_is_conditioned(known):
    """Eval accuracy says whether a run has converged; without it the forecast is the model's."""
    fc, _ = known
    rng = np.random.default_rng(1)
    path = [0] * 3 + [1] * 5 + [2] * 12  # in the converged state for the last 12 checkpoints
    x = np.array([rng.multivariate_normal(MEANS[s], np.eye(3) * 0.05) for s in path])
    free = fc.forecast(x, None, SIMULATE)
    assert not free.converged and free.predicted < len(x)  # it converged a while ago
    told = fc.forecast(x, np.zeros(len(x)), SIMULATE)  # "not converged yet"
    assert told.predicted >= len(x)


def test_partial_run_reads_eval_accuracy_from_checkpoints_and_skips_a_torn_newest(tmp_path):
    # Training writes checkpoints in place (no temporary file), so the newest file of a run
    # still training may be half-written: the forecast leaves it out; each checkpoint carries
    # its log row, so eval accuracy needs no resume state.
    from conftest import TINY
    from latentstates.config import load_config
    from latentstates.forecast.partial_runs import partial_run_table
    from latentstates.runs.checkpoints import list_checkpoints
    from latentstates.runs.train import train_run

    cfg = load_config(TINY)["tasks"]["sparse_parity"]
    cfg["train"]["epochs"] = 5
    log = train_run(
        TaskSpec.from_dict(cfg), 2, tmp_path / "done" / "checkpoints", progress=False, resume_every=1e9
    )
    staging = tmp_path / "running" / "checkpoints.partial"
    staging.parent.mkdir()
    os.rename(tmp_path / "done" / "checkpoints", staging)
    newest = list_checkpoints(staging)[-1]
    newest.write_bytes(newest.read_bytes()[:200])
    table = partial_run_table(TaskSpec.from_dict(cfg), 2, tmp_path / "running" / "checkpoints")
    assert table["checkpoint"].tolist() == log["checkpoint"].tolist()[:-1]
    assert table["eval_acc"].tolist() == log["eval_acc"].tolist()[:-1]
    # A torn file anywhere else, or in a finished run's directory, is an error naming it.
    finished = tmp_path / "finished" / "checkpoints"
    finished.parent.mkdir()
    os.rename(staging, finished)
    with pytest.raises(ValueError, match=newest.name):
        partial_run_table(TaskSpec.from_dict(cfg), 2, finished)


def test_partial_run_stops_at_a_missing_checkpoint_with_eval_accuracy_aligned(tmp_path):
    """A forecast needs a run's checkpoints from the start without gaps: a missing file ends the
    table there, and each checkpoint keeps its own eval accuracy (from the training log)."""
    from conftest import TINY
    from latentstates.config import load_config
    from latentstates.forecast.partial_runs import partial_run_table
    from latentstates.runs.checkpoints import list_checkpoints
    from latentstates.runs.train import train_run

    cfg = load_config(TINY)["tasks"]["sparse_parity"]
    cfg["train"]["epochs"] = 6
    directory = tmp_path / "seed2" / "checkpoints"
    log = train_run(TaskSpec.from_dict(cfg), 2, directory, progress=False, resume_every=1e9)
    log.to_parquet(tmp_path / "seed2" / "train_log.parquet")
    paths = list_checkpoints(directory)
    paths[3].unlink()
    table = partial_run_table(TaskSpec.from_dict(cfg), 2, directory)
    assert table["checkpoint"].tolist() == [0, 1, 2]
    assert table["eval_acc"].tolist() == log["eval_acc"].tolist()[:3]
    paths[0].unlink()
    with pytest.raises(ValueError, match="must start at index 0"):
        partial_run_table(TaskSpec.from_dict(cfg), 2, directory)
