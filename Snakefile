# Latent state models of training dynamics: train → metrics → collate → HMM → figures.
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")

# The science lives in src/latentstates (rule scripts find it through workflow/scripts/_bootstrap.py).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from latentstates.config import ConfigError, read_yaml, validate_config

# Snakemake's own reader says only "not valid JSON or YAML": ours names the line.
if Path("config.yaml").is_file():
    try:
        if not isinstance(read_yaml("config.yaml"), (dict, type(None))):
            raise ConfigError(
                "config.yaml: a config is a mapping of keys (tasks, hmm, ...)"
            )
    except ConfigError as exc:
        raise WorkflowError(str(exc)) from None


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


try:
    _validated = validate_config(config)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
config.clear()
config.update(_validated)


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/import.smk"
include: "rules/metrics.smk"
include: "rules/hmm.smk"
include: "rules/analysis.smk"
include: "rules/forecast.smk"
include: "rules/llc.smk"
include: "rules/stability.smk"
include: "rules/comparison.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
