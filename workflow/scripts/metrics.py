"""Extract the weight statistics (and Hessian top eigenvalue) of every checkpoint of a seed group's
runs, from the run contract alone (run.json, performance log)."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json

from latentstates.io import read_parquet, write_parquet
from latentstates.logs import job_log
from latentstates.measure.extract import metrics_of_runs
from latentstates.measure.streamed import discard_partial
from latentstates.columns import PERFORMANCE_COLUMNS
from latentstates.runs.contract import read_run
from latentstates.settings import HessianSettings, LLCSettings

SEED_COLUMNS = ["seed", "init_seed", "data_seed", "order_seed"]

with job_log(snakemake.log[0]) as logger:
    hessian = HessianSettings.from_dict(json.loads(snakemake.params.hessian))
    llc = LLCSettings.from_dict(json.loads(snakemake.params.llc))
    runs = [read_run(f) for f in snakemake.input.runs]
    logs = [
        read_parquet(f, columns=["checkpoint", "diverged", *PERFORMANCE_COLUMNS, "seed"])
        for f in snakemake.input.logs
    ]
    tables = metrics_of_runs(
        runs,
        snakemake.input.runs,
        logs,
        hessian,
        device=snakemake.params.device,
        threads=snakemake.threads,
        llc=llc,
        extra=list(snakemake.params.extra),
        custom=json.loads(snakemake.params.custom),
        per_layer=snakemake.params.per_layer or None,
    )
    for run, log, df, out in zip(runs, logs, tables, snakemake.output):
        seeds = log[["checkpoint", *[c for c in SEED_COLUMNS if c in log]]]
        df = df.merge(seeds, on="checkpoint", how="left")
        write_parquet(df, out)
        logger.info("seed %d (%s): %d checkpoints", run["seed"], run["source"], len(df))
    # A streamed run's rows, once every table of the job is written (a job killed before its
    # end loses all its outputs, never the rows).
    for run_file in snakemake.input.runs:
        discard_partial(run_file)
