"""The docs stay current: the configuration reference is the schema's, links resolve, README is short."""

import re
from pathlib import Path

import pytest

from latentstates.config_reference import render

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_configuration_reference_is_generated_from_the_schema():
    generated = render()
    assert (ROOT / "docs" / "configuration.md").read_text() == generated, (
        "docs/configuration.md differs from the schema; regenerate it with "
        "`python -m latentstates.config_reference > docs/configuration.md`"
    )


def test_configuration_reference_lists_every_key_of_the_schema():
    text = render()
    for key in ("device", "metrics.hessian.batch_runs", "hmm.covariance_prior", "forecast.method"):
        assert f"| `{key}` |" in text
    assert "| `tasks.<name>.train.backward` |" in text
    assert "| `tasks.<name>.model.d_model` |" in text


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; move detail into docs/"


def _relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file: lower case, punctuation dropped, spaces as -."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    headings = re.findall(r"^#+\s+(.*?)\s*$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("path", [ROOT / "README.md", *DOCS], ids=lambda p: p.name)
def test_relative_links_point_to_existing_files_and_headings(path):
    assert path.exists()
    missing = []
    for target in _relative_links(path):
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            missing.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            missing.append(target)
    assert not missing, f"{path.relative_to(ROOT)} links to missing files or headings: {missing}"


def test_every_key_of_the_schema_is_described_in_the_schema():
    """The descriptions live in the schema, like the defaults: the reference adds none of its own."""
    undescribed = [
        line.split("|")[1].strip()
        for line in render().splitlines()
        if line.startswith("| `") and not line.rstrip()[:-1].rsplit("|", 1)[-1].strip()
    ]
    assert not undescribed, f"schema keys without a description: {undescribed}"
