"""Write each run's decoded states and the task's findings back as TensorBoard event files."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json
from pathlib import Path

from latentstates.io import read_parquet
from latentstates.logs import job_log
from latentstates.runs.trackers import write_states_tensorboard

with job_log(snakemake.log[0]) as logger:
    states = read_parquet(snakemake.input.states)
    runs = read_parquet(snakemake.input.metrics, columns=["seed", "run"]).drop_duplicates()
    labels = dict(zip(runs["seed"].astype(int), runs["run"].astype(str)))
    summary = json.loads(Path(snakemake.input.summary).read_text())
    write_states_tensorboard(states, labels, summary, Path(snakemake.output[0]))
    logger.info("%d runs' states written to %s", len(labels), snakemake.output[0])
