"""Extract the weight statistics (and Hessian top eigenvalue) of every checkpoint of one run."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json

from latentstates.extract import run_metrics
from latentstates.io import read_parquet, write_parquet
from latentstates.logs import job_log
from latentstates.metrics import PERFORMANCE_COLUMNS

with job_log(snakemake.log[0]) as logger:
    log = read_parquet(snakemake.input.log, columns=["checkpoint", "diverged", *PERFORMANCE_COLUMNS])
    df = run_metrics(
        json.loads(snakemake.params.task),
        snakemake.params.seed,
        snakemake.input.checkpoints,
        log,
        json.loads(snakemake.params.hessian),
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
    seeds = log[["checkpoint", "seed", "init_seed", "data_seed", "order_seed"]]
    df = df.merge(seeds, on="checkpoint", how="left")
    write_parquet(df, snakemake.output[0])
    logger.info("%d checkpoints", len(df))
