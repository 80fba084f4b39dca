"""Scheduled reruns: `winnow serve` against a real Prefect server, triggered with `prefect deployment run`.

Starts `prefect server start` on loopback in a temporary PREFECT_HOME, serves, triggers the
pipeline deployment, waits for it to complete, and stops everything it started.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import uniform_target

from winnow.config import load_params

pytestmark = pytest.mark.e2e  # through the entry points a user runs (Prefect, the CLI, DVC, torchrun): the full tier

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(1)
    raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read() or b"null") if response.status == 200 else None
    except OSError:
        return None


def _post(url: str, body: dict):
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow  # about 50 s: a real `prefect server start` and a served deployment (the suite stays within ten minutes)
def test_a_served_deployment_runs_the_pipeline_when_triggered(tiny, tmp_path):
    raw = yaml.safe_load(tiny.read_text())  # what is tested is the schedule and the trigger: two arms are enough
    raw["train"]["policies"] = ["uniform", "learnability"]
    tiny.write_text(yaml.safe_dump(raw))
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect_home"),
        "PREFECT_API_URL": api,
        "PYTHONPATH": str(REPO),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",  # the served process looks for the triggered run each second, not each 10
    }
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    served = None
    try:
        _wait(lambda: _get(f"{api}/health"), 120, "the Prefect server")
        served = subprocess.Popen(
            [sys.executable, "-m", "winnow.cli", "serve", "--params", str(tiny), "--interval", "1440"],
            env=env,
            cwd=tiny.parent,
            stdout=open(tmp_path / "serve.log", "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deployments = _wait(
            lambda: [d for d in (_post(f"{api}/deployments/filter", {}) or []) if d["name"] == "pipeline"],
            120,
            "the pipeline deployment",
        )
        assert deployments[0]["schedules"], "the pipeline deployment carries its interval schedule"

        run = subprocess.run(
            [sys.executable, "-m", "prefect", "deployment", "run", "pipeline/pipeline", "--watch"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stdout + run.stderr + (tmp_path / "serve.log").read_text()[-3000:]
        assert "Completed" in run.stdout
        summary = json.loads((tiny.parent / "metrics" / "data" / "classification" / "summary.json").read_text())
        assert set(summary["policies"]) == set(load_params(tiny).train.policies)  # the served run wrote every policy's row
        assert summary["target"] == pytest.approx(uniform_target(tiny.parent / "metrics" / "data" / "classification", summary))
    finally:
        if served is not None:
            _stop(served)
        _stop(server)
    assert server.poll() is not None and (served is None or served.poll() is not None)


def test_serve_without_a_server_says_how_to_start_one(tiny):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    out = subprocess.run(
        [sys.executable, "-m", "winnow.cli", "serve", "--params", str(tiny)],
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        cwd=tiny.parent,
        timeout=60,
    )
    assert out.returncode == 2 and "prefect server start" in out.stderr and "PREFECT_API_URL" in out.stderr


@pytest.mark.parametrize("bad", ["serve.cron='* *'", "serve.interval_minutes=-5"])
def test_a_bad_schedule_is_an_error_naming_the_key(bad):
    from winnow.config import ConfigError, load_params

    with pytest.raises(ConfigError, match="serve"):
        load_params(REPO / "params.yaml", [bad, *(["serve.cron=null"] if "interval" in bad else [])])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--interval", "0"], "--interval: Input should be greater than 0"),
        (["--interval", "-5"], "--interval: Input should be greater than 0"),
        (["--cron", "99 * * * *"], "--cron: Invalid cron string"),
        (["--cron", "* *"], "--cron: cron must have 5 fields"),
        ([], "cannot reach the Prefect server at PREFECT_API_URL=http://127.0.0.1:9/api"),
    ],
)
def test_a_bad_schedule_or_an_unreachable_server_is_one_line_naming_it(prefect_server, tiny, monkeypatch, capsys, args, message):
    """Issue 26: these were raw tracebacks, and --interval 0 silently fell back to the nightly cron. (prefect_server:
    Prefect is first imported there, outside capsys, so its console handler never writes to a closed capture.)"""
    from winnow.cli import main

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens on port 9
    assert main(["serve", "--params", str(tiny), *args]) == 2
    said = capsys.readouterr().err
    assert message in said and "Traceback" not in said
