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
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        code=code("analysis.py"),
        threshold=lambda wc: config["tasks"][wc.task]["convergence_threshold"],
        analysis=canonical(config["analysis"]),
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


rule forecast:
    input:
        metrics=path("metrics"),
        model=path("model"),
    output:
        evaluation=path("table", table="forecast", ext="csv"),
        summary=reported(
            path("table", table="forecast_summary", ext="csv"),
            caption="forecast_table",
            subcategory="Forecast",
            result="forecast evaluation",
        ),
        summary_md=path("table", table="forecast_summary", ext="md"),
        summary_tex=path("table", table="forecast_summary", ext="tex"),
    log:
        log("forecast"),
    benchmark:
        bench("forecast")
    conda:
        "../envs/hmm.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        code=code("forecast.py"),
        threshold=lambda wc: config["tasks"][wc.task]["convergence_threshold"],
        forecast=canonical(config["forecast"]),
        hmm=lambda wc: canonical(hmm_settings(wc.task)),
    script:
        "../workflow/scripts/forecast.py"


rule plot_forecast:
    input:
        summary=path("table", table="forecast_summary", ext="csv"),
        analysis=path("analysis_summary"),
    output:
        png=reported(
            path("figure", figure="forecast", ext="png"),
            caption="forecast",
            subcategory="Forecast",
            result="forecast error and coverage",
        ),
        svg=path("figure", figure="forecast", ext="svg"),
    log:
        log("plot_forecast"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        code=code("plot_forecast.py"),
        method=config["forecast"]["method"],
        level=config["forecast"]["level"],
    script:
        "../workflow/scripts/plot_forecast.py"


# The local learning coefficient beside the states, for tasks that estimate it (metrics.llc).
rule llc_analysis:
    input:
        metrics=path("metrics"),
        states=path("states"),
        model=path("model"),
    output:
        states=reported(
            path("table", table="llc_states", ext="csv"),
            caption="llc_states",
            subcategory="Local learning coefficient",
            result="LLC per state",
        ),
        edges=path("table", table="llc_edges", ext="csv"),
        summary=path("table", table="llc_summary", ext="json"),
        png=reported(
            path("figure", figure="llc", ext="png"),
            caption="llc",
            subcategory="Local learning coefficient",
            result="LLC by state",
        ),
        svg=path("figure", figure="llc", ext="svg"),
        html=reported(
            path("figure", figure="llc", ext="html"),
            caption="llc_interactive",
            subcategory="Local learning coefficient",
            result="LLC by state (interactive)",
        ),
    log:
        log("llc_analysis"),
    benchmark:
        bench("llc_analysis")
    wildcard_constraints:
        task="|".join(LLC_TASKS) or "^$",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        code=code("llc_analysis.py"),
        llc=lambda wc: canonical(task_llc(config, wc.task)),
        max_runs=config["plots"]["max_runs"],
    script:
        "../workflow/scripts/llc_analysis.py"
