"""Fit one HMM over the runs of every recipe of a comparison and decode each run."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json

from latentstates.columns import expand_features, is_feature_pattern
from latentstates.device import configure_torch, resolve_device
from latentstates.io import read_parquet, write_csv, write_parquet
from latentstates.logs import job_log
from latentstates.settings import HMMSettings
from latentstates.states.comparison import with_recipes
from latentstates.states.selection import fit_shared
from latentstates.states.sequences import first_checkpoints

with job_log(snakemake.log[0]) as logger:
    configure_torch(snakemake.threads, resolve_device("cpu"))
    settings = HMMSettings.from_dict(json.loads(snakemake.params.hmm))
    named = [f for f in settings.features if not is_feature_pattern(f)]
    columns = ["seed", "checkpoint", "step", "diverged", *named]
    metrics = {}
    for task in snakemake.params.tasks:
        path = snakemake.input[f"metrics_{task}"]
        try:
            metrics[task] = first_checkpoints(read_parquet(path, columns=columns), settings.first_n)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{path}: lacks the comparison's HMM features ({exc})") from None
        if len(metrics) == 1:  # patterns (per-layer statistics) as the first recipe's columns match them
            settings = settings.replace(
                features=expand_features(metrics[task].columns, settings.features, path)
            )
    fit, runs = fit_shared(metrics, settings)
    for run, why in fit.model.excluded_runs.items():
        logger.warning("%s left out of the shared HMM: %s", run, why)
    name = snakemake.wildcards.comparison
    fit.model = fit.model.replace(comparison=name)
    write_csv(fit.summary, snakemake.output.selection)
    write_csv(fit.restarts, snakemake.output.restarts)
    fit.model.write(snakemake.output.model)
    write_parquet(with_recipes(fit.states, runs), snakemake.output.states)
    write_csv(runs, snakemake.output.runs)
    write_csv(with_recipes(fit.excluded, runs), snakemake.output.excluded)
    logger.info("%s: shared K = %d over %d runs of %s", name, fit.model.k, len(runs), list(metrics))
