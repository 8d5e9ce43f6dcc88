rule plot_model_selection:
    input:
        selection=path("selection"),
    output:
        png=report(
            path("figure", figure="model_selection", ext="png"),
            caption="../workflow/report/model_selection.rst",
            category="{task}",
            subcategory="HMM",
            labels={"task": "{task}", "figure": "model selection"},
        ),
        svg=path("figure", figure="model_selection", ext="svg"),
    log:
        log("plot_model_selection"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow/scripts/plot_model_selection.py"


rule plot_training_curves:
    input:
        metrics=path("metrics"),
        states=path("states"),
        model=path("model"),
    output:
        png=report(
            path("figure", figure="training_curves", ext="png"),
            caption="../workflow/report/training_curves.rst",
            category="{task}",
            subcategory="Training",
            labels={"task": "{task}", "figure": "training curves by state"},
        ),
        svg=path("figure", figure="training_curves", ext="svg"),
    log:
        log("plot_training_curves"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        max_runs=config["plots"]["max_runs"],
    script:
        "../workflow/scripts/plot_training_curves.py"
