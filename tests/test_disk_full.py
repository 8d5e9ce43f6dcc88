"""A full disk: every write names its file, the free space and the need; a rerun after freeing
space finishes bit-identical.

The file systems are real: small tmpfs mounts, which need root. Skipped, with the reason, where
they cannot be mounted; `.ci/run` sets REQUIRE_TMPFS=1, which turns a skip into a failure.
"""

import errno
import os
import re
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
import yaml

from conftest import TINY, snakemake
from latentstates.disk import DiskFullError
from latentstates.io import read_parquet, write_json, write_parquet
from latentstates.logs import job_log
from latentstates.report.interactive import save_html
from latentstates.report.plots import save
from latentstates.runs.checkpoints import (
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    save_resume,
)

FREE_OF = r"no space left on its file system \([\d.]+ k?B free of [\d.]+ [kM]B"


def _why_no_tmpfs(probe: Path) -> str | None:
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    probe.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        return f"cannot mount a tmpfs here: {proc.stderr.strip()}"
    subprocess.run(["umount", str(probe)], check=True)
    return None


@pytest.fixture
def small_fs(tmp_path):
    """mount(directory, size): a tmpfs of `size` (e.g. "1m") at `directory`; resize by mounting again."""
    why = _why_no_tmpfs(tmp_path / "probe")
    if why:
        if os.environ.get("REQUIRE_TMPFS"):
            pytest.fail(f"REQUIRE_TMPFS is set but {why}")
        pytest.skip(why)
    mounted: list[Path] = []

    def mount(directory: Path, size: str) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        if directory in mounted:
            subprocess.run(["mount", "-o", f"remount,size={size}", str(directory)], check=True)
        else:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True
            )
            mounted.append(directory)
        return directory

    yield mount
    for directory in reversed(mounted):
        subprocess.run(["umount", "-l", str(directory)], check=False)


def _fill(directory: Path) -> Path:
    """Fill the file system of `directory` to the last byte with a file; return it."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def test_every_writer_names_the_file_and_the_free_space_on_a_full_disk(small_fs, tmp_path):
    fs = small_fs(tmp_path / "fs", "1m")
    write_parquet(pd.DataFrame({"a": [1.0]}), fs / "old.parquet")
    filler = _fill(fs)
    payload = {"model": {"w": torch.zeros(100_000)}}
    writes = {
        "ckpt_000000.pt": lambda p: save_checkpoint(fs, 0, payload, atomic=False),
        "ckpt_000001.pt": lambda p: save_checkpoint(fs, 1, payload),
        "resume_000001.pt": lambda p: save_resume(fs, 1, payload),
        "old.parquet": lambda p: write_parquet(pd.DataFrame({"a": range(100_000)}), p),
        "model.json": lambda p: write_json({"x": list(range(10_000))}, p),
        "figure.png": lambda p: save(plt.figure(), [p]),
        "view.html": lambda p: save_html(go.Figure(), p),
    }
    for name, write in writes.items():
        with pytest.raises(DiskFullError, match=rf"{fs / name}: {FREE_OF}") as caught:
            write(fs / name)
        assert caught.value.errno == errno.ENOSPC
        assert "rerun" in str(caught.value)
    assert "needed about 400.0 kB" in str(pytest.raises(DiskFullError, save_resume, fs, 2, payload).value)
    # Nothing torn or temporary is left, and the complete file that was there is untouched.
    assert sorted(p.name for p in fs.iterdir()) == ["filler", "old.parquet"]
    assert read_parquet(fs / "old.parquet")["a"].tolist() == [1.0]
    filler.unlink()
    save_checkpoint(fs, 0, payload, atomic=False)
    assert torch.equal(load_checkpoint(fs / "ckpt_000000.pt")["model"]["w"], payload["model"]["w"])


@pytest.mark.parametrize("first", ["logger", "print"])
def test_a_job_log_on_a_full_disk_fails_the_job_naming_the_log(first):
    """Also where `logging` swallows the write error, and where the job's outputs fit."""
    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("no /dev/full on this machine")
    with pytest.raises(DiskFullError, match=r"/dev/full: no space left on its file system"):
        with job_log(full) as logger:
            if first == "logger":
                logger.info("a line of the job's log")
            print("a line the job prints")
            print("another")


def test_a_job_that_fails_on_a_full_disk_keeps_its_own_error(tmp_path):
    with pytest.raises(ValueError, match="the job's own error"):
        with job_log(Path("/dev/full")) as logger:
            logger.info("a line the full log loses")
            raise ValueError("the job's own error")
    with pytest.raises(ValueError, match="the job's own error"):
        with job_log(tmp_path / "ok.log"):
            raise ValueError("the job's own error")


def _targets(*targets: str) -> tuple[str, ...]:
    """Targets for `snakemake()`, whose arguments follow --configfile: after a flag, so that
    they are not read as more config files."""
    return ("--printshellcmds", *targets)


def _snakemake_fails(wd: Path, *targets: str) -> str:
    proc = snakemake(wd, *_targets(*targets), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    return out


@pytest.mark.slow
def test_a_full_disk_in_training_metrics_and_hmm_is_named_and_a_rerun_finishes_bit_identical(
    small_fs, make_workdir, tiny_run
):
    config = yaml.safe_load(TINY.read_text())
    config["tasks"] = {"sparse_parity": config["tasks"]["sparse_parity"]}
    config.pop("comparisons")  # it compares sparse parities with the task left out
    wd = make_workdir(config, "wd")
    res = small_fs(wd / "results", "64k")
    task = res / "sparse_parity"
    runs = [f"results/sparse_parity/runs/seed{s}/run.json" for s in range(3)]

    # Training: the space check stops a job before it writes more than its first checkpoints.
    out = _snakemake_fails(wd, *runs)
    assert "not enough space to train" in out and "free of" in out, out[-3000:]
    assert not list(task.glob("runs/seed*/checkpoints"))

    # Metrics, then the HMM: the file system filled to the last byte before each stage.
    small_fs(res, "64m")
    snakemake(wd, *_targets(*runs))
    for stage, target, written in [
        ("metrics", "results/sparse_parity/metrics.parquet", r"runs/seed\d/metrics\.parquet"),
        ("hmm", "results/sparse_parity/hmm/model.json", r"hmm/[\w.]+"),
    ]:
        filler = _fill(res)
        out = _snakemake_fails(wd, target)
        # The job's log (written first) or its output, whichever found the disk full.
        named = rf"results/(logs/{stage}/sparse_parity/\S+\.log|sparse_parity/{written}): {FREE_OF}"
        assert re.search(named, out), (stage, out[-3000:])
        filler.unlink()
        snakemake(wd, *_targets(target))

    snakemake(wd)
    ref = tiny_run / "results" / "sparse_parity"
    for rel in ["metrics.parquet", "hmm/states.parquet"]:
        pd.testing.assert_frame_equal(pd.read_parquet(task / rel), pd.read_parquet(ref / rel))
    assert (task / "hmm" / "model.json").read_text() == (ref / "hmm" / "model.json").read_text()
    for seed in range(3):
        a = list_checkpoints(ref / "runs" / f"seed{seed}" / "checkpoints")
        b = list_checkpoints(task / "runs" / f"seed{seed}" / "checkpoints")
        assert [p.name for p in a] == [p.name for p in b]
        for pa, pb in zip(a, b):
            ma, mb = load_checkpoint(pa)["model"], load_checkpoint(pb)["model"]
            assert all(torch.equal(ma[k], mb[k]) for k in ma)
