"""How stable each finding is across the runs: bootstrap resamples of the runs, refitted.

A finding of the HMM stage (K, a detour, an edge, how much occupancy explains convergence)
comes from one fit of one set of runs. Here the runs are resampled with replacement, B times;
each resample is refitted at the main fit's K (its best of a few restarts by training
log-likelihood) and, optionally, with K chosen afresh by the task's criterion on a held-out
split of its own runs. Every run is decoded under each resample's model and the resample's
states are matched to the main fit's by the agreement of the decoded paths (a Hungarian
assignment on the checkpoints both decode into each pair of states, never by state index); the
analyses are then repeated on the resample's runs in the main fit's state numbers. All fits of
one K run as one batch (`fit.fit_many`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from latentstates.settings import AnalysisSettings, HMMSettings, StabilitySettings
from latentstates.states.analysis import detour_states, occupancy, regress_convergence, visit_test
from latentstates.states.fit import Spec, fit_many, restart_init, restart_seed
from latentstates.states.k_stability import (
    bootstrap_weights,
    choose_k_afresh,
    k_distribution,
    perturbed_weights,
    refolds_fitted,
)
from latentstates.states.model import GaussianHMM, StateModel
from latentstates.states.starts import start_of


def agreement(
    main: Sequence[np.ndarray], other: Sequence[np.ndarray], k_main: int, k_other: int
) -> np.ndarray:
    """(k_main, k_other) counts of checkpoints decoded into main state i and other state j."""
    a, b = np.concatenate(main), np.concatenate(other)
    counts = np.zeros((k_main, k_other), dtype=np.int64)
    np.add.at(counts, (a, b), 1)
    return counts


def match_states(counts: np.ndarray) -> np.ndarray:
    """Other state → main state (−1: unmatched) maximising the checkpoints they share."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-counts)
    mapping = np.full(counts.shape[1], -1, dtype=np.int64)
    mapping[cols] = rows
    return mapping


def relabel(paths: Sequence[np.ndarray], mapping: np.ndarray, k_main: int) -> list[np.ndarray]:
    """Paths in the main fit's numbers; an unmatched state j becomes k_main + j."""
    lookup = np.where(mapping >= 0, mapping, k_main + np.arange(len(mapping)))
    return [lookup[p] for p in paths]


@dataclass
class Findings:
    """The analyses' findings of one set of decoded runs, in the main fit's state numbers."""

    detours: set[int] = field(default_factory=set)
    effects: dict[int, float] = field(default_factory=dict)
    visiting: dict[int, int] = field(default_factory=dict)
    r2: float = float("nan")
    f_pvalue: float = float("nan")
    edges: set[tuple[int, int]] = field(default_factory=set)


def findings(
    paths: Sequence[np.ndarray], times: np.ndarray | None, k: int, analysis: AnalysisSettings
) -> Findings:
    """Edges used, and (with convergence times) the regression's R², F-test and per-state
    effects and the detours, of runs with these paths (a run drawn twice counts twice)."""
    out = Findings()
    for p in paths:
        steps = p[:-1] != p[1:]
        out.edges.update(zip(p[:-1][steps].tolist(), p[1:][steps].tolist()))
    if times is None:
        return out
    occ = occupancy(dict(enumerate(paths)), k, fraction=analysis.occupancy == "fraction")
    y = pd.Series(times, index=occ.index, dtype=float)
    fit = regress_convergence(y, occ)
    out.r2, out.f_pvalue = fit["r2"], fit["f_pvalue"]
    table = fit["coefficients"].set_index("term")
    out.effects = {
        int(t.split("_")[1]): float(table.loc[t, "effect"]) for t in table.index if t.startswith("state_")
    }
    visits = visit_test(y, occ)
    out.detours = set(detour_states(visits, analysis.detour_alpha))
    out.visiting = {int(t.split("_")[1]): int(v) for t, v in zip(visits["term"], visits["n_runs_visiting"])}
    return out


def _best(fits: list, lls: np.ndarray) -> int | None:
    ok = [i for i, (f, _) in enumerate(fits) if f is not None and np.isfinite(lls[i])]
    return max(ok, key=lambda i: lls[i]) if ok else None


def resample_specs(
    weights: np.ndarray, k: int, warm: GaussianHMM | None, settings: StabilitySettings
) -> list:
    """Per resample (in order): EM from `warm` (the main fit's model of this K), then
    `settings.restarts` fresh seeded initialisations as the HMM stage's; k = 1: closed form."""
    specs = []
    for b, w in enumerate(weights):
        if k == 1:
            specs.append(Spec(list(w), 0))
            continue
        if warm is not None:
            specs.append(Spec(list(w), 0, "warm", start_of(warm)))
        specs += [
            Spec(list(w), restart_seed(settings.seed + 1 + b, k, r), restart_init(r))
            for r in range(settings.restarts)
        ]
    return specs


def refit_fixed_k(
    arrays: Sequence[np.ndarray],
    weights: np.ndarray,
    main: GaussianHMM,
    hmm: HMMSettings,
    settings: StabilitySettings,
) -> list:
    """Per resample, the best k-state fit (k of `main`) by its training log-likelihood: EM
    from the main fit and from fresh initialisations (None where every restart failed)."""
    specs = resample_specs(weights, main.k, main, settings)
    fits = fit_many(arrays, main.k, hmm, specs)
    per = len(specs) // len(weights)
    out = []
    for b, w in enumerate(weights):
        chunk = fits[b * per : (b + 1) * per]
        lls = np.array([w @ f.log_likelihoods(arrays) if f is not None else np.nan for f, _ in chunk])
        best = _best(chunk, lls)
        out.append(None if best is None else chunk[best][0])
    return out


@dataclass
class Stability:
    """The stage's tables (see `stability`)."""

    resamples: pd.DataFrame
    k: pd.DataFrame
    states: pd.DataFrame
    edges: pd.DataFrame
    summary: dict


def bias_corrected_interval(estimate: float, values: Sequence[float], level: float) -> tuple[float, float]:
    """The percentile interval of resampled values moved back by their median bias (median of the
    resamples − the estimate), clipped to [0, 1]: for a value bounded at 0 such as R². A resample
    repeats runs, which inflates R², so the plain percentile interval lies above the estimate and
    never reaches 0 for an R² near 0; this one contains the estimate (docs/methods.md)."""
    low, high = interval(values, level)
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if not (np.isfinite(estimate) and v.size):
        return float("nan"), float("nan")
    bias = float(np.median(v)) - estimate
    return float(np.clip(low - bias, 0.0, 1.0)), float(np.clip(high - bias, 0.0, 1.0))


def interval(values: Sequence[float], level: float) -> tuple[float, float]:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if not v.size:
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def stability(
    arrays: Sequence[np.ndarray],
    main_paths: Sequence[np.ndarray],
    times: np.ndarray | None,
    main_model: GaussianHMM,
    models: dict[int, GaussianHMM],
    hmm: HMMSettings,
    analysis: AnalysisSettings,
    settings: StabilitySettings,
    k_repeats: Sequence[int | None] | None = None,
) -> Stability:
    """Frequencies and intervals of the main fit's findings over bootstrap resamples of the runs.

    `arrays` are the runs the HMM stage fitted (z-scored, in its order), `main_paths` their
    Viterbi paths under its model `main_model`, `times` their convergence checkpoints (None: no
    performance data), `models` the stage's kept model of each K (warm starts).
    Per resample: K chosen afresh (`refit_k`), the fixed-K refit's states matched to the main
    fit's, each main state present or not (`min_overlap`), a detour or not, its effect, R², the
    edges used. A finding is stable where it holds in ≥ `min_frequency` of the resamples.
    """
    began = time.perf_counter()
    n, k_main = len(arrays), main_model.k
    weights = bootstrap_weights(n, settings.resamples, settings.seed)
    main = findings(main_paths, times, k_main, analysis)
    fits = refit_fixed_k(arrays, weights, main_model, hmm, settings)
    pinned = hmm.n_states is not None
    afresh = None
    if settings.refit_k and not pinned:
        if refolds_fitted(hmm, settings, k_repeats):  # the HMM stage's repeats are the refolds
            afresh = list(k_repeats)
        else:
            afresh = choose_k_afresh(arrays, perturbed_weights(n, settings), hmm, settings)
    main_occupancy = np.bincount(np.concatenate(main_paths), minlength=k_main)
    rows, presence, detour, effects, edge_hits = [], [], [], [], []
    for b, (w, hmm_b) in enumerate(zip(weights, fits)):
        row = {"resample": b, "n_distinct_runs": int((w > 0).sum())}
        if hmm_b is None:
            rows.append({**row, "fitted": False})
            continue
        paths = hmm_b.viterbi(arrays)
        counts = agreement(main_paths, paths, k_main, hmm_b.k)
        mapping = match_states(counts)
        present = np.zeros(k_main, dtype=bool)
        for j, i in enumerate(mapping):
            if i >= 0 and main_occupancy[i]:
                present[i] = counts[i, j] >= settings.min_overlap * main_occupancy[i]
        drawn = np.repeat(np.arange(n), w)
        labelled = relabel([paths[i] for i in drawn], mapping, k_main)
        found = findings(labelled, None if times is None else times[drawn], k_main + hmm_b.k, analysis)
        presence.append(present)
        detour.append([s in found.detours for s in range(k_main)])
        effects.append([found.effects.get(s, np.nan) for s in range(k_main)])
        edge_hits.append(found.edges)
        rows.append(
            {
                **row,
                "fitted": True,
                "agreement": float(
                    counts[mapping[mapping >= 0], np.flatnonzero(mapping >= 0)].sum() / counts.sum()
                ),
                "states_present": " ".join(map(str, np.flatnonzero(present))),
                "detours": " ".join(map(str, sorted(found.detours))),
                "r2": found.r2,
                "f_pvalue": found.f_pvalue,
            }
        )
    resamples = pd.DataFrame(rows)
    fitted = len(presence)
    level, least = settings.level, settings.min_frequency
    freq_present = np.mean(presence, axis=0) if fitted else np.full(k_main, np.nan)
    freq_detour = np.mean(detour, axis=0) if fitted else np.full(k_main, np.nan)
    effect_ci = (
        [interval(col, level) for col in np.array(effects).T] if fitted else [(np.nan, np.nan)] * k_main
    )
    states = pd.DataFrame(
        {
            "state": range(k_main),
            "present_frequency": freq_present,
            "present_stable": freq_present >= least,
            "n_runs_visiting": [
                main.visiting.get(s, sum((p == s).any() for p in main_paths)) for s in range(k_main)
            ],
            "detour": [s in main.detours for s in range(k_main)],
            "detour_frequency": freq_detour,
            "detour_stable": freq_detour >= least,
            "effect": [main.effects.get(s, np.nan) for s in range(k_main)],
            "effect_low": [lo for lo, _ in effect_ci],
            "effect_high": [hi for _, hi in effect_ci],
        }
    )
    main_edges = sorted(main.edges)
    edge_freq = [np.mean([e in hits for hits in edge_hits]) if fitted else np.nan for e in main_edges]
    edges = pd.DataFrame(
        {
            "source": [i for i, _ in main_edges],
            "target": [j for _, j in main_edges],
            "frequency": edge_freq,
            "stable": np.asarray(edge_freq) >= least,
        },
        columns=["source", "target", "frequency", "stable"],
    )
    chosen = [k for k in afresh if k is not None] if afresh is not None else []
    k_table = k_distribution(chosen, hmm.max_states, k_main)
    k_freq = float(k_table.loc[k_table["main"], "frequency"].sum()) if chosen else float("nan")
    r2_values = resamples["r2"].to_numpy(dtype=float) if "r2" in resamples else np.array([])
    significant = resamples["f_pvalue"].to_numpy(dtype=float) < analysis.detour_alpha if fitted else []
    r2_low, r2_high = bias_corrected_interval(main.r2, r2_values, level)
    summary = {
        "resamples": settings.resamples,
        "resamples_fitted": fitted,
        "restarts": settings.restarts,
        "level": level,
        "min_frequency": least,
        "k": {
            "main": k_main,
            "frequency": k_freq,
            "stable": bool(k_freq >= least),
            "afresh": afresh is not None,
            "perturbation": settings.k_perturbation,
            "perturbations": len(chosen),
            "distribution": {str(int(k)): float(f) for k, f in zip(k_table["k"], k_table["frequency"]) if f},
        },
        "r2": {
            "main": main.r2,
            "low": r2_low,
            "high": r2_high,
            "significant_frequency": float(np.mean(significant))
            if fitted and times is not None
            else float("nan"),
        },
        "detours": [
            {"state": int(s), "frequency": float(freq_detour[s]), "stable": bool(freq_detour[s] >= least)}
            for s in sorted(main.detours)
        ],
        "seconds": round(time.perf_counter() - began, 1),
    }
    summary["r2"]["stable"] = bool(summary["r2"]["significant_frequency"] >= least)
    return Stability(resamples, k_table, states, edges, summary)


def stability_of_task(
    metrics: pd.DataFrame,
    states: pd.DataFrame,
    model: StateModel,
    kept: dict[int, GaussianHMM],
    threshold: float,
    hmm: HMMSettings,
    analysis: AnalysisSettings,
    settings: StabilitySettings,
) -> Stability:
    """`stability` of one task from the HMM stage's outputs: the decoded runs (states.parquet)
    z-scored as the stage did, their main-fit paths, the main model (model.json), the kept
    fit of each K (models.json: `read_kept_fits`), and convergence times where the runs have eval accuracy."""
    from latentstates.states.analysis import convergence_times, paths_by_run
    from latentstates.states.sequences import zscore_runs

    paths = paths_by_run(states)
    if model.k == 0 or not paths:
        return empty_stability(settings)
    runs = sorted(paths)
    used = metrics[metrics["seed"].isin(runs)]
    seqs = zscore_runs(used, model.features, pooled=model.pooled_zscores)
    if seqs.runs != runs:
        raise ValueError(f"the decoded runs {runs} are not the runs the metrics z-score to {seqs.runs}")
    times = None
    if "eval_acc" in used and used["eval_acc"].notna().any():
        times = convergence_times(used, threshold).loc[runs, "convergence_checkpoint"].to_numpy(dtype=float)
    return stability(
        seqs.arrays,
        [paths[r] for r in runs],
        times,
        model.hmm,
        kept,
        hmm,
        analysis,
        settings,
        model.k_repeats,
    )


def empty_stability(settings: StabilitySettings) -> Stability:
    """The tables of a task without a fitted HMM (no usable runs)."""
    return Stability(
        pd.DataFrame(columns=["resample", "n_distinct_runs", "fitted"]),
        pd.DataFrame(columns=["k", "count", "frequency", "main"]),
        pd.DataFrame(columns=STATE_COLUMNS),
        pd.DataFrame(columns=["source", "target", "frequency", "stable"]),
        {"resamples": settings.resamples, "resamples_fitted": 0, "status": "no fitted HMM", "detours": []},
    )


STATE_COLUMNS = [
    "state",
    "present_frequency",
    "present_stable",
    "n_runs_visiting",
    "detour",
    "detour_frequency",
    "detour_stable",
    "effect",
    "effect_low",
    "effect_high",
]
