rule hmm:
    input:
        path("metrics"),
    output:
        selection=report(
            path("selection"),
            caption="../workflow/report/selection_table.rst",
            category="{task}",
            subcategory="HMM",
            labels={"task": "{task}", "result": "model selection table"},
        ),
        restarts=path("restarts"),
        model=path("model"),
        states=path("states"),
        excluded=report(
            path("excluded"),
            caption="../workflow/report/excluded_runs.rst",
            category="{task}",
            subcategory="HMM",
            labels={"task": "{task}", "result": "runs left out of the HMM"},
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
