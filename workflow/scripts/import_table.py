"""A metrics table from elsewhere (CSV or Parquet: run, step, feature columns) in the collated layout."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json

from latentstates.io import write_parquet
from latentstates.logs import job_log
from latentstates.runs.external_tables import metrics_table, read_table

with job_log(snakemake.log[0]) as logger:
    task = json.loads(snakemake.params.task)
    source = snakemake.input[0]
    df = metrics_table(
        read_table(source), source, task["run_column"], task["step_column"], list(snakemake.params.features)
    )
    df.insert(0, "task", snakemake.wildcards.task)
    write_parquet(df, snakemake.output[0])
    lengths = df.groupby("seed").size()
    logger.info(
        "%d runs of %d to %d checkpoints, features %s",
        len(lengths),
        lengths.min(),
        lengths.max(),
        list(snakemake.params.features),
    )
