"""Training loop: a group of seeded runs of one task trained together, with a checkpoint every
`checkpoint_every` units.

The seeds of a group are stacked along a leading dimension (`Replicas`) and trained as one model;
each run keeps exactly what it would have alone: its initialisation, data split, data order,
optimiser state, checkpoints and resume states. A group of one seed is the paper's one run per
process.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from latentstates.runs.checkpoints import (
    check_room,
    encode_log,
    load_resume,
    prune_resume,
    publish,
    resume_rows,
    save_checkpoint,
    save_resume,
    staging_dir,
)
from latentstates.runs.runtime import (
    build_run,
    configure_torch,
    correct_counts,
    evaluate,
    resolve_device,
    run_seeds,
)
from latentstates.tasks.replicas import Replicas, split_optimizer_state, stack_optimizer_states

logger = logging.getLogger("latentstates")


def make_optimizer(params: list[torch.Tensor], cfg: dict) -> torch.optim.Optimizer:
    """SGD or AdamW from the task's `train` config."""
    name = cfg["optimizer"]
    if name == "sgd":
        sgd = {"lr": cfg["lr"], "weight_decay": cfg["weight_decay"], "momentum": cfg["momentum"]}
        if not sgd["momentum"]:
            try:
                # Weight decay and update in one kernel per tensor: the same numbers as torch's
                # default (foreach) step, bit for bit on the CPU (tested), 2-3x faster (a tenth
                # of a stacked parity step). Not with momentum, whose fused step rounds
                # differently on the last elements of a tensor. Torch versions or devices without
                # it take the default.
                return torch.optim.SGD(params, fused=True, **sgd)
            except (TypeError, RuntimeError, ValueError):
                pass
        return torch.optim.SGD(params, **sgd)
    if name == "adamw":
        return torch.optim.AdamW(
            params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=tuple(cfg["betas"])
        )
    raise ValueError(f"train.optimizer: unknown optimizer {name!r} (sgd, adamw)")


def schedule(n_train: int, cfg: dict) -> tuple[int, int, int]:
    """(batch size, steps per epoch, steps between checkpoints) from the `train` config."""
    batch = cfg["batch_size"] or n_train
    batch = min(batch, n_train)
    steps_per_epoch = math.ceil(n_train / batch)
    every = cfg["checkpoint_every"]
    interval = every * steps_per_epoch if cfg["checkpoint_unit"] == "epoch" else every
    return batch, steps_per_epoch, interval


class _BatchTotals:
    """Per run: the training batches' losses and correct predictions since the last checkpoint."""

    def __init__(self, n_runs: int, device: torch.device):
        self.loss = torch.zeros(n_runs, dtype=torch.float64, device=device)
        self.correct = torch.zeros(n_runs, dtype=torch.float64, device=device)
        self.examples = self.batches = 0

    def add(self, losses: torch.Tensor, correct: torch.Tensor, examples: int) -> None:
        self.loss += losses.detach().double()
        self.correct += correct.double()
        self.examples += examples
        self.batches += 1

    def take(self) -> tuple[list[float], list[float]]:
        """(mean batch loss, accuracy) per run, and start again."""
        out = (self.loss / self.batches).tolist(), (self.correct / self.examples).tolist()
        self.loss.zero_(), self.correct.zero_()
        self.examples = self.batches = 0
        return out


def _stack(tensors: list[torch.Tensor], what: str, device: torch.device) -> torch.Tensor:
    if all(t is tensors[0] for t in tensors):
        # One data set for every run (the image tasks' fixed splits): shared, not copied.
        return tensors[0].to(device).expand(len(tensors), *tensors[0].shape)
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(
            f"the seeds of one training job have {what} of different shapes {sorted(shapes)}; "
            "set seeds_per_job: 1 for this task"
        )
    return torch.stack(tensors).to(device)


# Seconds between resume states: a state per checkpoint cost a parity run more than its evaluation.
RESUME_EVERY = 10.0


def train_group(
    task_cfg: dict,
    seeds: list[int],
    checkpoint_dirs: list[str | Path],
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
    resume_every: float = RESUME_EVERY,
) -> list[pd.DataFrame]:
    """Train the runs `seeds` together; save each run's checkpoints; return their logs.

    Each run's checkpoints are written to `<its checkpoint_dir>.partial`, with a resume state
    (weights, optimiser state, data order, log so far) at the first checkpoint at least
    `resume_every` seconds after the previous state (0: at every checkpoint); the directories are
    renamed into place when training ends. A rerun after a kill continues from the newest
    checkpoint that every run of the group has a readable resume state for, and ends
    bit-identical (on CPU) to an uninterrupted run. A run whose weights or losses become
    non-finite is flagged, keeps its checkpoints so far and stops; the others go on.
    """
    if len(seeds) != len(checkpoint_dirs):
        raise ValueError(f"{len(seeds)} seeds for {len(checkpoint_dirs)} checkpoint directories")
    dev = resolve_device(device)
    configure_torch(threads, dev)
    runs = [build_run(task_cfg, seed) for seed in seeds]
    kind = runs[0][0]
    model = Replicas([m.to(dev) for _, _, m in runs])
    x_tr = _stack([s.x_train for _, s, _ in runs], "training inputs", dev)
    y_tr = _stack([s.y_train for _, s, _ in runs], "training labels", dev)
    x_te = _stack([s.x_test for _, s, _ in runs], "test inputs", dev)
    y_te = _stack([s.y_test for _, s, _ in runs], "test labels", dev)
    n_runs, n_train = x_tr.shape[:2]
    cfg = task_cfg["train"]
    optimizer = make_optimizer(model.parameters(), cfg)
    batch, steps_per_epoch, interval = schedule(n_train, cfg)
    total = cfg["epochs"] * steps_per_epoch
    run_info = [run_seeds(seed, task_cfg.get("data_seed")) for seed in seeds]
    orders = [torch.Generator().manual_seed(info["order_seed"]) for info in run_info]
    work = [staging_dir(d) for d in checkpoint_dirs]
    rows: list[list[dict]] = [[] for _ in seeds]
    perm = torch.empty((n_runs, 0), dtype=torch.long)
    which = torch.arange(n_runs, device=dev)[:, None]

    def active() -> list[bool]:
        return [not r[-1]["diverged"] for r in rows]

    # train_metrics "running": the training batches since the last checkpoint give the train
    # loss and accuracy, as the released image scripts (no pass over the training set); "full"
    # evaluates the whole training set at each checkpoint.
    running = _BatchTotals(n_runs, dev) if cfg["train_metrics"] == "running" else None

    last_resume = time.perf_counter()

    def checkpoint(step: int) -> None:
        nonlocal last_resume
        index = step // interval
        if running is not None and running.batches:
            tr_loss, tr_acc = running.take()
        else:  # full, and the checkpoint before the first step
            tr_loss, tr_acc = evaluate(model, kind, x_tr, y_tr)
        te_loss, te_acc = evaluate(model, kind, x_te, y_te)
        finite = model.finite()
        resume = time.perf_counter() - last_resume >= resume_every
        if resume:
            opt_states = split_optimizer_state(optimizer, n_runs)
            last_resume = time.perf_counter()
        for i in range(n_runs):
            stopped = bool(rows[i]) and rows[i][-1]["diverged"]
            if stopped and not resume:
                continue  # a stopped run writes no checkpoint, only resume states
            state = model.state_dict(i)
            if not stopped:
                row = {
                    "checkpoint": index,
                    "step": step,
                    "epoch": step / steps_per_epoch,
                    "train_loss": tr_loss[i],
                    "train_acc": tr_acc[i],
                    "eval_loss": te_loss[i],
                    "eval_acc": te_acc[i],
                    "diverged": not (finite[i] and math.isfinite(tr_loss[i]) and math.isfinite(te_loss[i])),
                }
                # The checkpoint carries its log row: a reader of a run still training (the
                # forecast) needs no resume state.
                save_checkpoint(
                    work[i],
                    index,
                    {"model": state, "index": index, "step": step, "epoch": row["epoch"], "row": row},
                    atomic=False,
                )
                rows[i].append(row)
                if row["diverged"]:
                    # Non-finite weights or losses: nothing later can be recovered. The run is
                    # kept, flagged, with its checkpoints so far; the HMM stage leaves it out.
                    logger.warning("seed %d diverged by step %d: its training stopped", seeds[i], step)
            if not resume:
                continue
            # Every run's resume state (a stopped run's too), so that a group always has a common
            # index to resume from; older states are pruned once every run has its new one.
            save_resume(
                work[i],
                index,
                {
                    "step": step,
                    "model": state,
                    "optimizer": opt_states[i],
                    "order_rng": orders[i].get_state(),
                    "perm": perm[i].cpu(),
                    "log": encode_log(rows[i]),
                },
            )
        if resume:
            prune_resume(work)

    resumed = load_resume(work)
    if resumed is None:
        for w in work:
            w.mkdir(parents=True, exist_ok=True)
        model.train()
        checkpoint(0)
        step = 0
    else:
        model.load_state_dicts([r["model"] for r in resumed])
        optimizer.load_state_dict(stack_optimizer_states([r["optimizer"] for r in resumed], optimizer))
        for order, r in zip(orders, resumed):
            order.set_state(r["order_rng"])
        perm = torch.stack([r["perm"] for r in resumed]).to(dev)
        rows = [resume_rows(r) for r in resumed]
        step = resumed[0]["step"]
        model.train()
        logger.info("resuming from step %d (%s)", step, ", ".join(str(w) for w in work))
    if step < total and any(active()):  # else only the publishing rename is left
        check_room(work, total // interval - step // interval)
    label = f"seed {seeds[0]}" if n_runs == 1 else f"seeds {seeds[0]}..{seeds[-1]}"
    bar = tqdm(
        total=total,
        initial=step,
        desc=f"{task_cfg['kind']} {label}",
        file=sys.stderr,
        mininterval=5.0,
        disable=not progress,
    )
    while step < total and any(active()):
        position = step % steps_per_epoch
        if position == 0:
            perm = torch.stack([torch.randperm(n_train, generator=g) for g in orders]).to(dev)
        idx = perm[:, position * batch : (position + 1) * batch]
        xb, yb = x_tr[which, idx], y_tr[which, idx]
        if kind.augment is not None:
            xb = torch.stack([kind.augment(xb[i], orders[i]) for i in range(n_runs)])
        out, losses = model.loss_and_grads(kind, xb, yb, by_hand=cfg["backward"] == "auto")
        if running is not None:
            running.add(losses, correct_counts(model, kind, out, yb), yb.shape[1])
        optimizer.step()
        step += 1
        bar.update()
        if step % interval == 0:
            checkpoint(step)
            bar.set_postfix(eval_acc=min(r[-1]["eval_acc"] for r in rows), refresh=False)
    bar.close()
    logs = []
    for i, info in enumerate(run_info):
        publish(work[i], checkpoint_dirs[i])
        log = pd.DataFrame(rows[i])
        for name, value in info.items():
            log[name] = value
        logs.append(log)
    return logs


def train_run(
    task_cfg: dict,
    seed: int,
    checkpoint_dir: str | Path,
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
    resume_every: float = RESUME_EVERY,
) -> pd.DataFrame:
    """Train one run alone (a group of one); see `train_group`."""
    return train_group(task_cfg, [seed], [checkpoint_dir], device, threads, progress, resume_every)[0]
