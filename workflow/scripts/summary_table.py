"""One summary table across tasks: K, R², p, detour states, the most used edge's feature changes,
and the forecast's error against the naive forecast."""

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


with job_log(snakemake.log[0]):
    rows = []
    # Both inputs are expanded over the same tasks in the same order.
    for p, fp in zip(snakemake.input.summaries, snakemake.input.forecasts):
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
    df = pd.DataFrame(rows)
    write_table(
        df,
        snakemake.output.csv,
        snakemake.output.md,
        snakemake.output.tex,
        caption="Convergence time regressed on latent-state occupancy, per task",
    )
