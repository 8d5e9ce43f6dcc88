"""The HMM shared by the recipes of a comparison: one fit over the pooled runs of every recipe."""

from __future__ import annotations

import pandas as pd

from latentstates.settings import HMMSettings
from latentstates.states.comparison import pool_runs
from latentstates.states.selection import TaskFit, fit_task


def fit_shared(metrics: dict[str, pd.DataFrame], settings: HMMSettings) -> tuple[TaskFit, pd.DataFrame]:
    """One HMM over the runs of every recipe of a comparison (the HMM stage's selection of K and
    restarts on the pooled runs), and the table of runs. The fit's `seed` columns are run
    numbers (`states.comparison.pool_runs`)."""
    missing = {r: sorted(set(settings.features) - set(df.columns)) for r, df in metrics.items()}
    missing = {r: m for r, m in missing.items() if m}
    if missing:
        raise ValueError(f"the recipes lack the comparison's HMM features: {missing}")
    pooled, runs = pool_runs(metrics)
    fit = fit_task(pooled, settings)
    fit.model["recipes"] = list(metrics)
    fit.model["excluded_runs"] = {
        f"{r.recipe} seed {r.seed}": fit.model["excluded_runs"][str(r.run)]
        for r in runs.itertuples()
        if str(r.run) in fit.model["excluded_runs"]
    }
    return fit, runs
