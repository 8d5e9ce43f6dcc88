"""Revisions of a checkpoint series: a Hub series' repositories and revisions per seed and step
(Pythia's schedule), and revisions by name, each one's step read by a regular expression (OLMo's
`stage1-step1000-tokens4B`, `step-1000`). Standard library only: the config check
(`latentstates.config`) reads them in every job process, the Hub series (`runs.hub`) in its
fetch job, the import in reading evaluations (`runs.evaluations`)."""

from __future__ import annotations

import re


def step_regex(pattern: str) -> re.Pattern:
    """`pattern` compiled, with a group for the step; raises ValueError saying what is wrong."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"'{pattern}' is not a regular expression ({exc})") from None
    if not regex.groups:
        raise ValueError(f"'{pattern}' has no group for the step, e.g. step(\\d+)")
    return regex


def step_of(name: str, pattern: str) -> int:
    """The step in a revision's name: `pattern`'s group named `step`, else its first group,
    searched anywhere in `name` (`step(\\d+)` finds 1000 in stage1-step1000-tokens5B). Raises
    ValueError saying why (an invalid pattern, no match, not a whole number)."""
    regex = step_regex(pattern)
    match = regex.search(name)
    if match is None:
        raise ValueError(f"revision {name!r} does not match '{pattern}'")
    text = match.group("step") if "step" in regex.groupindex else match.group(1)
    if text is None or not text.isdigit():
        raise ValueError(f"revision {name!r}: '{pattern}' reads {text!r}, not a step (a whole number)")
    return int(text)


def named_revisions(hub: dict) -> list[tuple[int, str]]:
    """(step, revision) of a series given by revision names (`hub["revisions"]`, read by
    `hub["step_pattern"]`), in the order of their steps; raises ValueError naming a revision
    without a step or two revisions of the same step."""
    pairs = sorted((step_of(name, hub["step_pattern"]), name) for name in hub["revisions"])
    for (a, first), (b, second) in zip(pairs, pairs[1:]):
        if a == b:
            raise ValueError(f"revisions {first!r} and {second!r} are both step {a}")
    return pairs


# Pythia's 154 revisions: step 0, the powers of two to 512, then every 1,000 steps to 143,000.
PYTHIA_STEPS = [0, *(2**i for i in range(10)), *range(1000, 143_001, 1000)]
SCHEDULES = {"pythia": PYTHIA_STEPS}


def steps(hub: dict) -> list[int]:
    """The steps of a hub series: its list, a named schedule ('pythia'), or those of its
    revisions' names."""
    if hub.get("revisions"):
        return [step for step, _ in named_revisions(hub)]
    value = hub["steps"]
    return list(SCHEDULES[value]) if isinstance(value, str) else sorted(int(s) for s in value)


def repository(hub: dict, seed: int) -> str:
    """The repository of one seed: `repos[seed]` where given (PolyPythias' seed 0 is the original
    `EleutherAI/pythia-160m`), else `repo` with {seed}."""
    return hub.get("repos", {}).get(str(seed)) or hub["repo"].format(seed=seed)


def revisions(hub: dict, seed: int) -> list[tuple[int, str, str]]:
    """(step, repository, revision) of every checkpoint of one seed's run."""
    repo = repository(hub, seed)
    if hub.get("revisions"):
        return [(s, repo, name) for s, name in named_revisions(hub)]
    return [(s, repo, hub["revision"].format(step=s)) for s in steps(hub)]
