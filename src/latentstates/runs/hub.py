"""Checkpoint series on the Hugging Face Hub: one repository per seed, one revision per step
(PolyPythias: `EleutherAI/pythia-160m-seed{seed}`, revisions `step{step}`; or revisions by name,
each one's step read by a regular expression: OLMo's `stage1-step1000-tokens5B`).

Each revision's weight and config files are taken from the user's Hugging Face cache where they
are (`<cache>/models--ORG--NAME/refs/<revision>` names the commit, `snapshots/<commit>/` holds
the files, as huggingface_hub lays them out), else downloaded into that cache once. Offline, the
missing revisions are named and nothing is made up in their place. Only `fetch` imports
huggingface_hub; the rest reads the layout with the standard library.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from latentstates.revisions import PYTHIA_STEPS, SCHEDULES, repository, revisions, steps  # noqa: F401

# What a revision's directory needs: the config and the weights (no tokenizer, no optimizer).
ALLOW_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin*"]
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def cache_root(hub: dict) -> Path:
    """The Hugging Face hub cache: the task's `cache`, else $HF_HUB_CACHE, $HF_HOME/hub, or
    ~/.cache/huggingface/hub (huggingface_hub's own order)."""
    if hub.get("cache"):
        return Path(hub["cache"]).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path("~/.cache/huggingface").expanduser()
    return Path(home) / "hub"


def streamed(hub: Mapping | None) -> bool:
    """Whether a task's Hub series is streamed through its metrics jobs (runs.hub_stream): a
    series not kept in the cache (`keep_cache`)."""
    return bool(hub) and not hub["keep_cache"]


def repo_root(cache: Path, repo: str) -> Path:
    """A repository's directory in the cache (`models--ORG--NAME`)."""
    return cache / ("models--" + repo.replace("/", "--"))


def snapshot_path(cache: Path, repo: str, revision: str) -> Path:
    """Where the cache keeps `repo` at `revision`, whether or not it is there: `revision` may be
    a branch or tag (its commit read from refs/) or a commit."""
    root = repo_root(cache, repo)
    ref = root / "refs" / revision
    return root / "snapshots" / (ref.read_text().strip() if ref.is_file() else revision)


def cached_snapshot(cache: Path, repo: str, revision: str) -> Path | None:
    """The snapshot directory of `repo` at `revision` in the cache, if it holds a config and
    weights; None otherwise."""
    snapshot = snapshot_path(cache, repo, revision)
    if (snapshot / "config.json").is_file() and any((snapshot / f).is_file() for f in WEIGHT_FILES):
        return snapshot
    return None


def resolve(hub: dict, seeds: Sequence[int], download: bool = True) -> dict[int, list[tuple[int, Path]]]:
    """(step, snapshot directory) of every checkpoint of `seeds`, from the cache or downloaded
    into it (`download`); raises naming every repository and revision that is neither."""
    cache = cache_root(hub)
    found: dict[int, list[tuple[int, Path]]] = {}
    missing: list[str] = []
    errors: list[str] = []
    for seed in seeds:
        found[seed] = []
        for step, repo, revision in revisions(hub, seed):
            snapshot = cached_snapshot(cache, repo, revision)
            if snapshot is None and download:
                snapshot, error = download_revision(cache, repo, revision, hub.get("endpoint"))
                if error and len(errors) < 3:
                    errors.append(error)
            if snapshot is None:
                missing.append(f"{repo}@{revision}")
            else:
                found[seed].append((step, snapshot))
    if missing:
        raise missing_error(cache, missing, errors)
    return found


def missing_error(cache: Path, missing: list[str], errors: list[str]) -> FileNotFoundError:
    """The error naming the checkpoints (`repo@revision`) neither cached nor downloaded, and why
    the downloads failed (`errors`; none: downloads are off)."""
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    why = f" (download: {'; '.join(errors)})" if errors else " (download: off)"
    return FileNotFoundError(
        f"{len(missing)} checkpoints are neither in the Hugging Face cache {cache} nor downloadable"
        f"{why}: {shown}"
    )


def download_revision(
    cache: Path, repo: str, revision: str, endpoint: str | None = None
) -> tuple[Path | None, str]:
    """Download one revision's config and weights into the cache, from the Hub or the mirror at
    `endpoint` (None: $HF_ENDPOINT, else huggingface.co): (snapshot, '') or (None, why)."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(
            repo, revision=revision, cache_dir=cache, allow_patterns=ALLOW_PATTERNS, endpoint=endpoint
        )
    except Exception as exc:  # offline, unknown repository or revision, no access: all named
        return None, f"{repo}@{revision}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return Path(path), ""
