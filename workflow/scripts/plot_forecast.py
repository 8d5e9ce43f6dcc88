"""Figure: forecast error against the fraction of training seen, and interval coverage."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import pandas as pd

from latentstates.report import plots
from latentstates.columns import NO_PERFORMANCE
from latentstates.io import read_json
from latentstates.logs import job_log

with job_log(snakemake.log[0]):
    task = snakemake.wildcards.task
    summary = pd.read_csv(snakemake.input.summary)
    status = read_json(snakemake.input.analysis).get("status")
    if summary.empty:  # no fitted HMM (every run excluded), or no eval accuracy: say so
        fig = plots.message(task, status if status == NO_PERFORMANCE else plots.NO_RUNS)
    else:
        fig = plots.forecast(summary, task, snakemake.params.method, snakemake.params.level)
    plots.save(fig, [snakemake.output.png, snakemake.output.svg])
