"""Forecast: a run's current latent state, detour flag and convergence time from its first
checkpoints, under a task's fitted HMM; its evaluation on runs held out of the fit; and the
command line for a run still training. Tables in, tables out, besides the command line's reading
of checkpoints.

Modules:
    model         the forecast from a run's first checkpoints (`Forecaster`, `METHODS`)
    evaluation    the forecast cross-validated over runs held out of the HMM fit (rule forecast)
    partial_runs  a run still training (checkpoints, also `.partial`, or a written run) as a table
    __main__      the command line: `latentstates forecast TASK_DIR RUN`
"""

from latentstates._lazy import exports

__all__, __getattr__, __dir__ = exports(
    __name__,
    {
        "Forecaster": ".model",
        "Forecast": ".model",
        "evaluate": ".evaluation",
        "summarise": ".evaluation",
        "partial_run_table": ".partial_runs",
    },
)
