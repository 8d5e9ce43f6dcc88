"""Runtime helpers of the stages that run a model: seeds, building a run, evaluating it (the device
and threads: `latentstates.device`)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from latentstates.tasks.data import Split
from latentstates.tasks.registry import TaskKind, get_task
from latentstates.tasks.replicas import Replicas

# Offsets that derive independent streams from one run seed.
DATA_ORDER_OFFSET = 1_000_003


def run_seeds(seed: int, data_seed: int | None) -> dict[str, int]:
    """Seeds of every random choice of one run, derived from the run seed."""
    return {
        "seed": seed,
        "init_seed": seed,
        "data_seed": seed if data_seed is None else data_seed,
        "order_seed": seed + DATA_ORDER_OFFSET,
    }


class BuiltRun(NamedTuple):
    """One run as its seed builds it: the task kind, its data and the freshly initialised model."""

    kind: TaskKind
    split: Split
    model: nn.Module


def build_run(spec: dict[str, Any], seed: int) -> BuiltRun:
    """Task kind, data and freshly initialised model of run `seed` of a run spec (kind, data,
    model, data_seed: `TaskSpec.run_spec`, a run record's `spec`)."""
    kind = get_task(spec["kind"])
    seeds = run_seeds(seed, spec["data_seed"])
    split = kind.make_data(spec["data"], seeds["data_seed"])
    torch.manual_seed(seeds["init_seed"])
    model = kind.make_model(spec["model"], spec["data"])
    return BuiltRun(kind, split, model)


# Examples per forward pass in evaluation: bounds the activations held at once (all replicas of
# a group are evaluated together, e.g. 40 seeds on a GPU).
EVAL_CHUNK = 512
# On the CPU an MLP's chunk is smaller still, so that a layer's activations of all replicas
# (replicas × chunk × width floats, 4 MB) stay in cache: 20 parity seeds (width 1,000) evaluate
# in chunks of 52 examples.
CPU_EVAL_ELEMENTS = 2**20


def eval_chunk(model: Replicas, device: torch.device) -> int:
    """Examples per forward pass when evaluating `model` on `device`."""
    if device.type != "cpu" or model.layers is None:
        return EVAL_CHUNK
    widest = max(w.shape[1] for w, _ in model.layers)
    return max(32, min(EVAL_CHUNK, CPU_EVAL_ELEMENTS // (model.n * widest)))


@torch.no_grad()
def evaluate(
    model: Replicas, kind: TaskKind, x: torch.Tensor, y: torch.Tensor
) -> tuple[list[float], list[float]]:
    """Per replica: mean loss and accuracy on its (x, y), in eval mode (training's checkpoint
    evaluation, and an imported checkpoint's)."""
    was_training = model.base.training
    model.eval()
    n = x.shape[1]
    loss = torch.zeros(model.n, dtype=torch.float64, device=x.device)
    correct = torch.zeros(model.n, dtype=torch.float64, device=x.device)
    chunk = eval_chunk(model, x.device)
    for start in range(0, n, chunk):
        xc, yc = x[:, start : start + chunk], y[:, start : start + chunk]
        out = model(xc)
        loss += model.losses(kind, out, yc).double() * xc.shape[1]
        correct += correct_counts(model, kind, out, yc).double()
    model.train(was_training)
    return (loss / n).tolist(), (correct / n).tolist()


@torch.no_grad()
def correct_counts(model: Replicas, kind: TaskKind, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per replica: how many of its outputs `out` are correct against `y` (`kind.correct` is
    elementwise over leading dimensions: no vmap needed)."""
    return kind.correct(out, y).reshape(model.n, -1).sum(1)
