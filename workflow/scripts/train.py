"""Train one seed group of a task together: per seed, checkpoints + per-checkpoint loss/accuracy log."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json

from latentstates.io import write_parquet
from latentstates.logs import job_log
from latentstates.train import train_group

with job_log(snakemake.log[0]) as logger:
    task = json.loads(snakemake.params.task)
    seeds = list(snakemake.params.seeds)
    logger.info("training seeds %s together", seeds)
    logs = train_group(
        task,
        seeds,
        list(snakemake.output.checkpoints),
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
    for seed, log, out in zip(seeds, logs, snakemake.output.logs):
        write_parquet(log, out)
        logger.info("seed %d: final eval accuracy %.3f", seed, log["eval_acc"].iloc[-1])
