"""The profiles' default resources: one value for a light job, the same locally and on SLURM."""

import re
import shutil

import yaml

from conftest import REPO, TINY, snakemake


def _defaults(profile: str) -> dict:
    return yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())["default-resources"]


def test_default_and_slurm_profiles_give_a_light_job_the_same_resources():
    local, slurm = _defaults("default"), _defaults("slurm")
    assert local == {k: slurm[k] for k in local}
    assert {"mem_mb", "runtime"} <= local.keys()


def test_every_job_has_memory_and_runtime_under_the_default_profile(tmp_path):
    shutil.copy(TINY, tmp_path / "config.yaml")
    out = snakemake(tmp_path, "--dry-run", "--forceall").stdout
    jobs = re.findall(r"^rule (\w+):\n(?:.*\n)*?\s+resources: (.*)$", out, re.M)
    assert {"plot_model_selection", "plot_forecast", "summary_table", "hmm"} <= {r for r, _ in jobs}
    light = _defaults("default")
    for rule, resources in jobs:
        res = dict(kv.split("=", 1) for kv in resources.split(", "))
        assert "mem_mb" in res and "runtime" in res, (rule, res)
        if rule.startswith("plot_"):
            assert (int(res["mem_mb"]), int(res["runtime"])) == (light["mem_mb"], light["runtime"])
    assert re.search(r"^rule hmm:\n(?:.*\n)*?\s+resources: .*mem_mb=4000\b.*runtime=60\b", out, re.M)
