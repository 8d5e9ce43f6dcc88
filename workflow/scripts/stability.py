"""How stable the HMM stage's findings are: bootstrap resamples of one task's runs, refitted."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json

from latentstates.device import configure_torch, resolve_device
from latentstates.io import read_parquet, write_csv, write_json
from latentstates.logs import job_log
from latentstates.settings import AnalysisSettings, HMMSettings, StabilitySettings
from latentstates.states.model import StateModel, read_kept_fits
from latentstates.states.sequences import analysed_metrics
from latentstates.states.stability import stability_of_task

with job_log(snakemake.log[0]) as logger:
    configure_torch(snakemake.threads, resolve_device("cpu"))
    settings = StabilitySettings.from_dict(json.loads(snakemake.params.stability))
    model = StateModel.read(snakemake.input.model)
    metrics = analysed_metrics(snakemake.input.metrics, model)
    result = stability_of_task(
        metrics,
        read_parquet(snakemake.input.states, columns=["seed", "checkpoint", "state"]),
        model,
        read_kept_fits(snakemake.input.models),
        snakemake.params.threshold,
        HMMSettings.from_dict(json.loads(snakemake.params.hmm)),
        AnalysisSettings.from_dict(json.loads(snakemake.params.analysis)),
        settings,
    )
    task = snakemake.wildcards.task
    write_csv(result.resamples, snakemake.output.resamples)
    write_csv(result.k, snakemake.output.k)
    write_csv(result.states, snakemake.output.states)
    write_csv(result.edges, snakemake.output.edges)
    write_json({"task": task, **result.summary}, snakemake.output.summary)
    s = result.summary
    if "k" in s:
        logger.info(
            "%d resamples in %.0f s: K = %d in %.0f %%, detours %s",
            s["resamples"],
            s["seconds"],
            s["k"]["main"],
            100 * s["k"]["frequency"],
            ", ".join(f"{d['state']} ({d['frequency']:.0%})" for d in s["detours"]) or "none",
        )
