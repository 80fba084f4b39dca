"""Artifacts versioned as DVC users do it: after a run, `dvc push` to a remote; on a fresh clone,
`dvc pull` restores data, reference, scores, learners and metrics, and nothing is left to recompute."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY, run_stages

from winnow.config import load_params
from winnow.stages.paths import Paths

pytestmark = pytest.mark.e2e  # through the entry points a user runs (Prefect, the CLI, DVC, torchrun): the full tier

REPO = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}


def _run(*command, cwd):
    done = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _dvc(*args, cwd):
    return _run(sys.executable, "-m", "dvc", *args, cwd=cwd)


@pytest.mark.slow  # about 20 s: dvc repro, push, a fresh clone and pull (the suite stays within ten minutes)
def test_dvc_push_then_pull_on_a_fresh_clone_leaves_nothing_to_recompute(tmp_path, monkeypatch):
    project, remote, clone = tmp_path / "project", tmp_path / "remote", tmp_path / "clone"
    tracked = _run(
        "git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=REPO
    ).split()  # the working tree, as git sees it
    for name in tracked:
        if name.split("/")[0] in (
            "winnow",
            "models",
            "tasks",
            "flows",
            ".dvc",
            "dvc.yaml",
            ".dvcignore",
            ".gitignore",
            "pyproject.toml",
        ):
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, project / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())  # dvc.yaml's ${...} need every key: the full file, made tiny
    for section, values in TINY.items():
        params[section] = {**params[section], **values} if isinstance(values, dict) and section != "objectives" else values
    params["data"]["name"], params["train"]["policies"] = "tiny", ["uniform", "learnability"]
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    _run("git", "init", "-q", cwd=project)
    _dvc("remote", "add", "-d", "-f", "local", str(remote), cwd=project)

    monkeypatch.chdir(project)  # the run, as `winnow pipeline` would do it
    params = load_params("params.yaml")
    run_stages(params)
    _dvc("add", "-q", "data", cwd=project)
    _dvc("commit", "-f", "-q", cwd=project)  # record what the run made in dvc.lock
    assert "up to date" in _dvc("status", cwd=project)
    _dvc("push", "-q", cwd=project)
    _run("git", "add", "-A", cwd=project)
    _run("git", "commit", "-qm", "a run", cwd=project)

    _run("git", "clone", "-q", str(project), str(clone), cwd=tmp_path)
    _dvc("pull", "-q", cwd=clone)
    paths = Paths.of(params)
    for out in (
        paths.reference,
        paths.scorer,
        paths.store,
        paths.curated / "kept_ids.npy",
        paths.learner("uniform"),
        paths.learner("learnability"),
        paths.metrics / "summary.json",
    ):
        assert (clone / out).is_file(), out
    assert "Data and pipelines are up to date" in _dvc("status", cwd=clone)
