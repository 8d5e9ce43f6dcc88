"""A metrics table from elsewhere (CSV or Parquet: run, step, feature columns), or a tracker's logs
read as one, in the collated layout."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json

from latentstates.io import write_parquet
from latentstates.logs import job_log
from latentstates.runs.external_tables import metrics_table, read_table
from latentstates.runs.trackers import tracker_table

with job_log(snakemake.log[0]) as logger:
    task = json.loads(snakemake.params.task)
    features = list(snakemake.params.features)
    if task["source"] == "table":
        source, run_column, step_column = snakemake.input[0], task["run_column"], task["step_column"]
        table = read_table(source)
    else:  # a tracker's runs, read as a table (latentstates.runs.trackers)
        source, run_column, step_column = task.get("path") or task["tracking_uri"], "run", "step"
        table = tracker_table(task, features)
    df = metrics_table(table, source, run_column, step_column, features)
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
