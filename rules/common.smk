# Paths and wildcard helpers: every output path of the workflow is defined here.
import functools
import json
from pathlib import Path

from latentstates.config import seed_set_name, task_hessian, task_hmm, task_llc
from latentstates.config import TABLE_SOURCES
from latentstates.runs import discovery
from latentstates.tasks.image_data import KIND_DATASETS, expected_files
from latentstates.plugins import plugin_digest
from latentstates.provenance import code_digest

RESULTS = config["results"]
TASKS = sorted(config["tasks"])
# By source (latentstates.runs.contract): trained here, imported as runs, or a metrics table.
SOURCE = {t: config["tasks"][t]["source"] for t in TASKS}
RUN_TASKS = [t for t in TASKS if SOURCE[t] not in TABLE_SOURCES]
TABLE_TASKS = [t for t in TASKS if SOURCE[t] in TABLE_SOURCES]
# The tasks analysed and reported; the further seed sets of a task with `replicates` (tasks
# <task>_set<i>) only get their runs, metrics and HMM: K chosen on each set alone.
MAIN_TASKS = [t for t in TASKS if not config["tasks"][t].get("replicate_of")]
SEED_SETS = {
    t: [t]
    + [seed_set_name(t, i) for i in range(2, config["tasks"][t]["replicates"] + 1)]
    for t in MAIN_TASKS
    if config["tasks"][t]["replicates"] > 1
}
# Tasks whose runs get the local learning coefficient (a registered model: its loss and data).
LLC_TASKS = [
    t
    for t in RUN_TASKS
    if task_llc(config, t)["enabled"]
    and config["tasks"][t].get("kind")
    and t in MAIN_TASKS
]
# Tasks whose decoded states are written back as TensorBoard event files (`write_states`).
STATES_OUT_TASKS = [t for t in MAIN_TASKS if config["tasks"][t].get("write_states")]
# Recipe comparisons through one shared HMM (rules/comparison.smk).
COMPARISONS = sorted(config["comparisons"])


wildcard_constraints:
    task="|".join(TASKS),
    seed=r"\d+",
    comparison="|".join(COMPARISONS) or "(?!)",


RUN = f"{RESULTS}/{{task}}/runs/seed{{seed}}"
COMPARISON = f"{RESULTS}/comparisons/{{comparison}}"
PATHS = {
    "checkpoints": f"{RUN}/checkpoints",
    "train_log": f"{RUN}/train_log.parquet",
    "run": f"{RUN}/run.json",
    "run_metrics": f"{RUN}/metrics.parquet",
    "hub": f"{RESULTS}/{{task}}/runs/hub_{{group}}.json",
    "metrics": f"{RESULTS}/{{task}}/metrics.parquet",
    "selection": f"{RESULTS}/{{task}}/hmm/model_selection.csv",
    "restarts": f"{RESULTS}/{{task}}/hmm/model_selection_restarts.csv",
    "model": f"{RESULTS}/{{task}}/hmm/model.json",
    "models": f"{RESULTS}/{{task}}/hmm/models.json",
    "states": f"{RESULTS}/{{task}}/hmm/states.parquet",
    "stability": f"{RESULTS}/{{task}}/stability/{{table}}.{{ext}}",
    "excluded": f"{RESULTS}/{{task}}/hmm/excluded_runs.csv",
    "figure": f"{RESULTS}/{{task}}/figures/{{figure}}.{{ext}}",
    "table": f"{RESULTS}/{{task}}/analysis/{{table}}.{{ext}}",
    "analysis_summary": f"{RESULTS}/{{task}}/analysis/summary.json",
    "tensorboard": f"{RESULTS}/{{task}}/tensorboard",
    "summary": f"{RESULTS}/summary.{{ext}}",
    "views": f"{RESULTS}/interactive.html",
    "replication": f"{RESULTS}/replication.{{ext}}",
    "comparison_hmm": f"{COMPARISON}/hmm/{{table}}.{{ext}}",
    "comparison_table": f"{COMPARISON}/analysis/{{table}}.{{ext}}",
    "comparison_figure": f"{COMPARISON}/figures/{{figure}}.{{ext}}",
    "comparisons": f"{RESULTS}/comparisons.{{ext}}",
}
FIGURES = [
    "model_selection",
    "training_curves",
    "transition_graph",
    "convergence_regression",
    "forecast",
    *(["stability"] if config["stability"]["enabled"] else []),
]
INTERACTIVE = ["training_curves", "transition_graph"]
COMPARISON_FIGURES = ["transition_graph", "occupancy", "training_curves"]
FIGURE_FORMATS = ["png", "svg"]


def path(name, **wildcards):
    """Output path `name`, with the given wildcards filled in (others left as patterns)."""
    return PATHS[name].format_map(_Unfilled(wildcards))


class _Unfilled(dict):
    def __missing__(self, key):
        return f"{{{key}}}"


def log(name, group=None, comparison=False):
    """Log file of a job of rule `name`, per task (a pattern), per seed group or per comparison."""
    if comparison:
        return f"{RESULTS}/logs/{name}/{{comparison}}.log"
    if group is not None:
        task, group_seeds = group
        return f"{RESULTS}/logs/{name}/{task}/{group_label(group_seeds)}.log"
    return f"{RESULTS}/logs/{name}/{{task}}.log"


def bench(name, group=None, comparison=False):
    """Snakemake benchmark file (wall time, memory) of rule `name`'s job (as `log`)."""
    if comparison:
        return f"{RESULTS}/benchmarks/{name}/{{comparison}}.tsv"
    if group is not None:
        task, group_seeds = group
        return f"{RESULTS}/benchmarks/{name}/{task}/{group_label(group_seeds)}.tsv"
    return f"{RESULTS}/benchmarks/{name}/{{task}}.tsv"


def seeds(task):
    """Seeds of a task's runs."""
    t = config["tasks"][task]
    return list(range(t["first_seed"], t["first_seed"] + t["seeds"]))


def known_runs(task):
    """The number of runs a task trains or imports (0 for a metrics table: unknown until read)."""
    return len(seeds(task)) if "seeds" in config["tasks"][task] else 0


def task_priority(task):
    """Scheduling priority of a task's jobs up to its HMM: the runs its HMM fits see (its own, or a
    comparison's that it is a recipe of, whichever is more). The HMM stage's time grows with the
    runs, so the tasks with the longest HMM stages are trained first and their HMMs run beside
    the other tasks' training instead of after it."""
    shared = [
        sum(known_runs(t) for t in comparison_tasks(c))
        for c in config["comparisons"]
        if task in comparison_tasks(c)
    ]
    return max([known_runs(task), *shared])


def seed_groups(task):
    """The task's seeds in consecutive groups of seeds_per_job: one training (and metrics) job
    each. Groups start at first_seed, so adding seeds adds groups and leaves the others as
    they are."""
    s = seeds(task)
    n = config["tasks"][task]["seeds_per_job"] or config["seeds_per_job"]
    return [s[i : i + n] for i in range(0, len(s), n)]


def group_label(group_seeds):
    return f"seeds{group_seeds[0]}-{group_seeds[-1]}"


def group_rule(name, task, group_seeds):
    """Name of the rule of one seed group's job, e.g. train_sparse_parity_seeds0_7."""
    return f"{name}_{task}_seeds{group_seeds[0]}_{group_seeds[-1]}"


def import_inputs(task, group_seeds):
    """The files an import job reads: each run's checkpoint files (a missing directory is
    reported by Snakemake as missing input), or its model directories, and the performance table.
    """
    t = config["tasks"][task]
    if t.get("hub"):  # the fetch job's list of snapshot directories, unless streamed
        fetched = [path("hub", task=task, group=group_label(group_seeds))]
        return ([] if streamed(task) else fetched) + (
            [t["performance"]] if t["performance"] else []
        )
    if t["source"] == "runs":  # directories written from the user's loop (runs.writer)
        return [
            str(discovery.run_directory(t["path"], s) / f)
            for s in group_seeds
            for f in ("run.json", "train_log.parquet")
        ]
    files = []
    for s in group_seeds:
        if t["source"] == "checkpoints":
            d = discovery.run_directory(t["path"], s)
            try:
                found = discovery.checkpoint_files_in(d)
            except ValueError:  # absent, or a broken link: the import job says which
                found = []
            files += [str(p) for p in found] or [str(d)]
        else:
            try:
                found = discovery.huggingface_checkpoints(t["path"], s)
            except (FileNotFoundError, ValueError) as exc:
                raise ValueError(f"config key 'tasks.{task}.path': {exc}") from None
            files += [str(p) for _, p in found]
    return files + ([t["performance"]] if t["performance"] else [])


def table_inputs(task):
    """What a table task's import reads: its table, a tracker's event files, or an MLflow
    store's local files (none for a server: `--forcerun import_table` reads it again).
    """
    from latentstates.runs import trackers

    t = config["tasks"][task]
    if t["source"] == "table":
        return [t["path"]]
    if t["source"] == "mlflow":
        return trackers.mlflow_store_files(t["tracking_uri"])
    files = trackers.event_files(t["path"], t.get("runs"))
    return [str(f) for f in files] or [t["path"]]


def performance_param(task):
    """The import job's `performance`: the table's path as the config gives it, or for
    lm-evaluation-harness results a JSON of their path and the task's `lm_eval` keys."""
    t = config["tasks"][task]
    if not discovery.is_lm_eval(t.get("performance")):
        return t.get("performance")
    return json.dumps(
        {"path": t["performance"], **t.get("lm_eval", {})}, sort_keys=True
    )


def import_fingerprint(task, group_seeds):
    """Digest of what an import job reads (`discovery.fingerprint`): its input files, and the
    checkpoints that run records list. A Hub series' snapshots are left out: the cache never
    changes a revision's files in place."""
    t = config["tasks"][task]
    if t.get("hub"):
        return discovery.fingerprint([t["performance"]] if t["performance"] else [])
    files = import_inputs(task, group_seeds)
    if t["source"] == "runs":
        files += [
            str(p)
            for f in files
            if f.endswith("run.json")
            for p in discovery.listed_checkpoints(f)
        ]
    return discovery.fingerprint(files)


def streamed(task):
    """Whether a task is a Hub series streamed through its metrics jobs (not `keep_cache`)."""
    from latentstates.runs import hub

    return hub.streamed(config["tasks"][task].get("hub"))


def hub_message(task, group_seeds):
    """What a Hub series' fetch job (or streaming metrics job) reads: its revisions per seed
    and repository."""
    from latentstates.runs import hub

    h = config["tasks"][task]["hub"]
    parts = [
        f"{len(hub.revisions(h, s))} revisions of {hub.repository(h, s)}"
        for s in group_seeds
    ]
    how = (
        "streamed (downloaded, measured, evicted)" if streamed(task) else "in the cache"
    )
    return f"{task}: " + "; ".join(parts) + f", {how}"


def image_files(dataset, data_dir):
    """The files of an image data set under `data_dir` (rule prepare_<dataset>'s outputs)."""
    return [str(p) for p in expected_files(dataset, data_dir)]


def data_inputs(task):
    """The prepared data files a task's runs are trained or evaluated on (none for the
    synthetic and bundled data)."""
    t = config["tasks"][task]
    dataset = KIND_DATASETS.get(t.get("kind"))
    return image_files(dataset, t["data"]["dir"]) if dataset else []


def hmm_settings(task):
    """HMM settings of a task; a table source's default features are its numeric columns, a
    tracker's its scalars but the performance ones."""
    from latentstates.runs.trackers import default_features

    cfg = task_hmm(config, task)
    t = config["tasks"][task]
    if t["source"] == "table" and "features" not in t["hmm"]:
        cfg["features"] = list(_table_features(task))
    elif t["source"] in TABLE_SOURCES and "features" not in t["hmm"]:
        cfg["features"] = default_features(t["scalars"])
    return cfg


@functools.cache
def _table_features(task):
    """A table task's numeric feature columns, read once per Snakemake process (several rules'
    params ask for them); none where the table cannot be read: its import job then says why,
    and the other tasks run."""
    from latentstates.runs.external_tables import read_table, table_features

    t = config["tasks"][task]
    try:
        table = read_table(t["path"])
    except ValueError:
        return ()
    return tuple(table_features(table, t["run_column"], t["step_column"]))


def checkpoints_output(task, seed):
    p = directory(path("checkpoints", task=task, seed=seed))
    return temp(p) if config["temp_checkpoints"] else p


def code(script):
    """Digest of the code of a workflow script, with the latentstates modules it reaches.
    As a param, a change of the science reruns exactly the stages that use it."""
    return code_digest(Path(workflow.basedir) / "workflow" / "scripts" / script)


def canonical(obj):
    """A JSON string with sorted keys: params that change only when a value changes."""
    return json.dumps(obj, sort_keys=True)


def task_config(task):
    """Everything that determines a run's training or import (and so its run record)."""
    from latentstates.settings import TaskSpec

    return canonical(TaskSpec.of_task(config, task).run_keys())


def gpu_jobs():
    return 1 if config["device"] == "cuda" else 0


def final_outputs():
    figures = [
        path("figure", task=t, figure=f, ext=e)
        for t in MAIN_TASKS
        for f in FIGURES
        for e in FIGURE_FORMATS
    ]
    interactive = [
        path("figure", task=t, figure=f, ext="html")
        for t in MAIN_TASKS
        for f in INTERACTIVE
    ]
    tables = [
        path(n, task=t)
        for t in MAIN_TASKS
        for n in ("selection", "model", "states", "excluded")
    ]
    if config["stability"]["enabled"]:
        tables += [
            path("stability", task=t, table=n, ext="csv")
            for t in MAIN_TASKS
            for n in ("k", "states", "edges")
        ]
    summary = [*(path("summary", ext=e) for e in ("csv", "md", "tex")), path("views")]
    if SEED_SETS:
        summary += [path("replication", ext=e) for e in ("csv", "md", "tex")]
    llc = [
        path("figure", task=t, figure="llc", ext=e)
        for t in LLC_TASKS
        for e in (*FIGURE_FORMATS, "html")
    ]
    llc += [path("table", task=t, table="llc_states", ext="csv") for t in LLC_TASKS]
    tables += [path("tensorboard", task=t) for t in STATES_OUT_TASKS]
    return [*figures, *interactive, *tables, *summary, *llc, *comparison_outputs()]


def interactive_views():
    """Every interactive view of the run as (group, label, file): each task's, then each
    comparison's, in the order interactive_views' page lists them."""
    labels = {
        "training_curves": "training curves",
        "transition_graph": "transition graph",
    }
    views = []
    for t in MAIN_TASKS:
        views += [
            (t, labels[f], path("figure", task=t, figure=f, ext="html"))
            for f in INTERACTIVE
        ]
        if t in LLC_TASKS:
            views.append(
                (
                    t,
                    "local learning coefficient",
                    path("figure", task=t, figure="llc", ext="html"),
                )
            )
    for c in COMPARISONS:
        views += [
            (
                f"comparison {c}",
                labels[f],
                path("comparison_figure", comparison=c, figure=f, ext="html"),
            )
            for f in INTERACTIVE
        ]
    return views


def comparison_tasks(comparison):
    """The tasks (recipes) of a comparison, the reference first."""
    return config["comparisons"][comparison]["tasks"]


def comparison_metrics(wildcards):
    """The collated metrics of every recipe of the comparison, named metrics_<task>."""
    return {
        f"metrics_{t}": path("metrics", task=t)
        for t in comparison_tasks(wildcards.comparison)
    }


def comparison_hmm_settings(comparison):
    """Settings of a comparison's shared HMM: the global hmm with the comparison's overrides."""
    from latentstates.config import comparison_hmm

    return comparison_hmm(config, comparison)


def comparison_outputs():
    """Every comparison's figures and tables, and the table of all comparisons."""
    if not COMPARISONS:
        return []
    figures = [
        path("comparison_figure", comparison=c, figure=f, ext=e)
        for c in COMPARISONS
        for f in COMPARISON_FIGURES
        for e in FIGURE_FORMATS
    ]
    interactive = [
        path("comparison_figure", comparison=c, figure=f, ext="html")
        for c in COMPARISONS
        for f in INTERACTIVE
    ]
    return [
        *figures,
        *interactive,
        *(path("comparisons", ext=e) for e in ("csv", "md", "tex")),
    ]


def reported(
    file, *, caption, result, subcategory=None, category=None, comparison=False
):
    """`file` as a result in the Snakemake report, captioned by workflow/report/<caption>.rst
    and labelled `result`: per task (category, label) unless a category is given, per
    comparison (category Comparisons, subcategory and label the comparison's name) if asked.
    """
    labels = {"result": result} if category else {"task": "{task}", "result": result}
    if comparison:
        category, subcategory = "Comparisons", "{comparison}"
        labels = {"comparison": "{comparison}", "result": result}
    return report(
        file,
        # Relative to the rule files in rules/, where the rules calling this are defined.
        caption=f"../workflow/report/{caption}.rst",
        category=category or "{task}",
        subcategory=subcategory,
        labels=labels,
    )
