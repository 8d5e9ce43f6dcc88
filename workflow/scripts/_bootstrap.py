"""Make the repository's src/ importable from rule scripts, whatever runs them (local, conda, SLURM)."""

import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)
