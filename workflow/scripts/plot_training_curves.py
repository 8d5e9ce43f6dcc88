"""Figure: training curves with points coloured by latent state."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from latentstates.report import plots
from latentstates.io import read_parquet
from latentstates.logs import job_log
from latentstates.states.model import StateModel

with job_log(snakemake.log[0]):
    model = StateModel.read(snakemake.input.model)
    fig = plots.training_curves(
        read_parquet(snakemake.input.metrics),
        read_parquet(snakemake.input.states),
        model.k,
        snakemake.wildcards.task,
        max_runs=snakemake.params.max_runs,
        features=model.features,
    )
    plots.save(fig, [snakemake.output.png, snakemake.output.svg])
