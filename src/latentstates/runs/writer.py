"""Runs written from the user's own training loop, under the run contract (latentstates.runs.contract):

    <directory>/run.json            source "callback", the architecture whose matrices are read
    <directory>/train_log.parquet   one row per checkpoint: whatever losses and accuracies were logged
    <directory>/checkpoints/step<N>.safetensors

Call `RunWriter.checkpoint(model, step)` wherever the loop saves, and `RunWriter.log(step, ...)`
with what it measured; `latentstates.runs.callbacks` does both for Hugging Face's `Trainer`. Every
file is replaced atomically, the checkpoint before the log and the log before run.json, so a run
killed at any point leaves a readable run of its complete checkpoints. A task with `source: runs`
then points at these directories, and `latentstates forecast` reads one while it trains.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from latentstates.columns import PERFORMANCE_COLUMNS
from latentstates.io import atomic_path, write_parquet
from latentstates.runs.contract import RUN_FILE, make_run, read_run, write_run

TRAIN_LOG = "train_log.parquet"
# Names training loops log under, and the run contract's (others are kept as they are).
ALIASES = {
    "loss": "train_loss",
    "accuracy": "train_acc",
    "train_accuracy": "train_acc",
    "eval_accuracy": "eval_acc",
    "val_loss": "eval_loss",  # Lightning's usual names
    "val_acc": "eval_acc",
    "val_accuracy": "eval_acc",
}


class RunWriter:
    """One run's directory under the run contract, written checkpoint by checkpoint."""

    def __init__(
        self, directory: str | Path, seed: int, architecture: str = "auto", config: dict | None = None
    ) -> None:
        """`architecture`: how the metrics read the matrices (latentstates.runs.architectures);
        `config`: the model's config (GPT-NeoX needs `num_attention_heads`). A directory that
        already holds a run (a resumed training) is continued."""
        self.directory = Path(directory)
        self.seed = int(seed)
        self.spec = {"architecture": architecture, "config": dict(config or {})}
        (self.directory / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.checkpoints: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        if (self.directory / RUN_FILE).exists():
            run = read_run(self.directory / RUN_FILE)
            self.checkpoints = [
                {"step": c["step"], "epoch": c["epoch"], "path": c["path"]} for c in run["checkpoints"]
            ]
            log = pd.read_parquet(self.directory / TRAIN_LOG)
            self.rows = log[log["checkpoint"] < len(self.checkpoints)].to_dict("records")

    def checkpoint(
        self, weights: torch.nn.Module | dict[str, torch.Tensor], step: int, epoch: float | None = None
    ) -> Path:
        """Save the weights at `step` (safetensors) and add the checkpoint to the run."""
        from safetensors.torch import save_file

        step = int(step)
        if self.checkpoints and step <= self.checkpoints[-1]["step"]:
            raise ValueError(f"{self.directory}: step {step} is not after the last checkpoint's")
        sd = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
        # Copies: safetensors refuses tensors sharing memory (tied embeddings) and non-CPU ones.
        tensors = {
            k: v.detach().to("cpu").clone().contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)
        }
        finite = all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())
        name = f"checkpoints/step{step:09d}.safetensors"
        with atomic_path(self.directory / name) as tmp:
            save_file(tensors, str(tmp))
        self.checkpoints.append({"step": step, "epoch": epoch, "path": name})
        row = {
            "checkpoint": len(self.rows),
            "step": step,
            "epoch": math.nan if epoch is None else float(epoch),
        }
        row.update(dict.fromkeys(PERFORMANCE_COLUMNS, math.nan))
        row["diverged"] = not finite
        self.rows.append(row)
        self._write()
        return self.directory / name

    def log(self, step: int, **values: float) -> None:
        """Record measured values (losses, accuracies, anything numeric) at the checkpoint of
        `step`; a step without a checkpoint is ignored."""
        row = next((r for r in self.rows if r["step"] == int(step)), None)
        if row is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                name = ALIASES.get(key, key)
                row[name] = float(value)
                if name in ("train_loss", "eval_loss") and not math.isfinite(value):
                    row["diverged"] = True
        self._write()

    def _write(self) -> None:
        write_parquet(pd.DataFrame(self.rows), self.directory / TRAIN_LOG)
        run = make_run(
            task="",
            seed=self.seed,
            source="callback",
            spec=self.spec,
            fmt="state_dict",
            checkpoints=self.checkpoints,
        )
        write_run(self.directory / RUN_FILE, run)
