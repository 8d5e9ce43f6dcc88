"""Bring one seed group of runs trained elsewhere under the run contract: per seed, run.json
(pointing to the checkpoints where they are) and the performance log."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json
from pathlib import Path

from latentstates.io import write_parquet
from latentstates.logs import job_log
from latentstates.runs.contract import write_run
from latentstates.runs.hub import streamed as hub_streamed
from latentstates.runs.sources import (
    import_checkpoint_run,
    import_huggingface_run,
    import_streamed_run,
    import_written_run,
    read_performance,
)
from latentstates.settings import TaskSpec

with job_log(snakemake.log[0]) as logger:
    name = snakemake.params.name
    task = TaskSpec.from_dict(json.loads(snakemake.params.task), name)
    # a CSV or Parquet table, or lm-evaluation-harness results (read for this group's checkpoints)
    perf, perf_path = read_performance(snakemake.params.performance, task, list(snakemake.params.seeds))
    if task.source == "huggingface" and perf is None:
        logger.warning(
            "task %s: no performance table: metrics and HMM run, convergence analyses are skipped", name
        )
    # A Hub series kept in the cache: the fetch job's snapshot directory of every (seed, step);
    # else streamed through the metrics job (runs.hub_stream), nothing downloaded here.
    streamed = hub_streamed(task.hub)
    hub = json.loads(Path(snakemake.input[0]).read_text()) if task.hub and not streamed else {}
    for seed, log_out, run_out in zip(snakemake.params.seeds, snakemake.output.logs, snakemake.output.runs):
        if task.source == "runs":
            run, log = import_written_run(task, seed)
        elif task.source == "checkpoints":
            run, log = import_checkpoint_run(
                task, seed, device=snakemake.params.device, threads=snakemake.threads
            )
        elif streamed:
            run, log = import_streamed_run(task, seed, perf, perf_path)
        else:
            found = [(step, Path(p)) for step, p in hub[str(seed)]] if hub else None
            run, log = import_huggingface_run(task, seed, perf, perf_path, found)
        write_parquet(log, log_out)
        write_run(run_out, run)
        where = run["hub"]["cache"] if streamed else Path(run["checkpoints"][0]["path"]).parent
        logger.info("seed %d: %d checkpoints from %s", seed, len(log), where)
