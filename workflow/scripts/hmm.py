"""Select K, fit the Gaussian HMM and decode every run of one task."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json

from latentstates.columns import expand_features, is_feature_pattern
from latentstates.io import read_parquet, write_csv, write_json, write_parquet
from latentstates.logs import job_log
from latentstates.device import configure_torch, resolve_device
from latentstates.settings import HMMSettings
from latentstates.states.selection import fit_task
from latentstates.states.sequences import first_checkpoints

with job_log(snakemake.log[0]) as logger:
    configure_torch(snakemake.threads, resolve_device("cpu"))
    settings = HMMSettings.from_dict(json.loads(snakemake.params.hmm))
    named = [f for f in settings.features if not is_feature_pattern(f)]
    metrics = read_parquet(snakemake.input[0], columns=["seed", "checkpoint", "step", "diverged", *named])
    # patterns (`l2@block*`, per-layer statistics) become the columns they match
    settings = settings.replace(
        features=expand_features(metrics.columns, settings.features, snakemake.input[0])
    )
    metrics = first_checkpoints(metrics, settings.first_n)
    fit = fit_task(metrics, settings)
    for seed, why in fit.model.excluded_runs.items():
        logger.warning("run seed %s left out of the HMM: %s", seed, why)
    fit.states.insert(0, "task", snakemake.wildcards.task)
    fit.model = fit.model.replace(task=snakemake.wildcards.task)
    write_csv(fit.summary, snakemake.output.selection)
    write_csv(fit.restarts, snakemake.output.restarts)
    fit.model.write(snakemake.output.model)
    write_json(fit.models, snakemake.output.models)
    write_parquet(fit.states, snakemake.output.states)
    fit.excluded.insert(0, "task", snakemake.wildcards.task)
    write_csv(fit.excluded, snakemake.output.excluded)
    logger.info("chosen K = %d", fit.model.k)
