"""What a notebook calls: from a metrics table to latent states, their analyses and figures.

The workflow runs the same functions (rules hmm, analysis, plot_*); here they take and return
tables and figures instead of files::

    import latentstates as ls

    metrics = ls.read_metrics("results/sparse_parity/metrics.parquet")
    fit = ls.fit_states(metrics, max_states=6)        # K chosen as the workflow chooses it
    found = ls.analyse_states(metrics, fit, threshold=0.9)
    ls.plot_states(metrics, fit).savefig("states.png")
    ls.plot_transitions(fit, found).savefig("graph.png")

Everything is re-exported by `latentstates` (`latentstates.__all__`), imported on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from latentstates.settings import AnalysisSettings, HMMSettings

if TYPE_CHECKING:
    from latentstates.states.analysis import TaskAnalysis
    from latentstates.states.selection import TaskFit

COLLATED = ("seed", "checkpoint", "step")  # the workflow's metrics table (results/<task>/metrics.parquet)


def read_metrics(
    path: str | Path, run_column: str = "run", step_column: str = "step", features: list[str] | None = None
) -> pd.DataFrame:
    """A metrics table: the workflow's collated `results/<task>/metrics.parquet` (or a table with
    its seed, checkpoint and step columns), or your own CSV/Parquet table with one row per run
    and step (`run_column`, `step_column`, numeric feature columns; `features`: which, default
    every numeric column), brought to the collated layout (seed, run, checkpoint, step, features,
    performance columns, diverged). Either is checked cell by cell before it reaches a fit
    (`runs.external_tables.collated_table`, `metrics_table`); errors name the file and the cell."""
    from latentstates.runs.external_tables import collated_table, metrics_table, read_table, table_features

    table = read_table(path)
    if all(c in table for c in COLLATED):
        return collated_table(table, path)
    if features is None and run_column in table and step_column in table:
        features = table_features(table, run_column, step_column)
    return metrics_table(table, path, run_column, step_column, list(features or []))


def hmm_settings(metrics: pd.DataFrame, settings: HMMSettings | None = None, **overrides) -> HMMSettings:
    """The workflow's HMM settings (`hmm:` of the config schema's defaults, or `settings`) with
    `overrides`; without features named, the default features the table has, else its numeric
    columns."""
    settings = settings.replace(**overrides) if settings is not None else HMMSettings.defaults(**overrides)
    if "features" in overrides:
        return settings
    present = [f for f in settings.features if f in metrics]
    if not present:
        from latentstates.runs.external_tables import table_features

        present = table_features(metrics, "seed", "step")  # keys, performance and flags left out
    return settings.replace(features=present)


def fit_states(metrics: pd.DataFrame, settings: HMMSettings | None = None, **overrides) -> TaskFit:
    """Select K and fit the Gaussian HMM to the runs of `metrics` as the workflow's rule hmm does
    (`states.selection.fit_task`; settings: `hmm_settings`, e.g. `max_states=6`,
    `criterion="bic"`, `n_states=4`): a `TaskFit` with the state model (`fit.model`, a
    `StateModel`: what model.json holds; `fit.model.k`, `fit.model.hmm.means`, ...), every run's
    decoded states (`fit.states`) and the selection tables."""
    from latentstates.states.selection import fit_task
    from latentstates.states.sequences import first_checkpoints

    settings = hmm_settings(metrics, settings, **overrides)
    return fit_task(first_checkpoints(metrics, settings.first_n), settings)


def analyse_states(
    metrics: pd.DataFrame,
    fit: TaskFit,
    threshold: float = 0.9,
    settings: AnalysisSettings | None = None,
    hmm: HMMSettings | None = None,
) -> TaskAnalysis:
    """The paper's analyses of a fit (rule analysis), a `TaskAnalysis`: `edges` (transitions with
    their feature changes), `runs` (occupancy, convergence, atypical runs), `coefficients` (the
    convergence regression) and `summary` (K, R², detour states, outlier runs, ...). `threshold`:
    the eval accuracy that counts as converged; `hmm`: the fit's settings (the outlier scores'
    refits; default: the defaults with the fit's covariance)."""
    from latentstates.states.analysis import analyse_task
    from latentstates.states.outliers import with_outliers
    from latentstates.states.sequences import first_checkpoints

    settings = settings or AnalysisSettings.defaults()
    metrics = first_checkpoints(metrics, fit.model.first_n)
    analysis = analyse_task(metrics, fit.states, fit.model, threshold, settings)
    hmm = hmm or HMMSettings.defaults(covariance=fit.model.covariance)
    return with_outliers(analysis, metrics, fit.states, fit.model, settings, hmm)


def plot_states(metrics: pd.DataFrame, fit: TaskFit, title: str = "", max_runs: int = 6):
    """Training curves with each checkpoint coloured by its decoded state (a matplotlib Figure)."""
    from latentstates.report.plots import training_curves

    return training_curves(metrics, fit.states, fit.model.k, title, max_runs, list(fit.model.features))


def plot_transitions(fit: TaskFit, analysis: TaskAnalysis, title: str = ""):
    """The transition graph of `analyse_states`' edges, detour states ringed (a matplotlib Figure)."""
    from latentstates.report.plots import transition_graph

    return transition_graph(fit.model.k, analysis.edges, analysis.summary["detour_states"], title)
