"""With no Prefect server set, a command that runs a flow starts Prefect's temporary server as its first act, so the
server starts up while winnow imports torch (winnow/prefect_server.py); any other command starts none."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from winnow.cli import start_prefect_early

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "argv, env",
    [
        (["figures", "--check"], {}),  # no flow
        (["data", "import", "parquet", "a", "b"], {}),  # data in, data out: no flow
        (["serve"], {}),  # needs a server of its own
        (["train", "--help"], {}),
        (["train", "--policy", "uniform"], {"PREFECT_API_URL": "http://127.0.0.1:4200/api"}),  # the user's server
        (["train", "--policy", "uniform"], {"WORLD_SIZE": "2"}),  # a torchrun rank runs bare
        (["train", "--policy", "uniform"], {"WINNOW_PREFECT_EARLY": "0"}),  # Prefect starts it, when the flow asks
        (["advise"], {}),  # trains, but runs no flow
        (["bench", "--study", "levers", "--report-only"], {}),  # rewrites reports, runs no flow
        ([], {}),
    ],
)
def test_a_command_that_runs_no_flow_here_starts_no_server(argv, env, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert start_prefect_early(argv) is None


@pytest.mark.e2e
@pytest.mark.slow  # about 25 s: a shell, a temporary server started and stopped (the suite stays within ten minutes)
def test_a_stage_from_the_shell_starts_its_own_server_and_stops_it(tiny, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PYTHONPATH=str(REPO), PREFECT_HOME=str(tmp_path / "prefect_home"))
    out = subprocess.run(
        [sys.executable, "-m", "winnow.cli", "data", "synth", "--params", str(tiny)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tiny.parent,
        timeout=300,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    assert "Beginning flow run" in log and "Completed" in log
    assert (tiny.parent / "data" / "manifest.json").exists()
    port = int(re.search(r"temporary server at http://127.0.0.1:(\d+)/api", log).group(1))
    assert "View at" not in log  # the temporary server serves no UI: no dead link
    with socket.socket() as s:  # stopped at exit: nothing listens there any more
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_main_called_from_python_leaves_prefect_as_it_finds_it(monkeypatch, capsys):
    import winnow.cli

    def never(argv):
        raise AssertionError("main() called from Python started a server")

    monkeypatch.setattr(winnow.cli, "start_prefect_early", never)
    assert winnow.cli.main(["summary", "--set", "train.steps=-1"]) == 2  # a test, a notebook: no server of ours
    assert "train.steps" in capsys.readouterr().err


@pytest.mark.e2e
@pytest.mark.slow  # a second temporary server for the Dask-on-other-machines case (about 20 s): -m slow
def test_a_withdrawn_server_is_stopped_and_prefect_left_as_it_was(monkeypatch):
    """What a run whose Dask workers are on other machines does: they could not reach 127.0.0.1."""
    import prefect.context

    from winnow.prefect_server import TemporaryServer

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    saved = prefect.context.GLOBAL_SETTINGS_CONTEXT
    try:
        server = TemporaryServer()
        assert os.environ["PREFECT_API_URL"] == server.api_url
        assert prefect.context.GLOBAL_SETTINGS_CONTEXT.settings.api.url == server.api_url  # Prefect reread it
        server.ready(120)
        port = server.port
        server.withdraw()
        assert "PREFECT_API_URL" not in os.environ
        assert prefect.context.GLOBAL_SETTINGS_CONTEXT.settings.api.url != server.api_url
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
    finally:
        prefect.context.GLOBAL_SETTINGS_CONTEXT = saved
