rule stability:
    input:
        metrics=path("metrics"),
        model=path("model"),
        models=path("models"),
        states=path("states"),
    output:
        summary=path("stability", table="summary", ext="json"),
        k=reported(
            path("stability", table="k", ext="csv"),
            caption="stability_k",
            subcategory="Stability",
            result="K chosen across resamples",
        ),
        states=reported(
            path("stability", table="states", ext="csv"),
            caption="stability_states",
            subcategory="Stability",
            result="states and detours across resamples",
        ),
        edges=path("stability", table="edges", ext="csv"),
        resamples=path("stability", table="resamples", ext="csv"),
    log:
        log("stability"),
    benchmark:
        bench("stability")
    conda:
        "../envs/hmm.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        code=code("stability.py"),
        threshold=lambda wc: config["tasks"][wc.task]["convergence_threshold"],
        hmm=lambda wc: canonical(hmm_settings(wc.task)),
        analysis=canonical(config["analysis"]),
        stability=canonical(config["stability"]),
    script:
        "../workflow/scripts/stability.py"


rule plot_stability:
    input:
        summary=path("stability", table="summary", ext="json"),
        k=path("stability", table="k", ext="csv"),
        states=path("stability", table="states", ext="csv"),
        resamples=path("stability", table="resamples", ext="csv"),
    output:
        png=reported(
            path("figure", figure="stability", ext="png"),
            caption="stability",
            subcategory="Stability",
            result="stability of the findings",
        ),
        svg=path("figure", figure="stability", ext="svg"),
    log:
        log("plot_stability"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        code=code("plot_stability.py"),
    script:
        "../workflow/scripts/plot_stability.py"
