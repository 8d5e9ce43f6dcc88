"""Latent state models of training dynamics: the science behind the Snakemake workflow.

Submodules are imported on demand so that light users (the Snakefile, config checks)
do not pay for torch or pomegranate imports.
"""

__version__ = "0.1.0"
