"""Tables of results, for the terminal and the Markdown reports: plain functions over the JSON the stages and studies write."""

from __future__ import annotations

from winnow.method.policies import POLICIES

NOISE_WORDS = {"noisy_label": "wrong labels kept", "mismatched_caption": "mismatched kept"}


STUDY_WORDS = {
    "scorers": (
        "scorer",
        "Scorer size: one learner, its reference and actor (the same model) from far smaller than it to its own size.",
        "reference and actor",
    ),
    "learners": ("learner", "Learner size: one small scorer (reference and actor), learners of growing size.", "learner"),
}


def number(value: float | None, missing: str = "-", digits: int = 2) -> str:
    return missing if value is None else f"{value:.{digits}f}"


def mean_std(stat: dict) -> str:
    """mean ± std of a metric every run has (accuracy, probe), three decimals; '-' when there is none."""
    return "-" if stat["mean"] is None else f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def ratio(stat: dict) -> str:
    """geometric mean and 95% interval (studies/runs.spread, on the log scale) over the seeds that reached the target
    (± std where no interval was kept: a result written before intervals were), and how
    many of how many runs reached it. Where some never did, the mean of those that did would flatter the arm (the
    others' ratio is above any of theirs), so each seed's value is shown instead, and no interval."""
    if stat["mean"] is None:
        return f"never (0/{stat['runs']})"
    if stat["reached"] < stat["runs"] and stat.get("values"):
        each = ", ".join("never" if v is None else f"{v:.2f}" for v in stat["values"])
        return f"{each} ({stat['reached']}/{stat['runs']})"
    if stat.get("low") is not None:
        text = f"{stat['mean']:.2f} [{stat['low']:.2f}, {stat['high']:.2f}]"
    elif stat["runs"] == 1:  # one seed: no spread to give, said so (not a "± 0.00" that reads as a certainty)
        return f"{stat['mean']:.2f} (1 seed)"
    else:
        text = f"{stat['mean']:.2f} ± {stat['std']:.2f}"
    return text + f" ({stat['reached']}/{stat['runs']})"


def baseline_first(rows: dict) -> list[tuple]:
    """A policy table's rows in the registry's order (JSON keeps them sorted): uniform, the other baselines, then
    the selection policies; a name the registry does not know last."""
    order = {name: i for i, name in enumerate(POLICIES)}
    return sorted(rows.items(), key=lambda item: order.get(item[0], len(order)))


def table(summary: dict) -> str:
    """The summary as a fixed-width table, for the terminal and the report."""
    noise = summary["noise"]
    tasks = sorted({t for row in summary["policies"].values() for t in row.get("probe_accuracy", {})})
    lines = [
        f"target: uniform's {summary.get('curve_metric', summary['metric'])}, mean of its last {summary['target_window']} evaluations = {summary['target']:.4f} "
        f"(of {summary['uniform_steps']} steps); pool {noise} rate {number(summary[f'pool_{noise}_fraction'], 'unknown', 3)}",
        f"{'policy':<18}{'final test':>11}{'steps to target':>17}{'step ratio':>12}{'FLOP ratio':>12}{'time ratio':>12}"
        f"{NOISE_WORDS[noise]:>19}" + "".join(f"{t + ' probe':>15}" for t in tasks),
    ]
    for policy, row in baseline_first(summary["policies"]):
        ratio = f"{row['step_ratio']:.2f}x" if row["step_ratio"] is not None else "never"
        steps = f"{row['steps_to_target']:.0f}" if row["steps_to_target"] is not None else "-"
        probes = "".join(f"{number(row.get('probe_accuracy', {}).get(t), '-', 3):>15}" for t in tasks)
        flops, clock = number(row.get("flop_ratio_full")), number(row.get("time_ratio_full"))
        lines.append(
            f"{policy:<18}{row['final_metric']:>11.4f}{steps:>17}{ratio:>12}{flops:>12}{clock:>12}"
            f"{number(row[f'{noise}_fraction_selected'], '-', 3):>19}{probes}"
        )
    lines.append(
        "one rule for every arm, uniform included: steps to target is where the curve, smoothed over the same "
        f"{summary['target_window']} evaluations, reaches the target for good (interpolated); ratios are over uniform's own "
        "steps, FLOPs and seconds to it; the reference's training and the pool's scoring counted in full"
    )
    lines.append(
        "seconds: the median step's (after the warm-up) x the steps, plus the one-off"
        + (
            "; the pool's scoring seconds reused from the scorer's first run"
            if summary.get("ledger", {}).get("scoring_reused")
            else ""
        )
    )
    shares = {
        p: row["data_share_of_step"]
        for p, row in summary.get("ledger", {}).get("policies", {}).items()
        if "data_share_of_step" in row
    }
    if shares:
        policies = summary.get("ledger", {}).get("policies", {})
        delivered = {
            p: f" ({policies[p]['images_per_step']:.0f} images a step)" if "images_per_step" in policies[p] else ""
            for p in shares
        }
        lines.append(
            "waiting for data, share of the median step: "
            + ", ".join(f"{p} {v:.0%}{delivered[p]}" for p, v in baseline_first(shares))
        )
    evaluated = {p: row for p, row in summary.get("ledger", {}).get("policies", {}).items() if "eval_seconds" in row}
    if evaluated:
        lines.append(
            "evaluation, not in the seconds above (the validation curve; the test set read once): "
            + ", ".join(f"{p} {r['eval_seconds']:.1f} s; {r['test_seconds']:.1f} s" for p, r in baseline_first(evaluated))
        )
    if "verdict" in summary:
        lines += verdict_lines(summary)
    return "\n".join(lines)


def verdict_lines(summary: dict) -> list[str]:
    """Each selecting arm against the best baseline (not against uniform alone)."""
    best, against = summary["verdict"]["best_baseline"], summary["verdict"]["against_best"]
    lines = [f"best baseline: {best} (of {', '.join(summary['verdict']['baselines'])}: the fewest FLOPs to the target)"]
    for policy, row in against.items():
        if policy in summary["verdict"]["baselines"]:
            continue
        if row["flop_ratio"] is None:
            lines.append(f"  {policy}: never reached the target; final {row['final_over_best']:+.4f} against {best}'s")
            continue
        lines.append(
            f"  {policy}: {row['step_ratio']:.2f}x the steps, {row['flop_ratio']:.2f}x the FLOPs, {row['time_ratio']:.2f}x the "
            f"seconds of {best} to the target; final {row['final_over_best']:+.4f} against {best}'s"
        )
    return lines


def bench_table(result: dict) -> str:
    noise = result["noise"]
    tasks = sorted({t for row in result["policies"].values() for t in row.get("probe_accuracy", {})})
    best = result.get("verdict", {}).get("against_best", {})
    lines = [
        f"{'policy':<18}{'step_ratio':>24}{'flop_ratio_full':>24}{'flop_ratio_amortised':>24}{'time_ratio_full':>24}"
        f"{'FLOPs vs best baseline':>26}{NOISE_WORDS[noise]:>19}{'final test':>16}"
        + "".join(f"{t + ' probe':>18}" for t in tasks)
    ]
    for policy, row in baseline_first(result["policies"]):
        probes = "".join(f"{mean_std(row['probe_accuracy'][t]):>18}" for t in tasks)
        vs = ratio(best[policy]["flop_ratio"]) if policy in best else "-"
        lines.append(
            f"{policy:<18}{ratio(row['step_ratio']):>24}{ratio(row['flop_ratio_full']):>24}{ratio(row['flop_ratio_amortised']):>24}"
            f"{ratio(row['time_ratio_full']):>24}{vs:>26}{row[f'{noise}_fraction_selected']['mean']:>19.3f}"
            f"{mean_std(row['final_metric']):>16}{probes}"
        )
    return "\n".join(lines)


def interval(stat: dict, digits: int = 3) -> str:
    """mean [95% interval] of a metric every run has (final test accuracy), or mean ± std for one seed."""
    if stat["mean"] is None:
        return "-"
    if stat.get("low") is None:
        return (
            f"{stat['mean']:.{digits}f} (one seed)"
            if stat["runs"] == 1
            else f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
        )
    return f"{stat['mean']:.{digits}f} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"


def bench_markdown(result: dict) -> str:
    """The bench as a Markdown table for the pages: each arm's ratios to uniform and to each seed's best baseline,
    geometric mean [95% interval] (k/n seeds reached the target), and its final test metric."""
    best = result["verdict"]["against_best"]
    lines = [
        "| arm | steps to target, x uniform's | FLOPs, x uniform's | seconds, x uniform's | FLOPs, x best baseline's "
        f"| final test {result['metric'].removeprefix('test_').replace('_', ' ')} |",
        "|---|---|---|---|---|---|",
    ]
    for policy, row in baseline_first(result["policies"]):
        lines.append(
            f"| {policy} | {ratio(row['step_ratio'])} | {ratio(row['flop_ratio_full'])} | {ratio(row['time_ratio_full'])} | "
            f"{ratio(best[policy]['flop_ratio'])} | {interval(row['final_metric'])} |"
        )
    return "\n".join(lines)


def levers_table(result: dict) -> str:
    """--study levers: each lever's learnability against each seed's best baseline, and against uniform."""
    metric = result["metric"].replace("_", " ")
    lines = [
        "| lever | train changes | FLOPs, x best baseline's | steps, x best baseline's | seconds, x best baseline's "
        f"| final test {metric} | minus best baseline's | FLOPs, x uniform's | negative learnability, last tenth |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        changes = ", ".join(f"{k}={v}" for k, v in r["changes"].items()) or "as configured"
        lines.append(
            f"| {r['lever']} | {changes} | {ratio(r['flop_ratio_vs_best'])} | {ratio(r['step_ratio_vs_best'])} | "
            f"{ratio(r['time_ratio_vs_best'])} | {interval(r['final_metric'])} | {interval(r['final_over_best'], 4)} | "
            f"{ratio(r['flop_ratio_full'])} | {interval(r['negative_learnability_last_tenth'], 2)} |"
        )
    return "\n".join(lines)


def regimes_table(result: dict) -> str:
    """--study regimes: at each point, the features a pilot measures and learnability against the best baseline."""
    lines = [
        "| point | changes | curated share | reference val | pilot val | scorer FLOPs / learner's | best baseline "
        "| FLOPs, x best baseline's | final minus best baseline's | selection pays |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        changes = ", ".join(f"{k}={v}" for k, v in r["changes"].items()) or "as configured"
        best = r["best_baseline"]
        counts = ", ".join(f"{b} {best.count(b)}/{len(best)}" for b in sorted(set(best), key=best.index))
        lines.append(
            f"| {r['point']} | {changes} | {r['curated_share']['mean']:.1%} | {r['reference_val']['mean']:.3f} | "
            f"{r['pilot_val']['mean']:.3f} | {r['scorer_over_learner']['mean']:.3f} | {counts} | "
            f"{ratio(r['flop_ratio_vs_best'])} | {interval(r['final_over_best'], 4)} | {'yes' if r['pays'] else 'no'} |"
        )
    return "\n".join(lines)


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
            f"{mean_std(r['reference_test_metric'])} | {ratio(r['step_ratio'])} | {ratio(r['flop_ratio_full'])} | "
            f"{ratio(r['time_ratio_full'])} | {ratio(r['flop_ratio_amortised'])} | {ratio(r['time_ratio_amortised'])} |"
        )
    return "\n".join(lines)


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
            f"| {r['arm']} | {r['selection']} | {r['keep_fraction']:g} | {r['score_resolution']} | {ratio(r['step_ratio'])} | "
            f"{ratio(r['flop_ratio_full'])} | {ratio(r['time_ratio_full'])} | {ratio(r['flop_ratio_amortised'])} | "
            f"{mean_std(r['final_metric'])} | {mean_std(r[noise]) if noise else '-'} |"
        )
    return "\n".join(lines)


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
            f"| {r['arm']} | {r['learner']} | {r['kept_rows']['mean']:,.0f} | {ratio(r['step_ratio'])} | {ratio(r['flop_ratio_full'])} | "
            f"{ratio(r['time_ratio_full'])} | {ratio(r['flop_ratio_amortised'])} | {ratio(r['time_ratio_amortised'])} | "
            f"{mean_std(r['final_metric'])} | {mean_std(r['target'])} | {mean_std(r[noise]) if r[noise]['mean'] is not None else '-'} |"
        )
    return "\n".join(lines)


def curate_table(record: dict) -> str:
    """Per pathology (where the data records it) and per class: pool rows, rows kept, share kept."""
    lines = ["| pathology | pool | kept | share kept |", "|---|---|---|---|"]
    for kind, row in record["pathology"].items():
        lines.append(f"| {kind} | {row['pool']:,} | {row['kept']:,} | {row['kept_share']:.2f} |")
    if not record["pathology"]:
        lines = ["(The data records no pathology.)"]
    lines += ["", "| class | pool | kept | share kept |", "|---|---|---|---|"]
    for name, row in record["classes"].items():
        lines.append(f"| {name} | {row['pool']:,} | {row['kept']:,} | {number(row['kept_share'])} |")
    return "\n".join(lines)
