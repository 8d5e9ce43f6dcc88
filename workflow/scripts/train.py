"""Train one (task, seed) run: checkpoints + per-checkpoint loss/accuracy log."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json

from latentstates.io import write_parquet
from latentstates.logs import job_log
from latentstates.train import train_run

with job_log(snakemake.log[0]) as logger:
    task = json.loads(snakemake.params.task)
    seed = snakemake.params.seed
    logger.info("training %s seed %d", snakemake.wildcards.task, seed)
    log = train_run(
        task,
        seed,
        snakemake.output.checkpoints,
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
    write_parquet(log, snakemake.output.log)
    logger.info("final eval accuracy %.3f", log["eval_acc"].iloc[-1])
