"""Training recipes compared through one shared HMM: a pooled fit, each recipe's use of the shared
states and edges, and permutation tests of every difference (docs/methods.md, "Comparing recipes").

Every run of every recipe is z-scored on its own (as in a task's HMM) and fitted by one HMM, so a
state means the same in every recipe. The tests permute the recipe labels among the runs: the fit
never sees the labels, so under the null hypothesis (the recipe changes nothing) the runs are
exchangeable and each permutation is as likely as the observed labelling. p-values are Holm-adjusted
over every state and edge tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from latentstates.settings import ComparisonSettings
from latentstates.states.analysis import (
    convergence_times,
    holm,
    occupancy,
    paths_by_run,
    transition_edges,
)
from latentstates.states.model import StateModel

RUN_COLUMNS = ["run", "recipe", "seed"]
# tests.csv: the per-recipe means (mean_<recipe>) come after the test's identity.
TEST_COLUMNS = [
    "test",
    "state",
    "source",
    "target",
    "difference",
    "statistic",
    "p_value",
    "p_holm",
    "recipe_specific",
]


def pool_runs(metrics: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The recipes' metrics as one table whose `seed` column is a run number over all recipes,
    and the table of runs (run, recipe, seed): recipes in the order given, seeds ascending."""
    runs = []
    for recipe, df in metrics.items():
        for seed in sorted(df["seed"].unique()):
            runs.append({"run": len(runs), "recipe": recipe, "seed": int(seed)})
    table = pd.DataFrame(runs, columns=RUN_COLUMNS)
    return number_runs(metrics, table), table


def number_runs(metrics: dict[str, pd.DataFrame], runs: pd.DataFrame) -> pd.DataFrame:
    """The recipes' metrics as one table whose `seed` column holds the run numbers of `runs`
    (runs absent from it are left out)."""
    index = {(r.recipe, r.seed): r.run for r in runs.itertuples()}
    frames = []
    for recipe, df in metrics.items():
        ids = [index.get((recipe, int(s)), -1) for s in df["seed"]]
        frames.append(df.assign(seed=ids)[np.asarray(ids) >= 0])
    return pd.concat(frames, ignore_index=True)


def with_recipes(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """A table keyed by run number (`seed` column) as run, recipe and seed columns."""
    out = table.rename(columns={"seed": "run"}).merge(runs, on="run", how="left")
    return out[[*RUN_COLUMNS, *[c for c in out.columns if c not in RUN_COLUMNS]]]


def _between(values: np.ndarray, onehot: np.ndarray) -> np.ndarray:
    """Between-recipe sum of squares Σ_r n_r (mean_r − mean)² of each column of `values`
    (n_runs, m) for each labelling `onehot` (..., n_runs, R): the permutation test's statistic (for
    two recipes a monotone function of the absolute difference of their means)."""
    n_r = onehot.sum(axis=-2)  # (..., R)
    means = np.einsum("...nr,nm->...rm", onehot, values) / n_r[..., None]
    grand = values.mean(axis=0)
    return np.einsum("...r,...rm->...m", n_r, (means - grand) ** 2)


def permutation_pvalues(
    values: np.ndarray, labels: np.ndarray, permutations: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per column of `values` (n_runs, m): the between-recipe statistic of `labels` and its
    permutation p-value (1 + #{permuted ≥ observed}) / (1 + permutations); NaN for a column
    constant over the runs (nothing to test)."""
    values = np.asarray(values, dtype=float)
    labels = np.asarray(labels)
    recipes = np.unique(labels)
    onehot = (labels[:, None] == recipes[None, :]).astype(float)
    observed = _between(values, onehot)
    rng = np.random.default_rng([seed, 0xC0DE])
    exceed = np.zeros(values.shape[1])
    batch = 500
    done = 0
    while done < permutations:
        b = min(batch, permutations - done)
        order = np.argsort(rng.random((b, len(labels))), axis=1)
        stats = _between(values, onehot[order])
        # Ties within rounding count as at least as extreme (the exact null includes them).
        exceed += (stats >= observed - 1e-12 * np.maximum(np.abs(observed), 1.0)).sum(axis=0)
        done += b
    p = (1.0 + exceed) / (1.0 + permutations)
    scale = np.maximum(np.abs(values).max(axis=0), 1.0) if len(values) else 1.0
    constant = np.ptp(values, axis=0) <= 1e-12 * scale if len(values) else np.ones(values.shape[1], bool)
    p[constant] = np.nan
    return observed, p


@dataclass
class Comparison:
    """Every table the comparison stage writes."""

    states: pd.DataFrame  # per state × recipe: occupancy and visit rate
    edges: pd.DataFrame  # per edge × recipe: runs using it, transitions
    tests: pd.DataFrame  # one row per test: per-recipe values, difference, p, Holm p, verdict
    convergence: pd.DataFrame  # per recipe: convergence, raw and occupancy-adjusted difference
    runs: pd.DataFrame  # per run: recipe, seed, convergence, occupancy, states visited
    summary: dict


def _edge_use(paths: dict[int, np.ndarray], edges: Sequence[tuple[int, int]]) -> np.ndarray:
    """(n_runs, n_edges) times each run takes each edge."""
    col = {e: i for i, e in enumerate(edges)}
    out = np.zeros((len(paths), len(edges)))
    for r, p in enumerate(paths.values()):
        for a, b in zip(p[:-1], p[1:]):
            if a != b:
                out[r, col[(int(a), int(b))]] += 1
    return out


def convergence_regression(
    times: pd.Series, occ: pd.DataFrame, recipe: pd.Series, recipes: Sequence[str], level: float = 0.95
) -> pd.DataFrame:
    """Per recipe but the first: its difference in mean convergence time from the first recipe,
    raw (convergence ~ recipe) and adjusted for the occupancy of the shared states (convergence ~
    occupancy + recipe, fitted on the pooled runs; occupancy fractions sum to one, so they carry
    the constant), and the fraction of the raw difference the occupancy explains (1 − adjusted/raw).
    """
    import statsmodels.api as sm

    df = occ.join(times.rename("y")).join(recipe.rename("recipe"))
    y = df["y"].to_numpy(dtype=float)
    dummies = np.column_stack([(df["recipe"] == r).to_numpy(float) for r in recipes[1:]])
    used = [c for c in occ.columns if (df[c] > 0).any()]
    raw = sm.OLS(y, np.column_stack([np.ones(len(y)), dummies])).fit()
    design = np.column_stack([df[used].to_numpy(float), dummies])
    adjusted = sm.OLS(y, design, hasconst=True).fit()
    rank = np.linalg.matrix_rank(design)
    rows = []
    for i, r in enumerate(recipes[1:]):
        j = len(used) + i
        ok = rank == design.shape[1] and adjusted.df_resid > 0
        ci = adjusted.conf_int(alpha=1 - level)[j] if ok else (np.nan, np.nan)
        d_raw = float(raw.params[1 + i])
        d_adj = float(adjusted.params[j]) if ok else float("nan")
        rows.append(
            {
                "recipe": r,
                "difference": d_raw,
                "adjusted_difference": d_adj,
                "adjusted_ci_low": float(ci[0]),
                "adjusted_ci_high": float(ci[1]),
                "adjusted_p_value": float(adjusted.pvalues[j]) if ok else float("nan"),
                "explained": 1.0 - d_adj / d_raw if d_raw != 0 and ok else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def compare_recipes(
    metrics: pd.DataFrame,
    states: pd.DataFrame,
    model: StateModel,
    runs: pd.DataFrame,
    thresholds: dict[str, float],
    settings: ComparisonSettings,
) -> Comparison:
    """The comparison's analyses of the shared HMM's decoded runs (`seed` = run number in
    `metrics` and `states`; `runs` maps it to recipe and seed; convergence by each recipe's own
    threshold)."""
    recipes = list(dict.fromkeys(runs["recipe"]))
    k = model.k
    paths = paths_by_run(states)
    decoded = runs[runs["run"].isin(list(paths))].set_index("run").loc[list(paths)]
    labels = decoded["recipe"].to_numpy()
    present = [r for r in recipes if (labels == r).any()]
    occ = occupancy(paths, k, fraction=True)
    visits = (occ > 0).astype(float)
    edge_table = transition_edges(paths, model.hmm.transitions)
    edges = list(zip(edge_table["source"].astype(int), edge_table["target"].astype(int)))
    use = _edge_use(paths, edges)

    performance = "eval_acc" in metrics and bool(metrics["eval_acc"].notna().any())
    times = pd.Series(np.nan, index=occ.index)
    converged = pd.Series(False, index=occ.index)
    if performance:
        for r in present:
            ids = decoded.index[decoded["recipe"] == r]
            conv = convergence_times(metrics[metrics["seed"].isin(list(ids))], thresholds[r])
            times.loc[conv.index] = conv["convergence_checkpoint"].astype(float)
            converged.loc[conv.index] = conv["converged"]

    # One family of tests: each state's occupancy and visit rate, each edge's use by the runs.
    columns = [
        *[("occupancy", s, None, None, occ.iloc[:, s].to_numpy()) for s in range(k)],
        *[("visits", s, None, None, visits.iloc[:, s].to_numpy()) for s in range(k)],
        *[("edge", None, a, b, (use[:, i] > 0).astype(float)) for i, (a, b) in enumerate(edges)],
    ]
    family = np.column_stack([c[-1] for c in columns]) if columns else np.zeros((len(labels), 0))
    stat, p = permutation_pvalues(family, labels, settings.permutations, settings.seed)
    rows = [
        _test_row(*column, labels, present, t, pv, ph, settings.alpha)
        for column, t, pv, ph in zip(columns, stat, p, holm(p))
    ]
    conv_test = None
    if performance and len(present) > 1:
        y = times.to_numpy()
        t, pv = permutation_pvalues(y[:, None], labels, settings.permutations, settings.seed + 1)
        # A test of its own, outside the family: its Holm p is its p.
        conv_test = _test_row(
            "convergence", None, None, None, y, labels, present, t[0], pv[0], pv[0], settings.alpha
        )
        rows.append(conv_test)
    tests = pd.DataFrame(rows, columns=TEST_COLUMNS[:4] + [f"mean_{r}" for r in present] + TEST_COLUMNS[4:])
    for c in ("state", "source", "target"):
        tests[c] = tests[c].astype("Int64")

    state_rows = []
    for s in range(k):
        for r in present:
            m = labels == r
            state_rows.append(
                {
                    "state": s,
                    "recipe": r,
                    "n_runs": int(m.sum()),
                    "occupancy": float(occ.iloc[m, s].mean()),
                    "occupancy_sd": float(occ.iloc[m, s].std(ddof=1)) if m.sum() > 1 else float("nan"),
                    "n_visiting": int(visits.iloc[m, s].sum()),
                    "visit_rate": float(visits.iloc[m, s].mean()),
                }
            )
    edge_rows = []
    for i, (a, b) in enumerate(edges):
        for r in present:
            m = labels == r
            edge_rows.append(
                {
                    "source": a,
                    "target": b,
                    "recipe": r,
                    "probability": float(edge_table["probability"].iloc[i]),
                    "n_runs": int((use[m, i] > 0).sum()),
                    "n_total_runs": int(m.sum()),
                    "fraction_runs": float((use[m, i] > 0).mean()),
                    "transitions_per_run": float(use[m, i].mean()),
                }
            )

    run_table = decoded.reset_index()[RUN_COLUMNS].copy()
    run_table["convergence_checkpoint"] = times.to_numpy()
    run_table["converged"] = converged.to_numpy() if performance else pd.NA
    for c in occ.columns:
        run_table[c] = occ[c].to_numpy()
    run_table["states_visited"] = [" ".join(map(str, sorted(set(p.tolist())))) for p in paths.values()]

    conv_rows = []
    for r in present:
        m = labels == r
        conv_rows.append(
            {
                "recipe": r,
                "n_runs": int(m.sum()),
                "threshold": thresholds[r],
                "n_converged": int(converged[m].sum()) if performance else None,
                "mean": float(times[m].mean()),
                "median": float(times[m].median()),
            }
        )
    convergence = pd.DataFrame(conv_rows)
    if performance and len(present) > 1 and np.ptp(times.to_numpy()) > 0:
        reg = convergence_regression(times, occ, pd.Series(labels, index=occ.index), present)
        convergence = convergence.merge(reg, on="recipe", how="left")

    tested = tests[tests["test"] != "convergence"]
    specific = tested[tested["recipe_specific"]]
    summary = {
        "k": k,
        "recipes": present,
        "n_runs": {r: int((labels == r).sum()) for r in present},
        "permutations": settings.permutations,
        "alpha": settings.alpha,
        "n_tests": int(tested["p_value"].notna().sum()),
        "recipe_specific_states": sorted({int(s) for s in specific["state"].dropna()}),
        "recipe_specific_edges": sorted(
            {(int(a), int(b)) for a, b in zip(specific["source"].dropna(), specific["target"].dropna())}
        ),
        "findings": [describe(row, present) for row in specific.to_dict("records")],
        "convergence": conv_test
        and {
            "means": {r: conv_test[f"mean_{r}"] for r in present},
            "p_value": conv_test["p_value"],
        },
    }
    if "explained" in convergence:
        summary["convergence"]["explained"] = {
            r.recipe: r.explained for r in convergence.itertuples() if r.recipe != present[0]
        }
    if not performance:
        summary["status"] = "no eval accuracy: convergence not compared"
    return Comparison(
        states=pd.DataFrame(state_rows),
        edges=pd.DataFrame(edge_rows),
        tests=tests,
        convergence=convergence,
        runs=run_table,
        summary=summary,
    )


def _test_row(
    kind: str,
    state: int | None,
    source: int | None,
    target: int | None,
    values: np.ndarray,
    labels: np.ndarray,
    recipes: Sequence[str],
    statistic: float,
    p: float,
    p_holm: float,
    alpha: float,
) -> dict:
    """One row of tests.csv: what is tested, each recipe's mean of the per-run `values`, their
    difference, the statistic, p-values and the verdict (Holm-adjusted p below alpha)."""
    means = {r: float(values[labels == r].mean()) for r in recipes}
    return {
        "test": kind,
        "state": state,
        "source": source,
        "target": target,
        **{f"mean_{r}": v for r, v in means.items()},
        "difference": _difference(means, recipes),
        "statistic": float(statistic),
        "p_value": float(p),
        "p_holm": float(p_holm),
        "recipe_specific": bool(p_holm < alpha) if np.isfinite(p_holm) else False,
    }


def _difference(means: dict[str, float], recipes: Sequence[str]) -> float:
    """Second recipe minus first (two recipes), else the largest minus the smallest mean."""
    if len(recipes) < 2:
        return float("nan")
    if len(recipes) == 2:
        return means[recipes[1]] - means[recipes[0]]
    return max(means.values()) - min(means.values())


def describe(row: dict, recipes: Sequence[str]) -> str:
    """One finding in words: 'state 2: runs visiting 25% base, 88% lr_high (Holm p 0.002)'."""
    kind = row["test"]
    values = ", ".join(
        f"{row[f'mean_{r}']:.2f} {r}" if kind == "occupancy" else f"{_pct(row[f'mean_{r}'])} {r}"
        for r in recipes
    )
    what = {
        "occupancy": f"state {row['state']}: occupancy",
        "visits": f"state {row['state']}: runs visiting",
        "edge": f"edge {row['source']}→{row['target']}: runs taking it",
    }[kind]
    return f"{what} {values} (Holm p {row['p_holm']:.2g})"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"
