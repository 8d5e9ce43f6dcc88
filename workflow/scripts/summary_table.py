"""One summary table across tasks: K, R², p, detour states, the most used edge's feature changes."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import pandas as pd

from latentstates.io import read_json
from latentstates.logs import job_log
from latentstates.tables import write_table

with job_log(snakemake.log[0]):
    rows = []
    for p in snakemake.input:
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
