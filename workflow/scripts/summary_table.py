"""One summary table across tasks: K with how often it is chosen again (refits, seed sets), R², p,
detour states, the most used edge's feature changes, the forecast's error against the naive
forecast, the outlier runs where they are flagged, and each finding's frequency across
resamples. The CSV keeps every number at full precision; the Markdown and LaTeX tables are
formatted for people (plain headers, R² with its interval, p as a bound)."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import pandas as pd

from latentstates.io import read_json
from latentstates.logs import job_log
from latentstates.io import atomic_path
from latentstates.report.tables import to_rst, write_table


def forecast_cell(path: str, method: str) -> str:
    """'25%: 18.9 vs 23.6; 50%: …' — mean absolute error of ours vs naive, per fraction seen."""
    f = pd.read_csv(path)
    f = f[f["method"] == method]
    if f.empty:
        return "–"
    return "; ".join(f"{r.fraction:.0%}: {r.mae:.3g} vs {r.mae_naive:.3g}" for r in f.itertuples())


def number(v) -> bool:
    """A finite number (JSON writes NaN as null)."""
    return v is not None and v == v


def mark(stable: bool) -> str:
    return " ✓" if stable else ""


PERTURBATIONS = {"refold": "refolds", "subsample": "subsamples", "bootstrap": "bootstrap resamples"}


def k_stability_cell(st: dict | None) -> str:
    """'5: 80 %, 4: 20 % of 10 refolds' — how often each K is chosen afresh."""
    k = (st or {}).get("k", {})
    if not k.get("afresh") or not k.get("distribution"):
        return "–"
    dist = sorted(k["distribution"].items(), key=lambda kv: (-kv[1], int(kv[0])))
    parts = ", ".join(f"{kk}: {f:.0%}" for kk, f in dist)
    return f"{parts} of {k['perturbations']} {PERTURBATIONS.get(k['perturbation'], 'resamples')}"


def seed_sets_cell(task: str, replication: pd.DataFrame | None) -> str:
    """'3/3 (5 / 5 / 5)' — seed sets whose K is the task's."""
    if replication is None or task not in set(replication["task"]):
        return "–"
    row = replication.set_index("task").loc[task]
    return f"{row['agreement']} ({row['k']})"


def findings_cell(s: dict, st: dict) -> str:
    """'K = 5 (64 %); detour 2 (71 %) ✓; R² 0.93 [0.86, 0.96] ✓' from the stability summary."""
    if not st.get("resamples_fitted"):
        return "–"
    k = st["k"]
    parts = [
        f"K = {k['main']} ({k['frequency']:.0%})" + mark(k["stable"])
        if k["afresh"] and number(k["frequency"])
        else f"K = {k['main']}"
    ]
    parts += [f"detour {d['state']} ({d['frequency']:.0%})" + mark(d["stable"]) for d in st["detours"]]
    r2 = st["r2"]
    if number(r2["main"]):  # runs with performance data and a defined R²
        low, high = (f"{v:.2f}" if number(v) else "–" for v in (r2["low"], r2["high"]))
        parts.append(f"R² {r2['main']:.2f} [{low}, {high}]" + mark(r2["stable"]))
    return "; ".join(parts)


def p_value(v) -> str:
    return ("< 1e-4" if v < 1e-4 else f"{v:.2g}") if number(v) else "–"


# The Markdown and LaTeX tables' headers (the CSV keeps the column names).
HEADERS = {
    "task": "task",
    "K": "K",
    "K_by": "K chosen by",
    "K_refitted": "K refitted",
    "K_seed_sets": "K on seed sets",
    "runs": "runs",
    "converged": "converged",
    "R2": "R² [interval]",
    "p": "p",
    "detour_states": "detour states",
    "top_edge": "most used edge: top feature changes",
    "forecast_mae_vs_naive": "forecast error, ours vs naive (fraction seen)",
    "outliers": "outlier runs",
    "findings": "findings (how often each recurs)",
}


# The columns of the report's front page (summary.rst), of the people's table.
FRONT_PAGE = [
    "task",
    "K",
    "K refitted",
    "K on seed sets",
    "R² [interval]",
    "detour states",
    "findings (how often each recurs)",
]


# How K was chosen, in words (hmm.criterion).
CRITERIA = {
    "cv_1se": "folds, 1 SE",
    "cv": "folds",
    "cv_bic": "folds, BIC",
    "bic": "held-out BIC",
    "aic": "held-out AIC",
    "val_ll": "held-out LL",
    "bic_train": "training BIC",
    "aic_train": "training AIC",
    "pinned": "pinned",
}


def r2_cell(v, st: dict | None) -> str:
    """'0.92 [0.85, 0.98]': R² with its interval from the stability stage, where there is one."""
    if not number(v):
        return "–"
    r2 = (st or {}).get("r2", {})
    low, high = r2.get("low"), r2.get("high")
    return f"{v:.2f} [{low:.2f}, {high:.2f}]" if number(low) and number(high) else f"{v:.2f}"


def readable(row: dict, st: dict | None) -> dict:
    """One row for people: K marked where it lies on the searched range's edge, R² with its
    interval, p as a bound, detour states as a list."""
    out = dict(row)
    out["K"] = f"{row['K']} (at max_states)" if row["K_at_boundary"] else str(row["K"])
    out["K_by"] = CRITERIA.get(row["K_by"], row["K_by"])
    out["R2"] = r2_cell(row["R2"], st)
    out["p"] = p_value(row["p"])
    out["detour_states"] = ", ".join(map(str, row["detour_states"])) or "none"
    del out["K_at_boundary"]
    return {HEADERS[k]: v for k, v in out.items() if k in HEADERS}


with job_log(snakemake.log[0]):
    rows, people = [], []
    stabilities = [read_json(p) for p in snakemake.input.stability] or [None] * len(snakemake.input.summaries)
    replication = pd.read_csv(snakemake.input.replication) if snakemake.input.replication else None
    # The inputs are expanded over the same tasks in the same order.
    for p, fp, st in zip(snakemake.input.summaries, snakemake.input.forecasts, stabilities):
        s = read_json(p)
        row = {
            "task": s["task"],
            "K": s["k"],
            "K_by": "pinned" if s.get("pinned") else s.get("criterion"),
            "K_at_boundary": s.get("at_boundary", False),
            "K_refitted": k_stability_cell(st),
            "K_seed_sets": seed_sets_cell(s["task"], replication),
            "runs": s["n_runs"],
            "converged": s["n_converged"],
            "R2": s["r2"] if number(s["r2"]) else float("nan"),
            "p": s["f_pvalue"] if number(s["f_pvalue"]) else float("nan"),
            "detour_states": s["detour_states"],
            "top_edge": s.get("top_edge", ""),
            "forecast_mae_vs_naive": forecast_cell(fp, snakemake.params.method),
        }
        if s.get("outlier_runs") is not None:  # flagged (analysis.outliers): the runs, or none
            row["outliers"] = ", ".join(map(str, s["outlier_runs"])) or "none"
        if st is not None:
            row["findings"] = findings_cell(s, st)
        people.append(readable(row, st))
        rows.append(row | {"detour_states": " ".join(map(str, s["detour_states"]))})
    write_table(
        pd.DataFrame(rows),
        snakemake.output.csv,
        snakemake.output.md,
        snakemake.output.tex,
        caption="Convergence time regressed on latent-state occupancy, per task",
        readable=pd.DataFrame(people),
    )
    front = pd.DataFrame(people)
    front = front[[c for c in FRONT_PAGE if c in front]]
    with atomic_path(snakemake.output.rst) as tmp:
        tmp.write_text(
            to_rst(front, "What each task's runs show (the full table: Summary)"), encoding="utf-8"
        )
