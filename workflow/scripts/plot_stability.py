"""Figure: how often each finding of one task holds across bootstrap resamples of its runs."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import pandas as pd

from latentstates.io import read_json
from latentstates.logs import job_log
from latentstates.report import plots

with job_log(snakemake.log[0]):
    task = snakemake.wildcards.task
    summary = read_json(snakemake.input.summary)
    if not summary.get("resamples_fitted"):
        fig = plots.message(task, summary.get("status") or plots.NO_RUNS)
    else:
        fig = plots.stability(
            summary,
            pd.read_csv(snakemake.input.k),
            pd.read_csv(snakemake.input.states),
            pd.read_csv(snakemake.input.resamples),
            task,
        )
    plots.save(fig, [snakemake.output.png, snakemake.output.svg])
