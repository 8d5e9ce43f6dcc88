"""Transitions, feature changes per edge, convergence regression and detour states of one task."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json

from latentstates.io import read_parquet, write_csv, write_json
from latentstates.logs import job_log
from latentstates.report.tables import write_table
from latentstates.settings import AnalysisSettings, HMMSettings
from latentstates.states.analysis import analyse_task
from latentstates.states.model import StateModel
from latentstates.states.outliers import with_outliers
from latentstates.states.sequences import analysed_metrics

with job_log(snakemake.log[0]) as logger:
    settings = AnalysisSettings.from_dict(json.loads(snakemake.params.analysis))
    model = StateModel.read(snakemake.input.model)
    metrics = analysed_metrics(snakemake.input.metrics, model)
    states = read_parquet(snakemake.input.states, columns=["seed", "checkpoint", "state"])
    out = analyse_task(metrics, states, model, snakemake.params.threshold, settings)
    hmm = HMMSettings.from_dict(json.loads(snakemake.params.hmm))
    out = with_outliers(out, metrics, states, model, settings, hmm)
    task = snakemake.wildcards.task
    edges = out.edges
    write_table(
        edges,
        snakemake.output.edges,
        snakemake.output.edges_md,
        snakemake.output.edges_tex,
        caption=f"{task}: state transitions with their top feature changes (z units)",
    )
    write_csv(out.runs, snakemake.output.runs)
    write_csv(out.coefficients, snakemake.output.coefficients)
    write_json({"task": task, **out.summary}, snakemake.output.summary)
    s = out.summary
    if s.get("status"):
        logger.warning("%s: %s", task, s["status"])
    else:
        logger.info("R2 %.3f p %.3g detours %s", s["r2"], s["f_pvalue"], s["detour_states"])
