"""A streamed Hub series: does the prefetch hide the downloads, and how much cache does it use?

Usage: python benchmarks/hub_stream.py [--revisions 8] [--hidden 384] [--layers 6] [--mbps 40]

A GPT-NeoX series of `--revisions` revisions (random weights, save_pretrained, float32) is served
by the Hub endpoint on localhost the tests use (tests/hub_server.py), each weight file delayed as
if downloaded at `--mbps` MB/s, and measured by the workflow's own code (a streamed run record,
`measure.extract.metrics_of_run`, one thread) three ways, each into an empty cache:

- keep: every revision downloaded first, then measured (`hub.keep_cache: true`: the fetch job,
  then the metrics job);
- stream, prefetch 0: download, measure, evict, one revision at a time;
- stream, prefetch 1 (the default): the next revision downloads while one is measured.

Prints each way's wall time as a ratio to keep's, the download and measurement time per revision,
and the most revisions and bytes the cache held (polled every 2 ms from outside). With downloads
as slow as the measurement, prefetch 1 should take about half of prefetch 0 and hold 2 revisions.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES: dict[str, float] = {}  # keep's seconds per revision: downloading, then measuring
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]


def series(root: Path, revisions: int, hidden: int, layers: int) -> dict[str, dict[str, Path]]:
    import torch
    import transformers

    config = transformers.GPTNeoXConfig(
        vocab_size=1024,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=8,
        intermediate_size=4 * hidden,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.GPTNeoXForCausalLM(config)
    found = {}
    for step in range(revisions):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        model.save_pretrained(root / f"step{step}")
        found[f"step{step}"] = root / f"step{step}"
    return {"org/bench-seed0": found}


def measure(cache: Path, url: str, steps: list[int], prefetch: int | None, workdir: Path) -> float:
    """Wall seconds of one way (prefetch None: keep, every revision downloaded first)."""
    from latentstates.config import load_config
    from latentstates.measure.extract import metrics_of_run
    from latentstates.runs.contract import make_run
    from latentstates.runs.external_tables import performance_log
    from latentstates.runs.hub import download_revision
    from latentstates.settings import HessianSettings

    repo = "org/bench-seed0"
    checkpoints = [
        {"step": s, "path": f"hf://{repo}@step{s}", "repo": repo, "revision": f"step{s}"} for s in steps
    ]
    hub = {"cache": str(cache), "prefetch": prefetch or 0, "download": True, "endpoint": url}
    kw = dict(
        task="bench", seed=0, source="huggingface", spec={"architecture": "gpt_neox"}, fmt="transformers"
    )
    hessian = HessianSettings.from_dict(load_config(REPO / "config.yaml")["metrics"]["hessian"])
    log = performance_log(None, 0, steps, None)
    start = time.perf_counter()
    if prefetch is None:
        found = [download_revision(cache, repo, f"step{s}", url)[0] for s in steps]
        PHASES["download"] = (time.perf_counter() - start) / len(steps)
        run = make_run(**kw, checkpoints=[{"step": s, "path": p} for s, p in zip(steps, found)])
    else:
        run = make_run(**kw, checkpoints=checkpoints, hub=hub)
    run_file = workdir / f"run-{prefetch}" / "run.json"
    run_file.parent.mkdir()
    begun = time.perf_counter()
    metrics_of_run(run, run_file, log, hessian, device="cpu", threads=1, progress=False)
    if prefetch is None:
        PHASES["measure"] = (time.perf_counter() - begun) / len(steps)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--mbps", type=float, default=40.0, help="emulated download speed, MB/s")
    args = parser.parse_args()

    from test_hub_stream import CacheWatch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        repos = series(tmp / "remote", args.revisions, args.hidden, args.layers)
        size = (repos["org/bench-seed0"]["step0"] / "model.safetensors").stat().st_size
        steps = list(range(args.revisions))
        listing = tmp / "repos.json"
        listing.write_text(json.dumps({r: {k: str(d) for k, d in revs.items()} for r, revs in repos.items()}))
        # the Hub in a process of its own, as a remote one would be (not sharing this one's GIL)
        server = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "tests" / "hub_server.py"),
                str(listing),
                str(size / (args.mbps * 1e6)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            url = server.stdout.readline().strip()
            times, peaks = {}, {}
            for name, prefetch in [("keep", None), ("stream, prefetch 0", 0), ("stream, prefetch 1", 1)]:
                cache = tmp / f"cache-{prefetch}"
                with CacheWatch(cache) as watch:
                    times[name] = measure(cache, url, steps, prefetch, tmp)
                peaks[name] = (watch.most, watch.most_bytes)
        finally:
            server.kill()
        print(
            f"{args.revisions} revisions of {size / 1e6:.1f} MB "
            f"(GPT-NeoX, hidden {args.hidden}, {args.layers} layers), "
            f"downloads at {args.mbps:g} MB/s ({size / (args.mbps * 1e6):.2f} s each)"
        )
        header = ("wall s", "vs keep", "s/revision", "most revisions", "most MB")
        print(f"{'way':<20} " + " ".join(f"{h:>{w}}" for h, w in zip(header, (8, 8, 11, 15, 8))))
        for name, wall in times.items():
            most, most_bytes = peaks[name]
            print(
                f"{name:<20} {wall:8.2f} {wall / times['keep']:8.2f} {wall / args.revisions:11.2f} "
                f"{most:15d} {most_bytes / 1e6:8.1f}"
            )
        print(
            f"keep's phases per revision: download {PHASES['download']:.2f} s, "
            f"measure {PHASES['measure']:.2f} s; "
            f"prefetch 1's floor: max of the two, {max(PHASES.values()):.2f} s"
        )
        ratio = times["stream, prefetch 1"] / times["stream, prefetch 0"]
        print(f"prefetch 1 / prefetch 0: {ratio:.2f}x wall time")


if __name__ == "__main__":
    main()
