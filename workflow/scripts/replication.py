"""K chosen on each seed set of the tasks with `replicates`, side by side: do the sets agree?"""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json

from latentstates.logs import job_log
from latentstates.report.tables import write_table
from latentstates.states.criteria import replication_table
from latentstates.states.model import StateModel

with job_log(snakemake.log[0]) as logger:
    sets = json.loads(snakemake.params.sets)
    names = [s for task in sets for s in sets[task]]
    models = {name: StateModel.read(path) for name, path in zip(names, snakemake.input.models)}
    table = replication_table(sets, models, json.loads(snakemake.params.seeds))
    write_table(
        table,
        snakemake.output.csv,
        snakemake.output.md,
        snakemake.output.tex,
        caption="K chosen on independent seed sets",
    )
    for row in table.itertuples():
        logger.info("%s: K %s on seed sets %s (%s)", row.task, row.k, row.seeds, row.agreement)
