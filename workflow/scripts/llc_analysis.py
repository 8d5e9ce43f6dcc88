"""The local learning coefficient beside the latent states of one task: the LLC per state, its
change along each edge, whether transitions coincide with LLC changes; tables and figures."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json

from latentstates.io import read_parquet, write_csv, write_json
from latentstates.logs import job_log
from latentstates.report import interactive, plots
from latentstates.settings import LLCSettings
from latentstates.states import llc as lc
from latentstates.states.model import StateModel

with job_log(snakemake.log[0]) as logger:
    settings = LLCSettings.from_dict(json.loads(snakemake.params.llc))
    k = StateModel.read(snakemake.input.model).k
    data = lc.with_states(read_parquet(snakemake.input.metrics), read_parquet(snakemake.input.states))
    per_state = lc.llc_by_state(data, k, seed=settings.seed)
    changes = lc.transitions(data)
    edges = lc.llc_by_edge(changes)
    together = lc.coincidence(data, window=settings.stride, permutations=2000, seed=settings.seed)
    write_csv(per_state, snakemake.output.states)
    write_csv(edges, snakemake.output.edges)
    summary = {
        "k": k,
        "estimates": int(data["llc"].notna().sum()),
        "not_minimum": int(data["llc_not_minimum"].fillna(False).astype(bool).sum()),
        "stride": settings.stride,
        "coincidence": together,
    }
    write_json(summary, snakemake.output.summary)
    task = snakemake.wildcards.task
    logger.info(
        "%s: %d LLC estimates (%d checkpoints not at a minimum); transitions near an LLC change: %s "
        "(random times: %s, p %s)",
        task,
        summary["estimates"],
        summary["not_minimum"],
        together["fraction"],
        together["null_fraction"],
        together["p_value"],
    )
    fig = plots.llc_figure(data, per_state, edges, k, task, max_runs=snakemake.params.max_runs)
    plots.save(fig, [snakemake.output.png, snakemake.output.svg])
    interactive.save_html(interactive.llc_curves(data, k, task), snakemake.output.html)
