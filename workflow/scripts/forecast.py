"""Forecasts of convergence from the first checkpoints of runs held out of the HMM fit."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json

import pandas as pd

from latentstates.io import write_csv
from latentstates.logs import job_log
from latentstates.report.tables import write_table
from latentstates.device import configure_torch, resolve_device
from latentstates.settings import ForecastSettings, HMMSettings
from latentstates.forecast.evaluation import EVALUATION_COLUMNS, evaluate, summarise
from latentstates.states.model import StateModel
from latentstates.states.sequences import analysed_metrics

with job_log(snakemake.log[0]) as logger:
    configure_torch(snakemake.threads, resolve_device("cpu"))
    settings = ForecastSettings.from_dict(json.loads(snakemake.params.forecast))
    model = StateModel.read(snakemake.input.model)
    task = snakemake.wildcards.task
    metrics = analysed_metrics(snakemake.input.metrics, model)
    if model.k == 0 or metrics["eval_acc"].isna().all():
        # Every run excluded (e.g. diverged), or no eval accuracy to converge by (an imported
        # series without a performance table): empty tables (the figure says why).
        logger.warning("%s: no fitted HMM or no eval accuracy: nothing to forecast", task)
        evaluation = pd.DataFrame(columns=EVALUATION_COLUMNS)
    else:
        hmm = HMMSettings.from_dict(json.loads(snakemake.params.hmm))
        evaluation = evaluate(metrics, model, snakemake.params.threshold, settings, hmm)
    summary = summarise(evaluation)
    evaluation.insert(0, "task", task)
    summary.insert(0, "task", task)
    write_csv(evaluation, snakemake.output.evaluation)
    write_table(
        summary,
        snakemake.output.summary,
        snakemake.output.summary_md,
        snakemake.output.summary_tex,
        caption=f"{task}: forecast of convergence (checkpoints) from the first checkpoints, "
        f"mean absolute error against baselines, {settings.level:.0%} interval coverage",
    )
    for r in summary.itertuples():
        logger.info(
            "%s at %.0f%%: MAE %.1f (naive %.1f), coverage %.2f",
            r.method,
            100 * r.fraction,
            r.mae,
            r.mae_naive,
            r.coverage,
        )
