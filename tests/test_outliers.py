"""Atypical runs (analysis.outliers): the scores by hand, and the rule on simulated runs with
planted outliers, whose number and kind are known."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import snakemake
from latentstates.settings import HMMSettings
from latentstates.states.model import GaussianHMM
from latentstates.states.outliers import (
    OUTLIER_Z,
    left_out_models,
    modified_z,
    outlier_runs,
    path_distances,
    without_states,
)
from latentstates.states.selection import fit_task
from latentstates.states.sequences import zscore_runs
from latentstates.states.simulate import Scenario, features, outlier_seeds, simulate


def test_modified_z_by_hand_and_without_a_spread():
    x = np.array([1.0, 2.0, 3.0, 4.0, 100.0, np.nan])
    z = modified_z(x)  # median 3, MAD 1
    np.testing.assert_allclose(z[:5], 0.6745 * (x[:5] - 3))
    assert np.isnan(z[5])
    same = modified_z(np.array([2.0, 2.0, 2.0, 2.0, 7.0]))  # MAD 0: mean absolute deviation 1
    np.testing.assert_allclose(same, [0, 0, 0, 0, 5 / 1.2533])
    np.testing.assert_array_equal(modified_z(np.ones(4)), np.zeros(4))


def test_path_distance_to_the_medoid_compares_progress_through_training():
    paths = {
        0: np.array([0, 0, 1, 1, 2, 2]),
        1: np.array([0, 0, 0, 1, 1, 1, 2, 2, 2]),  # the same path, longer: distance 0
        2: np.array([0, 0, 1, 1, 2, 2]),
        3: np.array([0, 3, 3, 3, 3, 2]),
    }
    d = path_distances(paths, grid=6)
    assert d[0] == 0 and d[1] == 0 and d[2] == 0 and d[3] == pytest.approx(4 / 6)


def test_a_state_only_one_run_uses_is_left_out_of_the_hmm_without_it():
    hmm = GaussianHMM(
        np.array([1.0, 0.0, 0.0]),
        np.array([[0.8, 0.1, 0.09], [0.0, 0.99, 0.0], [0.0, 0.2, 0.79]]),
        np.array([0.01, 0.01, 0.01]),
        np.array([[0.0], [3.0], [9.0]]),
        np.array([[[1.0]], [[1.0]], [[1.0]]]),
        "full",
    )
    two = without_states(hmm, np.array([0, 1]))
    np.testing.assert_allclose(two.transitions.sum(axis=1) + two.ends, 1.0)
    np.testing.assert_allclose(two.transitions[0], np.array([0.8, 0.1]) / 0.9 * 0.99)
    rng = np.random.default_rng(0)
    paths = {r: np.repeat([0, 1], 10) for r in range(4)}
    paths[4] = np.repeat([0, 2, 1], [5, 5, 10])  # state 2: run 4's alone
    arrays = [hmm.means[p] + rng.normal(scale=0.3, size=(20, 1)) for p in paths.values()]
    seqs = zscore_runs_from(arrays)
    settings = HMMSettings.defaults(covariance="full", features=["f0"])
    models = left_out_models(seqs, hmm, paths, list(paths), settings)
    assert [m.k for m in models] == [3, 3, 3, 3, 2]


def zscore_runs_from(arrays):
    frames = [
        pd.DataFrame({"seed": r, "checkpoint": range(len(a)), "f0": a[:, 0]}) for r, a in enumerate(arrays)
    ]
    seqs = zscore_runs(pd.concat(frames), ["f0"], pooled=True)
    seqs.arrays[:] = arrays  # the raw values: the model above is in their units
    return seqs


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind, foreign, shift",
    [("an excursion", 0.15, 5.0), ("atypical throughout", 1.0, 2.5)],
    ids=["excursion", "throughout"],
)
def test_planted_outliers_are_found_and_few_others_flagged(kind, foreign, shift):
    """Six simulations of 24 runs (a 5-state chain with a detour, 14 collinear features, pooled
    z-scores), the last two runs of each planted: a stretch of 15 % of the run (or all of it)
    displaced by `shift` latent standard deviations in a random direction. The rule finds at
    least 90 % of them for the stated reason and flags at most 5 % of the others; the detour
    runs (40 %) are not what it finds."""
    found, false, outliers, others = 0, 0, 0, 0
    for seed in range(6):
        s = Scenario(k=5, runs=24, length=100, outliers=2, foreign=foreign, foreign_shift=shift)
        table, _ = simulate(s, seed)
        settings = HMMSettings.defaults(
            features=features(s), n_states=5, max_states=5, restarts=4, max_iter=50, zscore="pooled"
        )
        fit = fit_task(table, settings)
        seqs = zscore_runs(table, features(s), pooled=True)
        paths = {
            int(r): g.sort_values("checkpoint")["state"].to_numpy() for r, g in fit.states.groupby("seed")
        }
        out = outlier_runs(seqs, paths, fit.model.hmm, fit.model.train_runs, settings)
        planted = set(outlier_seeds(s))
        flagged = set(out.index[out["outlier"]])
        found += len(flagged & planted)
        false += len(flagged - planted)
        outliers, others = outliers + len(planted), others + s.runs - len(planted)
        assert all(out.loc[r, "outlier_why"] in (kind, "both") for r in flagged & planted)
        assert (out["ll_per_step"] >= out["ll_left_out"] - 1e-9).loc[list(planted)].all()
    print(f"{kind}: found {found} of {outliers}, {false} false flags of {others}")
    assert found >= 0.9 * outliers, f"found {found} of {outliers}"
    assert false <= 0.05 * others, f"{false} false flags of {others}"
    assert OUTLIER_Z == 3.5


@pytest.mark.slow
def test_the_workflow_lists_the_planted_outliers_of_a_table_in_runs_and_summary(make_workdir, tmp_path):
    """24 simulated runs (two with an excursion) brought as a metrics table, their HMM on pooled
    z-scores: analysis/runs.csv flags exactly the two planted runs, and the task's summary and
    the summary table list them."""
    s = Scenario(k=5, runs=24, length=100, outliers=2, foreign=0.15, foreign_shift=5.0)
    table, _ = simulate(s, 0)
    table.drop(columns="checkpoint").rename(columns={"seed": "run"}).to_csv(
        tmp_path / "table.csv", index=False
    )
    hmm = {"features": features(s), "zscore": "pooled", "n_states": 5, "max_states": 5, "restarts": 4}
    config = {
        "tasks": {"sim": {"source": "table", "path": str(tmp_path / "table.csv"), "hmm": hmm}},
        "stability": {"enabled": False},
    }
    wd = make_workdir(config)
    snakemake(wd)
    res = wd / "results"
    runs = pd.read_csv(res / "sim" / "analysis" / "runs.csv")
    assert sorted(runs.loc[runs["outlier"], "seed"]) == outlier_seeds(s)
    assert set(runs.loc[runs["outlier"], "outlier_why"]) <= {"an excursion", "both"}
    summary = json.loads((res / "sim" / "analysis" / "summary.json").read_text())
    assert summary["outlier_runs"] == outlier_seeds(s) and "modified z-score" in summary["outlier_rule"]
    assert pd.read_csv(res / "summary.csv")["outliers"].tolist() == ["22, 23"]
    assert "outlier runs" in (res / "summary.md").read_text()
