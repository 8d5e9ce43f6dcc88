"""Make the repository's src/ importable from rule scripts, whatever runs them (local, conda, SLURM),
ahead of any other copy of the package: Snakemake's script preamble appends the main process's
sys.path (which holds this src/, put there by the Snakefile) after the environment's, where an
editable install of another checkout would otherwise be found first."""

import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")
if sys.path[:1] != [SRC]:
    while SRC in sys.path:
        sys.path.remove(SRC)
    sys.path.insert(0, SRC)
