"""Ready-made callbacks that write runs from a trainer (latentstates.runs.writer), for Hugging
Face's `Trainer`:

    from latentstates.runs.callbacks import LatentStatesCallback
    trainer = Trainer(..., callbacks=[LatentStatesCallback("runs/seed0", seed=0, every=100)])

A checkpoint at step 0 and every `every` optimizer steps (and at the end), with whatever the
trainer logs at those steps (loss, eval_loss, eval_accuracy from `compute_metrics`, ...).
PyTorch Lightning's: `latentstates.runs.lightning_callback.LatentStatesLightning`.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from latentstates.runs.writer import RunWriter


class LatentStatesCallback(TrainerCallback):
    """Writes the trained model's checkpoints and logs as a run of the workflow."""

    def __init__(self, directory: str | Path, seed: int, every: int, architecture: str | None = None) -> None:
        """`architecture`: as a task's (default: the model's `config.model_type` where the
        workflow knows it, e.g. gpt_neox, gpt2, llama, bert; else auto)."""
        if every < 1:
            raise ValueError("every must be at least 1")
        self.directory, self.seed, self.every, self.architecture = Path(directory), seed, every, architecture
        self.writer: RunWriter | None = None

    def _writer(self, model) -> RunWriter:
        if self.writer is None:
            from latentstates.runs.architectures import ARCHITECTURES

            config = model.config.to_dict()
            arch = self.architecture or (
                config.get("model_type") if config.get("model_type") in ARCHITECTURES else "auto"
            )
            self.writer = RunWriter(self.directory, self.seed, arch, config)
        return self.writer

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        writer = self._writer(model)
        if not writer.checkpoints or writer.checkpoints[-1]["step"] < state.global_step:
            writer.checkpoint(model, state.global_step, state.epoch)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        last = state.global_step >= state.max_steps
        if state.global_step % self.every == 0 or last:
            self._writer(model).checkpoint(model, state.global_step, state.epoch)

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        # The end-of-training summary's train_loss is a mean over the whole run: not a step's.
        if self.writer is not None and logs and "train_runtime" not in logs:
            self.writer.log(state.global_step, **logs)
