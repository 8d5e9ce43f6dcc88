"""Real Snakemake runs of the tiny config in temporary directories."""

import copy
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, snakemake
from latentstates.report.interactive import read_figure
from latentstates.states.outliers import OUTLIER_COLUMNS

pytestmark = pytest.mark.slow
TASKS = ["modular_addition", "sparse_parity"]


def _jobs(dry_run_stdout: str, by_group: bool = False) -> dict[str, int]:
    """Rule → job count from a dry run's job table; the seed groups' rules (e.g.
    train_sparse_parity_seeds0_1) are counted under their stage (train) unless `by_group`."""
    table = dry_run_stdout.split("Job stats:")[-1]
    jobs: dict[str, int] = {}
    for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M):
        name = m[1] if by_group else re.sub(r"_\w+_seeds\d+_\d+$", "", m[1])
        if name != "total":
            jobs[name] = jobs.get(name, 0) + int(m[2])
    return jobs


def k_of(res, task) -> int:
    return json.loads((res / task / "hmm" / "model.json").read_text())["k"]


def test_tiny_run_produces_every_output(tiny_run):
    res = tiny_run / "results"
    for task in TASKS:
        metrics = pd.read_parquet(res / task / "metrics.parquet")
        assert sorted(metrics["seed"].unique()) == [0, 1, 2]
        assert {
            "task",
            "seed",
            "checkpoint",
            "step",
            "epoch",
            "l1",
            "var_b",
            "hessian_top_eig",
            "train_loss",
            "eval_acc",
            "init_seed",
            "order_seed",
        } <= set(metrics.columns)
        assert metrics.groupby("seed").size().nunique() == 1
        # The LLC (on for the parities only): at every 4th checkpoint, an estimate or a flag.
        llc_at = (metrics["checkpoint"] % 4 == 0) & (task == "sparse_parity")
        assert metrics.loc[~llc_at, ["llc", "llc_se"]].isna().all().all()
        assert not metrics.loc[~llc_at, "llc_not_minimum"].any()
        if task == "sparse_parity":
            at = metrics[llc_at]
            assert (at["llc"].notna() ^ at["llc_not_minimum"]).all() and at["llc"].notna().mean() > 0.5
            assert (at["llc_se"].dropna() > 0).all()
            states_llc = pd.read_csv(res / task / "analysis" / "llc_states.csv")
            assert len(states_llc) == k_of(res, task) and states_llc["checkpoints"].sum() > 0
            llc_summary = json.loads((res / task / "analysis" / "llc_summary.json").read_text())
            decoded = pd.read_parquet(res / task / "hmm" / "states.parquet")["seed"].unique()
            assert llc_summary["estimates"] == int(at.loc[at["seed"].isin(decoded), "llc"].notna().sum())
            assert llc_summary["coincidence"]["window"] == 4
            for ext in ("png", "svg", "html"):
                assert (res / task / "figures" / f"llc.{ext}").stat().st_size > 0
        else:
            assert not (res / task / "figures" / "llc.png").exists()
        model = json.loads((res / task / "hmm" / "model.json").read_text())
        k = model["k"]
        assert len(model["transitions"]) == k and len(model["means"][0]) == len(model["features"])
        states = pd.read_parquet(res / task / "hmm" / "states.parquet")
        assert len(states) == len(metrics) and states["state"].between(0, k - 1).all()
        sel = pd.read_csv(res / task / "hmm" / "model_selection.csv")
        assert sel["k"].tolist() == [1, 2, 3] and sel["chosen"].sum() == 1
        edges = pd.read_csv(res / task / "analysis" / "edges.csv")
        assert {"source", "target", "probability", "n_runs", "summary"} <= set(edges.columns)
        summary = json.loads((res / task / "analysis" / "summary.json").read_text())
        assert summary["k"] == k and summary["n_runs"] == 3
        assert summary["r2"] is None or 0 <= summary["r2"] <= 1  # null when undefined
        runs = pd.read_csv(res / task / "analysis" / "runs.csv")
        assert set(OUTLIER_COLUMNS) <= set(runs.columns) and runs["ll_left_out"].notna().all()
        assert runs["ll_z"].isna().all()  # 3 runs: too few for a robust scale
        # per-run z-scores (the default): outlier scores reported, runs not flagged
        assert summary["outlier_runs"] is None and "per-run z-scores" in summary["outlier_rule"]
        assert int(sel.loc[sel["chosen"], "k"].iloc[0]) == k
        assert model["at_boundary"] == (k in (1, 3))  # max_states 3: an optimum at 1 or 3 is flagged
        assert summary["at_boundary"] == model["at_boundary"]
        assert {"aic", "bic", "aic_train", "bic_train", "val_ll"} <= set(sel.columns)
        forecast = pd.read_csv(res / task / "analysis" / "forecast_summary.csv")
        assert sorted(forecast["fraction"].unique()) == [0.25, 0.5]
        assert sorted(forecast["method"].unique()) == ["regression", "simulate"]
        assert (forecast["runs"] == 3).all() and forecast["coverage"].between(0, 1).all()
        for fig in [
            "model_selection",
            "training_curves",
            "transition_graph",
            "convergence_regression",
            "forecast",
            "stability",
        ]:
            for ext in ["png", "svg"]:
                assert (res / task / "figures" / f"{fig}.{ext}").stat().st_size > 1000
        for view in ["training_curves", "transition_graph"]:
            figure = read_figure(res / task / "figures" / f"{view}.html")
            assert len(figure["data"]) > 1 and task in figure["layout"]["title"]["text"]
        assert (res / "logs" / "train" / task / "seeds0-1.log").read_text().strip()
        models = json.loads((res / task / "hmm" / "models.json").read_text())["models"]
        assert set(models) <= {"1", "2", "3"} and str(k) in models
        stab = json.loads((res / task / "stability" / "summary.json").read_text())
        assert stab["resamples"] == 10 and stab["k"]["main"] == k
        assert 0 <= stab["k"]["frequency"] <= 1
        k_table = pd.read_csv(res / task / "stability" / "k.csv")
        assert k_table["frequency"].sum() == pytest.approx(1.0) and k_table["k"].between(1, 3).all()
        st = pd.read_csv(res / task / "stability" / "states.csv")
        assert st["state"].tolist() == list(range(k)) and st["present_frequency"].between(0, 1).all()
        assert len(pd.read_csv(res / task / "stability" / "resamples.csv")) == 10
    comparison = res / "comparisons" / "both"
    model = json.loads((comparison / "hmm" / "model.json").read_text())
    assert model["recipes"] == ["sparse_parity", "modular_addition"] and model["comparison"] == "both"
    runs = pd.read_csv(comparison / "hmm" / "runs.csv")
    assert runs["run"].tolist() == list(range(6)) and runs.groupby("recipe")["seed"].apply(
        list
    ).to_dict() == {
        "modular_addition": [0, 1, 2],
        "sparse_parity": [0, 1, 2],
    }
    states = pd.read_parquet(comparison / "hmm" / "states.parquet")
    per_task = sum(len(pd.read_parquet(res / t / "metrics.parquet")) for t in TASKS)
    assert len(states) == per_task and states["state"].between(0, model["k"] - 1).all()
    tests = pd.read_csv(comparison / "analysis" / "tests.csv")
    assert {"occupancy", "visits", "convergence"} <= set(tests["test"])
    assert {"mean_sparse_parity", "mean_modular_addition", "p_holm", "recipe_specific"} <= set(tests.columns)
    assert tests["p_value"].dropna().between(1 / 200, 1).all()  # 199 permutations
    occupancy = pd.read_csv(comparison / "analysis" / "states.csv")
    assert (
        len(occupancy) == 2 * model["k"]
        and occupancy.groupby("recipe")["occupancy"].sum().round(9).eq(1).all()
    )
    summary = json.loads((comparison / "analysis" / "summary.json").read_text())
    assert summary["n_runs"] == {"sparse_parity": 3, "modular_addition": 3} and summary["permutations"] == 199
    for fig in ["transition_graph", "occupancy", "training_curves"]:
        for ext in ["png", "svg"]:
            assert (comparison / "figures" / f"{fig}.{ext}").stat().st_size > 1000
    for view in ["training_curves", "transition_graph"]:
        assert len(read_figure(comparison / "figures" / f"{view}.html")["data"]) > 1
    curves = read_figure(comparison / "figures" / "training_curves.html")
    assert "sparse_parity seed 2" in {trace.get("name") for trace in curves["data"]}
    table = pd.read_csv(res / "comparisons.csv")
    assert (
        table["comparison"].tolist() == ["both"]
        and table["recipes"].iloc[0] == "sparse_parity vs modular_addition"
    )
    assert (res / "comparisons.md").read_text().startswith("| comparison |")

    summary = pd.read_csv(res / "summary.csv")
    assert summary["findings"].str.startswith("K = ").all()
    assert sorted(summary["task"]) == TASKS
    assert (res / "summary.md").read_text().startswith("| task | K |")
    assert "\\begin{tabular}" in (res / "summary.tex").read_text()


def test_second_run_does_nothing(tiny_run):
    out = snakemake(tiny_run, "--dry-run").stdout
    assert "Nothing to be done" in out


def test_hmm_change_reruns_only_hmm_and_downstream(tiny_run, tmp_path):
    wd = tmp_path / "copy"
    shutil.copytree(tiny_run, wd, symlinks=True)
    import yaml

    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg["hmm"]["restarts"] = 3
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    jobs = _jobs(snakemake(wd, "--dry-run").stdout)
    assert jobs == {
        "all": 1,
        "hmm": 2,
        "plot_model_selection": 2,
        "plot_training_curves": 2,
        "analysis": 2,
        "plot_analysis": 2,
        "interactive": 2,
        "forecast": 2,
        "plot_forecast": 2,
        "stability": 2,
        "plot_stability": 2,
        "summary_table": 1,
        "llc_analysis": 1,  # the parities' LLC beside their states
        # The comparison's shared HMM takes the global settings too.
        "comparison_hmm": 1,
        "comparison": 1,
        "plot_comparison": 1,
        "comparison_table": 1,
        "interactive_views": 1,  # the page of every view, for the report
    }
    train_log = wd / "results" / "sparse_parity" / "runs" / "seed0" / "train_log.parquet"
    before = train_log.stat().st_mtime_ns
    snakemake(wd)
    assert train_log.stat().st_mtime_ns == before
    restarts = pd.read_csv(wd / "results" / "sparse_parity" / "hmm" / "model_selection_restarts.csv")
    split = restarts["init"].str.startswith("split")
    moves = restarts["init"].str.startswith("merge-split")
    assert restarts.loc[~split & ~moves, "restart"].max() == 2  # the 3 seeded restarts...
    # ...and K − 1 splits of the kept (K−1)-state fit, numbered after them (hmm.splits)
    assert (restarts[split].groupby("k").size() == restarts[split].groupby("k")["k"].first() - 1).all()
    # ...then at K ≥ 3 (max_states 3) one round of merge-and-split moves (hmm.merge_splits: 1):
    # 3 pairs merged × 2 states split, numbered after the splits.
    assert restarts.loc[moves, "k"].unique().tolist() == [3]
    assert moves.sum() == 6
    assert restarts.loc[moves, "restart"].min() > restarts.loc[split & (restarts["k"] == 3), "restart"].max()
    assert "Nothing to be done" in snakemake(wd, "--dry-run").stdout


def test_metric_change_reruns_metrics_not_training(tiny_run, tmp_path):
    wd = tmp_path / "copy"
    shutil.copytree(tiny_run, wd, symlinks=True)
    import yaml

    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg["metrics"]["hessian"]["stride"] = 3
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    jobs = _jobs(snakemake(wd, "--dry-run").stdout)
    # Metrics jobs per seed group: [0, 1] and [2] of each task.
    assert "train" not in jobs and jobs["metrics"] == 4 and jobs["hmm"] == 2


def test_batched_hessians_give_each_run_its_own_metrics(tiny_run, tmp_path):
    """`metrics.hessian.batch_runs: true` iterates a seed group's Hessians together (one batched
    product for all, as on a GPU): every run gets the table it gets alone, the Hessian columns up
    to rounding. Groups of one run and closed forms (parities) are not batched."""
    wd = tmp_path / "copy"
    shutil.copytree(tiny_run, wd, symlinks=True)
    import yaml

    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg["metrics"]["hessian"]["batch_runs"] = True
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(wd, "--until", "collate")
    logs = wd / "results" / "logs" / "metrics"
    assert "seeds 0, 1 together" in (logs / "modular_addition" / "seeds0-1.log").read_text()
    assert "together" not in (logs / "modular_addition" / "seeds2-2.log").read_text()
    assert "together" not in (logs / "sparse_parity" / "seeds0-1.log").read_text()
    for task in TASKS:
        tops = []
        for seed in range(3):
            name = f"results/{task}/runs/seed{seed}/metrics.parquet"
            alone, together = pd.read_parquet(tiny_run / name), pd.read_parquet(wd / name)
            hessian = ["hessian_top_eig", "hessian_iters", "hessian_converged"]
            pd.testing.assert_frame_equal(together.drop(columns=hessian), alone.drop(columns=hessian))
            computed = alone["hessian_top_eig"].notna()  # every stride-th checkpoint
            assert computed.sum() > 5 and together["hessian_top_eig"].notna().equals(computed)
            assert together["hessian_converged"].equals(alone["hessian_converged"])
            pd.testing.assert_series_equal(together["hessian_top_eig"], alone["hessian_top_eig"], rtol=1e-4)
            tops.append(alone.loc[computed, "hessian_top_eig"].to_numpy())
        # the runs' curvatures differ far beyond the tolerance: a mix-up of runs cannot pass
        assert abs(tops[0] - tops[1]).max() > 1e-2 * abs(tops[0]).max()


def test_a_failed_batched_hessian_falls_back_to_one_run_at_a_time(tiny_run, monkeypatch, caplog):
    """Batching a group's Hessians is a speed-up, not a result: where it fails (e.g. a group too
    large for the GPU's memory) the job says so and computes each run's Hessians alone."""
    import latentstates.measure.extract as extract
    from latentstates.columns import PERFORMANCE_COLUMNS
    from latentstates.config import load_config
    from latentstates.io import read_parquet
    from latentstates.runs.contract import read_run
    from latentstates.settings import HessianSettings

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (injected)")

    monkeypatch.setattr(extract, "group_hessians", out_of_memory)
    runs_dir = tiny_run / "results" / "modular_addition" / "runs"
    files = [runs_dir / f"seed{s}" / "run.json" for s in (0, 1)]
    logs = [
        read_parquet(
            runs_dir / f"seed{s}" / "train_log.parquet",
            columns=["checkpoint", "diverged", *PERFORMANCE_COLUMNS],
        )
        for s in (0, 1)
    ]
    hessian = HessianSettings.from_dict(
        {**load_config(tiny_run / "config.yaml")["metrics"]["hessian"], "batch_runs": True}
    )
    tables = list(
        extract.metrics_of_runs(
            [read_run(f) for f in files], files, logs, hessian, device="cpu", progress=False
        )
    )
    assert "together failed (CUDA out of memory (injected)): one run at a time instead" in caplog.text
    for seed, table in zip((0, 1), tables):
        alone = pd.read_parquet(runs_dir / f"seed{seed}" / "metrics.parquet")
        pd.testing.assert_frame_equal(table, alone[table.columns])


def test_more_seeds_train_only_the_new_seed_groups(tiny_run, tmp_path):
    wd = tmp_path / "copy"
    shutil.copytree(tiny_run, wd, symlinks=True)
    import yaml

    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg["tasks"]["sparse_parity"]["seeds"] = 5  # groups [0, 1], [2] → [0, 1], [2, 3], [4]
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    jobs = _jobs(snakemake(wd, "--dry-run").stdout, by_group=True)
    trained = sorted(j for j in jobs if j.startswith("train_"))
    assert trained == ["train_sparse_parity_seeds2_3", "train_sparse_parity_seeds4_4"]
    assert sorted(j for j in jobs if j.startswith("metrics_")) == [
        "metrics_sparse_parity_seeds2_3",
        "metrics_sparse_parity_seeds4_4",
    ]
    assert jobs["collate"] == 1 and jobs["hmm"] == 1


def test_science_change_in_src_reruns_exactly_the_stages_that_use_it(tiny_run, tmp_path):
    # A copy of the workflow whose package we can edit, and a copy of the finished tiny run.
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "Snakefile", repo)
    for part in ["rules", "workflow", "src", "profiles"]:
        shutil.copytree(REPO / part, repo / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wd = tmp_path / "run"
    shutil.copytree(tiny_run, wd, symlinks=True)
    assert "Nothing to be done" in snakemake(wd, "--dry-run", repo=repo).stdout

    # A comment or reformatting is not a change of the science.
    train = repo / "src" / "latentstates" / "runs" / "train.py"
    train.write_text(
        "# a comment\n" + train.read_text().replace("    return batch, steps", "    return (batch), steps")
    )
    assert "Nothing to be done" in snakemake(wd, "--dry-run", repo=repo).stdout

    # A metric definition: metrics and everything after them rerun, training does not.
    metrics = repo / "src" / "latentstates" / "measure" / "metrics.py"
    metrics.write_text(
        metrics.read_text().replace("SINGULAR_VALUE_CUTOFF = 1e-5", "SINGULAR_VALUE_CUTOFF = 1e-6")
    )
    jobs = _jobs(snakemake(wd, "--dry-run", repo=repo).stdout)
    assert "train" not in jobs
    assert jobs["metrics"] == 4 and jobs["collate"] == 2 and jobs["hmm"] == 2 and jobs["forecast"] == 2

    # A training change retrains; the metrics jobs follow only because their input changed.
    train.write_text(train.read_text().replace("batch = min(batch, n_train)", "batch = min(n_train, batch)"))
    assert _jobs(snakemake(wd, "--dry-run", repo=repo).stdout)["train"] == 4


# A user's own project that uses the workflow as a Snakemake module (docs/operations.md, "As a
# module"): its config in config/config.yaml, a Snakefile of a configfile line and three
# statements, the results in the user's directory.
MODULE_SNAKEFILE = """configfile: "config/config.yaml"

module latentstates:
    snakefile: "{snakefile}"
    config: config

use rule * from latentstates
"""


def _snakemake_in(project, *args: str) -> subprocess.CompletedProcess:
    """Snakemake as a user runs it in their project: no --snakefile, no --configfile."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=project)


def test_the_workflow_as_a_module_elsewhere_gives_the_same_results(tiny_run, tmp_path, tiny_config):
    """The whole DAG from a directory outside the repository, through `module` and `use rule *`:
    the same tables, models and summary as the tiny run inside it (a second run of the same
    config, so also the determinism of every stage)."""
    project = tmp_path / "my_project"
    (project / "config").mkdir(parents=True)
    (project / "config" / "config.yaml").write_text(yaml.safe_dump(tiny_config, sort_keys=False))
    (project / "Snakefile").write_text(MODULE_SNAKEFILE.format(snakefile=REPO / "Snakefile"))
    assert REPO not in project.parents and project not in REPO.parents
    proc = _snakemake_in(project)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ours = project / "results"
    for task in TASKS:
        for rel in ["metrics.parquet", "hmm/states.parquet"]:
            a = pd.read_parquet(tiny_run / "results" / task / rel)
            b = pd.read_parquet(ours / task / rel)
            pd.testing.assert_frame_equal(a, b)
        for rel in ["hmm/model.json", "hmm/model_selection_restarts.csv", "analysis/summary.json"]:
            assert (tiny_run / "results" / task / rel).read_text() == (ours / task / rel).read_text(), rel
        assert (ours / task / "figures" / "transition_graph.png").stat().st_size > 0
    for rel in ["hmm/model.json", "analysis/tests.csv", "analysis/runs.csv"]:
        a, b = (d / "comparisons" / "both" / rel for d in (tiny_run / "results", ours))
        assert a.read_text() == b.read_text(), rel
    for rel in ["summary.md", "summary.csv"]:
        assert (tiny_run / "results" / rel).read_text() == (ours / rel).read_text(), rel
    # Nothing is left to do.
    dry = _snakemake_in(project, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["tasks"]["sparse_parity"].update(kind="mnist_typo"), "tasks.sparse_parity.kind"),
        (lambda c: c["tasks"]["modular_addition"].update(seeds=-3), "tasks.modular_addition.seeds"),
        (lambda c: c["hmm"].update(max_states="eight"), "hmm.max_states"),
        (lambda c: c["tasks"]["sparse_parity"]["train"].update(lr="fast"), "tasks.sparse_parity.train.lr"),
        (lambda c: c["metrics"]["hessian"].update(batch_runs="gpu"), "metrics.hessian.batch_runs"),
        (
            lambda c: c["comparisons"]["both"].update(tasks=["sparse_parity", "mnist"]),
            "comparisons.both.tasks",
        ),
    ],
)
def test_bad_config_stops_with_the_key(tiny_config, make_workdir, mutate, key):
    cfg = copy.deepcopy(tiny_config)
    mutate(cfg)
    wd = make_workdir(cfg)
    proc = snakemake(wd, "--dry-run", check=False)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert f"invalid config key '{key}'" in err
    assert not (wd / "results").exists()


def test_the_pomegranate_engine_gives_the_same_k_and_states(tiny_run, tmp_path):
    """`hmm.engine: pomegranate` runs the same model selection through pomegranate's own DenseHMM,
    one fit at a time: the same K, kept restarts and decoded states as the batched EM."""
    import yaml

    wd = tmp_path / "copy"
    shutil.copytree(tiny_run, wd, symlinks=True)
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg["hmm"]["engine"] = "pomegranate"
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    hmm_dirs = [f"results/{task}/hmm" for task in TASKS] + ["results/comparisons/both/hmm"]
    snakemake(wd, "--keep-going", *[f"{d}/model.json" for d in hmm_dirs])  # a flag, then targets
    for d in hmm_dirs:
        ours, theirs = (json.loads((root / d / "model.json").read_text()) for root in (tiny_run, wd))
        assert theirs["settings"]["engine"] == "pomegranate" and ours["settings"]["engine"] == "batched"
        assert theirs["k"] == ours["k"], d
        np.testing.assert_allclose(theirs["means"], ours["means"], rtol=1e-6, atol=1e-6)
        states = [pd.read_parquet(root / d / "states.parquet") for root in (tiny_run, wd)]
        pd.testing.assert_frame_equal(*states)
        restarts = [pd.read_csv(root / d / "model_selection_restarts.csv") for root in (tiny_run, wd)]
        kept = [r.loc[r["kept"], ["k", "restart"]].reset_index(drop=True) for r in restarts]
        pd.testing.assert_frame_equal(*kept)
