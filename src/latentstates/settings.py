"""Typed settings: frozen dataclasses built once from the validated config.

The defaults live in the schema only (`latentstates.config`): a dataclass here has no default
values, and `from_config` reads a config that `validate_config` has filled in. Each field's comment gives
its gist; its full description is the schema's (docs/configuration.md, generated from it; a
test checks that the schema describes every field). Code that needs a
section without a whole config (a test, a benchmark, a notebook) asks for the schema's defaults
with overrides: `HMMSettings.defaults(restarts=3)`. A section a task may override (hmm, Hessian,
training) is built per task (`of_task`), a global one from the config (`from_config`). Light on
purpose (yaml + jsonschema through `config`): every job imports it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from latentstates.config import (
    ConfigError,
    comparison_hmm,
    section_defaults,
    task_hessian,
    task_hmm,
    task_llc,
)

S = TypeVar("S", bound="_Settings")


class _Settings:
    """A section of the config as a frozen dataclass (subclasses name their schema section)."""

    SECTION: ClassVar[str]

    @classmethod
    def from_dict(cls: type[S], values: dict[str, Any]) -> S:
        """From a validated section (every key filled in by the schema)."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in values]
        if missing:
            raise ConfigError(f"config section '{cls.SECTION}' lacks {missing} (validate the config first)")
        kwargs = {n: _frozen(values[n]) for n in names}
        return cls(**kwargs)

    @classmethod
    def defaults(cls: type[S], **overrides: Any) -> S:
        """The schema's defaults for this section, with `overrides` (validated too)."""
        return cls.from_dict(section_defaults(cls.SECTION, overrides))

    def replace(self: S, **changes: Any) -> S:
        return dataclasses.replace(self, **{k: _frozen(v) for k, v in changes.items()})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _thawed(getattr(self, f.name)) for f in dataclasses.fields(self)}


class _GlobalSettings(_Settings):
    """A top-level section that no task overrides."""

    @classmethod
    def from_config(cls: type[S], config: dict) -> S:
        """From a validated config's section."""
        return cls.from_dict(config[cls.SECTION])


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def _thawed(value: Any) -> Any:
    return [_thawed(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class HMMSettings(_Settings):
    """`hmm` (global, updated by a task's `hmm`): features, model selection and the fit."""

    SECTION: ClassVar[str] = "hmm"
    features: tuple[str, ...]  # metrics table columns the HMM observes
    first_n: int | None  # each run's first n checkpoints only (None: all)
    max_states: int  # K = 1 … max_states are tried
    restarts: int  # seeded EM restarts per K (k-means and time segments, alternately)
    covariance: str  # "full" or "diag" Gaussian per state
    max_iter: int  # EM iterations per restart
    tol: float  # EM stops when the log-likelihood gains less than this
    covariance_prior: float  # prior added to each state's covariance, × the data's mean variance
    var_floor: float  # smallest state variance, × the data's mean variance
    val_fraction: float  # runs held out by the single-split criteria (bic, aic)
    criterion: str  # how K is chosen: cv_1se, cv, cv_bic, bic, aic, val_ll, bic_train, aic_train
    cv_folds: int  # folds over runs of the fold criteria
    cv_restarts: int  # seeded restarts per K and fold of the fold criteria
    cv_repeats: int  # fold assignments of the runs (each run's held-out score averaged)
    splits: bool  # also start each K from splits of the best (K − 1)-state fit
    merge_splits: int  # rounds of merge-and-split moves from a K's best fit on every run (0: none)
    engine: str  # "batched" (states/baum_welch.py) or "pomegranate" (its DenseHMM)
    zscore: str  # "run": each run by its own statistics; "pooled": all runs together
    n_states: int | None  # pin K instead of choosing it
    seed: int  # seed of the split, the folds and every restart

    @classmethod
    def of_task(cls, config: dict, task: str) -> HMMSettings:
        return cls.from_dict(task_hmm(config, task))

    @classmethod
    def of_comparison(cls, config: dict, name: str) -> HMMSettings:
        """The shared HMM of comparison `name`: the global `hmm` with the comparison's overrides."""
        return cls.from_dict(comparison_hmm(config, name))


@dataclass(frozen=True)
class ComparisonSettings(_Settings):
    """`comparisons.<name>`: the recipes compared and the permutation tests."""

    SECTION: ClassVar[str] = "comparison"
    tasks: tuple[str, ...]  # the recipes (tasks) compared, the reference first
    permutations: int  # label permutations per test
    alpha: float  # family-wise error rate (Holm over every state and edge)
    seed: int  # seed of the permutations

    @classmethod
    def of_comparison(cls, config: dict, name: str) -> ComparisonSettings:
        return cls.from_dict(config["comparisons"][name])


@dataclass(frozen=True)
class HessianSettings(_Settings):
    """`metrics.hessian` (updated by a task's `hessian`): the top eigenvalue's iteration."""

    SECTION: ClassVar[str] = "metrics.hessian"
    enabled: bool  # False: the hessian_top_eig column is NaN
    batch_size: int  # the first N training examples form the fixed batch (0: all)
    stride: int  # every stride-th checkpoint (NaN elsewhere)
    tol: float  # converged when the Ritz residual ≤ tol × the eigenvalue
    max_iter: int  # most Hessian-vector products per checkpoint
    krylov_dim: int  # Lanczos basis size before a restart
    min_iter: int  # fewest products before the residual test may stop
    seed: int  # offset added to a run's seed for the start vector
    method: str  # "auto" (the closed form where a task has one) or "lanczos"
    batch_runs: str | bool  # "auto", True, False: one batched product for a seed group's runs
    trace_probes: int  # Rademacher probes of Hutchinson's trace estimate (0: no trace columns)

    @classmethod
    def of_task(cls, config: dict, task: str) -> HessianSettings:
        return cls.from_dict(task_hessian(config, task))

    def lanczos(self) -> dict[str, Any]:
        """The iteration's settings as `measure.hessian.top_eigenvalue`'s keyword arguments."""
        return {
            "tol": self.tol,
            "max_iter": self.max_iter,
            "krylov_dim": self.krylov_dim,
            "min_iter": self.min_iter,
        }


@dataclass(frozen=True)
class LLCSettings(_Settings):
    """`metrics.llc` (updated by a task's `llc`): the local learning coefficient's SGLD
    (measure.llc; docs/methods.md, "Local learning coefficient")."""

    SECTION: ClassVar[str] = "metrics.llc"
    enabled: bool  # False: the llc columns are NaN
    epsilon: float  # SGLD step size
    gamma: float  # localisation strength (pull towards the checkpoint's weights)
    nbeta: float | None  # inverse temperature n·β (None: n / log n)
    chains: int  # SGLD chains per checkpoint (the standard error is over them)
    draws: int  # steps per chain kept after burn-in
    burn_in: int  # steps per chain discarded first
    batch_size: int  # minibatch of each SGLD step (0: the full training set)
    stride: int  # every stride-th checkpoint (NaN elsewhere)
    seed: int  # seed of every chain's minibatches and noise
    bounding_box: float | None  # each weight kept within ± this of the checkpoint's

    @classmethod
    def of_task(cls, config: dict, task: str) -> LLCSettings:
        return cls.from_dict(task_llc(config, task))


@dataclass(frozen=True)
class AnalysisSettings(_GlobalSettings):
    """`analysis`: feature ranking, occupancy and the detour test."""

    SECTION: ClassVar[str] = "analysis"
    feature_ranking: str  # rank an edge's features by "gradient" (the paper's) or "means"
    top_features: int  # features listed per edge
    occupancy: str  # regress convergence on the "fraction" or "count" of checkpoints per state
    detour_alpha: float  # Holm-adjusted level of the detour (visit) test
    outliers: str | bool  # flag atypical runs: "auto" (pooled z-scores only), True, False


@dataclass(frozen=True)
class ForecastSettings(_GlobalSettings):
    """`forecast`: the early forecast of convergence and its cross-validated evaluation."""

    SECTION: ClassVar[str] = "forecast"
    method: str  # "regression" or "simulate"
    fractions: tuple[float, ...]  # fractions of each run's checkpoints seen when forecasting
    folds: int  # folds over runs (each forecast by an HMM fitted on the others)
    restarts: int  # restarts of each fold's HMM at the task's K
    level: float  # coverage of the forecast interval
    samples: int  # samples per forecast (simulated futures or resampled residuals)
    seed: int  # seed of the sampling and the folds


@dataclass(frozen=True)
class StabilitySettings(_GlobalSettings):
    """`stability`: bootstrap resamples of the runs behind every finding's frequency."""

    SECTION: ClassVar[str] = "stability"
    enabled: bool  # run the stability stage for every task
    resamples: int  # bootstrap resamples of the runs
    restarts: int  # fresh EM restarts per resample at the main K
    refit_k: bool  # also choose K afresh under information-preserving perturbations
    k_restarts: int  # restarts per K (and fold) when K is chosen afresh
    k_perturbation: str  # "refold", "subsample" or "bootstrap"
    k_resamples: int  # perturbations under which K is chosen afresh
    subsample_fraction: float  # fraction of the runs a subsample keeps
    min_frequency: float  # a finding is stable at this fraction of resamples
    min_overlap: float  # checkpoint overlap for a main-fit state to count as present
    level: float  # level of the percentile intervals
    seed: int  # seed of the resamples and their fits


@dataclass(frozen=True)
class TrainSettings(_Settings):
    """A task's `train`: optimiser, batches, epochs and checkpoints."""

    SECTION: ClassVar[str] = "train"
    optimizer: str  # "sgd" or "adamw", over a seed group's stacked parameters
    lr: float  # learning rate
    weight_decay: float  # weight decay (decoupled for AdamW)
    momentum: float  # SGD momentum
    betas: tuple[float, float]  # AdamW's betas
    batch_size: int  # examples per step (0: full batch)
    epochs: int  # epochs of training
    checkpoint_every: int  # checkpoint interval, in checkpoint_unit
    checkpoint_unit: str  # "epoch" or "step"
    train_metrics: str  # "full" (whole training set) or "running" (batches since the last)
    backward: str  # "auto" (closed-form backward where a task has one) or "autograd"
    stacking: str  # "auto", "grouped", "one_by_one": how BatchNorm replicas run together

    @classmethod
    def of_task(cls, config: dict, task: str) -> TrainSettings:
        return cls.from_dict(config["tasks"][task]["train"])


# Per source, a task's keys that build, train or import its runs (a rule's `task` param carries
# exactly these, so that a change of any other key, e.g. the convergence threshold, reruns no
# training); a trained task's params leave out `source`, its default.
SOURCE_KEYS = {
    "train": ("kind", "data_seed", "data", "model", "train"),
    "checkpoints": ("source", "kind", "data_seed", "data", "model", "path"),
    "huggingface": ("source", "architecture", "path", "hub"),
    "runs": ("source", "path"),
}
RUN_KEYS = tuple(dict.fromkeys(("source", *(k for keys in SOURCE_KEYS.values() for k in keys))))


@dataclass(frozen=True)
class TaskSpec:
    """What determines a task's runs: the part of `tasks.<name>` (validated config) that builds,
    trains or imports them. The task's overrides of other sections are read by their settings
    (`HMMSettings.of_task`, ...); fields a source does not use are None."""

    name: str = ""  # the task's name (its results folder, run.json's task)
    source: str = "train"  # "train", "checkpoints", "huggingface" or "runs"
    kind: str | None = None  # the registered kind (tasks.registry) that builds data and model
    data: Mapping[str, Any] | None = None  # the kind's data settings
    model: Mapping[str, Any] | None = None  # the kind's model settings
    train: Mapping[str, Any] | None = None  # a trained task's `train` section (`training()`: TrainSettings)
    data_seed: int | None = None  # one data seed for every run (None: each run's own)
    path: str | None = None  # where runs from elsewhere are, with {seed} (and {step})
    architecture: str | None = None  # the architecture of a Hugging Face series
    hub: Mapping[str, Any] | None = None  # a Hub series to fetch instead of `path`

    @classmethod
    def from_dict(cls, entry: dict[str, Any], name: str = "") -> TaskSpec:
        """From a task's config entry (a whole validated entry, or the run keys a rule carries)."""
        return cls(name=name, **{k: entry[k] for k in RUN_KEYS if entry.get(k) is not None})

    @classmethod
    def of_task(cls, config: dict, task: str) -> TaskSpec:
        return cls.from_dict(config["tasks"][task], task)

    def run_keys(self) -> dict[str, Any]:
        """The run keys of the task's source (a rule's `task` param)."""
        return {k: getattr(self, k) for k in SOURCE_KEYS[self.source]}

    @property
    def run_spec(self) -> dict[str, Any]:
        """What builds a registered kind's data and model (a run record's `spec`: runtime.build_run)."""
        return {"kind": self.kind, "data": self.data, "model": self.model, "data_seed": self.data_seed}

    def training(self) -> TrainSettings:
        """The task's `train` section, typed."""
        if self.train is None:
            raise ValueError(f"task {self.name or '?'}: no `train` section (source {self.source})")
        return TrainSettings.from_dict(self.train)
