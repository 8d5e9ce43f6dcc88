"""lm-evaluation-harness results as a series' performance table (runs/evaluations.py), on files
lm-eval 0.4.13 wrote itself (tests/data/make_lm_eval_results.py: tiny GPT-NeoX models in a hub
cache, evaluated offline by its command line on a cloze and a multiple-choice task)."""

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import snakemake
from latentstates.runs import hub
from latentstates.runs.evaluations import lm_eval_performance, result_files
from latentstates.runs.external_tables import check_performance_table
from latentstates.runs.sources import read_performance
from latentstates.settings import TaskSpec
from latentstates.validation import InputError

RESULTS = Path(__file__).parent / "data" / "lm_eval"
HUB = {"repo": "org/neox-seed{seed}", "revision": "step{step}", "steps": [0, 10, 20]}
METRICS = ["tiny_cloze/perplexity", "tiny_cloze/acc", "tiny_choice/acc", "tiny_choice/acc_norm"]


def series(seeds=(0, 1), settings=HUB) -> dict:
    return {(repo, rev): (seed, step) for seed in seeds for step, repo, rev in hub.revisions(settings, seed)}


def recorded() -> dict[tuple[int, int], list[dict]]:
    """(seed, step) → the fixture's results of that checkpoint, oldest first, read as plain JSON."""
    out: dict[tuple[int, int], list[dict]] = {}
    for f in sorted(RESULTS.rglob("results_*.json"), key=lambda f: f.name):
        d = json.loads(f.read_text())
        args = d["config"]["model_args"]
        seed, step = int(args["pretrained"].rsplit("seed", 1)[1]), int(args["revision"][4:])
        out.setdefault((seed, step), []).append(d["results"])
    return out


def test_the_fixture_is_lm_evals_own_output():
    files = result_files(RESULTS)
    assert len(files) == 7 and {f.parent.name for f in files} == {"org__neox-seed0", "org__neox-seed1"}
    first = json.loads(files[0].read_text())
    assert first["lm_eval_version"] == "0.4.13" and first["model_source"] == "hf"


def test_every_checkpoints_metrics_with_eval_acc_and_loss_and_the_newest_file_counting():
    table = lm_eval_performance(
        RESULTS, series(), eval_acc="tiny_cloze/acc", eval_loss="tiny_cloze/perplexity"
    )
    assert list(table.columns) == ["seed", "step", *METRICS, "eval_acc", "eval_loss"]
    assert table[["seed", "step"]].values.tolist() == [[s, t] for s in (0, 1) for t in (0, 10, 20)]
    results = recorded()
    assert len(results[(0, 10)]) == 2  # evaluated twice: the second on 6 documents
    for row in table.itertuples(index=False):
        newest = results[(row.seed, row.step)][-1]
        assert row[2] == newest["tiny_cloze"]["perplexity,none"]
        assert row[3] == newest["tiny_cloze"]["acc,none"]
        assert row[5] == newest["tiny_choice"]["acc_norm,none"]
        assert row.eval_acc == newest["tiny_cloze"]["acc,none"]
        assert row.eval_loss == pytest.approx(math.log(newest["tiny_cloze"]["perplexity,none"]), rel=1e-15)
    assert table.loc[(table.seed == 0) & (table.step == 10), "tiny_cloze/acc"].item() == 0.5  # not 5/12
    # training lowers the loss: the series' evaluations are the models', step by step
    assert (table.groupby("seed")["eval_loss"].apply(lambda v: v.is_monotonic_decreasing)).all()
    checked = check_performance_table(table, RESULTS)
    assert checked["eval_acc"].between(0, 1).all()


def test_other_models_results_are_left_out_and_none_of_the_series_is_an_error():
    only = lm_eval_performance(RESULTS, series(seeds=(1,)), eval_acc="tiny_choice/acc")
    assert only["seed"].unique().tolist() == [1] and "eval_loss" not in only
    other = {**HUB, "repo": "org/gpt2-seed{seed}"}
    with pytest.raises(
        InputError, match=r"no results of this series.*org/neox-seed0@step0.*org/gpt2-seed0@step0"
    ):
        lm_eval_performance(RESULTS, series(settings=other))
    with pytest.raises(InputError, match=r"no metric 'lambada_openai/acc'.*tiny_cloze/perplexity"):
        lm_eval_performance(RESULTS, series(), eval_acc="lambada_openai/acc")


def _copy(tmp_path: Path, change) -> Path:
    out = tmp_path / "results"
    shutil.copytree(RESULTS, out)
    for f in out.rglob("results_*.json"):
        d = json.loads(f.read_text())
        f.write_text(json.dumps(change(d)))
    return out


def test_model_args_as_a_command_line_string_and_models_in_local_directories(tmp_path):
    """Older lm-eval keeps model_args as the command line's `key=value,...` string; a series read
    from directories (`path` with {seed} and {step}) is evaluated by directory."""

    def as_string(d):
        a = d["config"]["model_args"]
        d["config"]["model_args"] = f"pretrained={a['pretrained']},revision={a['revision']},dtype=float32"
        return d

    table = lm_eval_performance(_copy(tmp_path / "s", as_string), series(), eval_acc="tiny_cloze/acc")
    expected = lm_eval_performance(RESULTS, series(), eval_acc="tiny_cloze/acc")
    pd.testing.assert_frame_equal(table, expected)

    models = tmp_path / "models"

    def as_directory(d):
        a = d["config"]["model_args"]
        seed, step = a["pretrained"].rsplit("seed", 1)[1], a["revision"][4:]
        d["config"]["model_args"] = {"pretrained": str(models / f"seed{seed}" / f"step{step}")}
        return d

    results = _copy(tmp_path / "d", as_directory)
    for seed in (0, 1):
        for step in (0, 10, 20):
            (models / f"seed{seed}" / f"step{step}").mkdir(parents=True)
    task = TaskSpec(
        name="lm", source="huggingface", architecture="gpt_neox", path=str(models / "seed{seed}/step{step}")
    )
    param = json.dumps({"path": str(results), "eval_acc": "tiny_cloze/acc", "eval_loss": None})
    table, path = read_performance(param, task, [0, 1])
    assert path == str(results)
    pd.testing.assert_frame_equal(table[expected.columns], check_performance_table(expected, RESULTS))


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not a readable JSON file"),
        ("[1, 2]", "holds a JSON list, not lm-evaluation-harness results"),
        (
            '{"config": {"model_args": "pretrained=org/neox-seed0,revision=step0"}}',
            "has no 'results' mapping",
        ),
        ('{"results": {"t": {"acc,none": 1.0}}}', "has no config.model_args"),
        (
            '{"results": {"t": 3}, "config": {"model_args": "pretrained=org/neox-seed0,revision=step0"}}',
            r"results.t is int, not a mapping",
        ),
    ],
)
def test_a_broken_results_file_is_named(tmp_path, content, message):
    bad = tmp_path / "results_2026.json"
    bad.write_text(content)
    with pytest.raises(InputError, match=rf"{bad}: .*{message}"):
        lm_eval_performance(bad, series())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=rf"{empty}: holds no lm-evaluation-harness results"):
        lm_eval_performance(empty, series())


@pytest.mark.slow
def test_a_hub_series_takes_its_performance_from_lm_eval_results(make_workdir, tmp_path):
    """The tiny series in a hub cache, `performance:` the lm-eval results directory: the import's
    performance log holds the newest evaluation of each checkpoint."""
    from test_lm_architectures import MODELS, hub_cache, save_series

    make_config, cls = MODELS["gpt_neox"]
    save_series(tmp_path, "neox", cls, make_config(), seeds=(0, 1), steps=(0, 10, 20))
    cache = tmp_path / "cache"
    hub_cache(cache, tmp_path / "neox", HUB["repo"], seeds=(0, 1), steps=(0, 10, 20))
    task = {
        "source": "huggingface",
        "architecture": "gpt_neox",
        "seeds": 2,
        "hub": {**HUB, "cache": str(cache), "download": False},
        "performance": str(RESULTS),
        "lm_eval": {"eval_acc": "tiny_cloze/acc", "eval_loss": "tiny_cloze/perplexity"},
    }
    wd = make_workdir({"tasks": {"neox": task}, "stability": {"enabled": False}})
    logs = [f"results/neox/runs/seed{s}/train_log.parquet" for s in (0, 1)]
    snakemake(wd, "--until", "import_neox_seeds0_1")
    expected = lm_eval_performance(RESULTS, series(), "tiny_cloze/acc", "tiny_cloze/perplexity")
    got = pd.concat([pd.read_parquet(wd / f) for f in logs], ignore_index=True)
    assert got[["seed", "step"]].values.tolist() == expected[["seed", "step"]].values.tolist()
    for column in ("eval_acc", "eval_loss"):
        assert got[column].tolist() == expected[column].tolist()
    rerun = snakemake(wd, "--until", "import_neox_seeds0_1", "-n").stdout
    assert re.search(r"^total\s+0$", rerun, re.M), rerun  # the directory's fingerprint holds


def test_lm_eval_keys_beside_a_performance_table_are_an_error():
    from latentstates.config import ConfigError, validate_config

    task = {
        "source": "huggingface",
        "architecture": "gpt_neox",
        "seeds": 1,
        "path": "m/seed{seed}/step{step}",
    }
    ok = {**task, "performance": "evals/", "lm_eval": {"eval_acc": "lambada_openai/acc"}}
    checked = validate_config({"tasks": {"lm": ok}})["tasks"]["lm"]["lm_eval"]
    assert checked["eval_acc"] == "lambada_openai/acc"
    bad = {**ok, "performance": "perf.csv"}
    with pytest.raises(ConfigError, match=r"'tasks.lm.lm_eval': .* perf.csv is a table"):
        validate_config({"tasks": {"lm": bad}})
