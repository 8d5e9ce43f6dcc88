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

from latentstates.device import configure_torch, resolve_device
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
from latentstates.runs.runtime import build_run, correct_counts, evaluate, run_seeds
from latentstates.settings import TaskSpec, TrainSettings
from latentstates.tasks.replicas import Replicas, split_optimizer_state, stack_optimizer_states

logger = logging.getLogger("latentstates")


def make_optimizer(params: list[torch.Tensor], train: TrainSettings) -> torch.optim.Optimizer:
    """SGD or AdamW from the task's `train` settings."""
    if train.optimizer == "sgd":
        sgd = {"lr": train.lr, "weight_decay": train.weight_decay, "momentum": train.momentum}
        if not sgd["momentum"]:
            try:
                # Weight decay and update in one kernel per tensor: the same numbers as torch's
                # default (foreach) step, bit for bit on the CPU (tested), and faster
                # (benchmarks/README.md). Not with momentum, whose fused step rounds
                # differently on the last elements of a tensor. Torch versions or devices without
                # it take the default.
                return torch.optim.SGD(params, fused=True, **sgd)
            except (TypeError, RuntimeError, ValueError):
                pass
        return torch.optim.SGD(params, **sgd)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, betas=train.betas)
    raise ValueError(f"train.optimizer: unknown optimizer {train.optimizer!r} (sgd, adamw)")


def schedule(n_train: int, train: TrainSettings) -> tuple[int, int, int]:
    """(batch size, steps per epoch, steps between checkpoints) from the `train` settings."""
    batch = train.batch_size or n_train
    batch = min(batch, n_train)
    steps_per_epoch = math.ceil(n_train / batch)
    every = train.checkpoint_every
    interval = every * steps_per_epoch if train.checkpoint_unit == "epoch" else every
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


class GroupTrainer:
    """One group's training: the seeds' models stacked as `Replicas`, their data, optimiser, data
    orders, staging directories and log rows so far (`train_group`)."""

    def __init__(
        self,
        task: TaskSpec,
        seeds: list[int],
        checkpoint_dirs: list[str | Path],
        device: str,
        threads: int,
        resume_every: float,
    ):
        self.dev = resolve_device(device)
        configure_torch(threads, self.dev)
        runs = [build_run(task.run_spec, seed) for seed in seeds]
        self.label = task.kind
        self.seeds = seeds
        self.kind = runs[0].kind
        self.train = task.training()
        stacking = self.train.stacking
        grouped = stacking == "grouped" or (stacking == "auto" and self.dev.type == "cuda")
        self.model = Replicas([r.model.to(self.dev) for r in runs], grouped=grouped)
        self.x_tr = _stack([r.split.x_train for r in runs], "training inputs", self.dev)
        self.y_tr = _stack([r.split.y_train for r in runs], "training labels", self.dev)
        self.x_te = _stack([r.split.x_test for r in runs], "test inputs", self.dev)
        self.y_te = _stack([r.split.y_test for r in runs], "test labels", self.dev)
        self.n_runs, self.n_train = self.x_tr.shape[:2]
        self.optimizer = make_optimizer(self.model.parameters(), self.train)
        self.batch, self.steps_per_epoch, self.interval = schedule(self.n_train, self.train)
        self.total = self.train.epochs * self.steps_per_epoch
        self.run_info = [run_seeds(seed, task.data_seed) for seed in seeds]
        self.orders = [torch.Generator().manual_seed(info["order_seed"]) for info in self.run_info]
        self.checkpoint_dirs = checkpoint_dirs
        self.work = [staging_dir(d) for d in checkpoint_dirs]
        self.rows: list[list[dict]] = [[] for _ in seeds]
        self.perm = torch.empty((self.n_runs, 0), dtype=torch.long)
        self.which = torch.arange(self.n_runs, device=self.dev)[:, None]
        # train_metrics "running": the training batches since the last checkpoint give the train
        # loss and accuracy, as the released image scripts (no pass over the training set); "full"
        # evaluates the whole training set at each checkpoint.
        self.running = _BatchTotals(self.n_runs, self.dev) if self.train.train_metrics == "running" else None
        self.resume_every = resume_every
        self.last_resume = time.perf_counter()

    def any_active(self) -> bool:
        """Whether a run of the group is still training (has not diverged)."""
        return any(not r[-1]["diverged"] for r in self.rows)

    def start(self) -> int:
        """The step training starts from: 0 (after checkpoint 0), or the newest step every run
        has a resume state for, restored."""
        resumed = load_resume(self.work)
        if resumed is None:
            for w in self.work:
                w.mkdir(parents=True, exist_ok=True)
            self.model.train()
            self.checkpoint(0)
            return 0
        self.model.load_state_dicts([r["model"] for r in resumed])
        self.optimizer.load_state_dict(
            stack_optimizer_states([r["optimizer"] for r in resumed], self.optimizer)
        )
        for order, r in zip(self.orders, resumed):
            order.set_state(r["order_rng"])
        self.perm = torch.stack([r["perm"] for r in resumed]).to(self.dev)
        self.rows = [resume_rows(r) for r in resumed]
        step = resumed[0]["step"]
        self.model.train()
        logger.info("resuming from step %d (%s)", step, ", ".join(str(w) for w in self.work))
        return step

    def step(self, step: int) -> None:
        """One optimisation step of every run: the batch at `step` of each run's data order."""
        position = step % self.steps_per_epoch
        if position == 0:
            perms = [torch.randperm(self.n_train, generator=g) for g in self.orders]
            self.perm = torch.stack(perms).to(self.dev)
        idx = self.perm[:, position * self.batch : (position + 1) * self.batch]
        xb, yb = self.x_tr[self.which, idx], self.y_tr[self.which, idx]
        if self.kind.augment is not None:
            xb = torch.stack([self.kind.augment(xb[i], self.orders[i]) for i in range(self.n_runs)])
        out, losses = self.model.loss_and_grads(self.kind, xb, yb, by_hand=self.train.backward == "auto")
        if self.running is not None:
            self.running.add(losses, correct_counts(self.model, self.kind, out, yb), yb.shape[1])
        self.optimizer.step()

    def train_from(self, step: int, progress: bool) -> None:
        """Train from `step` to the end (or until every run has diverged), with a checkpoint
        every `interval` steps."""
        if step < self.total and self.any_active():  # else only the publishing rename is left
            check_room(self.work, self.total // self.interval - step // self.interval)
        seeds = f"seed {self.seeds[0]}" if self.n_runs == 1 else f"seeds {self.seeds[0]}..{self.seeds[-1]}"
        bar = tqdm(
            total=self.total,
            initial=step,
            desc=f"{self.label} {seeds}",
            file=sys.stderr,
            mininterval=5.0,
            disable=not progress,
        )
        while step < self.total and self.any_active():
            self.step(step)
            step += 1
            bar.update()
            if step % self.interval == 0:
                self.checkpoint(step)
                bar.set_postfix(eval_acc=min(r[-1]["eval_acc"] for r in self.rows), refresh=False)
        bar.close()

    def checkpoint(self, step: int) -> None:
        """Evaluate every run at `step`; write each active run's checkpoint (with its log row) and,
        `resume_every` seconds after the last ones, every run's resume state."""
        index = step // self.interval
        if self.running is not None and self.running.batches:
            tr_loss, tr_acc = self.running.take()
        else:  # full, and the checkpoint before the first step
            tr_loss, tr_acc = evaluate(self.model, self.kind, self.x_tr, self.y_tr)
        te_loss, te_acc = evaluate(self.model, self.kind, self.x_te, self.y_te)
        finite = self.model.finite()
        resume = time.perf_counter() - self.last_resume >= self.resume_every
        if resume:
            opt_states = split_optimizer_state(self.optimizer, self.n_runs)
            self.last_resume = time.perf_counter()
        for i in range(self.n_runs):
            stopped = bool(self.rows[i]) and self.rows[i][-1]["diverged"]
            if stopped and not resume:
                continue  # a stopped run writes no checkpoint, only resume states
            state = self.model.state_dict(i)
            if not stopped:
                row = {
                    "checkpoint": index,
                    "step": step,
                    "epoch": step / self.steps_per_epoch,
                    "train_loss": tr_loss[i],
                    "train_acc": tr_acc[i],
                    "eval_loss": te_loss[i],
                    "eval_acc": te_acc[i],
                    "diverged": not (finite[i] and math.isfinite(tr_loss[i]) and math.isfinite(te_loss[i])),
                }
                self._save_checkpoint(i, state, row)
            if resume:
                self._save_resume(i, step, state, opt_states[i])
        if resume:
            prune_resume(self.work)

    def _save_checkpoint(self, i: int, state: dict, row: dict) -> None:
        # The checkpoint carries its log row: a reader of a run still training (the forecast)
        # needs no resume state.
        index, step = row["checkpoint"], row["step"]
        payload = {"model": state, "index": index, "step": step, "epoch": row["epoch"], "row": row}
        save_checkpoint(self.work[i], index, payload, atomic=False)
        self.rows[i].append(row)
        if row["diverged"]:
            # Non-finite weights or losses: nothing later can be recovered. The run is kept,
            # flagged, with its checkpoints so far; the HMM stage leaves it out.
            logger.warning("seed %d diverged by step %d: its training stopped", self.seeds[i], step)

    def _save_resume(self, i: int, step: int, state: dict, optimizer_state: dict) -> None:
        # Every run's resume state (a stopped run's too), so that a group always has a common
        # index to resume from; older states are pruned once every run has its new one.
        save_resume(
            self.work[i],
            step // self.interval,
            {
                "step": step,
                "model": state,
                "optimizer": optimizer_state,
                "order_rng": self.orders[i].get_state(),
                "perm": self.perm[i].cpu(),
                "log": encode_log(self.rows[i]),
            },
        )

    def publish(self) -> list[pd.DataFrame]:
        """Rename each run's checkpoints into place; its log, with the run's seeds."""
        logs = []
        for i, info in enumerate(self.run_info):
            publish(self.work[i], self.checkpoint_dirs[i])
            log = pd.DataFrame(self.rows[i])
            for name, value in info.items():
                log[name] = value
            logs.append(log)
        return logs


def train_group(
    task: TaskSpec,
    seeds: list[int],
    checkpoint_dirs: list[str | Path],
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
    resume_every: float = math.inf,
) -> list[pd.DataFrame]:
    """Train the runs `seeds` together; save each run's checkpoints; return their logs.

    Each run's checkpoints are written to `<its checkpoint_dir>.partial`, with a resume state
    (weights, optimiser state, data order, log so far) at the first checkpoint at least
    `resume_every` seconds after the previous state (0: at every checkpoint; the workflow passes
    the config's `resume_every`, inf writes none); the directories are renamed into place when
    training ends. A rerun after a kill continues from the newest checkpoint that every run of
    the group has a readable resume state for, and ends bit-identical (on CPU) to an
    uninterrupted run. A run whose weights or losses become non-finite is flagged, keeps its
    checkpoints so far and stops; the others go on.
    """
    if len(seeds) != len(checkpoint_dirs):
        raise ValueError(f"{len(seeds)} seeds for {len(checkpoint_dirs)} checkpoint directories")
    trainer = GroupTrainer(task, seeds, checkpoint_dirs, device, threads, resume_every)
    trainer.train_from(trainer.start(), progress)
    return trainer.publish()


def train_run(
    task: TaskSpec,
    seed: int,
    checkpoint_dir: str | Path,
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
    resume_every: float = math.inf,
) -> pd.DataFrame:
    """Train one run alone (a group of one); see `train_group`."""
    return train_group(task, [seed], [checkpoint_dir], device, threads, progress, resume_every)[0]
