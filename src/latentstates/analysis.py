"""The paper's analyses of decoded state paths: transitions, feature changes, convergence, detours."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd


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
    """Per run: first checkpoint index with eval accuracy ≥ threshold.

    A run that never reaches it gets its number of checkpoints (the paper's rule: censored at
    the run length) and `converged = False`.
    """
    rows = []
    for seed, g in metrics.sort_values(["seed", "checkpoint"]).groupby("seed", sort=True):
        hit = np.flatnonzero(g["eval_acc"].to_numpy() >= threshold)
        ok = hit.size > 0
        idx = int(hit[0]) if ok else len(g)
        step = int(g["step"].iloc[idx]) if ok else int(g["step"].iloc[-1])
        rows.append(
            {"seed": int(seed), "convergence_checkpoint": idx, "convergence_step": step, "converged": ok}
        )
    return pd.DataFrame(rows).set_index("seed")


def regress_convergence(times: pd.Series, occ: pd.DataFrame) -> dict:
    """OLS of convergence time on state occupancy with an intercept (statsmodels).

    Occupancy fractions sum to one, so the design is rank-deficient with the intercept;
    statsmodels' pseudo-inverse gives the minimum-norm coefficients (as least squares in the
    paper's code), and R² and the F-test use the design's true rank.
    """
    import statsmodels.api as sm

    df = occ.join(times.rename("y"), how="inner")
    x = sm.add_constant(df[occ.columns].to_numpy(), has_constant="add")
    with warnings.catch_warnings():
        # Rank deficiency is expected here (see above) and handled by the pseudo-inverse.
        warnings.filterwarnings("ignore", message="The design matrix is rank-deficient")
        res = sm.OLS(df["y"].to_numpy(dtype=float), x).fit()
    names = ["intercept", *occ.columns]
    # R² and the F-test are undefined when every run has the same convergence time (e.g. none
    # converged) or there are no residual degrees of freedom.
    defined = np.ptp(df["y"].to_numpy()) > 0 and res.df_resid > 0
    return {
        "n_runs": int(res.nobs),
        "r2": float(res.rsquared) if defined else float("nan"),
        "f_pvalue": float(res.f_pvalue) if defined and np.isfinite(res.f_pvalue) else float("nan"),
        "df_model": float(res.df_model),
        "coefficients": pd.DataFrame(
            {"term": names, "coef": res.params, "std_err": res.bse, "p_value": res.pvalues}
        ),
    }


def detour_states(occ: pd.DataFrame, coefficients: pd.DataFrame) -> list[int]:
    """States visited by some runs but not all whose regression coefficient is positive."""
    visited = (occ > 0).sum(axis=0)
    coef = coefficients.set_index("term")["coef"]
    out = []
    for col in occ.columns:
        if 0 < visited[col] < len(occ) and coef[col] > 0:
            out.append(int(col.split("_")[1]))
    return out


def _filtered_posteriors(x: np.ndarray, model: dict) -> tuple[np.ndarray, np.ndarray]:
    """Filtered state posteriors p(s_t | x_1..t) and emission log-densities, (T, k) each."""
    prec = _precisions(model)
    _, logdet_prec = np.linalg.slogdet(prec)
    d = x[:, None, :] - np.asarray(model["means"])[None]  # (T, k, features)
    maha = np.einsum("tki,kij,tkj->tk", d, prec, d)
    loge = -0.5 * (maha - logdet_prec + x.shape[1] * np.log(2 * np.pi))
    log_a = np.log(np.asarray(model["transitions"]) + 1e-300)
    log_alpha = np.log(np.asarray(model["starts"]) + 1e-300) + loge[0]
    post = np.empty_like(loge)
    for t in range(len(x)):
        if t:
            log_alpha = np.logaddexp.reduce(log_alpha[:, None] + log_a, axis=0) + loge[t]
        log_alpha = log_alpha - np.logaddexp.reduce(log_alpha)  # normalised: the filtered posterior
        post[t] = np.exp(log_alpha)
    return post, loge


def _precisions(model: dict) -> np.ndarray:
    """Inverse covariance of each state, (k, d, d); diagonal ones as diagonal matrices."""
    covs = np.asarray(model["covs"], dtype=float)
    if model["covariance"] == "diag":
        return np.stack([np.diag(1.0 / c) for c in covs])
    return np.linalg.inv(covs)


def posterior_gradient(
    x: np.ndarray, t: int, j: int, post: np.ndarray, model: dict, precisions: np.ndarray | None = None
) -> np.ndarray:
    """∂ log p(s_t = j | x_1..t) / ∂ x_t for a Gaussian HMM, in closed form.

    log p(s_t=j | x_1..t) = log b_j(x_t) + log Σ_i α̂_{t-1}(i) A_ij − log Σ_k (…) b_k(x_t), so the
    gradient is ∇log b_j(x_t) − Σ_k p(s_t=k | x_1..t) ∇log b_k(x_t), with ∇log b_k(x) = −Σ_k⁻¹(x − μ_k):
    a vector over all features.
    """
    prec = _precisions(model) if precisions is None else precisions
    scores = -np.einsum("kde,ke->kd", prec, x[t] - np.asarray(model["means"]))
    return scores[j] - post[t] @ scores


def feature_changes(
    sequences: dict[int, np.ndarray],
    paths: dict[int, np.ndarray],
    edges: pd.DataFrame,
    model: dict,
    method: str = "gradient",
    top: int = 3,
) -> pd.DataFrame:
    """Top features per edge with the change in state means μ_j − μ_i (z units).

    `method="gradient"` ranks features by |mean gradient of the filtered log-posterior of the
    target state with respect to the observation| over every time the edge is taken (the paper's
    ranking, as a full vector per feature); `method="means"` ranks by |μ_j − μ_i|.
    """
    features = model["features"]
    means = np.asarray(model["means"])
    rows = []
    if method == "gradient":
        post = {s: _filtered_posteriors(sequences[s], model)[0] for s in paths}
        prec = _precisions(model)
    for e in edges.itertuples():
        i, j = e.source, e.target
        delta = means[j] - means[i]
        if method == "means":
            score = np.abs(delta)
        elif method == "gradient":
            grads = [
                posterior_gradient(sequences[s], t + 1, j, post[s], model, prec)
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


def analyse_task(
    metrics: pd.DataFrame,
    states: pd.DataFrame,
    model: dict,
    threshold: float,
    ranking: str = "gradient",
    occupancy_kind: str = "fraction",
    top: int = 3,
) -> dict:
    """All per-task analyses: edge table with feature changes, per-run table, regression, detours."""
    from .sequences import zscore_runs

    paths = paths_by_run(states)
    k = model["k"]
    if k == 0 or not paths:
        return _nothing_decoded(metrics, threshold, ranking, occupancy_kind)
    edges = transition_edges(paths, np.asarray(model["transitions"]))
    seqs = zscore_runs(metrics, model["features"])
    sequences = dict(zip(seqs.runs, seqs.arrays))
    changes = feature_changes(sequences, paths, edges, model, method=ranking, top=top)
    occ = occupancy(paths, k, fraction=occupancy_kind == "fraction")
    conv = convergence_times(metrics[metrics["seed"].isin(list(paths))], threshold)
    fit = regress_convergence(conv["convergence_checkpoint"].astype(float), occ)
    detours = detour_states(occ, fit["coefficients"])
    coef = fit["coefficients"].set_index("term")["coef"]
    runs = conv.join(occ)
    runs["fitted"] = coef["intercept"] + runs[occ.columns].to_numpy() @ coef[occ.columns].to_numpy()
    runs["states_visited"] = [" ".join(map(str, sorted(set(paths[s].tolist())))) for s in runs.index]
    visited = (occ > 0).sum(axis=0)
    coefficients = fit["coefficients"].copy()
    coefficients["n_runs_visiting"] = [np.nan, *visited.to_numpy()]
    coefficients["detour"] = [False, *[int(c.split("_")[1]) in detours for c in occ.columns]]
    if not changes.empty:
        changes["detour_edge"] = changes["target"].isin(detours) | changes["source"].isin(detours)
    return {
        "edges": changes if not changes.empty else edges,
        "runs": runs.reset_index(),
        "coefficients": coefficients,
        "summary": {
            "k": k,
            "n_runs": fit["n_runs"],
            "n_converged": int(conv["converged"].sum()),
            "never_converged": [int(s) for s in conv.index[~conv["converged"]]],
            "threshold": threshold,
            "r2": fit["r2"],
            "f_pvalue": fit["f_pvalue"],
            "detour_states": detours,
            "feature_ranking": ranking,
            "occupancy": occupancy_kind,
        },
    }


def _nothing_decoded(metrics: pd.DataFrame, threshold: float, ranking: str, occupancy_kind: str) -> dict:
    """Analyses of a task whose HMM has no decoded run: convergence per run, nothing else."""
    conv = convergence_times(metrics, threshold).reset_index()
    conv["fitted"] = np.nan
    return {
        "edges": pd.DataFrame(
            columns=["source", "target", "probability", "n_runs", "n_total_runs", "summary"]
        ),
        "runs": conv,
        "coefficients": pd.DataFrame(
            columns=["term", "coef", "std_err", "p_value", "n_runs_visiting", "detour"]
        ),
        "summary": {
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
    }
