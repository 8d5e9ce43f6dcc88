rule plot_model_selection:
    input:
        selection=path("selection"),
    output:
        png=reported(
            path("figure", figure="model_selection", ext="png"),
            caption="model_selection",
            subcategory="HMM",
            result="model selection",
        ),
        svg=path("figure", figure="model_selection", ext="svg"),
    log:
        log("plot_model_selection"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        code=code("plot_model_selection.py"),
        criterion=lambda wc: hmm_settings(wc.task)["criterion"],
    script:
        "../workflow/scripts/plot_model_selection.py"


rule plot_training_curves:
    input:
        metrics=path("metrics"),
        states=path("states"),
        model=path("model"),
    output:
        png=reported(
            path("figure", figure="training_curves", ext="png"),
            caption="training_curves",
            subcategory="Training",
            result="training curves by state",
        ),
        svg=path("figure", figure="training_curves", ext="svg"),
    log:
        log("plot_training_curves"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        code=code("plot_training_curves.py"),
        max_runs=config["plots"]["max_runs"],
    script:
        "../workflow/scripts/plot_training_curves.py"


rule plot_analysis:
    input:
        edges=path("table", table="edges", ext="csv"),
        runs=path("table", table="runs", ext="csv"),
        summary=path("analysis_summary"),
    output:
        graph_png=reported(
            path("figure", figure="transition_graph", ext="png"),
            caption="transition_graph",
            subcategory="Transitions",
            result="transition graph",
        ),
        graph_svg=path("figure", figure="transition_graph", ext="svg"),
        regression_png=reported(
            path("figure", figure="convergence_regression", ext="png"),
            caption="convergence_regression",
            subcategory="Convergence",
            result="convergence regression",
        ),
        regression_svg=path("figure", figure="convergence_regression", ext="svg"),
    log:
        log("plot_analysis"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        code=code("plot_analysis.py"),
    script:
        "../workflow/scripts/plot_analysis.py"


rule interactive:
    input:
        metrics=path("metrics"),
        states=path("states"),
        model=path("model"),
        edges=path("table", table="edges", ext="csv"),
        summary=path("analysis_summary"),
    output:
        # Each view opens alone; the report embeds them through interactive_views' one page.
        curves=path("figure", figure="training_curves", ext="html"),
        graph=path("figure", figure="transition_graph", ext="html"),
    log:
        log("interactive"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        code=code("interactive.py"),
    script:
        "../workflow/scripts/interactive.py"


# Every interactive view in one page (plotly.js once): what the report embeds.
rule interactive_views:
    input:
        [file for _, _, file in interactive_views()],
    output:
        reported(
            path("views"),
            caption="interactive_views",
            category="Interactive views",
            result="every task's and comparison's interactive views",
        ),
    log:
        f"{RESULTS}/logs/interactive_views.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        code=code("interactive_views.py"),
        views=[(group, label) for group, label, _ in interactive_views()],
    script:
        "../workflow/scripts/interactive_views.py"
