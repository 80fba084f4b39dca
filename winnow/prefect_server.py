"""Prefect's temporary server, started as the CLI's first act.

With no API URL set, Prefect starts a temporary server in each process that runs a flow, when the flow first asks
for it: after the process has imported torch and the stage, then about 3 s importing the server's modules, then
about 4.5 s while the server's own process starts. Each `dvc repro` stage is such a process, twelve of them for the
default pipeline. winnow starts the same server (Prefect's uvicorn app, in its ephemeral mode, with no UI) before
it imports anything heavy, so the server starts up on another core while winnow imports, and sets PREFECT_API_URL
to it for this process and its children. It is stopped at exit, as Prefect stops its own.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

STARTUP_FAILED = 3  # uvicorn's exit code when it could not start: its port taken since we chose it, or the app failed
RELAUNCHES = 3  # on another port each time; then the failure is said


def wanted() -> bool:
    """Whether this process would start a temporary server: Prefect has no API URL (environment, profile or an
    active test harness) and allows ephemeral mode."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    return not settings.api.url and settings.server.ephemeral.enabled


def _point_prefect_at(api_url: str | None) -> None:
    """Set (or unset) PREFECT_API_URL for this process and its children, and have Prefect reread its settings, which
    it read when first imported."""
    if api_url:
        os.environ["PREFECT_API_URL"] = api_url
    else:
        os.environ.pop("PREFECT_API_URL", None)
    import prefect.context

    refresh = getattr(prefect.context, "refresh_global_settings_context", None)  # Prefect 3.6 and later
    if refresh is not None:
        refresh()
    else:
        prefect.context.GLOBAL_SETTINGS_CONTEXT = prefect.context.root_settings_context()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TemporaryServer:
    """Prefect's temporary server in a process of its own; `ready()` waits for it to answer."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.relaunches = 0
        self._launch()
        atexit.register(self.stop)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _launch(self) -> None:
        import prefect

        self.port = _free_port()
        app = ("--app-dir", str(Path(prefect.__file__).parent.parent), "--factory", "prefect.server.api.server:create_app")
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", *app, "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error"]
            + ["--lifespan", "on"],
            env=env,
        )
        _point_prefect_at(self.api_url)

    def ready(self, timeout: float) -> None:
        """Wait until the server answers its health check; a start that failed is retried on another port, a few
        times."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code == STARTUP_FAILED and self.relaunches < RELAUNCHES:
                self.relaunches += 1
                self._launch()
            elif code is not None:
                raise RuntimeError(
                    f"Prefect's temporary server exited with code {code} before it answered (3: it could not start; "
                    "its own lines above say why); or run one with `prefect server start` and set PREFECT_API_URL"
                )
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise RuntimeError(
            f"Prefect's temporary server did not answer within {timeout:.0f} s "
            "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); or run one with `prefect server start` and set PREFECT_API_URL"
        )

    def withdraw(self) -> None:
        """Stop the server and leave Prefect as it was, to start its own where a flow asks (a run whose Dask workers
        on other machines could not reach this one at 127.0.0.1)."""
        self.stop()
        _point_prefect_at(None)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
