"""Typed settings: frozen dataclasses built once from the validated config.

The defaults live in the schema only (`latentstates.config`): a dataclass here has no default
values, and `from_config` reads a config that `validate_config` has filled in. Code that needs a
section without a whole config (a test, a benchmark, a notebook) asks for the schema's defaults
with overrides: `HMMSettings.defaults(restarts=3)`. A section a task may override (hmm, Hessian,
training) is built per task (`of_task`), a global one from the config (`from_config`). Light on
purpose (yaml + jsonschema through `config`): every job imports it.
"""

from __future__ import annotations

import dataclasses
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
    features: tuple[str, ...]
    first_n: int | None
    max_states: int
    restarts: int
    covariance: str
    max_iter: int
    tol: float
    covariance_prior: float
    var_floor: float
    val_fraction: float
    criterion: str
    cv_folds: int
    cv_restarts: int
    cv_repeats: int
    splits: bool
    engine: str
    zscore: str
    n_states: int | None
    seed: int

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
    tasks: tuple[str, ...]
    permutations: int
    alpha: float
    seed: int

    @classmethod
    def of_config(cls, config: dict, name: str) -> ComparisonSettings:
        return cls.from_dict(config["comparisons"][name])


@dataclass(frozen=True)
class HessianSettings(_Settings):
    """`metrics.hessian` (updated by a task's `hessian`): the top eigenvalue's iteration."""

    SECTION: ClassVar[str] = "metrics.hessian"
    enabled: bool
    batch_size: int
    stride: int
    tol: float
    max_iter: int
    krylov_dim: int
    min_iter: int
    seed: int
    method: str
    batch_runs: str | bool

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
    enabled: bool
    epsilon: float
    gamma: float
    nbeta: float | None
    chains: int
    draws: int
    burn_in: int
    batch_size: int
    stride: int
    seed: int
    bounding_box: float | None

    @classmethod
    def of_task(cls, config: dict, task: str) -> LLCSettings:
        return cls.from_dict(task_llc(config, task))


@dataclass(frozen=True)
class AnalysisSettings(_GlobalSettings):
    """`analysis`: feature ranking, occupancy and the detour test."""

    SECTION: ClassVar[str] = "analysis"
    feature_ranking: str
    top_features: int
    occupancy: str
    detour_alpha: float


@dataclass(frozen=True)
class ForecastSettings(_GlobalSettings):
    """`forecast`: the early forecast of convergence and its cross-validated evaluation."""

    SECTION: ClassVar[str] = "forecast"
    method: str
    fractions: tuple[float, ...]
    folds: int
    restarts: int
    level: float
    samples: int
    seed: int


@dataclass(frozen=True)
class StabilitySettings(_GlobalSettings):
    """`stability`: bootstrap resamples of the runs behind every finding's frequency."""

    SECTION: ClassVar[str] = "stability"
    enabled: bool
    resamples: int
    restarts: int
    refit_k: bool
    k_restarts: int
    k_perturbation: str
    k_resamples: int
    subsample_fraction: float
    min_frequency: float
    min_overlap: float
    level: float
    seed: int


@dataclass(frozen=True)
class TrainSettings(_Settings):
    """A task's `train`: optimiser, batches, epochs and checkpoints."""

    SECTION: ClassVar[str] = "train"
    optimizer: str
    lr: float
    weight_decay: float
    momentum: float
    betas: tuple[float, float]
    batch_size: int
    epochs: int
    checkpoint_every: int
    checkpoint_unit: str
    train_metrics: str
    backward: str
    stacking: str

    @classmethod
    def of_task(cls, config: dict, task: str) -> TrainSettings:
        return cls.from_dict(config["tasks"][task]["train"])
