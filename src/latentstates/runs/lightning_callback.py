"""A PyTorch Lightning callback that writes runs (latentstates.runs.writer), beside the Hugging
Face Trainer's (latentstates.runs.callbacks):

    import lightning.pytorch as L
    from latentstates.runs.lightning_callback import LatentStatesLightning
    trainer = L.Trainer(..., callbacks=[LatentStatesLightning("runs/seed0", seed=0, every=100)])

A checkpoint of the LightningModule's weights (or of its sub-module `module`, e.g. "model") at
step 0 and every `every` optimizer steps (`trainer.global_step`) and at the end, with what the
module logged (`self.log`) at those steps: `trainer.callback_metrics` after the training step,
and after each validation at that step (the sanity check's is not kept). `val_loss` and
`val_acc` become the contract's eval_loss and eval_acc. Subclasses `lightning.pytorch`'s
Callback where that package is installed, else `pytorch_lightning`'s.
"""

from __future__ import annotations

import math
from pathlib import Path

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the older package name
    from pytorch_lightning.callbacks import Callback

from latentstates.runs.writer import RunWriter


class LatentStatesLightning(Callback):
    """Writes the trained module's checkpoints and logged metrics as a run of the workflow."""

    def __init__(
        self,
        directory: str | Path,
        seed: int,
        every: int,
        architecture: str = "auto",
        module: str | None = None,
    ) -> None:
        """`architecture`: as a task's (auto: every 2-D weight inside numbered layers,
        `.layers.N.`, `.h.N.`, `.layer.N.` or `.blocks.N.`, checked when training starts);
        `module`: the attribute of the LightningModule to checkpoint (default: all of it)."""
        if every < 1:
            raise ValueError("every must be at least 1")
        self.every, self.module = every, module
        self.writer = RunWriter(directory, seed, architecture)

    def _weights(self, pl_module):
        return getattr(pl_module, self.module) if self.module else pl_module

    def _checkpoint(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if not self.writer.checkpoints or self.writer.checkpoints[-1]["step"] < step:
            self.writer.checkpoint(self._weights(pl_module), step, float(trainer.current_epoch))
            self._log(trainer)

    def _log(self, trainer) -> None:
        values = {}
        for key, value in trainer.callback_metrics.items():
            try:
                values[key] = float(value)
            except (TypeError, ValueError):  # not a number (a tensor of several values)
                continue
        values = {k: v for k, v in values.items() if not math.isnan(v) or k.endswith("loss")}
        self.writer.log(trainer.global_step, **values)

    def on_train_start(self, trainer, pl_module) -> None:
        from latentstates.runs.architectures import get_architecture

        arch = self.writer.spec["architecture"]
        try:  # before any training: the metrics must find the matrices in these weights
            next(iter(get_architecture(arch).layers(self._weights(pl_module).state_dict(), None)))
        except (ValueError, StopIteration) as exc:
            raise ValueError(
                f"architecture {arch!r} finds no matrices in the module's weights ({exc}); keep the "
                "layers in a numbered list (self.layers = nn.ModuleList(...), read as layers.N.), or "
                "name the sub-module to checkpoint (module=) and its architecture"
            ) from None
        self._checkpoint(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            self._checkpoint(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._log(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._checkpoint(trainer, pl_module)
