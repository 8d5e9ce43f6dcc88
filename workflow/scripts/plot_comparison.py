"""Figures of one comparison: the shared transition graph per recipe, occupancy per state and
recipe, training curves coloured by the shared states (static and interactive)."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import pandas as pd

from latentstates.io import read_json, read_parquet
from latentstates.logs import job_log
from latentstates.report import comparisons, interactive, plots
from latentstates.states.model import StateModel

with job_log(snakemake.log[0]):
    name = snakemake.wildcards.comparison
    recipes = list(snakemake.params.tasks)
    model = StateModel.read(snakemake.input.model)
    summary = read_json(snakemake.input.summary)
    states = read_parquet(snakemake.input.states)
    edges = pd.read_csv(snakemake.input.edges)
    tests = pd.read_csv(snakemake.input.tests)
    k = model.k
    present = summary["recipes"]
    fig = comparisons.transition_graph(k, edges, tests, present, name)
    plots.save(fig, [snakemake.output.graph_png, snakemake.output.graph_svg])
    fig = comparisons.occupancy(pd.read_csv(snakemake.input.state_table), tests, present, name)
    plots.save(fig, [snakemake.output.occupancy_png, snakemake.output.occupancy_svg])
    metrics = pd.concat(
        [read_parquet(snakemake.input[f"metrics_{t}"]).assign(recipe=t) for t in recipes], ignore_index=True
    )
    per_recipe = max(1, min(3, snakemake.params.max_runs // len(recipes) or 1))
    fig = comparisons.training_curves(metrics, states, k, present, name, per_recipe)
    plots.save(fig, [snakemake.output.curves_png, snakemake.output.curves_svg])

    # Interactive views keyed by run number, labelled '<recipe> seed <seed>'.
    runs = states[["run", "recipe", "seed"]].drop_duplicates()
    keyed = metrics.merge(runs, on=["recipe", "seed"]).drop(columns="seed").rename(columns={"run": "seed"})
    names = {int(r.run): f"{r.recipe} seed {r.seed}" for r in runs.itertuples()}
    decoded = states[["run", "checkpoint", "state"]].rename(columns={"run": "seed"})
    fig = interactive.training_curves(keyed, decoded, k, name, features=model.features, names=names)
    interactive.save_html(fig, snakemake.output.curves_html)
    hover = comparisons.edge_hover(edges, tests, present)
    specific = summary["recipe_specific_states"]
    fig = interactive.transition_graph(model, hover, specific, name, ringed="recipe-specific")
    interactive.save_html(fig, snakemake.output.graph_html)
