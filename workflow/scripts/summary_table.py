"""One summary table across tasks: K, R², p, detour states, the most used edge's feature changes,
the forecast's error against the naive forecast, and each finding's frequency across resamples."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import pandas as pd

from latentstates.io import read_json
from latentstates.logs import job_log
from latentstates.report.tables import write_table


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


def findings_cell(s: dict, st: dict) -> str:
    """'K = 5 (64 %); detour 2 (71 %) ✓; R² 0.93 [0.86, 0.96] ✓' from the stability summary."""
    if not st.get("resamples_fitted"):
        return "–"
    k = st["k"]
    parts = [
        f"K = {k['main']} ({k['frequency']:.0%})" + mark(k["stable"]) if k["afresh"] else f"K = {k['main']}"
    ]
    parts += [f"detour {d['state']} ({d['frequency']:.0%})" + mark(d["stable"]) for d in st["detours"]]
    r2 = st["r2"]
    if number(r2["main"]):  # runs with performance data and a defined R²
        low, high = (f"{v:.2f}" if number(v) else "–" for v in (r2["low"], r2["high"]))
        parts.append(f"R² {r2['main']:.2f} [{low}, {high}]" + mark(r2["stable"]))
    return "; ".join(parts)


with job_log(snakemake.log[0]):
    rows = []
    stabilities = [read_json(p) for p in snakemake.input.stability] or [None] * len(snakemake.input.summaries)
    # The inputs are expanded over the same tasks in the same order.
    for p, fp, st in zip(snakemake.input.summaries, snakemake.input.forecasts, stabilities):
        s = read_json(p)
        rows.append(
            {
                "task": s["task"],
                "K": s["k"],
                "K_by": "pinned" if s.get("pinned") else s.get("criterion"),
                "K_at_boundary": s.get("at_boundary", False),
                "runs": s["n_runs"],
                "converged": s["n_converged"],
                "R2": s["r2"],
                "p": s["f_pvalue"],
                "detour_states": s["detour_states"],
                "top_edge": s.get("top_edge", ""),
                "forecast_mae_vs_naive": forecast_cell(fp, snakemake.params.method),
            }
        )
        if st is not None:
            rows[-1]["findings"] = findings_cell(s, st)
            rows[-1]["K_frequency"] = st.get("k", {}).get("frequency")
            rows[-1]["R2_interval"] = [st["r2"]["low"], st["r2"]["high"]] if "r2" in st else None
    df = pd.DataFrame(rows)
    write_table(
        df,
        snakemake.output.csv,
        snakemake.output.md,
        snakemake.output.tex,
        caption="Convergence time regressed on latent-state occupancy, per task",
    )
