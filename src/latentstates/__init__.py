"""Latent state models of training dynamics: the science behind the Snakemake workflow.

The package follows the workflow's stages; a stage imports only the stages before it
(tests/test_layout.py), and nothing is imported on `import latentstates`, so light users (the
Snakefile, config checks) do not pay for torch or pomegranate.

Top level, torch-free (the Snakefile and every job import them):
    config      validation against the schema (schemas/config.schema.yaml), defaults filled in
    settings    typed, frozen sections of the validated config (HMM, Hessian, training, ...)
    columns     names shared by tables and the Snakefile
    revisions   checkpoint revisions by name (OLMo's stage1-step1000-tokens4B), their steps by a pattern
    plugins     your own metrics' functions (metrics.custom), found by module or file, and their digest
    provenance  which package code each rule runs, and its digest (a rule's `code` param)
    io, logs, disk   atomic outputs, job logs, and a full disk reported by file
Top level, with torch: `device` (device, threads, deterministic kernels). The command lines, in
one place: `cli` (`latentstates forecast | llc-calibration | config-reference`); `config_reference`
(docs/configuration.md from the schema); `api` (what a notebook calls).

Stages:
    tasks/    data sets, models, seed-batched replicas, the task registry, closed-form Hessians
    runs/     the run contract (run.json), checkpoints, training, runs brought from elsewhere
    measure/  weight metrics, the Hessian's top eigenvalue, metrics of every checkpoint of a run
    states/   metric sequences, the Gaussian HMM (model, EM, fit, selection), its analyses
    forecast/ a run's convergence forecast under the fitted HMM, its evaluation, and the command
              line `python -m latentstates.forecast` for a run still training
    report/   figures, interactive views, tables
"""

__version__ = "0.1.0"

from latentstates._lazy import exports

__all__, __getattr__, __dir__ = exports(
    __name__,
    {
        "read_metrics": ".api",
        "fit_states": ".api",
        "analyse_states": ".api",
        "plot_states": ".api",
        "plot_transitions": ".api",
        "hmm_settings": ".api",
        "HMMSettings": ".settings",
        "AnalysisSettings": ".settings",
        "load_config": ".config",
        "GaussianHMM": ".states.model",
        "StateModel": ".states.model",
        "TaskFit": ".states.selection",
        "TaskAnalysis": ".states.analysis",
        "RunWriter": ".runs.writer",
        "LatentStatesCallback": ".runs.callbacks",
        "Forecaster": ".forecast.model",
    },
)
