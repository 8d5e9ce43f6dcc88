"""A Hub series streamed on a bounded disk (runs.hub_stream, measure.streamed): revisions
downloaded by huggingface_hub's own client from a Hub endpoint on localhost (tests/hub_server.py)
into a real cache, evicted through its cache API, the prefetch bound measured on the cache
directory, a kill mid-series and its rerun, and a revision the user had cached before kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import small_config, snakemake, snakemake_command
from hub_server import HubServer

transformers = pytest.importorskip("transformers")


def tiny_series(root: Path, seeds=(0,), steps=range(6)) -> dict[str, dict[str, Path]]:
    """save_pretrained directories of a tiny GPT-NeoX per (seed, step), as the Hub's repositories
    `org/neox-seed{seed}` with revisions `step{step}` (weights perturbed a little per step)."""
    import torch

    config = transformers.GPTNeoXConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    repos = {}
    for seed in seeds:
        torch.manual_seed(seed)
        model = transformers.GPTNeoXForCausalLM(config)
        revisions = {}
        for step in steps:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01 * torch.randn_like(p))
            directory = root / f"seed{seed}" / f"step{step}"
            model.save_pretrained(directory)
            revisions[f"step{step}"] = directory
        repos[f"org/neox-seed{seed}"] = revisions
    return repos


def snapshots(cache: Path) -> set[str]:
    """The revisions in the cache with a snapshot directory, as repo@commit."""
    return {
        f"{root.name}@{s.name}" for root in cache.glob("models--*") for s in (root / "snapshots").glob("*")
    }


class CacheWatch:
    """The most snapshot directories and blob bytes seen in a cache, polled every few ms from
    outside the code under test."""

    def __init__(self, cache: Path, exclude: set[str] = frozenset()):
        self.cache, self.exclude = cache, set(exclude)
        self.most, self.most_bytes, self._stop = 0, 0, threading.Event()

    def poll(self) -> None:
        while not self._stop.is_set():
            try:
                self.most = max(self.most, len(snapshots(self.cache) - self.exclude))
                size = sum(p.stat().st_size for p in self.cache.glob("models--*/blobs/*"))
                self.most_bytes = max(self.most_bytes, size)
            except OSError:  # a file removed while listed
                pass
            time.sleep(0.002)

    def __enter__(self):
        self._thread = threading.Thread(target=self.poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def stream_settings(cache: Path, endpoint: str, prefetch: int = 1, download: bool = True) -> dict:
    return {"cache": str(cache), "prefetch": prefetch, "download": download, "endpoint": endpoint}


def test_each_revision_is_evicted_after_use_and_the_users_is_kept(tmp_path):
    from huggingface_hub import scan_cache_dir, snapshot_download

    from latentstates.runs.hub_stream import RevisionStream

    repos = tiny_series(tmp_path / "remote")
    cache = tmp_path / "cache"
    with HubServer(repos, delay=0.02) as server:
        # the user's own revision, cached before: read, never evicted, not downloaded again
        users = snapshot_download("org/neox-seed0", revision="step2", cache_dir=cache, endpoint=server.url)
        before = snapshots(cache)
        stream = RevisionStream(stream_settings(cache, server.url), tmp_path / "ledger.json")
        items = [(step, "org/neox-seed0", f"step{step}") for step in range(6)]
        seen = []
        with CacheWatch(cache, exclude=before) as watch:
            for step, snapshot in stream(items):
                config = json.loads((snapshot / "config.json").read_text())
                assert config["model_type"] == "gpt_neox" and (snapshot / "model.safetensors").is_file()
                seen.append(step)
                time.sleep(0.15)  # a measurement, while the next revision downloads
        assert seen == list(range(6))
        # peak: the revision measured and the one prefetched, never more; and the prefetch did overlap
        assert watch.most == 2
        assert snapshots(cache) == before and Path(users).is_dir()
        assert [r.refs for repo in scan_cache_dir(cache).repos for r in repo.revisions] == [
            frozenset({"step2"})
        ]
        fetched = [r for r in server.requests if r.startswith("GET /api/models/org/neox-seed0/revision/")]
        assert sorted(fetched) == sorted(f"GET /api/models/org/neox-seed0/revision/step{s}" for s in range(6))
        assert json.loads((tmp_path / "ledger.json").read_text()) == []
        # prefetch 0: one revision at a time
        with CacheWatch(cache, exclude=before) as watch:
            for _ in RevisionStream(stream_settings(cache, server.url, prefetch=0), tmp_path / "ledger.json")(
                items
            ):
                time.sleep(0.05)
        assert watch.most == 1 and snapshots(cache) == before


def test_missing_revisions_are_named_before_anything_is_measured(tmp_path):
    from latentstates.runs.hub_stream import RevisionStream

    repos = tiny_series(tmp_path / "remote", steps=range(2))
    cache = tmp_path / "cache"
    with HubServer(repos) as server:
        items = [(s, "org/neox-seed0", f"step{s}") for s in (0, 1, 7)]
        with pytest.raises(
            FileNotFoundError, match=r"1 checkpoints are neither .*RevisionNotFound.*org/neox-seed0@step7"
        ):
            list(RevisionStream(stream_settings(cache, server.url), tmp_path / "ledger.json")(items))
        assert snapshots(cache) == set()  # what was downloaded before the error is evicted too
        off = RevisionStream(stream_settings(cache, server.url, download=False), tmp_path / "ledger.json")
        with pytest.raises(
            FileNotFoundError, match=r"3 checkpoints .*\(download: off\): org/neox-seed0@step0"
        ):
            next(off(items))


KILLED = """
import json, os, sys, time
from pathlib import Path
from latentstates.runs.hub_stream import RevisionStream
settings = {"cache": sys.argv[2], "prefetch": 1, "download": True, "endpoint": sys.argv[1]}
stream = RevisionStream(settings, Path(sys.argv[3]))
for n, (step, snapshot) in enumerate(stream([(s, "org/neox-seed0", f"step{s}") for s in range(6)])):
    if n == 2:
        time.sleep(0.5)  # the next revision downloaded meanwhile
        os._exit(9)  # killed: no finally, no eviction
"""


def test_a_killed_jobs_downloads_are_evicted_on_rerun(tmp_path):
    from latentstates.runs.hub_stream import RevisionStream

    repos = tiny_series(tmp_path / "remote")
    cache, ledger = tmp_path / "cache", tmp_path / "ledger.json"
    with HubServer(repos) as server:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
        proc = subprocess.run([sys.executable, "-c", KILLED, server.url, str(cache), str(ledger)], env=env)
        assert proc.returncode == 9
        # left behind: revision 2 (being measured) and 3 (prefetched), both in the ledger
        assert len(snapshots(cache)) == 2
        assert set(json.loads(ledger.read_text())) == {"org/neox-seed0@step2", "org/neox-seed0@step3"}
        n = len(server.requests)
        # the rerun measures 3 to 5: 2 is a leftover (evicted at once), 3 is read from the cache
        rerun = RevisionStream(stream_settings(cache, server.url), ledger)
        done = [step for step, _ in rerun([(s, "org/neox-seed0", f"step{s}") for s in range(3, 6)])]
        assert done == [3, 4, 5]
        assert not any("revision/step3" in r for r in server.requests[n:])
        assert snapshots(cache) == set() and json.loads(ledger.read_text()) == []


def start(workdir: Path) -> subprocess.Popen:
    """Snakemake in its own process group (so that the test can kill it and its jobs at once)."""
    cmd, env = snakemake_command(workdir)
    return subprocess.Popen(
        cmd,
        cwd=workdir,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_a_series_streams_through_the_workflow_on_a_bounded_cache_and_resumes_after_a_kill(
    make_workdir, tmp_path
):
    from huggingface_hub import snapshot_download

    steps = list(range(0, 40, 2))  # 3 seeds × 20 revisions
    repos = tiny_series(tmp_path / "remote", seeds=(0, 1, 2), steps=steps)
    revision_bytes = max(
        sum(f.stat().st_size for f in d.iterdir() if f.name in ("config.json", "model.safetensors"))
        for revs in repos.values()
        for d in revs.values()
    )
    with HubServer(repos, delay=0.03) as server:

        def workdir(name: str) -> tuple[Path, Path, set[str]]:
            cache = tmp_path / f"cache-{name}"
            # the user had one revision cached before: read from there, kept
            snapshot_download("org/neox-seed1", revision="step10", cache_dir=cache, endpoint=server.url)
            hub = {"repo": "org/neox-seed{seed}", "steps": steps, "cache": str(cache), "endpoint": server.url}
            task = {
                "source": "huggingface",
                "architecture": "gpt_neox",
                "seeds": 3,
                "seeds_per_job": 3,
                "hub": hub,
            }
            return make_workdir(small_config({"neox": task}), name), cache, snapshots(cache)

        # Uninterrupted, the whole DAG: never more than prefetch + 1 = 2 revisions downloaded at once.
        wd, cache, users = workdir("whole")
        with CacheWatch(cache, exclude=users) as watch:
            snakemake(wd)
        assert watch.most == 2
        user_bytes = sum(p.stat().st_size for p in cache.glob("models--*/blobs/*"))
        assert watch.most_bytes <= user_bytes + 2 * revision_bytes
        assert snapshots(cache) == users  # every download evicted, the user's revision kept
        results = wd / "results" / "neox"
        metrics = pd.read_parquet(results / "metrics.parquet")
        assert metrics.groupby("seed")["step"].apply(list).map(steps.__eq__).all()
        assert (
            metrics["l2"].notna().all() and (results / "figures" / "transition_graph.png").stat().st_size > 0
        )
        assert not list(results.glob("runs/seed*/metrics.partial"))
        run = json.loads((results / "runs" / "seed1" / "run.json").read_text())
        assert run["checkpoints"][5] | {"path": None} == {
            "index": 5,
            "step": 10,
            "epoch": None,
            "path": None,
            "repo": "org/neox-seed1",
            "revision": "step10",
        }

        # Killed in the middle of seed 1, then rerun: only what has no row is measured, nothing
        # is downloaded twice, the tables are the uninterrupted run's.
        wd2, cache2, users2 = workdir("killed")
        partial = wd2 / "results" / "neox" / "runs" / "seed1" / "metrics.partial"
        first = len(server.requests)
        proc = start(wd2)
        deadline = time.time() + 300
        while len(list(partial.glob("row_*.json"))) < 4:
            assert proc.poll() is None and time.time() < deadline, "the run ended before the kill"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)
        measured = len(list(partial.glob("row_*.json")))
        assert (
            4 <= measured < 20 and (wd2 / "results" / "neox" / "runs" / "seed0" / "metrics.parquet").is_file()
        )
        assert len(snapshots(cache2) - users2) >= 1  # downloads the kill left behind, in the ledger
        snakemake(wd2, "--unlock")  # as after any kill -9
        snakemake(wd2, "--rerun-incomplete")
        log = (wd2 / "results" / "logs" / "metrics" / "neox" / "seeds0-2.log").read_text()
        assert f"seed 1: {measured} of 20 checkpoints measured before" in log
        assert snapshots(cache2) == users2
        downloads = [
            r for r in server.requests[first:] if r.startswith("GET /api/models/") and "/revision/" in r
        ]
        # each revision once, the user's never (the one whose download the kill cut short, twice)
        assert len(set(downloads)) == 59 and len(downloads) - 59 <= 1
        for table in ["metrics.parquet", *(f"runs/seed{s}/metrics.parquet" for s in range(3))]:
            pd.testing.assert_frame_equal(
                pd.read_parquet(results / table), pd.read_parquet(wd2 / "results" / "neox" / table)
            )


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.update(hub="yes"), "hub: must be a mapping"),
        (lambda r: r["hub"].update(prefetch=-1), "hub.prefetch: must be a whole number >= 0, got -1"),
        (lambda r: r["hub"].update(download="no"), "hub.download: must be true or false"),
        (lambda r: r["hub"].update(endpoint=3), "hub.endpoint: must be a URL or null"),
        (
            lambda r: r["checkpoints"][1].pop("revision"),
            r"checkpoints\[1\].revision: a streamed checkpoint's revision",
        ),
    ],
)
def test_a_streamed_run_record_is_checked_key_by_key(tmp_path, change, message):
    from latentstates.runs.contract import check_run, make_run
    from latentstates.validation import InputError

    run = make_run(
        task="neox",
        seed=0,
        source="huggingface",
        spec={"architecture": "gpt_neox"},
        fmt="transformers",
        checkpoints=[
            {"step": s, "path": f"hf://org/m@step{s}", "repo": "org/m", "revision": f"step{s}"}
            for s in (0, 1)
        ],
        hub={"cache": str(tmp_path), "prefetch": 1, "download": True, "endpoint": None},
    )
    assert check_run(json.loads(json.dumps(run)), tmp_path / "run.json") == run
    change(run)
    with pytest.raises(InputError, match=message):
        check_run(run, tmp_path / "run.json")


def test_rows_are_kept_under_the_same_settings_and_measured_again_under_others(tmp_path):
    import numpy as np

    from latentstates.measure.streamed import MeasuredRows

    row = {"checkpoint": 0, "l2": np.float64(0.1) + np.float64(0.2), "hessian_iters": np.int64(0), "ok": True}
    MeasuredRows(tmp_path, {"extra": []}).add({"index": 0}, row)
    again = MeasuredRows(tmp_path, {"extra": []})
    assert again.done() == {0} and again.rows() == [{**row, "l2": 0.30000000000000004, "hessian_iters": 0}]
    assert MeasuredRows(tmp_path, {"extra": ["alpha"]}).done() == set()
