"""Figures: transition graph and convergence regression of one task."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import pandas as pd

from latentstates.report import plots
from latentstates.columns import NO_PERFORMANCE
from latentstates.io import read_json
from latentstates.logs import job_log

with job_log(snakemake.log[0]):
    summary = read_json(snakemake.input.summary)
    task = snakemake.wildcards.task
    edges = pd.read_csv(snakemake.input.edges)
    fig = plots.transition_graph(summary["k"], edges, summary["detour_states"], task)
    plots.save(fig, [snakemake.output.graph_png, snakemake.output.graph_svg])
    if summary.get("status") == NO_PERFORMANCE:
        fig = plots.message(task, NO_PERFORMANCE)
    else:
        fig = plots.convergence_regression(
            pd.read_csv(snakemake.input.runs),
            {"r2": summary["r2"], "f_pvalue": summary["f_pvalue"]},
            task,
        )
    plots.save(fig, [snakemake.output.regression_png, snakemake.output.regression_svg])
