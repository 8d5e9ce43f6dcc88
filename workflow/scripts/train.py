"""Train one seed group of a task together: per seed, checkpoints, the per-checkpoint loss/accuracy
log and run.json (the run contract, latentstates.runs.contract)."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json
from pathlib import Path

from latentstates.io import write_parquet
from latentstates.logs import job_log
from latentstates.runs.contract import trained_run, write_run
from latentstates.runs.train import train_group
from latentstates.settings import TaskSpec

with job_log(snakemake.log[0]) as logger:
    task = TaskSpec.from_dict(json.loads(snakemake.params.task), snakemake.params.name)
    seeds = list(snakemake.params.seeds)
    logger.info("training seeds %s together", seeds)
    logs = train_group(
        task,
        seeds,
        list(snakemake.output.checkpoints),
        device=snakemake.params.device,
        threads=snakemake.threads,
        # Read from the config, not a rule parameter: changing it changes no output (no rerun).
        resume_every=snakemake.config["resume_every"],
    )
    outputs = zip(seeds, logs, snakemake.output.checkpoints, snakemake.output.logs, snakemake.output.runs)
    for seed, log, checkpoints, log_out, run_out in outputs:
        write_parquet(log, log_out)
        write_run(run_out, trained_run(task, seed, checkpoints, log, Path(run_out).parent))
        logger.info("seed %d: final eval accuracy %.3f", seed, log["eval_acc"].iloc[-1])
