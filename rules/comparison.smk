# Recipes compared through one shared HMM (config `comparisons`, docs/methods.md).


rule comparison_hmm:
    input:
        unpack(comparison_metrics),
    output:
        selection=reported(
            path("comparison_hmm", table="model_selection", ext="csv"),
            caption="comparison_selection",
            result="model selection of the shared HMM",
            comparison=True,
        ),
        restarts=path("comparison_hmm", table="model_selection_restarts", ext="csv"),
        model=path("comparison_hmm", table="model", ext="json"),
        states=path("comparison_hmm", table="states", ext="parquet"),
        runs=path("comparison_hmm", table="runs", ext="csv"),
        excluded=path("comparison_hmm", table="excluded_runs", ext="csv"),
    log:
        log("comparison_hmm", comparison=True),
    benchmark:
        bench("comparison_hmm", comparison=True)
    priority: lambda wc: sum(known_runs(t) for t in comparison_tasks(wc.comparison))
    conda:
        "../envs/hmm.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        code=code("comparison_hmm.py"),
        hmm=lambda wc: canonical(comparison_hmm_settings(wc.comparison)),
        tasks=lambda wc: comparison_tasks(wc.comparison),
    script:
        "../workflow/scripts/comparison_hmm.py"


rule comparison:
    input:
        unpack(comparison_metrics),
        model=path("comparison_hmm", table="model", ext="json"),
        states=path("comparison_hmm", table="states", ext="parquet"),
        runs=path("comparison_hmm", table="runs", ext="csv"),
    output:
        tests=reported(
            path("comparison_table", table="tests", ext="csv"),
            caption="comparison_tests",
            result="permutation tests per state and edge",
            comparison=True,
        ),
        tests_md=path("comparison_table", table="tests", ext="md"),
        tests_tex=path("comparison_table", table="tests", ext="tex"),
        states=reported(
            path("comparison_table", table="states", ext="csv"),
            caption="comparison_states",
            result="occupancy and visits per state and recipe",
            comparison=True,
        ),
        edges=path("comparison_table", table="edges", ext="csv"),
        convergence=reported(
            path("comparison_table", table="convergence", ext="csv"),
            caption="comparison_convergence",
            result="convergence per recipe",
            comparison=True,
        ),
        runs=path("comparison_table", table="runs", ext="csv"),
        summary=path("comparison_table", table="summary", ext="json"),
    log:
        log("comparison", comparison=True),
    benchmark:
        bench("comparison", comparison=True)
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        code=code("comparison.py"),
        tasks=lambda wc: comparison_tasks(wc.comparison),
        thresholds=lambda wc: canonical(
            {
                t: config["tasks"][t]["convergence_threshold"]
                for t in comparison_tasks(wc.comparison)
            }
        ),
        comparison=lambda wc: canonical(config["comparisons"][wc.comparison]),
    script:
        "../workflow/scripts/comparison.py"


rule plot_comparison:
    input:
        unpack(comparison_metrics),
        model=path("comparison_hmm", table="model", ext="json"),
        states=path("comparison_hmm", table="states", ext="parquet"),
        summary=path("comparison_table", table="summary", ext="json"),
        state_table=path("comparison_table", table="states", ext="csv"),
        edges=path("comparison_table", table="edges", ext="csv"),
        tests=path("comparison_table", table="tests", ext="csv"),
    output:
        graph_png=reported(
            path("comparison_figure", figure="transition_graph", ext="png"),
            caption="comparison_graph",
            result="shared transition graph per recipe",
            comparison=True,
        ),
        graph_svg=path("comparison_figure", figure="transition_graph", ext="svg"),
        occupancy_png=reported(
            path("comparison_figure", figure="occupancy", ext="png"),
            caption="comparison_occupancy",
            result="occupancy and visits per state and recipe",
            comparison=True,
        ),
        occupancy_svg=path("comparison_figure", figure="occupancy", ext="svg"),
        curves_png=reported(
            path("comparison_figure", figure="training_curves", ext="png"),
            caption="comparison_curves",
            result="training curves by shared state",
            comparison=True,
        ),
        curves_svg=path("comparison_figure", figure="training_curves", ext="svg"),
        curves_html=path("comparison_figure", figure="training_curves", ext="html"),
        graph_html=path("comparison_figure", figure="transition_graph", ext="html"),
    log:
        log("plot_comparison", comparison=True),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        code=code("plot_comparison.py"),
        tasks=lambda wc: comparison_tasks(wc.comparison),
        max_runs=config["plots"]["max_runs"],
    script:
        "../workflow/scripts/plot_comparison.py"


rule comparison_table:
    input:
        summaries=expand(
            path("comparison_table", table="summary", ext="json"),
            comparison=COMPARISONS,
        ),
        convergence=expand(
            path("comparison_table", table="convergence", ext="csv"),
            comparison=COMPARISONS,
        ),
    output:
        csv=reported(
            path("comparisons", ext="csv"),
            caption="comparisons_summary",
            category="Summary",
            result="recipe comparisons",
        ),
        md=path("comparisons", ext="md"),
        tex=path("comparisons", ext="tex"),
    log:
        f"{RESULTS}/logs/comparison_table.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        runtime=5,
    params:
        code=code("comparison_table.py"),
        comparisons=COMPARISONS,
    script:
        "../workflow/scripts/comparison_table.py"
