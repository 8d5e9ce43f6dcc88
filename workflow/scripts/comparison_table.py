"""One table of every recipe comparison: shared K, runs, recipe-specific states and edges,
convergence per recipe and how much of its difference the occupancy explains."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import pandas as pd

from latentstates.io import read_json
from latentstates.logs import job_log
from latentstates.report.tables import write_table
from latentstates.report.comparisons import summary_row

with job_log(snakemake.log[0]):
    rows = [
        summary_row(read_json(s), pd.read_csv(c))
        for s, c in zip(snakemake.input.summaries, snakemake.input.convergence)
    ]
    table = pd.DataFrame(rows)
    write_table(
        table,
        snakemake.output.csv,
        snakemake.output.md,
        snakemake.output.tex,
        caption="Recipes compared through one shared HMM (permutation tests, Holm-adjusted)",
    )
