"""Find one seed group's checkpoints of a Hub series in the Hugging Face cache, downloading the
revisions it lacks; write the snapshot directory of every (seed, step)."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import json
from pathlib import Path

from latentstates.logs import job_log
from latentstates.runs.hub import cache_root, resolve

with job_log(snakemake.log[0]) as logger:
    hub = json.loads(snakemake.params.hub)
    found = resolve(hub, snakemake.params.seeds, download=hub.get("download", True))
    listing = {str(seed): [[step, str(path)] for step, path in steps] for seed, steps in found.items()}
    out = Path(snakemake.output[0])
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(listing, indent=1))
    tmp.replace(out)
    n = sum(len(v) for v in found.values())
    logger.info("%d checkpoints of seeds %s in %s", n, list(found), cache_root(hub))
