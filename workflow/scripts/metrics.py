"""Extract the weight statistics (and Hessian top eigenvalue) of every checkpoint of a seed group's runs."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json

from latentstates.extract import run_metrics
from latentstates.io import read_parquet, write_parquet
from latentstates.logs import job_log
from latentstates.metrics import PERFORMANCE_COLUMNS

with job_log(snakemake.log[0]) as logger:
    task = json.loads(snakemake.params.task)
    hessian = json.loads(snakemake.params.hessian)
    for seed, checkpoints, train_log, out in zip(
        snakemake.params.seeds, snakemake.input.checkpoints, snakemake.input.logs, snakemake.output
    ):
        seed_columns = ["seed", "init_seed", "data_seed", "order_seed"]
        log = read_parquet(train_log, columns=["checkpoint", "diverged", *PERFORMANCE_COLUMNS, *seed_columns])
        df = run_metrics(
            task, seed, checkpoints, log, hessian, device=snakemake.params.device, threads=snakemake.threads
        )
        df = df.merge(log[["checkpoint", *seed_columns]], on="checkpoint", how="left")
        write_parquet(df, out)
        logger.info("seed %d: %d checkpoints", seed, len(df))
