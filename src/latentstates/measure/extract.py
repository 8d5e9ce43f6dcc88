"""Metric extraction for one run: every checkpoint → one row of weight statistics."""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from latentstates.columns import LLC_COLUMNS, PERFORMANCE_COLUMNS, TRACE_COLUMNS
from latentstates.device import configure_torch, resolve_device
from latentstates.measure.custom import custom_metrics
from latentstates.measure.hessian import (
    EigenResult,
    TraceEstimate,
    hessian_trace,
    hessian_traces,
    top_eigenvalue,
    top_eigenvalues,
)
from latentstates.measure.llc import LLCEstimate
from latentstates.measure.llc_runs import NO_LLC, group_llcs, with_llc
from latentstates.measure.metrics import streamed_weight_metrics, weight_metrics
from latentstates.measure.streamed import streamed_rows
from latentstates.runs.architectures import get_architecture
from latentstates.runs.contract import epoch_or_nan, run_checkpoint_paths, trained_run
from latentstates.runs.runtime import build_run
from latentstates.runs.weights import load_into, model_config, open_weights
from latentstates.settings import HessianSettings, LLCSettings, TaskSpec
from latentstates.tasks.models import finite_weights
from latentstates.tasks.registry import get_task
from latentstates.tasks.replicas import Replicas, loops_replicas
from latentstates.validation import InputError

logger = logging.getLogger("latentstates")
# The trace's probes come from their own generator, seeded with the run's seed + metrics.hessian.seed
# + this: switching the trace on leaves the top eigenvalue's random starts as they were.
TRACE_SEED_OFFSET = 1_000_003
HessianResult = tuple[EigenResult, TraceEstimate | None]


def trace_generator(seed: int, hessian: HessianSettings) -> torch.Generator:
    """The generator of a run's Hutchinson probes (TRACE_SEED_OFFSET)."""
    return torch.Generator().manual_seed(seed + hessian.seed + TRACE_SEED_OFFSET)


def checkpoint_hessian(
    kind,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    hessian: HessianSettings,
    init,
    generator,
) -> EigenResult:
    """Top Hessian eigenpair of the task's loss on (x, y) at the model's weights, with the
    `metrics.hessian` settings: the task's closed form where it has one (method auto), else
    Lanczos warm-started from `init` (the previous checkpoint's vector)."""
    if kind.hessian_top is not None and hessian.method == "auto":
        exact = kind.hessian_top(model, x, y)
        if exact is not None:
            return exact
    return top_eigenvalue(
        lambda: kind.loss(model(x), y),
        [p for p in model.parameters() if p.requires_grad],
        init=init,
        generator=generator,
        **hessian.lanczos(),
    )


def batches_hessians(runs: list[dict], hessian: HessianSettings, device: torch.device) -> bool:
    """Whether a metrics job's runs get their Hessians together (`group_hessians`): runs of one
    registered model with the same Hessian schedule, iterated by Lanczos (not a closed form), whose
    replicas run as one (no BatchNorm), with `metrics.hessian.batch_runs` true, or auto on a GPU."""
    batch = hessian.batch_runs
    if not hessian.enabled or len(runs) < 2 or batch is False or (batch == "auto" and device.type != "cuda"):
        return False
    specs = {json.dumps(run["spec"], sort_keys=True, default=str) for run in runs}
    if len(specs) > 1 or not runs[0]["spec"].get("kind"):
        return False
    spec = runs[0]["spec"]
    kind = get_task(spec["kind"])
    if kind.hessian_top is not None and hessian.method == "auto":
        return False
    if loops_replicas(kind.make_model(spec["model"], spec["data"])):
        return False  # BatchNorm: the replicas would run one after another, nothing to batch
    return len({tuple(_hessian_schedule(run, hessian.stride)) for run in runs}) == 1


def _hessian_schedule(run: dict, stride: int) -> list[int]:
    """Positions in the run's checkpoint list where the Hessian is computed."""
    return [i for i, c in enumerate(run["checkpoints"]) if c["index"] % stride == 0]


def stacked_hessian_losses(spec: dict, seeds: list[int], batch_size: int, device: torch.device):
    """The runs `seeds` of one run spec (`TaskSpec.run_spec`, a run record's `spec`) for their
    Hessians together: (their models, on `device` in eval mode, to load checkpoints into; the
    models stacked as `Replicas`; a function giving each replica's loss on its own run's Hessian
    batch, the first `batch_size` training examples)."""
    built = [build_run(spec, seed) for seed in seeds]
    kind = built[0].kind
    models = [run.model.to(device).eval() for run in built]
    hb = batch_size or len(built[0].split.x_train)
    x = torch.stack([run.split.x_train[:hb] for run in built]).to(device)
    y = torch.stack([run.split.y_train[:hb] for run in built]).to(device)
    replicas = Replicas(models).eval()
    return models, replicas, lambda: replicas.losses(kind, replicas(x), y)


def group_hessians(
    runs: list[dict],
    run_files: list[str | Path],
    hessian: HessianSettings,
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
) -> list[dict[int, HessianResult]]:
    """The Hessians of several runs of one model (`batches_hessians`), iterated together with one
    batched Hessian-vector product for all (`hessian.top_eigenvalues`): per run, checkpoint index
    → (top eigenpair, trace estimate where `hessian.trace_probes`). Each run keeps what
    `metrics_of_run` gives it alone (its Hessian batch, its random
    start and warm starts, its stopping), up to the rounding of batched matrix products."""
    dev = resolve_device(device)
    configure_torch(threads, dev)
    models, replicas, losses = stacked_hessian_losses(
        runs[0]["spec"], [run["seed"] for run in runs], hessian.batch_size, dev
    )
    gens = [torch.Generator().manual_seed(run["seed"] + hessian.seed) for run in runs]
    trace_gens = [trace_generator(run["seed"], hessian) for run in runs]
    files = [run_checkpoint_paths(run, f) for run, f in zip(runs, run_files)]
    found: list[dict[int, HessianResult]] = [{} for _ in runs]
    vectors = [None] * len(runs)
    seeds = ", ".join(str(run["seed"]) for run in runs)
    bar = dict(desc=f"Hessians of seeds {seeds}", file=sys.stderr, mininterval=5.0, disable=not progress)
    for pos in tqdm(_hessian_schedule(runs[0], hessian.stride), **bar):
        for run, model, paths in zip(runs, models, files):
            load_into(model, paths[pos], run["format"])
        replicas.load_state_dicts([model.state_dict() for model in models])
        results = top_eigenvalues(
            losses,
            replicas.parameters(),
            vectors,
            gens,
            active=replicas.finite(),
            **hessian.lanczos(),
        )
        traces = [None] * len(runs)
        if hessian.trace_probes:
            traces = hessian_traces(
                losses, replicas.parameters(), trace_gens, hessian.trace_probes, active=replicas.finite()
            )
        for r, (res, trace) in enumerate(zip(results, traces)):
            if res is not None:
                vectors[r] = res.vector if math.isfinite(res.eigenvalue) else None
                # kept without the eigenvector: one per run and checkpoint would fill a GPU
                eigen = EigenResult(res.eigenvalue, [], res.iterations, res.converged)
                found[r][runs[r]["checkpoints"][pos]["index"]] = (eigen, trace)
    return found


def metrics_of_runs(
    runs: list[dict],
    run_files: list[str | Path],
    train_logs: list[pd.DataFrame],
    hessian: HessianSettings,
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
    llc: LLCSettings | None = None,
    extra: Sequence[str] = (),
    custom: Sequence[Mapping] = (),
    per_layer: str | None = None,
):
    """`metrics_of_run` of each of a metrics job's runs, in order (a generator: each table as
    soon as it is done); their Hessians together where `batches_hessians` says so, and their
    local learning coefficients together (`group_llcs`) where `llc` is enabled."""
    hessians = [None] * len(runs)
    dev = resolve_device(device)
    if batches_hessians(runs, hessian, dev):
        seeds = ", ".join(str(run["seed"]) for run in runs)
        logger.info("Hessians of seeds %s together (batched Hessian-vector products)", seeds)
        try:
            hessians = group_hessians(runs, run_files, hessian, device, threads, progress)
        except RuntimeError as exc:  # e.g. a group too large for the GPU's memory: a speed-up lost,
            # not a result (an unreadable checkpoint is a ValueError, and stops the job)
            logger.warning("Hessians of seeds %s together failed (%s): one run at a time instead", seeds, exc)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    llcs: list[dict[int, LLCEstimate] | None] = [None] * len(runs)
    if llc is not None and llc.enabled and all(run["spec"].get("kind") for run in runs):
        llcs = group_llcs(runs, run_files, llc, device, threads, progress)
    for run, run_file, log, found, lc in zip(runs, run_files, train_logs, hessians, llcs):
        table = metrics_of_run(
            run,
            run_file,
            log,
            hessian,
            device,
            threads,
            progress,
            hessians=found,
            extra=extra,
            custom=custom,
            per_layer=per_layer,
        )
        if lc is not None:
            table = with_llc(table, lc)
        yield table


def run_metrics(
    task: TaskSpec,
    seed: int,
    checkpoint_dir: str | Path,
    train_log: pd.DataFrame,
    hessian: HessianSettings,
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """`metrics_of_run` of a run trained by this workflow, given its checkpoint directory."""
    run = trained_run(task, seed, checkpoint_dir, train_log)
    return metrics_of_run(run, Path(checkpoint_dir), train_log, hessian, device, threads, progress)


def metrics_of_run(
    run: dict,
    run_file: str | Path,
    train_log: pd.DataFrame,
    hessian: HessianSettings,
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
    hessians: dict[int, HessianResult] | None = None,
    extra: Sequence[str] = (),
    custom: Sequence[Mapping] = (),
    per_layer: str | None = None,
) -> pd.DataFrame:
    """Weight statistics of every checkpoint of a run (latentstates.runs.contract), and the Hessian's top
    eigenvalue at every `stride`-th one where the run's model is a registered task kind (given in
    `hessians`, checkpoint index → result, where `group_hessians` computed them), with its trace
    where `hessian.trace_probes` (columns TRACE_COLUMNS, NaN where not computed). `extra` adds
    measures beyond the paper's (EXTRA_FEATURES), `custom` the plug-ins' columns (`metrics.custom`
    entries), both after the paper's; `per_layer` ("blocks" or "parts", metrics.per_layer) each
    layer group's statistics, `{statistic}@{group}`, between the two.

    The Hessian is that of the training loss on a fixed batch (the first `batch_size` training
    examples) in eval mode; each computation is warm-started from the previous eigenvector. An
    architecture read off its state dict (no data, no loss) has no Hessian: its columns are NaN.
    The performance columns come from `train_log` (by checkpoint index).
    """
    bar = dict(desc=f"metrics seed {run['seed']}", file=sys.stderr, mininterval=5.0, disable=not progress)
    if run.get("hub"):  # a Hub series streamed: each revision downloaded, measured, evicted

        def measure(checkpoints, keep):
            checkpoints = tqdm(checkpoints, total=len(run["checkpoints"]), **bar)
            _architecture_rows(run, checkpoints, device, threads, extra, custom, per_layer, keep)

        settings = {"extra": list(extra), "custom": list(custom), "per_layer": per_layer}
        rows = streamed_rows(run, run_file, measure, settings)
        hessian_seed = np.nan
    else:
        checkpoints = tqdm(list(zip(run["checkpoints"], run_checkpoint_paths(run, run_file))), **bar)
        if run["spec"].get("kind"):
            rows = _registered_rows(
                run, checkpoints, hessian, device, threads, hessians, extra, custom, per_layer
            )
            hessian_seed = run["seed"] + hessian.seed
        else:
            rows = _architecture_rows(run, checkpoints, device, threads, extra, custom, per_layer)
            hessian_seed = np.nan
    df = pd.DataFrame(rows)
    if hessian.trace_probes:
        for column in TRACE_COLUMNS:
            df[column] = df[column] if column in df else np.nan
    df["hessian_seed"] = hessian_seed
    return _with_performance(df, train_log)


def _registered_rows(
    run: dict,
    checkpoints: Iterable[tuple[dict, Path]],
    hessian: HessianSettings,
    device: str,
    threads: int,
    hessians: dict[int, HessianResult] | None,
    extra: Sequence[str] = (),
    custom: Sequence[Mapping] = (),
    per_layer: str | None = None,
) -> list[dict]:
    """Rows of a run of a registered task kind: weight statistics, and the Hessian (from
    `hessians` where given, else computed here at every `stride`-th checkpoint)."""
    dev = resolve_device(device)
    configure_torch(threads, dev)
    kind, split, model = build_run(run["spec"], run["seed"])
    model.to(dev).eval()
    hb = hessian.batch_size or len(split.x_train)
    xh, yh = split.x_train[:hb].to(dev), split.y_train[:hb].to(dev)
    gen = torch.Generator().manual_seed(run["seed"] + hessian.seed)
    trace_gen = trace_generator(run["seed"], hessian)
    vec = None
    rows = []
    for ckpt, path in checkpoints:
        load_into(model, path, run["format"])
        layer = (kind.matrices(model), kind.biases(model), kind.kernels(model))
        parts = kind.parts(model) if per_layer else None
        row = _row(ckpt, weight_metrics(*layer, extra=extra, per_layer=per_layer, parts=parts))
        finite = finite_weights(model)
        if hessians is not None:
            res, trace = hessians.get(ckpt["index"], (None, None))
        elif finite and hessian.enabled and ckpt["index"] % hessian.stride == 0:
            res = checkpoint_hessian(kind, model, xh, yh, hessian, vec, gen)
            vec = res.vector if math.isfinite(res.eigenvalue) else None  # NaN: cold-start next time
            trace = None
            if hessian.trace_probes:
                params = [p for p in model.parameters() if p.requires_grad]
                trace = hessian_trace(
                    lambda: kind.loss(model(xh), yh), params, trace_gen, hessian.trace_probes
                )
        else:
            res, trace = None, None
        if res is not None:
            row["hessian_top_eig"] = res.eigenvalue
            row["hessian_iters"] = res.iterations
            row["hessian_converged"] = res.converged
        if trace is not None:
            row["hessian_trace"], row["hessian_trace_se"] = trace.trace, trace.se
        row.update(custom_metrics(custom, lambda layer=layer: [layer], where=str(path)))
        rows.append(row)
    return rows


def _architecture_rows(
    run: dict,
    checkpoints: Iterable[tuple[dict, Path]],
    device: str = "auto",
    threads: int = 1,
    extra: Sequence[str] = (),
    custom: Sequence[Mapping] = (),
    per_layer: str | None = None,
    keep: Callable[[dict, dict], None] | None = None,
) -> list[dict]:
    """Rows of a run whose matrices are read off its state dict by architecture (no Hessian): each
    checkpoint read layer by layer (`open_weights`, `streamed_weight_metrics`), its matrices'
    statistics on the GPU when there is one (else on the CPU, their eigenvalue problems one thread
    each: two one-thread jobs side by side beat one two-thread job); `keep(checkpoint, row)` is
    called with each row as soon as it is complete."""
    dev = resolve_device(device)
    configure_torch(threads, dev)
    arch = get_architecture(run["spec"]["architecture"])
    if per_layer == "parts" and arch.attention is None:
        raise ValueError(
            f"metrics.per_layer: parts: architecture {arch.name} does not split its layers into "
            "attention and MLP; use metrics.per_layer: blocks, or name the task's architecture"
        )
    rows = []
    for ckpt, path in checkpoints:
        try:
            # The model's config: recorded by the run's writer, else its directory's config.json.
            config = run["spec"].get("config") or model_config(path, run["format"])
            sd = open_weights(path, run["format"])
            # layers() names what is missing before anything is read
            layers = functools.partial(arch.layers, sd, config)
            stats = streamed_weight_metrics(layers, dev, extra, per_layer, arch.parts)
        except InputError:
            raise
        except ValueError as exc:  # what the architecture misses in this checkpoint
            raise InputError(path, str(exc)) from exc
        row = _row(ckpt, stats)
        row.update(custom_metrics(custom, layers, where=str(path)))
        rows.append(row)
        if keep is not None:
            keep(ckpt, row)
    return rows


def _with_performance(df: pd.DataFrame, train_log: pd.DataFrame) -> pd.DataFrame:
    """`df` with the performance columns (and `diverged`) of `train_log`, by checkpoint index."""
    perf = train_log[["checkpoint", *PERFORMANCE_COLUMNS, *(["diverged"] if "diverged" in train_log else [])]]
    merged = df.merge(perf, on="checkpoint", how="left", validate="one_to_one")
    absent = ~merged["checkpoint"].isin(train_log["checkpoint"])
    if absent.any():
        raise ValueError(
            f"train log has no row for checkpoints {merged.loc[absent, 'checkpoint'].tolist()[:5]}"
        )
    return merged


def _row(ckpt: dict, stats: dict) -> dict:
    row = {"checkpoint": ckpt["index"], "step": ckpt["step"], "epoch": epoch_or_nan(ckpt), **stats}
    row.update(hessian_top_eig=np.nan, hessian_iters=0, hessian_converged=False)
    row.update(zip(LLC_COLUMNS, NO_LLC))
    return row
