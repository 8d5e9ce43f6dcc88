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
        html=path("figure", figure="llc", ext="html"),
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
