"""The paper's analyses of decoded state paths: transitions, feature changes, convergence, detours."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from latentstates.columns import NO_PERFORMANCE
from latentstates.settings import AnalysisSettings
from latentstates.states.model import GaussianHMM, StateModel
from latentstates.states.sequences import zscore_runs


def paths_by_run(states: pd.DataFrame) -> dict[int, np.ndarray]:
    """Each run's state path in checkpoint order."""
    ordered = states.sort_values(["seed", "checkpoint"])
    return {int(s): g["state"].to_numpy() for s, g in ordered.groupby("seed", sort=True)}


def transition_edges(paths: dict[int, np.ndarray], transitions: np.ndarray) -> pd.DataFrame:
    """Every i→j (i ≠ j) seen in some path: model probability, runs using it, times taken."""
    runs: dict[tuple[int, int], set[int]] = {}
    counts: dict[tuple[int, int], int] = {}
    for seed, p in paths.items():
        for a, b in zip(p[:-1], p[1:]):
            if a != b:
                key = (int(a), int(b))
                runs.setdefault(key, set()).add(seed)
                counts[key] = counts.get(key, 0) + 1
    rows = [
        {
            "source": i,
            "target": j,
            "probability": float(transitions[i, j]),
            "n_runs": len(runs[(i, j)]),
            "n_total_runs": len(paths),
            "n_transitions": counts[(i, j)],
        }
        for i, j in sorted(runs)
    ]
    cols = ["source", "target", "probability", "n_runs", "n_total_runs", "n_transitions"]
    return pd.DataFrame(rows, columns=cols)


def occupancy(paths: dict[int, np.ndarray], k: int, fraction: bool = True) -> pd.DataFrame:
    """Checkpoints (or their fraction) each run spends in each state; index = seed."""
    rows = {s: np.bincount(p, minlength=k).astype(float) for s, p in paths.items()}
    df = pd.DataFrame.from_dict(rows, orient="index", columns=[f"state_{i}" for i in range(k)])
    if fraction:
        df = df.div(df.sum(axis=1), axis=0)
    df.index.name = "seed"
    return df


def convergence_times(metrics: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per run: first checkpoint index with eval accuracy above the threshold (>, as released).

    A run that never reaches it gets its number of checkpoints (the paper's rule: censored at
    the run length) and `converged = False`.
    """
    rows = []
    for seed, g in metrics.sort_values(["seed", "checkpoint"]).groupby("seed", sort=True):
        hit = np.flatnonzero(g["eval_acc"].to_numpy() > threshold)  # strict, as the released code
        ok = hit.size > 0
        idx = int(hit[0]) if ok else len(g)
        step = int(g["step"].iloc[idx]) if ok else int(g["step"].iloc[-1])
        rows.append(
            {"seed": int(seed), "convergence_checkpoint": idx, "convergence_step": step, "converged": ok}
        )
    return pd.DataFrame(rows).set_index("seed")


def regress_convergence(times: pd.Series, occ: pd.DataFrame, level: float = 0.95) -> dict:
    """OLS of convergence time on state occupancy, with identifiable per-state effects.

    Occupancy fractions sum to one (counts to the run length), so an intercept beside them makes
    the design rank-deficient and any single coefficient arbitrary. The intercept is therefore
    left out whenever it lies in the span of the occupancy columns: each coefficient is then the
    predicted convergence time of a run that spends all its checkpoints in that state (for
    counts: per checkpoint). `effect` is the sum-to-zero contrast β_k − mean(β), the state's
    deviation from the average state, with a t-test and confidence interval. R² and the F-test
    compare against the intercept-only model, as with the intercept (the fit is the same).
    States no decoded run occupies have no coefficient (NaN).
    """
    import statsmodels.api as sm

    df = occ.join(times.rename("y"), how="inner")
    y = df["y"].to_numpy(dtype=float)
    used = [c for c in occ.columns if (df[c] > 0).any()]
    x = df[used].to_numpy(dtype=float)
    sums = x.sum(axis=1)
    implicit_constant = len(sums) > 0 and np.allclose(sums, sums[0]) and sums[0] > 0
    names = list(used) if implicit_constant else ["intercept", *used]
    design = x if implicit_constant else np.column_stack([np.ones(len(x)), x])
    # hasconst: R², df_model and the F-test are those of a model with a constant (it is in the
    # span of the occupancies), i.e. against the intercept-only model.
    res = sm.OLS(y, design, hasconst=True).fit()
    # R² and the F-test are undefined when every run has the same convergence time (e.g. none
    # converged) or there are no residual degrees of freedom.
    defined = len(y) > 0 and np.ptp(y) > 0 and res.df_resid > 0 and res.df_model > 0
    table = pd.DataFrame({"term": names, "coef": res.params})
    # Sum-to-zero contrasts over the states' coefficients: β_k − mean(β).
    m = len(used)
    contrast = np.zeros((m, len(names)))
    contrast[:, len(names) - m :] = np.eye(m) - 1.0 / m
    if res.df_resid > 0:
        table["std_err"] = res.bse
        table[["ci_low", "ci_high"]] = res.conf_int(alpha=1 - level)
        with np.errstate(divide="ignore", invalid="ignore"):
            tt = res.t_test(contrast)
        effect = np.asarray(tt.effect)
        ci = np.asarray(tt.conf_int(alpha=1 - level))
        eff = {
            "effect_std_err": np.asarray(tt.sd).ravel(),
            "effect_ci_low": ci[:, 0],
            "effect_ci_high": ci[:, 1],
            "effect_p_value": np.asarray(tt.pvalue).ravel(),
        }
    else:
        table[["std_err", "ci_low", "ci_high"]] = np.nan
        effect = contrast @ res.params
        eff = dict.fromkeys(["effect_std_err", "effect_ci_low", "effect_ci_high", "effect_p_value"], np.nan)
    table = table.merge(pd.DataFrame({"term": used, "effect": effect, **eff}), on="term", how="left")
    missing = [c for c in occ.columns if c not in used]
    if missing:
        table = pd.concat([table, pd.DataFrame({"term": missing})], ignore_index=True)
    order = {t: i for i, t in enumerate(["intercept", *occ.columns])}
    table = table.sort_values("term", key=lambda c: c.map(order)).reset_index(drop=True)
    return {
        "n_runs": len(y),
        "r2": float(res.rsquared) if defined else float("nan"),
        "f_pvalue": float(res.f_pvalue) if defined else float("nan"),
        "df_model": float(res.df_model),
        "intercept": not implicit_constant,
        "fitted": pd.Series(res.fittedvalues, index=df.index),
        "coefficients": table,
    }


def holm(p: np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (family-wise error control over the tests given)."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = ok.size
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def visit_test(times: pd.Series, occ: pd.DataFrame) -> pd.DataFrame:
    """Per state: correlation of "the run visits the state" (0/1) with convergence time.

    The released notebook's test (get_state_correlations): Pearson r, t = r·√(n−2)/√(1−r²) with
    a two-sided p-value (2·P(T > |t|); the notebook's 2·(1 − F(t)) exceeds 1 for negative r),
    plus Holm-adjusted p-values over the states that can be tested (visited by some runs, not
    all). Untestable states get NaN.
    """
    from scipy import stats

    df = occ.join(times.rename("y"), how="inner")
    y = df["y"].to_numpy(dtype=float)
    n = len(y)
    rows = []
    for c in occ.columns:
        visits = (df[c] > 0).to_numpy(dtype=float)
        nv = int(visits.sum())
        r = t = p = np.nan
        if 0 < nv < n and n > 2 and np.ptp(y) > 0:
            r = float(np.corrcoef(visits, y)[0, 1])
            t = r * np.sqrt(n - 2) / np.sqrt(max(1 - r**2, 1e-300))
            p = float(2 * stats.t.sf(abs(t), n - 2))
        rows.append({"term": c, "n_runs_visiting": nv, "visit_r": r, "visit_t": t, "visit_p_value": p})
    out = pd.DataFrame(rows)
    out["visit_p_holm"] = holm(out["visit_p_value"].to_numpy())
    return out


def detour_states(visits: pd.DataFrame, alpha: float) -> list[int]:
    """Detours: states some runs never visit whose visit delays convergence, with evidence.

    A state is a detour when it is visited by some runs but not all, the correlation of visiting
    it with convergence time is positive, and its visit test's Holm-adjusted p-value (over the
    K states tested at once) is below `alpha`.
    """
    hit = (visits["visit_r"] > 0) & (visits["visit_p_holm"] < alpha)
    return [int(t.split("_")[1]) for t in visits.loc[hit, "term"]]


def feature_changes(
    sequences: dict[int, np.ndarray],
    paths: dict[int, np.ndarray],
    edges: pd.DataFrame,
    hmm: GaussianHMM,
    features: Sequence[str],
    method: str,
    top: int,
) -> pd.DataFrame:
    """Top features per edge with the change in state means μ_j − μ_i (z units).

    `method="gradient"` ranks features by |mean gradient of the filtered log-posterior of the
    target state with respect to the observation| over every time the edge is taken, evaluated
    at t, the last step in the source state (as the released code: at t + 1 the posterior of the
    target is ≈ 1 and its gradient has vanished); `method="means"` ranks by |μ_j − μ_i|.
    """
    means = hmm.means
    rows = []
    if method == "gradient":
        post = {s: hmm.filter(sequences[s]) for s in paths}
        prec = hmm.precisions()
    for e in edges.itertuples():
        i, j = e.source, e.target
        delta = means[j] - means[i]
        if method == "means":
            score = np.abs(delta)
        elif method == "gradient":
            grads = [
                hmm.posterior_gradient(sequences[s], t, j, post[s], prec)
                for s, p in paths.items()
                for t in np.flatnonzero((p[:-1] == i) & (p[1:] == j))
            ]
            score = np.abs(np.mean(grads, axis=0))
        else:
            raise ValueError(f"analysis.feature_ranking: unknown method {method!r} (gradient, means)")
        order = np.argsort(-score, kind="stable")[:top]
        row = {
            "source": i,
            "target": j,
            "n_runs": e.n_runs,
            "n_total_runs": e.n_total_runs,
            "probability": e.probability,
        }
        for r, f in enumerate(order, start=1):
            row[f"feature_{r}"] = features[f]
            row[f"change_{r}"] = float(delta[f])
            row[f"score_{r}"] = float(score[f])
        row["summary"] = describe_changes([features[f] for f in order], [delta[f] for f in order])
        rows.append(row)
    return pd.DataFrame(rows)


ARROWS = {True: "↑", False: "↓"}


def describe_changes(features: Sequence[str], deltas: Sequence[float]) -> str:
    """'l2 ↑ 0.11, l1 ↓ 0.61, code_sparsity ↓ 0.32' — the paper's edge-table notation."""
    return ", ".join(f"{f} {ARROWS[d >= 0]} {abs(d):.2f}" for f, d in zip(features, deltas))


EDGE_COLUMNS = ["source", "target", "n_runs", "n_total_runs", "probability", "summary", "detour_edge"]
COEFFICIENT_COLUMNS = [
    "term",
    "coef",
    "std_err",
    "ci_low",
    "ci_high",
    "effect",
    "effect_std_err",
    "effect_ci_low",
    "effect_ci_high",
    "effect_p_value",
    "n_runs_visiting",
    "visit_r",
    "visit_t",
    "visit_p_value",
    "visit_p_holm",
    "detour",
]


@dataclass
class TaskAnalysis:
    """The paper's analyses of one task's decoded runs (what rule analysis writes)."""

    edges: pd.DataFrame
    """Transitions between states with their probability, runs and feature changes (edges.csv)."""
    runs: pd.DataFrame
    """Per run: convergence, occupancy of each state, the regression's fit (runs.csv)."""
    coefficients: pd.DataFrame
    """The convergence regression's coefficients and each state's visit test (regression.csv)."""
    summary: dict
    """K, R² and its p, detour states, the most used edge, ... (summary.json)."""


def analyse_task(
    metrics: pd.DataFrame,
    states: pd.DataFrame,
    model: StateModel,
    threshold: float,
    settings: AnalysisSettings,
) -> TaskAnalysis:
    """All per-task analyses of a fitted state model: edge table with feature changes, per-run
    table, regression, detours."""
    ranking, occupancy_kind = settings.feature_ranking, settings.occupancy
    detour_alpha = settings.detour_alpha
    paths = paths_by_run(states)
    k = model.k
    if k == 0 or not paths:
        return _nothing_decoded(metrics, threshold, ranking, occupancy_kind)
    hmm = model.hmm
    edges = transition_edges(paths, hmm.transitions)
    seqs = zscore_runs(metrics, model.features, pooled=model.pooled_zscores)
    sequences = dict(zip(seqs.runs, seqs.arrays))
    changes = feature_changes(sequences, paths, edges, hmm, model.features, ranking, settings.top_features)
    occ = occupancy(paths, k, fraction=occupancy_kind == "fraction")
    # Runs without eval accuracy (an imported series without a performance table): everything
    # but convergence, the regression and the detour test.
    performance = bool(metrics["eval_acc"].notna().any())
    if performance:
        conv = convergence_times(metrics[metrics["seed"].isin(list(paths))], threshold)
        times = conv["convergence_checkpoint"].astype(float)
        fit = regress_convergence(times, occ)
        visits = visit_test(times, occ)
        detours = detour_states(visits, detour_alpha)
        runs = conv.join(occ)
        runs["fitted"] = fit["fitted"]
        coefficients = fit["coefficients"].merge(visits, on="term", how="left")
        coefficients["detour"] = [
            t.startswith("state_") and int(t.split("_")[1]) in detours for t in coefficients["term"]
        ]
        coefficients = coefficients[COEFFICIENT_COLUMNS]
        convergence = {
            "n_runs": fit["n_runs"],
            "n_converged": int(conv["converged"].sum()),
            "never_converged": [int(s) for s in conv.index[~conv["converged"]]],
            "r2": fit["r2"],
            "f_pvalue": fit["f_pvalue"],
            "detour_rule": f"visited by some runs, visit-test r > 0, Holm-adjusted p < {detour_alpha}",
        }
    else:
        detours = []
        runs = occ.rename_axis("seed")
        coefficients = pd.DataFrame(columns=COEFFICIENT_COLUMNS)
        convergence = {
            "n_runs": len(paths),
            "n_converged": None,
            "never_converged": [],
            "r2": None,
            "f_pvalue": None,
            "detour_rule": None,
        }
    runs["states_visited"] = [" ".join(map(str, sorted(set(paths[s].tolist())))) for s in runs.index]
    top_edge = ""
    if not changes.empty:
        changes["detour_edge"] = changes["target"].isin(detours) | changes["source"].isin(detours)
        e = changes.sort_values(["n_runs", "probability"], ascending=False, kind="stable").iloc[0]
        top_edge = f"{e.source}→{e.target} ({e.n_runs}/{e.n_total_runs} runs): {e.summary}"
    summary = {
        "k": k,
        "n_runs": convergence["n_runs"],
        "n_converged": convergence["n_converged"],
        "never_converged": convergence["never_converged"],
        "threshold": threshold,
        "r2": convergence["r2"],
        "f_pvalue": convergence["f_pvalue"],
        "detour_states": detours,
        "detour_rule": convergence["detour_rule"],
        "top_edge": top_edge,
        "criterion": model.criterion,
        "pinned": bool(model.pinned),
        "at_boundary": model.at_boundary,
        "feature_ranking": ranking,
        "occupancy": occupancy_kind,
    }
    if not performance:
        summary["status"] = NO_PERFORMANCE
    return TaskAnalysis(
        changes if not changes.empty else pd.DataFrame(columns=EDGE_COLUMNS),
        runs.reset_index(),
        coefficients,
        summary,
    )


def _nothing_decoded(
    metrics: pd.DataFrame, threshold: float, ranking: str, occupancy_kind: str
) -> TaskAnalysis:
    """Analyses of a task whose HMM has no decoded run: convergence per run, nothing else."""
    conv = convergence_times(metrics, threshold).reset_index()
    conv["fitted"] = np.nan
    return TaskAnalysis(
        pd.DataFrame(columns=EDGE_COLUMNS),
        conv,
        pd.DataFrame(columns=COEFFICIENT_COLUMNS),
        {
            "k": 0,
            "n_runs": 0,
            "n_converged": int(conv["converged"].sum()),
            "never_converged": [int(s) for s in conv.loc[~conv["converged"], "seed"]],
            "threshold": threshold,
            "r2": float("nan"),
            "f_pvalue": float("nan"),
            "detour_states": [],
            "feature_ranking": ranking,
            "occupancy": occupancy_kind,
            "status": "no usable runs for the HMM",
        },
    )
