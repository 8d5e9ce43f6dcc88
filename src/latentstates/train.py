"""Training loop: one seeded run of a task, with a checkpoint every `checkpoint_every` units."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from .checkpoints import load_resume, publish, save_checkpoint, save_resume
from .data import Split
from .models import finite_weights
from .tasks import TaskKind, get_task

logger = logging.getLogger("latentstates")

# Offsets that derive independent streams from one run seed.
DATA_ORDER_OFFSET = 1_000_003


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def configure_torch(threads: int, device: torch.device) -> None:
    """Thread count and deterministic kernels for bit-identical reruns."""
    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")


def make_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    """SGD or AdamW from the task's `train` config."""
    name = cfg["optimizer"]
    if name == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=cfg["lr"],
            weight_decay=cfg["weight_decay"],
            momentum=cfg["momentum"],
        )
    if name == "adamw":
        return torch.optim.AdamW(
            model.parameters(),
            lr=cfg["lr"],
            weight_decay=cfg["weight_decay"],
            betas=tuple(cfg["betas"]),
        )
    raise ValueError(f"train.optimizer: unknown optimizer {name!r} (sgd, adamw)")


@torch.no_grad()
def evaluate(model: nn.Module, kind: TaskKind, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean loss and accuracy of `model` on (x, y) in eval mode."""
    was_training = model.training
    model.eval()
    out = model(x)
    loss = kind.loss(out, y).item()
    acc = kind.correct(out, y).float().mean().item()
    model.train(was_training)
    return loss, acc


def run_seeds(seed: int, data_seed: int | None) -> dict[str, int]:
    """Seeds of every random choice of one run, derived from the run seed."""
    return {
        "seed": seed,
        "init_seed": seed,
        "data_seed": seed if data_seed is None else data_seed,
        "order_seed": seed + DATA_ORDER_OFFSET,
    }


def schedule(n_train: int, cfg: dict) -> tuple[int, int, int]:
    """(batch size, steps per epoch, steps between checkpoints) from the `train` config."""
    batch = cfg["batch_size"] or n_train
    batch = min(batch, n_train)
    steps_per_epoch = math.ceil(n_train / batch)
    every = cfg["checkpoint_every"]
    interval = every * steps_per_epoch if cfg["checkpoint_unit"] == "epoch" else every
    return batch, steps_per_epoch, interval


def build_run(task_cfg: dict, seed: int) -> tuple[TaskKind, Split, nn.Module]:
    """Task kind, data and freshly initialised model of one run."""
    kind = get_task(task_cfg["kind"])
    seeds = run_seeds(seed, task_cfg.get("data_seed"))
    split = kind.make_data(task_cfg["data"], seeds["data_seed"])
    torch.manual_seed(seeds["init_seed"])
    model = kind.make_model(task_cfg["model"], task_cfg["data"])
    return kind, split, model


def staging_dir(checkpoint_dir: str | Path) -> Path:
    """Where a run's checkpoints and resume states live until training completes."""
    checkpoint_dir = Path(checkpoint_dir)
    return checkpoint_dir.with_name(checkpoint_dir.name + ".partial")


def train_run(
    task_cfg: dict,
    seed: int,
    checkpoint_dir: str | Path,
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Train one run, save checkpoints, and return its per-checkpoint loss/accuracy log.

    Checkpoints are written to `<checkpoint_dir>.partial` with a resume state (model, optimiser,
    RNG states, data order, log so far) at each one; the directory is renamed to `checkpoint_dir`
    when training ends. A rerun after a kill continues from the last readable resume state and
    ends bit-identical (on CPU) to an uninterrupted run.
    """
    dev = resolve_device(device)
    configure_torch(threads, dev)
    kind, split, model = build_run(task_cfg, seed)
    seeds = run_seeds(seed, task_cfg.get("data_seed"))
    model.to(dev)
    x_tr, y_tr = split.x_train.to(dev), split.y_train.to(dev)
    x_te, y_te = split.x_test.to(dev), split.y_test.to(dev)
    cfg = task_cfg["train"]
    optimizer = make_optimizer(model, cfg)
    batch, steps_per_epoch, interval = schedule(len(x_tr), cfg)
    total = cfg["epochs"] * steps_per_epoch
    order = torch.Generator().manual_seed(seeds["order_seed"])
    work = staging_dir(checkpoint_dir)
    rows: list[dict] = []
    perm = torch.empty(0, dtype=torch.long)

    def checkpoint(step: int) -> None:
        index = step // interval
        tr_loss, tr_acc = evaluate(model, kind, x_tr, y_tr)
        te_loss, te_acc = evaluate(model, kind, x_te, y_te)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_checkpoint(
            work, index, {"model": state, "index": index, "step": step, "epoch": step / steps_per_epoch}
        )
        finite = finite_weights(model)
        rows.append(
            {
                "checkpoint": index,
                "step": step,
                "epoch": step / steps_per_epoch,
                "train_loss": tr_loss,
                "train_acc": tr_acc,
                "eval_loss": te_loss,
                "eval_acc": te_acc,
                "diverged": not (finite and math.isfinite(tr_loss) and math.isfinite(te_loss)),
            }
        )
        save_resume(
            work,
            index,
            {
                "step": step,
                "model": state,
                "optimizer": optimizer.state_dict(),
                "order_rng": order.get_state(),
                "torch_rng": torch.get_rng_state(),
                "perm": perm.cpu(),
                "rows": list(rows),
            },
        )

    resumed = load_resume(work)
    if resumed is None:
        work.mkdir(parents=True, exist_ok=True)
        model.train()
        checkpoint(0)
        step = 0
    else:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        order.set_state(resumed["order_rng"])
        torch.set_rng_state(resumed["torch_rng"])
        perm, rows, step = resumed["perm"].to(dev), resumed["rows"], resumed["step"]
        model.train()
        logger.info("resuming from step %d (%s)", step, work)
    bar = tqdm(
        total=total,
        initial=step,
        desc=f"{task_cfg['kind']} seed {seed}",
        file=sys.stderr,
        mininterval=5.0,
        disable=not progress,
    )
    while step < total and not rows[-1]["diverged"]:
        position = step % steps_per_epoch
        if position == 0:
            perm = torch.randperm(len(x_tr), generator=order).to(dev)
        idx = perm[position * batch : (position + 1) * batch]
        loss = kind.loss(model(x_tr[idx]), y_tr[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        bar.update()
        if step % interval == 0:
            checkpoint(step)
            bar.set_postfix(train_acc=rows[-1]["train_acc"], eval_acc=rows[-1]["eval_acc"], refresh=False)
    bar.close()
    if rows[-1]["diverged"]:
        # Non-finite weights or losses: nothing later can be recovered. The run is kept, flagged,
        # with its checkpoints so far; the HMM stage leaves it out.
        logger.warning("run diverged by step %d: training stopped", rows[-1]["step"])
    publish(work, checkpoint_dir)
    log = pd.DataFrame(rows)
    for name, value in seeds.items():
        log[name] = value
    return log
