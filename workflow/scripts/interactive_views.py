"""Every interactive view of the run in one page (plotly.js once), for the report."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from latentstates.logs import job_log
from latentstates.report import interactive

with job_log(snakemake.log[0]):
    views = [(group, label, file) for (group, label), file in zip(snakemake.params.views, snakemake.input)]
    interactive.combine_views(views, snakemake.output[0])
