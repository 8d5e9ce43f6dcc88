"""Figures and tables of recipe comparisons (states.comparison): the shared transition graph per
recipe, occupancy per state and recipe, training curves by shared state, the edges' hover text and
the comparisons table's rows."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from latentstates.report.plots import (
    LABELS,
    NO_RUNS,
    curve_columns,
    graph_positions,
    message,
    run_curve,
    state_palette,
)

SPECIFIC = "#d62728"  # recipe-specific states and edges (Holm-adjusted permutation test)


def transition_graph(
    k: int, edges: pd.DataFrame, tests: pd.DataFrame, recipes: list[str], name: str
) -> plt.Figure:
    """The shared transition graph once per recipe, side by side: edge width ∝ the fraction of
    the recipe's runs taking it (label), recipe-specific edges and states in red."""
    import networkx as nx

    if k == 0:
        return message(name, NO_RUNS)
    specific = tests[tests["recipe_specific"].astype(bool)]
    states = {int(s) for s in specific["state"].dropna()}
    edge_set = {(int(a), int(b)) for a, b in zip(specific["source"].dropna(), specific["target"].dropna())}
    pos = graph_positions(k)
    palette = state_palette(k)
    fig, axes = plt.subplots(1, len(recipes), figsize=(max(4.5, 1.3 * k) * len(recipes), 3.6), squeeze=False)
    for ax, recipe in zip(axes[0], recipes):
        g = nx.DiGraph()
        g.add_nodes_from(range(k))
        used = edges[(edges["recipe"] == recipe) & (edges["n_runs"] > 0)]
        for e in used.itertuples():
            g.add_edge(e.source, e.target, fraction=e.fraction_runs)
        nx.draw_networkx_nodes(
            g,
            pos,
            ax=ax,
            node_color=[palette[s] for s in range(k)],
            node_size=800,
            edgecolors=[SPECIFIC if s in states else "0.2" for s in range(k)],
            linewidths=[3.5 if s in states else 1.0 for s in range(k)],
        )
        nx.draw_networkx_labels(g, pos, ax=ax, font_color="white", font_weight="bold")
        order = list(g.edges)
        nx.draw_networkx_edges(
            g,
            pos,
            ax=ax,
            edgelist=order,
            node_size=800,
            arrowsize=12,
            width=[0.5 + 4.5 * g.edges[e]["fraction"] for e in order],
            edge_color=[SPECIFIC if e in edge_set else "0.35" for e in order],
            connectionstyle="arc3,rad=0.25",
        )
        nx.draw_networkx_edge_labels(
            g,
            pos,
            ax=ax,
            edge_labels={e: f"{g.edges[e]['fraction']:.0%}" for e in order},
            font_size=7,
            connectionstyle="arc3,rad=0.25",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
        )
        n = int(edges.loc[edges["recipe"] == recipe, "n_total_runs"].max()) if len(used) else 0
        ax.set_title(f"{recipe} ({n} runs)", loc="left", fontsize=9)
        ax.axis("off")
        ax.margins(0.12)
    fig.suptitle(
        f"{name}: one HMM for all recipes; edge width and label = fraction of the recipe's runs "
        "taking it; red = recipe-specific (Holm-adjusted permutation test)",
        x=0.01,
        ha="left",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def occupancy(states: pd.DataFrame, tests: pd.DataFrame, recipes: list[str], name: str) -> plt.Figure:
    """Per shared state and recipe: mean occupancy (± sd over runs) and the fraction of runs
    visiting it; '*' marks a recipe-specific difference."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    k = int(states["state"].max()) + 1 if len(states) else 0
    width = 0.8 / max(len(recipes), 1)
    x = np.arange(k)
    colours = sns.color_palette("dark", n_colors=max(len(recipes), 1))
    for ax, (column, test, label) in zip(
        axes,
        [
            ("occupancy", "occupancy", "occupancy (fraction of checkpoints)"),
            ("visit_rate", "visits", "runs visiting"),
        ],
    ):
        for i, recipe in enumerate(recipes):
            r = states[states["recipe"] == recipe].sort_values("state")
            err = r["occupancy_sd"] if column == "occupancy" else None
            ax.bar(
                x + (i - (len(recipes) - 1) / 2) * width,
                r[column],
                width,
                yerr=err,
                color=colours[i],
                label=recipe,
                capsize=2,
                error_kw={"lw": 0.8},
            )
        hit = tests[(tests["test"] == test) & tests["recipe_specific"].astype(bool)]
        for s in hit["state"].dropna().astype(int):
            top = states.loc[states["state"] == s, column].max()
            ax.text(s, min(top + 0.05, 1.02), "*", ha="center", fontsize=14, color=SPECIFIC)
        ax.set_xticks(x)
        ax.set(xlabel="shared state", ylabel=label, ylim=(0, 1.1))
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"{name}: use of the shared states per recipe (* Holm-adjusted p < alpha)",
        x=0.01,
        ha="left",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def training_curves(
    metrics: pd.DataFrame, states: pd.DataFrame, k: int, recipes: list[str], name: str, per_recipe: int = 3
) -> plt.Figure:
    """Training curves of the first runs of each recipe (a row each), points coloured by the
    shared states (`metrics` and `states` keyed by recipe and seed)."""
    columns, ylabel, log = curve_columns(metrics, [])
    palette = state_palette(k)
    data = metrics.merge(
        states[["recipe", "seed", "checkpoint", "state"]], on=["recipe", "seed", "checkpoint"], how="left"
    )
    fig, axes = plt.subplots(
        len(recipes),
        per_recipe,
        figsize=(3.6 * per_recipe, 2.8 * len(recipes)),
        squeeze=False,
        sharey=True,
        sharex=True,
    )
    for row, recipe in zip(axes, recipes):
        runs = data[data["recipe"] == recipe]
        for ax, seed in zip(row, sorted(runs["seed"].unique())[:per_recipe]):
            run_curve(ax, runs[runs["seed"] == seed].sort_values("step"), columns, palette, log, size=7)
            ax.set_title(f"{recipe}, seed {seed}", loc="left", fontsize=8)
        row[0].set_ylabel(ylabel)
    for ax in axes[-1]:
        ax.set_xlabel(LABELS["step"])
    handles = [plt.Line2D([], [], ls="", marker="o", color=palette[s]) for s in range(k)]
    fig.legend(
        handles,
        [f"state {s}" for s in range(k)],
        loc="upper center",
        ncol=min(k, 10),
        bbox_to_anchor=(0.5, 1.0),
    )
    fig.suptitle(f"{name}: training curves coloured by the shared states", x=0.01, ha="left", y=1.05)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def edge_hover(edges: pd.DataFrame, tests: pd.DataFrame, recipes: Sequence[str]) -> pd.DataFrame:
    """One row per edge of the shared graph (source, target, probability, runs over all
    recipes) with a `summary` naming each recipe's fraction of runs taking it and the test."""
    rows = []
    for (a, b), g in edges.groupby(["source", "target"], sort=True):
        by = g.set_index("recipe")
        t = tests[(tests["test"] == "edge") & (tests["source"] == a) & (tests["target"] == b)]
        verdict = ""
        if len(t) and np.isfinite(t["p_holm"].iloc[0]):
            verdict = f"<br>Holm p {t['p_holm'].iloc[0]:.2g}" + (
                " (recipe-specific)" if t["recipe_specific"].iloc[0] else ""
            )
        rows.append(
            {
                "source": int(a),
                "target": int(b),
                "probability": float(g["probability"].iloc[0]),
                "n_runs": int(g["n_runs"].sum()),
                "n_total_runs": int(g["n_total_runs"].sum()),
                "summary": "<br>".join(
                    f"{r}: {by.loc[r, 'fraction_runs']:.0%} of runs" for r in recipes if r in by.index
                )
                + verdict,
            }
        )
    return pd.DataFrame(
        rows, columns=["source", "target", "probability", "n_runs", "n_total_runs", "summary"]
    )


def summary_row(summary: dict, convergence: pd.DataFrame) -> dict:
    """The comparisons table's row of one comparison (its summary.json and convergence.csv)."""
    recipes = summary["recipes"]
    conv = "–"
    if summary.get("convergence"):
        c = summary["convergence"]
        conv = ", ".join(f"{r} {c['means'][r]:.1f}" for r in recipes) + f" (p {c['p_value']:.2g})"
    explained = "–"
    if "explained" in convergence:
        parts = [
            f"{r.recipe} {r.explained:.0%}" for r in convergence.itertuples() if r.explained == r.explained
        ]
        explained = ", ".join(parts) or "–"
    return {
        "comparison": summary["comparison"],
        "recipes": " vs ".join(recipes),
        "runs": ", ".join(str(summary["n_runs"][r]) for r in recipes),
        "K": summary["k"],
        "recipe_specific_states": ", ".join(map(str, summary["recipe_specific_states"])) or "none",
        "recipe_specific_edges": ", ".join(f"{a}→{b}" for a, b in summary["recipe_specific_edges"]) or "none",
        "convergence": conv,
        "explained_by_occupancy": explained,
        "findings": "; ".join(summary["findings"]) or "no difference",
    }
