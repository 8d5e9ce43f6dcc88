rule hmm:
    input:
        path("metrics"),
    output:
        selection=reported(
            path("selection"),
            caption="selection_table",
            subcategory="HMM",
            result="model selection table",
        ),
        restarts=path("restarts"),
        model=path("model"),
        models=path("models"),
        states=path("states"),
        excluded=reported(
            path("excluded"),
            caption="excluded_runs",
            subcategory="HMM",
            result="runs left out of the HMM",
        ),
    log:
        log("hmm"),
    benchmark:
        bench("hmm")
    conda:
        "../envs/hmm.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        code=code("hmm.py"),
        hmm=lambda wc: canonical(hmm_settings(wc.task)),
    script:
        "../workflow/scripts/hmm.py"
