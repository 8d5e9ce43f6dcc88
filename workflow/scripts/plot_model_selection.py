"""Figure: model-selection curves of one task."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import pandas as pd

from latentstates.report import plots
from latentstates.logs import job_log

with job_log(snakemake.log[0]):
    summary = pd.read_csv(snakemake.input.selection)
    fig = plots.model_selection(summary, snakemake.wildcards.task, snakemake.params.criterion)
    plots.save(fig, [snakemake.output.png, snakemake.output.svg])
