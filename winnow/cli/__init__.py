"""`winnow`: every stage from the command line, each run as its Prefect flow.

DVC stages call these same commands, so `dvc repro` and `winnow pipeline` run the
same code. Prefect runs in ephemeral mode unless PREFECT_API_URL is set. The commands and their options are
cli/parser.py's; what each does is cli/commands.py's; this module is the entry point (`winnow`, `python -m winnow.cli`).
"""

from __future__ import annotations

import logging
import os
import sys

from winnow.errors import FIXABLE, WinnowError, os_error_line


def _quiet_env() -> None:
    """No telemetry (there is no network), and winnow's own log lines in the Prefect logs."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "winnow")
    os.environ.setdefault(
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore"
    )  # winnow's lines outside a flow (torchrun ranks, bench --memory)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60")


# The commands that run a Prefect flow in this process (not serve: it needs a server of its own; not figures, import,
# corrupt, mnist: no flow)
FLOW_COMMANDS = ("data", "reference", "score", "train", "curate", "evaluate", "summary", "pipeline", "bench")


def start_prefect_early(argv: list[str]):
    """Prefect's temporary server, started before torch and the stage are imported (winnow/prefect_server.py), for
    a command that runs a flow with no Prefect server set; None for any other, for --help, under torchrun (its
    ranks run bare), and with WINNOW_PREFECT_EARLY=0."""
    command = argv[0] if argv else None
    if (
        command not in FLOW_COMMANDS
        or (command == "data" and argv[1:2] != ["synth"])
        or {"-h", "--help", "--report-only"} & set(argv)
        or os.environ.get("PREFECT_API_URL")
        or int(os.environ.get("WORLD_SIZE", "1")) > 1
        or os.environ.get("WINNOW_ARM_WORKER") == "1"  # one arm of several at once: it runs bare (tasks/launch.py)
        or os.environ.get("WINNOW_PREFECT_EARLY") == "0"  # Prefect starts it, when the flow asks (benchmarks/stage_startup.py)
    ):
        return None
    from winnow import prefect_server

    return prefect_server.TemporaryServer() if prefect_server.wanted() else None


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a failed run with its traceback; for winnow's own errors (a wrong input, named in
    the message) the message is the whole story, so their traceback is dropped from the log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, WinnowError) or (isinstance(error, OSError) and error.errno in FIXABLE):
            record.exc_info, record.exc_text = None, None
        return True


def main(argv: list[str] | None = None) -> int:
    entry_point, argv = argv is None, sys.argv[1:] if argv is None else list(argv)
    _quiet_env()  # before the server starts: it reads the environment
    # from the shell only: main() called in a Python process (a test, a notebook) leaves Prefect as it finds it
    server = start_prefect_early(argv) if entry_point else None
    from winnow.cli.commands import COMMANDS, _data_files, _figures, _stage
    from winnow.cli.parser import parser

    args = parser().parse_args(argv)
    if args.command == "figures":
        try:
            return _figures(args)
        except WinnowError as e:  # a figure's committed file that is not there, named
            print(f"winnow: error: {e}", file=sys.stderr)
            return 2
    if args.command == "data" and args.data_command in ("import", "corrupt", "mnist"):
        return _data_files(args)
    if args.objective:
        args.overrides = [f"objective={args.objective}", *args.overrides]
    if args.command == "bench":
        args.study = (
            "curate" if args.curate else "memory" if args.memory else "import_memory" if args.import_memory else args.study
        )
        args.overrides += [f"bench.memory_scale={args.scale}"] if args.scale is not None else []
    # Libraries (open_clip, httpx...) log chatter at INFO on the root logger; winnow's own lines stay.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("winnow").setLevel(logging.INFO)
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).addFilter(_NoTracebackForUserErrors())
    if server is not None:  # the temporary server serves no UI: no link to it
        logging.getLogger("prefect.flow_runs").addFilter(lambda r: not r.getMessage().startswith("View at "))
    from winnow.config import load_params

    try:
        params = load_params(args.params, args.overrides)  # once, up front: a wrong param fails before any flow starts
        if server is not None and params.score.dask_address:
            server.withdraw()  # Dask workers on other machines could not reach it at 127.0.0.1
            server = None
        if server is not None:
            import flows.pipeline  # noqa: F401  what every flow command imports, while the server starts

            server.ready(float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
            logging.getLogger("winnow").info(
                "Prefect: a temporary server at %s for this run (set PREFECT_API_URL to use your own)", server.api_url
            )
        COMMANDS.get(args.command, _stage)(args, params)
    except WinnowError as e:  # a wrong input, named in the message; anything else is a bug and keeps its traceback
        print(f"winnow: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in FIXABLE:
            raise
        print(f"winnow: error: {os_error_line(e)}", file=sys.stderr)
        return 2
    return 0
