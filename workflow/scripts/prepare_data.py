"""Download one image data set into its data directory through torchvision (rule prepare_*)."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

import sys

from latentstates.tasks.image_data import MissingDataError
from latentstates.logs import job_log
from latentstates.tasks.prepare import download

with job_log(snakemake.log[0]) as logger:
    data_dir = snakemake.wildcards.data_dir
    logger.info("preparing %s in %s", snakemake.params.dataset, data_dir)
    try:
        download(snakemake.params.dataset, data_dir)
    except MissingDataError as exc:
        # Also on the console, not only in the log: the one thing to act on.
        print(f"\nprepare_{snakemake.params.dataset}: {exc}\n", file=sys.__stderr__, flush=True)
        raise
