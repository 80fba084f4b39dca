"""The summary of a run: the uniform target, steps to reach it, what each policy selected.

Plain functions over the metric files the stages write; plots with matplotlib (Agg).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from winnow.errors import MissingInput


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        raise MissingInput(f"{path}: missing; run the train stage for this policy first")
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def steps_to_target(curve: list[dict], target: float, metric: str = "accuracy") -> int | None:
    """First eval step whose metric is at or above the target; None if never."""
    return next((int(row["step"]) for row in curve if row[metric] >= target), None)


NOISE_WORDS = {"noisy_label": "wrong labels kept", "mismatched_caption": "mismatched kept"}


def summarize(
    curves: dict[str, list[dict]],
    trained: dict[str, dict],
    evaluated: dict[str, dict],
    pool_mix: dict[str, float],
    uniform_steps: int,
    metric: str = "accuracy",
    noise: str = "noisy_label",
) -> dict:
    """`metric` is the eval-log column the target is set on; `noise` the pathology whose selected share is reported."""
    target = curves["uniform"][-1][metric]
    policies = {}
    for policy, curve in curves.items():
        reached = steps_to_target(curve, target, metric)
        mix = trained[policy]["selected_mix"]
        policies[policy] = {
            "final_metric": curve[-1][metric],
            "best_metric": max(row[metric] for row in curve),
            "steps_to_target": reached,
            "step_ratio": reached / uniform_steps if reached is not None else None,
            f"{noise}_fraction_selected": mix.get(noise, 0.0) if pool_mix else None,
            "selected_mix": mix,
            "probe_accuracy": {  # per transfer task, when evaluated
                k.removesuffix("_probe_accuracy"): v
                for k, v in evaluated.get(policy, {}).items()
                if k.endswith("_probe_accuracy")
            },
            "train_seconds": trained[policy]["seconds"],
        }
    return {
        "metric": f"test_{metric}",
        "target": target,
        "uniform_steps": uniform_steps,
        "noise": noise,
        f"pool_{noise}_fraction": pool_mix.get(noise, 0.0) if pool_mix else None,
        "pool_mix": pool_mix,
        "policies": policies,
    }


def table(summary: dict) -> str:
    """The summary as a fixed-width table, for the terminal and the report."""
    noise = summary["noise"]
    tasks = sorted({t for row in summary["policies"].values() for t in row.get("probe_accuracy", {})})
    lines = [
        f"target: uniform's final {summary['metric']} = {summary['target']:.4f} after {summary['uniform_steps']} steps; "
        f"pool {noise} rate {_num(summary[f'pool_{noise}_fraction'], 'unknown', 3)}",
        f"{'policy':<16}{'final':>10}{'steps to target':>17}{'step ratio':>12}{'FLOP ratio':>12}{'time ratio':>12}"
        f"{NOISE_WORDS[noise]:>19}" + "".join(f"{t + ' probe':>15}" for t in tasks),
    ]
    for policy, row in summary["policies"].items():
        ratio = f"{row['step_ratio']:.2f}x" if row["step_ratio"] is not None else "never"
        steps = str(row["steps_to_target"]) if row["steps_to_target"] is not None else "-"
        probes = "".join(f"{_num(row.get('probe_accuracy', {}).get(t), '-', 3):>15}" for t in tasks)
        flops, clock = _num(row.get("flop_ratio_full")), _num(row.get("time_ratio_full"))
        lines.append(
            f"{policy:<16}{row['final_metric']:>10.4f}{steps:>17}{ratio:>12}{flops:>12}{clock:>12}"
            f"{_num(row[f'{noise}_fraction_selected'], '-', 3):>19}{probes}"
        )
    lines.append(
        "FLOP ratio, time ratio: FLOPs and seconds to the target over uniform's whole run, "
        "the reference's training and the pool's scoring counted in full"
    )
    return "\n".join(lines)


def plot_curves(curves: dict[str, list[dict]], target: float, path: Path, metric: str = "accuracy") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for policy, curve in curves.items():
        ax.plot(
            [r["step"] for r in curve],
            [r[metric] for r in curve],
            label=policy,
            lw=2 if policy in ("uniform", "learnability") else 1.2,
        )
    ax.axhline(target, color="grey", ls="--", lw=1, label="target (uniform final)")
    ax.set_xlabel("learner step")
    ax.set_ylabel(f"held-out {metric}")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_mix(summary: dict, path: Path) -> None:
    """Stacked bars: the pathology mix of the pool and of each policy's selected batches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k, v in summary["pool_mix"].items() if v > 0]
    rows = {"pool": summary["pool_mix"], **{p: r["selected_mix"] for p, r in summary["policies"].items()}}
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    left = np.zeros(len(rows))
    for kind in kinds:
        values = np.array([rows[r].get(kind, 0.0) for r in rows])
        ax.barh(list(rows), values, left=left, label=kind)
        left += values
    ax.set_xlabel("fraction of examples")
    ax.invert_yaxis()
    ax.legend(frameon=False, fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(summary: dict, curves: dict[str, list[dict]], paths, params) -> Path:
    """reports/<dataset>/<objective>.md with the table and the plots; regenerate with `winnow summary`."""
    plots, path = paths.plots, paths.report
    link = Path(os.path.relpath(plots, path.parent)).as_posix()  # the report's images, relative to where it lives
    metric = summary["metric"].removeprefix("test_")
    plot_curves(curves, summary["target"], plots / "accuracy.png", metric)
    if summary["pool_mix"]:
        plot_mix(summary, plots / "selected_mix.png")
    ref = summary.get("reference", {})
    text = f"""# winnow run: {params.objective}

Dataset `{params.data.root}`. The learner ({params.train.model}, {params.objective}) trained {params.train.steps} steps of batch {params.train.batch_size} under each policy,
keeping {params.train.keep_fraction:.0%} of each super-batch of {params.train.super_batch_size} {_selection_words(params)}, scored by {_actor_words(params)}. The reference ({params.reference.model},{f" at {params.score.resolution} px," if params.score.resolution else ""}
{ref.get("final_metric", float("nan")):.3f} held-out {ref.get("test_metric", "accuracy").replace("_", " ")}) learned from {ref.get("train_examples", "?")} curated examples.
Target: uniform's final held-out {metric.replace("_", " ")}. step ratio = steps to reach it / uniform's {params.train.steps} steps.

```
{table(summary)}
```

![held-out accuracy per step]({link}/accuracy.png)

{f"![what each policy selected]({link}/selected_mix.png)" if summary["pool_mix"] else "(The data records no pathology, so what each policy selected cannot be broken down.)"}

{_curate_section(summary, paths, path)}
Regenerate: `winnow pipeline` (everything) or `winnow summary` (this page, from the metrics on disk).
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _curate_section(summary: dict, paths, report_path: Path) -> str:
    """The run report's look at the data: what `winnow curate` kept and refused, when it ran."""
    record = summary.get("curate")
    if not record:
        return ""
    link = Path(os.path.relpath(paths.curate_plots, report_path.parent)).as_posix()
    curate_report = Path(os.path.relpath(paths.curate_report, report_path.parent)).as_posix()
    noise = record["pathology"].get(summary["noise"])
    how = f"{record['fraction']:.0%} of the pool" if record["fraction"] is not None else "what cleanlab keeps"
    noisy = (
        f", {noise['kept']:,} of its {noise['pool']:,} {summary['noise'].replace('_', ' ')} examples among them" if noise else ""
    )
    return f"""## What curation kept

`winnow curate` (rule `{record["rule"]}`, {how}) kept {record["kept_rows"]:,} of {record["pool_rows"]:,} pool examples{noisy}
([curate report]({curate_report}); the curated dataset: `{record["dest"]}`). A random sample of each side:

![kept examples]({link}/kept.png)

![dropped examples]({link}/dropped.png)
"""


def _trains_on(setting: str) -> str:
    return "kept batch" if setting == "kept" else "whole super-batch"


def _actor_words(params) -> str:
    if params.train.actor == "learner":
        return "the learner's own loss (train.actor: learner)"
    at = f" at {params.train.score_resolution} px" if params.train.score_resolution else ""
    return f"the loss of a {params.train.actor} actor{at} trained alongside it on each {_trains_on(params.train.actor_trains_on)}"


def _selection_words(params) -> str:
    """How a policy keeps its batch, in words."""
    cfg = params.train
    how = {
        "topk": "(the top scores)",
        "softmax": f"(sampled from softmax(score / {cfg.temperature:g}))",
        "jest": f"(jointly, JEST: in {cfg.jest_chunks} chunks, each later one by the scores conditioned on those chosen, "
        f"sampled at temperature {cfg.temperature:g})",
    }[cfg.selection]
    return how


def _num(value: float | None, missing: str = "-", digits: int = 2) -> str:
    return missing if value is None else f"{value:.{digits}f}"


def _plain(stat: dict) -> str:
    """mean ± std of a metric every run has (accuracy, probe), three decimals."""
    return "-" if stat["mean"] is None else f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def _fmt(stat: dict) -> str:
    """mean ± std over the seeds that reached the target, and how many did."""
    if stat["mean"] is None:
        return f"never (0/{stat['runs']})"
    text = f"{stat['mean']:.2f} ± {stat['std']:.2f}"
    return text + (f" ({stat['reached']}/{stat['runs']})" if stat["reached"] < stat["runs"] else "")


def bench_table(result: dict) -> str:
    noise = result["noise"]
    tasks = sorted({t for row in result["policies"].values() for t in row.get("probe_accuracy", {})})
    lines = [
        f"{'policy':<16}{'step_ratio':>16}{'flop_ratio_full':>18}{'flop_ratio_amortised':>22}{'time_ratio_full':>18}"
        f"{'time_ratio_amortised':>22}{NOISE_WORDS[noise]:>19}{'final':>16}" + "".join(f"{t + ' probe':>18}" for t in tasks)
    ]
    for policy, row in result["policies"].items():
        probes = "".join(f"{_plain(row['probe_accuracy'][t]):>18}" for t in tasks)
        lines.append(
            f"{policy:<16}{_fmt(row['step_ratio']):>16}{_fmt(row['flop_ratio_full']):>18}{_fmt(row['flop_ratio_amortised']):>22}"
            f"{_fmt(row['time_ratio_full']):>18}{_fmt(row['time_ratio_amortised']):>22}{row[f'{noise}_fraction_selected']['mean']:>19.3f}"
            f"{_plain(row['final_metric']):>16}{probes}"
        )
    return "\n".join(lines)


def plot_bench(curves: dict[str, list[dict]], targets: list[float], metric: str, folder: Path) -> None:
    """Held-out metric against learner steps and against FLOPs (reference counted in full), seed means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = float(np.mean(targets))
    for x, label, name in (
        ("step", "learner step", "bench_steps.png"),
        ("flops_over_uniform_full", "FLOPs / uniform's total FLOPs (reference counted in full)", "bench_flops.png"),
    ):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for policy, rows in curves.items():
            ax.plot(
                [r[x] for r in rows],
                [r[metric] for r in rows],
                label=policy,
                lw=2 if policy in ("uniform", "learnability") else 1.2,
                marker="." if x != "step" else None,
            )
        ax.axhline(target, color="grey", ls="--", lw=1, label="target (uniform final, mean)")
        if x != "step":
            ax.axvline(1.0, color="grey", ls=":", lw=1)
        ax.set_xlabel(label)
        ax.set_ylabel(f"held-out {metric.replace('_', ' ')} (mean over seeds)")
        ax.legend(frameon=False)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        folder.mkdir(parents=True, exist_ok=True)
        fig.savefig(folder / name, dpi=120)
        plt.close(fig)


def write_bench_report(result: dict, curves: dict[str, list[dict]], metric: str, paths) -> Path:
    """reports/<dataset>/bench-<objective>.md: the verdict, the ledger and the systems figures, each with its command."""
    plots, path = paths.bench_plots, paths.bench_report
    plot_bench(curves, result["targets"], metric, plots)
    link = Path(os.path.relpath(plots, path.parent)).as_posix()
    objective, n = result["objective"], len(result["seeds"])
    command = f"uv run winnow bench --objective {objective}" + (
        f" --set data.root={result['data']}" if result.get("data") not in (None, "data/synthetic") else ""
    )
    learn = result["policies"].get("learnability", {})
    full, amort = learn.get("flop_ratio_full", {}).get("mean"), learn.get("flop_ratio_amortised", {}).get("mean")
    clock = learn.get("time_ratio_full", {}).get("mean")

    def verdict(value, what):
        if value is None:
            return f"learnability never reached the target, so {what} it saved nothing."
        return f"learnability needed **{value:.2f}x** uniform's FLOPs {what}: " + (
            "compute-positive." if value < 1 else "**not** compute-positive."
        )

    ledger_rows = "\n".join(
        f"| {p} | {c['reference_training']:.3g} | {c['pool_scoring']:.3g} | {c['actor_scoring_per_step']:.3g} | "
        f"{c['actor_training_per_step']:.3g} | {c['learner_training_per_step']:.3g} | "
        f"{c.get('reference_logits_per_step', 0.0):.3g} |"
        for p, c in result["ledger_seed0"].items()
    )
    systems = result["systems"]
    step_time = ", ".join(f"{p} {_fmt(v)}" for p, v in systems["step_time_over_ledger"].items())
    text = f"""# winnow bench: {objective}

**What was run.** A {result["learner"]} learner trained under each policy on the same pool, with
{n} seeds ({", ".join(map(str, result["seeds"]))}); the reference is {result["reference"]}, trained on the curated set, and the
actor (whose loss scores each super-batch for hard_learner and learnability) is {result["actor"]}, trained on the
{_trains_on(result["actor_trains_on"])}.
The target is the uniform run's final held-out {metric.replace("_", " ")} *in the same seed*; each ratio is
measured within a seed, then averaged (mean ± standard deviation over seeds). Regenerate everything
on this page with `{command}`.

**Verdict.** With the reference's one-off cost (its training and the pool scoring) counted in full,
{verdict(full, "with the reference counted in full")} Amortised over {result["amortise_over"]} runs that reuse the same
reference and scores, {verdict(amort, f"amortised over {result['amortise_over']} runs")} On the clock, reference training
and pool scoring counted in full, learnability took {_num(clock, "(never reached)")}x uniform's seconds.

## Steps and FLOPs to reach uniform's final {metric.replace("_", " ")}

step_ratio = steps to the target / uniform's steps; flop_ratio = FLOPs to the target / uniform's total
FLOPs; time_ratio = seconds to the target / uniform's training seconds, measured (evaluation excluded
from both). The last column is the share of {result["noise"].replace("_", " ")} examples in the batches each policy trained on
(the pool has {_num(result[f"pool_{result['noise']}_fraction"], "an unknown share", 3)}); final is the held-out
{metric.replace("_", " ")} after every step, and each *task* probe the linear-probe accuracy of the final learner's
frozen features on that transfer task (eval/*task*/), when the data has one.

```
{bench_table(result)}
```

![held-out metric per learner step]({link}/bench_steps.png)

![held-out metric per FLOP]({link}/bench_flops.png)

## The ledger (seed {result["seeds"][0]}, FLOPs)

Forward FLOPs per example measured with `torch.utils.flop_counter.FlopCounterMode`; a backward pass
counts twice its forward. The first two lines are paid once per reference; the others every step
(the last, JEST's reference logits from stored embeddings, is zero for per-example selection).

| policy | reference training | pool scoring | actor scoring / step | actor training / step | learner training / step | reference logits / step |
|---|---|---|---|---|---|---|
{ledger_rows}

How the saving moves with the size of the scorers and of the learner: `uv run winnow bench --study scorers`
and `--study learners` (reports beside this one).

## Systems figures (each a ratio measured in one run)

- Scoring throughput over the bare forward pass of the same model on the same shard (decoding,
  Parquet and DuckDB included; 1.0 is no overhead): {_fmt(systems["scoring_over_bare_forward"])}.
- Learner wall time per step over what the ledger predicts from FLOPs (relative to uniform's step):
  {step_time}.
- DuckDB ingest: {_fmt(systems["ingest_rows_per_s"])} rows/s.

All of it: `{command}`; the numbers are in `{(paths.bench / f"{objective}.json").as_posix()}`, the curves in
`{(paths.bench / objective / "curves").as_posix()}/` (`dvc plots show` draws them).
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


STUDY_WORDS = {
    "scorers": (
        "scorer",
        "Scorer size: one learner, its reference and actor (the same model) from far smaller than it to its own size.",
        "reference and actor",
    ),
    "learners": ("learner", "Learner size: one small scorer (reference and actor), learners of growing size.", "learner"),
}


def study_table(result: dict) -> str:
    if result["study"] == "jest":
        return jest_table(result)
    if result["study"] == "curate":
        return curate_study_table(result)
    key = STUDY_WORDS[result["study"]][0]
    lines = [
        f"| {key} | learner forward MFLOPs | scorer FLOPs / learner's | reference held-out | step_ratio | flop_ratio_full "
        "| time_ratio_full | flop_ratio_amortised | time_ratio_amortised |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r[key]} | {r['learner_forward_flops'] / 1e6:.1f} | {r['scorer_flops_over_learner']:.3f} | "
            f"{_fmt3(r['reference_test_metric'])} | {_fmt(r['step_ratio'])} | {_fmt(r['flop_ratio_full'])} | "
            f"{_fmt(r['time_ratio_full'])} | {_fmt(r['flop_ratio_amortised'])} | {_fmt(r['time_ratio_amortised'])} |"
        )
    return "\n".join(lines)


def _fmt3(stat: dict) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}" if stat["mean"] is not None else "-"


def plot_study(result: dict, path: Path) -> None:
    """step, FLOP and time ratios (mean ± std over seeds) against the size on the study's axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = STUDY_WORDS[result["study"]][0]
    scorers = result["study"] == "scorers"
    x = [r["scorer_flops_over_learner"] if scorers else r["learner_forward_flops"] / 1e6 for r in result["rows"]]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for ratio, label in (
        ("step_ratio", "steps"),
        ("flop_ratio_full", "FLOPs, reference in full"),
        ("time_ratio_full", "seconds, reference in full"),
    ):
        mean = [r[ratio]["mean"] if r[ratio]["mean"] is not None else np.nan for r in result["rows"]]
        std = [r[ratio]["std"] if r[ratio]["std"] is not None else 0.0 for r in result["rows"]]
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=label)
    for xi, r in zip(x, result["rows"]):
        ax.annotate(
            r[key],
            (xi, 0.02),
            textcoords="offset points",
            xytext=(0, 4),
            ha="center",
            fontsize=8,
            xycoords=("data", "axes fraction"),
        )
    ax.axhline(1.0, color="grey", ls="--", lw=1, label="uniform")
    ax.set_xscale("log")
    ax.set_xlabel("scorer FLOPs / learner FLOPs per example" if scorers else "learner forward MFLOPs per example")
    ax.set_ylabel("learnability / uniform, to uniform's final metric")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def jest_table(result: dict) -> str:
    """--study jest: one row per arm (per-example learnability, JEST at each keep fraction and resolution)."""
    noise = next((k for k in result["rows"][0] if k.endswith("_fraction_selected")), None)
    lines = [
        "| arm | selection | keep | scoring px | step_ratio | flop_ratio_full | time_ratio_full | flop_ratio_amortised "
        f"| final {result['metric']} | {noise.removesuffix('_fraction_selected').replace('_', ' ') + ' kept' if noise else ''} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['arm']} | {r['selection']} | {r['keep_fraction']:g} | {r['score_resolution']} | {_fmt(r['step_ratio'])} | "
            f"{_fmt(r['flop_ratio_full'])} | {_fmt(r['time_ratio_full'])} | {_fmt(r['flop_ratio_amortised'])} | "
            f"{_fmt3(r['final_metric'])} | {_fmt3(r[noise]) if noise else '-'} |"
        )
    return "\n".join(lines)


def plot_jest(result: dict, path: Path, title: str = "JEST against per-example learnability and uniform") -> None:
    """The target metric against learner steps per arm (mean over seeds), uniform's final value dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = result["metric"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for arm, rows in result["curves"].items():
        dotted = arm.endswith("px") or ":" in arm or "full pool" in arm and arm != "uniform, full pool"  # another learner
        style = dict(color="black", lw=2) if arm.startswith("uniform") else dict(ls=":" if dotted else "-")
        ax.plot([r["step"] for r in rows], [r[metric] for r in rows], label=arm, **style)
    target = result["uniform_final_metric"]["mean"] if "uniform_final_metric" in result else None
    if target is not None:
        ax.axhline(target, color="grey", ls="--", lw=1)
    ax.set_xlabel("learner step")
    ax.set_ylabel(f"{metric} (mean over seeds)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_study_report(result: dict, paths) -> Path:
    """reports/<dataset>/bench-<objective>-<study>.md: the study's table and plot, with the command."""
    study, objective = result["study"], result["objective"]
    path = paths.bench_report.with_name(f"bench-{objective}-{study}.md")
    plot = paths.bench_plots / f"study_{study}.png"
    if study == "jest":
        return _write_jest_report(result, paths, path, plot)
    if study == "curate":
        return _write_curate_study_report(result, paths, path, plot)
    plot_study(result, plot)
    link = Path(os.path.relpath(plot, path.parent)).as_posix()
    who = f"The learner is {result['learner']}" if study == "scorers" else f"The reference and the actor are {result['scorer']}"
    text = f"""# winnow bench: {objective}, {study}

{STUDY_WORDS[study][1]} {who}; the actor trains on the {_trains_on(result["actor_trains_on"])}.
Each row: learnability against uniform on the same learner and seed, {result["steps"]} steps; seeds
{", ".join(map(str, result["seeds"]))} (mean ± std over seeds; a count in brackets when some seeds never reached the target).
Ratios are to uniform's final held-out metric: steps, FLOPs and measured seconds, the reference's
training and the pool's scoring counted in full (and amortised over {result["amortise_over"]} runs in the last two columns).

{study_table(result)}

![ratios against size]({link})

Regenerate: `uv run winnow bench --objective {objective} --study {study}`; the numbers, every run included,
are in `{(paths.bench / f"{objective}-{study}.json").as_posix()}`.
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _write_jest_report(result: dict, paths, path: Path, plot: Path) -> Path:
    plot_jest(result, plot)
    link = Path(os.path.relpath(plot, path.parent)).as_posix()
    text = f"""# winnow bench: {result["objective"]}, JEST

Joint example selection (JEST, `train.selection: jest`) against per-example learnability and uniform, on a
{result["learner"]} learner, seeds {", ".join(map(str, result["seeds"]))}, {result["steps"]} steps each. Each row is
learnability (per example, or JEST's joint batches) against uniform in the same seed; the ratios are to
uniform's final {result["metric"]} ({_fmt3(result["uniform_final_metric"])}): steps, FLOPs and measured seconds,
the reference's training and the pool's scoring counted in full (FLOPs also amortised over
{result["amortise_over"]} runs). "scoring px": the resolution the reference and the actor learn and score at
(the learner always trains at full size); a lower one is counted at the FLOPs it costs. Mean ± std over
seeds; a count in brackets when some seeds never reached the target.

{jest_table(result)}

![target metric per learner step]({link})

Regenerate: `uv run winnow bench --objective {result["objective"]} --study jest`; the numbers, every run
included, are in `{(paths.bench / f"{result['objective']}-jest.json").as_posix()}`.
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def curate_study_table(result: dict) -> str:
    """--study curate: one row per arm, each against uniform on the full pool with the same learner and seed."""
    noise = f"{result['noise']}_fraction_selected"
    lines = [
        f"| arm | learner | kept rows | step_ratio | flop_ratio_full | time_ratio_full | flop_ratio_amortised | "
        f"time_ratio_amortised | final {result['metric']} | uniform's final (target) | {result['noise'].replace('_', ' ')} in batches |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['arm']} | {r['learner']} | {r['kept_rows']['mean']:,.0f} | {_fmt(r['step_ratio'])} | {_fmt(r['flop_ratio_full'])} | "
            f"{_fmt(r['time_ratio_full'])} | {_fmt(r['flop_ratio_amortised'])} | {_fmt(r['time_ratio_amortised'])} | "
            f"{_fmt3(r['final_metric'])} | {_fmt3(r['target'])} | {_fmt3(r[noise]) if r[noise]['mean'] is not None else '-'} |"
        )
    return "\n".join(lines)


def _write_curate_study_report(result: dict, paths, path: Path, plot: Path) -> Path:
    plot_jest(result, plot, "curated pools against the full pool and online learnability")
    link = Path(os.path.relpath(plot, path.parent)).as_posix()
    peer = {
        "cleanlab": "cleanlab's `find_label_issues` on the reference's predicted probabilities for the pool (out of sample: "
        "it learned from the curated set only), then uniform training on what it does not flag",
        "clip_score": "DataComp's CLIP-score filter: the pairs with the highest image-text similarity under the reference, "
        "then uniform training",
    }.get(result["peer_rule"], result["peer_rule"])
    peer_words = f"; the peer a user would pick instead is {peer} (row `{result['peer_rule']}`)" if result["peer_rule"] else ""
    transfer = result["transfer_learner"]
    transfer_words = (
        f", and {transfer}, another learner family, on the full pool and on the same curated pool (rows naming it; its "
        "target is its own uniform run on the full pool)"
        if transfer
        else ""
    )
    text = f"""# winnow bench: {result["objective"]}, curate

Curate once, then train plainly. Per seed ({", ".join(map(str, result["seeds"]))}): the {result["reference"]} reference learns
from the curated set and scores the pool once; `winnow curate` keeps a fraction of the pool by rule `{result["rule"]}`
(rows `{result["rule"]}-<fraction>`){peer_words}; the {result["learner"]} learner then trains {result["steps"]} steps,
uniformly, on each curated pool. Beside them: online learnability on the full pool (the paper's method){transfer_words}.

Every ratio is to uniform on the full pool, same learner and seed, to reach its final {result["metric"]}: steps,
FLOPs and measured seconds. A curated run pays the reference's training, the pool's scoring and any further pass
over the pool (cleanlab's probabilities) and curation's own seconds, in full (and amortised over
{result["amortise_over"]} runs in the `amortised` columns). Mean ± std over seeds; a count in brackets when some
seeds never reached the target.

{curate_study_table(result)}

![target metric per learner step]({link})

Regenerate: `uv run winnow bench --objective {result["objective"]} --study curate`; the numbers, every run
included, are in `{(paths.bench / f"{result['objective']}-curate.json").as_posix()}`.
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------- curate: what was kept, and what was refused


def plot_examples(rows: list[tuple], path: Path, title: str, columns: int = 8) -> None:
    """An image grid: each tile an example, captioned with its label or caption, score and pathology."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows = max(1, -(-len(rows) // columns))
    fig, axes = plt.subplots(n_rows, columns, figsize=(columns * 1.45, n_rows * 2.05), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (image, text, score, pathology) in zip(axes.ravel(), rows):
        ax.imshow(image, interpolation="nearest")
        text = text if len(text) <= 22 else text[:21] + "…"
        kind = "" if pathology in (None, "clean") else f"\n[{pathology}]"
        ax.set_title(f"{text}\n{score:.2f}{kind}", fontsize=6.5, color="firebrick" if kind else "black")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curate_table(record: dict) -> str:
    """Per pathology (where the data records it) and per class: pool rows, rows kept, share kept."""
    lines = ["| pathology | pool | kept | share kept |", "|---|---|---|---|"]
    for kind, row in record["pathology"].items():
        lines.append(f"| {kind} | {row['pool']:,} | {row['kept']:,} | {row['kept_share']:.2f} |")
    if not record["pathology"]:
        lines = ["(The data records no pathology.)"]
    lines += ["", "| class | pool | kept | share kept |", "|---|---|---|---|"]
    for name, row in record["classes"].items():
        lines.append(f"| {name} | {row['pool']:,} | {row['kept']:,} | {_num(row['kept_share'])} |")
    return "\n".join(lines)


CURATE_RULES = {
    "easy_reference": "the reference's lowest losses (score: minus the reference's loss)",
    "learnability": "the highest learnability (score: the checkpoint's loss minus the reference's)",
    "clip_score": "DataComp's CLIP-score filter (score: the reference's image-text cosine similarity)",
    "cleanlab": "what cleanlab's find_label_issues does not flag on the reference's predicted probabilities "
    "(score: the reference's probability of the given label)",
}


def write_curate_report(record: dict, examples: dict[str, list[tuple]], paths) -> Path:
    """reports/<dataset>/curate-<objective>.md: what was kept, by class and pathology, and two image grids."""
    plots, path = paths.curate_plots, paths.curate_report
    link = Path(os.path.relpath(plots, path.parent)).as_posix()
    for side in ("kept", "dropped"):
        plot_examples(examples[side], plots / f"{side}.png", f"{side} (a random sample; score above, pathology in red)")
    fraction = f"{record['fraction']:.0%} of the pool" if record["fraction"] is not None else "what cleanlab keeps"
    balanced = ", the same fraction of each class" if record["balance"] else ""
    checkpoint = (
        f" The checkpoint: the {record['checkpoint_scorer']} ({record['checkpoint_model']}) of `{record['checkpoint']}`."
        if "checkpoint" in record
        else ""
    )
    text = f"""# winnow curate: {record["objective"]}

Source `{record["source"]}`: {record["pool_rows"]:,} pool examples scored by {record["reference_model"]} (scorer `{record["scorer_id"]}` in the store).
Rule `{record["rule"]}`: keep {fraction}{balanced}, ranked by {CURATE_RULES[record["rule"]]}.{checkpoint}
Kept {record["kept_rows"]:,} ({record["kept_fraction"]:.1%}), written to `{record["dest"]}` in the data contract
(ids renumbered from 0, the pool id in `source_id`; `kept_ids.npy` lists the pool ids kept, sorted).
Train on it with `--set data.root={record["dest"]}`.

{curate_table(record)}

![kept examples]({link}/kept.png)

![dropped examples]({link}/dropped.png)

Regenerate: `winnow curate` ({record["seconds"]:.0f} s here).
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
