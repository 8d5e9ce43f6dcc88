"""Interactive HTML views (plotly, self-contained) of one task."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import pandas as pd

from latentstates.report import interactive
from latentstates.io import read_json, read_parquet
from latentstates.logs import job_log
from latentstates.states.model import StateModel

with job_log(snakemake.log[0]):
    task = snakemake.wildcards.task
    model = StateModel.read(snakemake.input.model)
    summary = read_json(snakemake.input.summary)
    fig = interactive.training_curves(
        read_parquet(snakemake.input.metrics),
        read_parquet(snakemake.input.states),
        model.k,
        task,
        features=model.features,
    )
    interactive.save_html(fig, snakemake.output.curves)
    fig = interactive.transition_graph(
        model, pd.read_csv(snakemake.input.edges), summary["detour_states"], task
    )
    interactive.save_html(fig, snakemake.output.graph)
