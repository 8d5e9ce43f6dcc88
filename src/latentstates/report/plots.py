"""Figures: one function per figure, one palette and one set of labels everywhere."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from latentstates.io import atomic_path  # noqa: E402
from latentstates.states.sequences import CRITERIA  # noqa: E402

LABELS = {
    "k": "number of states K",
    "val_ll": "held-out log-likelihood",
    "aic": "AIC (held-out)",
    "bic": "BIC (held-out)",
    "aic_train": "AIC (training runs)",
    "bic_train": "BIC (training runs)",
    "cv_ll": "held-out LL, folds of runs",
    "step": "training step",
    "loss": "loss",
}
sns.set_theme(context="paper", style="whitegrid")


def state_palette(k: int) -> list:
    """Colours of states 0..k-1 (the same in every figure)."""
    return sns.color_palette("colorblind", n_colors=max(k, 1))


def save(fig: plt.Figure, paths: list[str | Path]) -> None:
    """Save a figure to every path (format from the suffix), atomically, and close it."""
    for p in paths:
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=Path(p).suffix.lstrip("."), bbox_inches="tight", dpi=150)
    plt.close(fig)


def message(task: str, text: str) -> plt.Figure:
    """A figure that says why there is nothing to draw (e.g. every run diverged)."""
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    ax.set_title(task, loc="left")
    ax.axis("off")
    return fig


NO_RUNS = (
    "No run could be fitted by the HMM (every run diverged or had non-finite metrics):\n"
    "see hmm/excluded_runs.csv"
)


def model_selection(summary: pd.DataFrame, task: str, criterion: str = "bic") -> plt.Figure:
    """Every criterion against K: mean ± std over restarts and the kept restart (which picks K)."""
    if summary.empty:
        return message(task, NO_RUNS)
    keys = [*CRITERIA, *(["cv_ll"] if "cv_ll" in summary else [])]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), sharex=True)
    chosen = int(summary.loc[summary["chosen"], "k"].iloc[0])
    for ax, key in zip(axes, keys):
        if key == "cv_ll":  # one value per K: summed over folds
            ax.plot(summary["k"], summary[key], "o-", color="C1", label="summed over folds")
        else:
            mean, std = summary[f"{key}_mean"], summary[f"{key}_std"]
            ax.errorbar(summary["k"], mean, yerr=std, marker="o", capsize=3, color="C0", label="mean ± std")
            ax.plot(summary["k"], summary[key], "D", mfc="none", color="C1", label="kept restart")
        ax.axvline(chosen, color="C3", ls=":", lw=1)
        ax.set_xlabel(LABELS["k"])
        is_criterion = key == criterion or (key, criterion) == ("cv_ll", "cv")
        ax.set_ylabel(LABELS[key] + (" — criterion" if is_criterion else ""))
    axes[0].set_title(f"{task}: chosen K = {chosen}", loc="left")
    axes[0].legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def curve_columns(metrics: pd.DataFrame, features: list[str]) -> tuple[list[str], str, bool]:
    """What a run's training curve shows: (columns, y label, log scale). Losses when the runs
    have them (train dashed, eval solid); else eval accuracy; else the first HMM feature
    (imported series with no performance)."""
    if "eval_loss" in metrics and (metrics["eval_loss"] > 0).any():
        return ["train_loss", "eval_loss"], LABELS["loss"], True
    if "eval_acc" in metrics and metrics["eval_acc"].notna().any():
        return ["eval_acc"], "eval accuracy", False
    return [features[0]], features[0], False


# Train (dashed) and eval (solid) curves; only the last where a run has one column.
CURVE_STYLES = [("--", "0.4"), ("-", "0.2")]


def run_curve(
    ax: plt.Axes, run: pd.DataFrame, columns: list[str], palette: list, log: bool, size: float = 8
) -> None:
    """One run's curves (`curve_columns`) against step, the last one's points coloured by state
    (grey where the run was not decoded)."""
    for column, (ls, colour) in zip(columns, CURVE_STYLES[-len(columns) :]):
        ax.plot(run["step"], run[column], ls=ls, color=colour, lw=1)
    colours = [palette[int(s)] if s == s else (0.7, 0.7, 0.7) for s in run["state"]]
    ax.scatter(run["step"], run[columns[-1]], c=colours, s=size, zorder=3)
    if log:
        ax.set_yscale("log")


def training_curves(
    metrics: pd.DataFrame,
    states: pd.DataFrame,
    k: int,
    task: str,
    max_runs: int = 6,
    features: list[str] | None = None,
) -> plt.Figure:
    """Train loss (dashed) and eval loss (solid) against step, eval-loss points coloured by state
    (eval accuracy, or the first HMM feature, where the runs have no losses: `curve_columns`).

    Runs left out of the HMM (diverged, non-finite metrics) are drawn with grey points.
    """
    columns, ylabel, log = curve_columns(metrics, features or [])
    decoded = set(states["seed"].unique())
    seeds = sorted(metrics["seed"].unique(), key=lambda s: (s not in decoded, s))[:max_runs]
    cols = min(3, len(seeds))
    rows = int(np.ceil(len(seeds) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False, sharey=True)
    palette = state_palette(k)
    data = metrics.merge(states[["seed", "checkpoint", "state"]], on=["seed", "checkpoint"], how="left")
    styles = CURVE_STYLES[-len(columns) :]
    for ax, seed in zip(axes.flat, seeds):
        run_curve(ax, data[data["seed"] == seed].sort_values("step"), columns, palette, log)
        ax.set_title(f"seed {seed}" + ("" if seed in decoded else " (not in the HMM)"), loc="left")
        ax.set_xlabel(LABELS["step"])
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    for ax in axes.flat[len(seeds) :]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], ls=ls, color=colour) for ls, colour in styles]
    handles += [plt.Line2D([], [], ls="", marker="o", color=palette[s]) for s in range(k)]
    labels = [c.replace("_", " ") for c in columns] + [f"state {s}" for s in range(k)]
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 10), bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(task, x=0.01, ha="left", y=1.06)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def graph_positions(k: int) -> dict[int, tuple[float, float]]:
    """Node positions of the transition graph: left to right in state order (= time order)."""
    return {s: (float(s), 0.5 if s % 2 == 0 else -0.5) for s in range(k)}


def transition_graph(k: int, edges: pd.DataFrame, detours: list[int], task: str) -> plt.Figure:
    """States as nodes, each observed i→j as an arrow labelled 'probability, runs/N'; detours ringed."""
    import networkx as nx

    if k == 0:
        return message(task, NO_RUNS)
    g = nx.DiGraph()
    g.add_nodes_from(range(k))
    for e in edges.itertuples():
        g.add_edge(e.source, e.target, label=f"{e.probability:.2g}\n{e.n_runs}/{e.n_total_runs}")
    pos = graph_positions(k)
    palette = state_palette(k)
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * k), 3.6))
    nx.draw_networkx_nodes(
        g,
        pos,
        ax=ax,
        node_color=[palette[s] for s in range(k)],
        node_size=900,
        edgecolors=["#d62728" if s in detours else "0.2" for s in range(k)],
        linewidths=[3.5 if s in detours else 1.0 for s in range(k)],
    )
    nx.draw_networkx_labels(g, pos, ax=ax, font_color="white", font_weight="bold")
    nx.draw_networkx_edges(
        g,
        pos,
        ax=ax,
        node_size=900,
        arrowsize=14,
        width=1.2,
        edge_color="0.35",
        connectionstyle="arc3,rad=0.25",
    )
    nx.draw_networkx_edge_labels(
        g,
        pos,
        ax=ax,
        edge_labels=nx.get_edge_attributes(g, "label"),
        font_size=7,
        connectionstyle="arc3,rad=0.25",
        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
    )
    ax.set_title(
        f"{task}: transitions (probability, runs using the edge)"
        + (f"; detour states {detours} ringed red" if detours else ""),
        loc="left",
        fontsize=9,
    )
    ax.axis("off")
    ax.margins(0.12)
    fig.tight_layout()
    return fig


def convergence_regression(table: pd.DataFrame, fit: dict, task: str) -> plt.Figure:
    """Observed against fitted convergence time, with R² and p of the occupancy regression."""
    if table.empty or table["fitted"].isna().all():
        return message(task, NO_RUNS)
    fig, ax = plt.subplots(figsize=(4, 3.6))
    sns.scatterplot(
        data=table,
        x="fitted",
        y="convergence_checkpoint",
        hue="converged",
        ax=ax,
        palette={True: "C0", False: "C3"},
    )
    lo = min(table["fitted"].min(), table["convergence_checkpoint"].min())
    hi = max(table["fitted"].max(), table["convergence_checkpoint"].max())
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls=":")
    ax.set_xlabel("fitted from state occupancy")
    ax.set_ylabel("convergence time (checkpoint)")
    r2 = "undefined" if fit["r2"] is None else f"{fit['r2']:.3f}"
    p = "undefined" if fit["f_pvalue"] is None else f"{fit['f_pvalue']:.2g}"
    ax.set_title(f"{task}: R² = {r2}, p = {p}", loc="left", fontsize=9)
    fig.tight_layout()
    return fig


def forecast(summary: pd.DataFrame, task: str, method: str, level: float) -> plt.Figure:
    """Forecast error against fraction of training seen (ours, baselines) and interval coverage."""
    fig, (ax, cov) = plt.subplots(1, 2, figsize=(8, 3.4))
    pct = 100 * summary["fraction"]
    for m, g in summary.groupby("method", sort=True):
        style = {"lw": 2} if m == method else {"lw": 1, "alpha": 0.7}
        label = f"ours ({m}{', default' if m == method else ''})"
        ax.plot(100 * g["fraction"], g["mae"], marker="o", label=label, **style)
        cov.plot(100 * g["fraction"], g["coverage"], marker="o", label=label, **style)
    first = summary.drop_duplicates("fraction")
    baselines = [
        ("mae_naive", "0.4", "--", "naive: mean time"),
        ("mae_naive_conditional", "0.6", ":", "naive, given converged-by-t"),
    ]
    for column, color, ls, label in baselines:
        ax.plot(100 * first["fraction"], first[column], color=color, ls=ls, marker="s", label=label)
    ax.set_xlabel("training seen (%)")
    ax.set_ylabel("mean absolute error (checkpoints)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    cov.axhline(level, color="0.5", ls="--", lw=1)
    cov.set_ylim(0, 1.05)
    cov.set_xlabel("training seen (%)")
    cov.set_ylabel(f"coverage of the {level:.0%} interval")
    ax.set_xticks(sorted(set(pct)))
    cov.set_xticks(sorted(set(pct)))
    ax.set_title(f"{task}: forecast of convergence", loc="left", fontsize=9)
    fig.tight_layout()
    return fig


def stability(
    summary: dict, k_table: pd.DataFrame, states: pd.DataFrame, resamples: pd.DataFrame, task: str
) -> plt.Figure:
    """How stable each finding is: K chosen afresh under perturbations of the fit (every K from 1
    to max_states on the axis, the main fit's marked even where it was never chosen), and across
    bootstrap resamples of the runs each state's presence and detour, and R² (the main fit's
    value and the interval marked)."""
    least = summary["min_frequency"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), gridspec_kw={"width_ratios": [1, 1.6, 1]})
    ax = axes[0]
    k_info = summary.get("k", {})
    if len(k_table):
        ks = k_table["k"].astype(int).to_numpy()
        colours = ["tab:blue" if m else "tab:gray" for m in k_table["main"]]
        ax.bar(ks, k_table["frequency"].fillna(0), color=colours)
        ax.set_xticks(ks)
        ax.set_xlim(ks.min() - 0.6, ks.max() + 0.6)
        main = int(k_info.get("main", ks[k_table["main"].to_numpy()][0] if k_table["main"].any() else 0))
        if main:
            ax.annotate(
                "main",
                (main, 0),
                xytext=(main, 0.08),
                ha="center",
                fontsize=7,
                color="tab:blue",
                arrowprops={"arrowstyle": "-", "color": "tab:blue"},
            )
    ax.axhline(least, color="k", lw=0.8, ls="--")
    how = {"refold": "refolds", "subsample": "subsamples", "bootstrap": "bootstrap resamples"}
    label = how.get(k_info.get("perturbation", "bootstrap"), "resamples")
    ax.set(xlabel="K chosen afresh", ylabel=f"fraction of {label}", ylim=(0, 1), title="K (blue: main fit)")
    ax = axes[1]
    x = np.arange(len(states))
    palette = state_palette(len(states))
    ax.bar(x - 0.2, states["present_frequency"], 0.4, color=palette, label="present")
    ax.bar(x + 0.2, states["detour_frequency"], 0.4, color=palette, hatch="//", alpha=0.6, label="detour")
    for s in states.itertuples():
        if s.detour:
            ax.text(s.state + 0.2, min(s.detour_frequency + 0.03, 0.97), "D", ha="center", fontsize=8)
    ax.axhline(least, color="k", lw=0.8, ls="--")
    ax.set_xticks(x)
    ax.set(xlabel="state (main fit; D: detour there)", ylim=(0, 1), title="presence and detour")
    ax.legend(loc="lower right", fontsize=7)
    ax = axes[2]
    r2 = resamples["r2"].dropna() if "r2" in resamples else pd.Series(dtype=float)
    if len(r2):
        ax.hist(r2, bins=15, color="tab:gray")
        ax.axvline(summary["r2"]["main"], color="tab:red", label="main fit")
        for v in (summary["r2"]["low"], summary["r2"]["high"]):
            ax.axvline(v, color="k", ls=":", lw=0.8)
        ax.legend(fontsize=7)
    ax.set(xlabel="R² (convergence ~ occupancy)", title=f"R², {summary['level']:.0%} interval")
    fig.suptitle(f"{task}: {summary['resamples_fitted']} bootstrap resamples of the runs", x=0.01, ha="left")
    fig.tight_layout()
    return fig


def llc_figure(
    data: pd.DataFrame, per_state: pd.DataFrame, edges: pd.DataFrame, k: int, task: str, max_runs: int = 6
) -> plt.Figure:
    """The local learning coefficient beside the states: each of the first runs' LLC against
    step (±1 standard error over chains), its points coloured by state; the LLC per state (mean,
    95 % bootstrap interval over runs); the mean LLC change along each edge."""
    palette = state_palette(k)
    seeds = sorted(data["seed"].unique())[:max_runs]
    fig = plt.figure(figsize=(12, 7))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.3, 1])
    ax = fig.add_subplot(grid[0, :])
    for seed in seeds:
        run = data[(data["seed"] == seed) & data["llc"].notna()]
        ax.errorbar(run["step"], run["llc"], yerr=run["llc_se"], color="#999", lw=0.8, capsize=0, zorder=1)
        ax.scatter(run["step"], run["llc"], c=[palette[int(s)] for s in run["state"]], s=14, zorder=3)
    ax.set_xlabel("training step")
    ax.set_ylabel("LLC")
    ax.set_title(f"{task}: local learning coefficient of {len(seeds)} runs, coloured by latent state")
    handles = [plt.Line2D([], [], marker="o", ls="", color=palette[s], label=f"state {s}") for s in range(k)]
    ax.legend(handles=handles, fontsize=8, ncol=min(k, 8))
    ax = fig.add_subplot(grid[1, 0])
    ok = per_state[per_state["mean"].notna()]
    low = (ok["mean"] - ok["ci_low"]).fillna(0).clip(lower=0)
    high = (ok["ci_high"] - ok["mean"]).fillna(0).clip(lower=0)
    ax.bar(ok["state"], ok["mean"], color=[palette[int(s)] for s in ok["state"]], yerr=[low, high], capsize=3)
    ax.set_xticks(range(k))
    ax.set_xlabel("state")
    ax.set_ylabel("mean LLC (95 % interval)")
    ax = fig.add_subplot(grid[1, 1])
    measured = edges[edges["measured"] > 0]
    labels = [f"{int(a)}→{int(b)}" for a, b in zip(measured["source"], measured["target"])]
    ax.bar(labels, measured["mean_delta_llc"], color=[palette[int(t)] for t in measured["target"]])
    ax.axhline(0, color="#666", lw=0.8)
    ax.set_xlabel("edge")
    ax.set_ylabel("mean LLC change")
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    fig.tight_layout()
    return fig
