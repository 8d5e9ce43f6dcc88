"""Collate per-run metric tables into one tidy table per task."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import pandas as pd

from latentstates.io import read_parquet, write_parquet
from latentstates.logs import job_log

with job_log(snakemake.log[0]) as logger:
    frames = [read_parquet(p) for p in snakemake.input]
    df = pd.concat(frames, ignore_index=True)
    df.insert(0, "task", snakemake.wildcards.task)
    df = df.sort_values(["seed", "checkpoint"], kind="stable").reset_index(drop=True)
    write_parquet(df, snakemake.output[0])
    logger.info("%d runs, %d rows", df["seed"].nunique(), len(df))
