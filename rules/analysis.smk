rule analysis:
    input:
        metrics=path("metrics"),
        states=path("states"),
        model=path("model"),
    output:
        edges=reported(
            path("table", table="edges", ext="csv"),
            caption="edges",
            subcategory="Transitions",
            result="edge table with feature changes",
        ),
        edges_md=path("table", table="edges", ext="md"),
        edges_tex=path("table", table="edges", ext="tex"),
        runs=reported(
            path("table", table="runs", ext="csv"),
            caption="runs_table",
            subcategory="Convergence",
            result="convergence and occupancy per run",
        ),
        coefficients=reported(
            path("table", table="regression", ext="csv"),
            caption="regression_table",
            subcategory="Convergence",
            result="regression coefficients",
        ),
        summary=path("analysis_summary"),
    log:
        log("analysis"),
    benchmark:
        bench("analysis")
    conda:
        "../envs/hmm.yaml"  # the outlier scores refit the HMM without each run
    threads: 1
    resources:
        mem_mb=2000,
    params:
        code=code("analysis.py"),
        threshold=lambda wc: config["tasks"][wc.task]["convergence_threshold"],
        analysis=canonical(config["analysis"]),
        hmm=lambda wc: canonical(task_hmm(config, wc.task)),
    script:
        "../workflow/scripts/analysis.py"


rule summary_table:
    input:
        summaries=expand(path("analysis_summary"), task=MAIN_TASKS),
        forecasts=expand(
            path("table", table="forecast_summary", ext="csv"), task=MAIN_TASKS
        ),
        stability=(
            expand(path("stability", table="summary", ext="json"), task=MAIN_TASKS)
            if config["stability"]["enabled"]
            else []
        ),
        replication=path("replication", ext="csv") if SEED_SETS else [],
    output:
        csv=reported(
            path("summary", ext="csv"),
            caption="summary",
            category="Summary",
            result="paper summary (CSV)",
        ),
        md=path("summary", ext="md"),
        tex=path("summary", ext="tex"),
        rst=path("summary", ext="rst"),  # the report's front page includes it
    log:
        f"{RESULTS}/logs/summary_table.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        runtime=5,
    params:
        code=code("summary_table.py"),
        method=config["forecast"]["method"],
    script:
        "../workflow/scripts/summary_table.py"


# The states back where the runs were logged: each run's decoded state per step and the
# findings as TensorBoard event files (a tensorboard task's `write_states`).
rule states_tensorboard:
    input:
        metrics=path("metrics"),
        states=path("states"),
        summary=path("analysis_summary"),
    output:
        directory(path("tensorboard")),
    log:
        log("states_tensorboard"),
    wildcard_constraints:
        task="|".join(STATES_OUT_TASKS) or "^$",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        code=code("states_tensorboard.py"),
    script:
        "../workflow/scripts/states_tensorboard.py"
