"""Download one image data set into its data directory through torchvision (rule prepare_*)."""

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from latentstates.prepare import download
from latentstates.logs import job_log

with job_log(snakemake.log[0]) as logger:
    data_dir = snakemake.wildcards.data_dir
    logger.info("preparing %s in %s", snakemake.params.dataset, data_dir)
    download(snakemake.params.dataset, data_dir)
