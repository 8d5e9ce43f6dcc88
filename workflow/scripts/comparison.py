"""Each recipe's use of the shared HMM's states and edges, and permutation tests of the differences."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json

import pandas as pd

from latentstates.io import read_parquet, write_csv, write_json
from latentstates.logs import job_log
from latentstates.report.tables import write_table
from latentstates.settings import ComparisonSettings
from latentstates.states.comparison import compare_recipes, number_runs
from latentstates.states.model import StateModel
from latentstates.states.sequences import analysed_metrics

with job_log(snakemake.log[0]) as logger:
    settings = ComparisonSettings.from_dict(json.loads(snakemake.params.comparison))
    model = StateModel.read(snakemake.input.model)
    runs = pd.read_csv(snakemake.input.runs)
    metrics = number_runs(
        {t: analysed_metrics(snakemake.input[f"metrics_{t}"], model) for t in snakemake.params.tasks},
        runs,
    )
    states = read_parquet(snakemake.input.states, columns=["run", "checkpoint", "state"])[
        ["run", "checkpoint", "state"]
    ]
    out = compare_recipes(
        metrics,
        states.rename(columns={"run": "seed"}),
        model,
        runs,
        json.loads(snakemake.params.thresholds),
        settings,
    )
    name = snakemake.wildcards.comparison
    write_table(
        out.tests,
        snakemake.output.tests,
        snakemake.output.tests_md,
        snakemake.output.tests_tex,
        caption=f"{name}: differences between recipes (permutation tests, Holm over states and edges)",
    )
    write_csv(out.states, snakemake.output.states)
    write_csv(out.edges, snakemake.output.edges)
    write_csv(out.convergence, snakemake.output.convergence)
    write_csv(out.runs, snakemake.output.runs)
    write_json({"comparison": name, **out.summary}, snakemake.output.summary)
    for line in out.summary["findings"] or ["no state or edge differs between the recipes"]:
        logger.info("%s: %s", name, line)
