"""The texts of the figures that quote results (a run, a bench, levers, the regime map, advice, where the FLOPs go),
each rendered from its committed JSON; the registry and the checking are winnow/reports/figures.py's."""

from __future__ import annotations

import json
from pathlib import Path

from winnow.errors import MissingInput
from winnow.method.policies import BASELINES
from winnow.reports.bench import lever_policies, verdict
from winnow.reports.system_figures import _mean_range
from winnow.reports.tables import bench_markdown, interval, levers_table, ratio, regimes_table, table

REPO = Path(__file__).resolve().parents[2]


def headline(summary: dict) -> str:
    return f"```\n{table(summary)}\n```\n"


def one_line(summary: dict) -> str:
    """The verdict in a sentence: the learnability arm against uniform and against the best baseline."""
    row, against = summary["policies"]["learnability"], summary["verdict"]["against_best"]["learnability"]
    best = summary["verdict"]["best_baseline"]
    if row["steps_to_target"] is None:
        reach = f"learnability never reached uniform's target ({summary['curve_metric']} {summary['target']:.4f})"
    else:
        reach = (
            f"learnability reached uniform's target ({summary['curve_metric']} {summary['target']:.4f}) at "
            f"{row['step_ratio']:.2f}x uniform's steps, {row['flop_ratio_full']:.2f}x its FLOPs and {row['time_ratio_full']:.2f}x "
            f"its seconds, the reference paid in full"
        )
    if best == "uniform":
        verdict = "uniform was the best baseline"
    elif against["flop_ratio"] is None:
        verdict = f"the best baseline, {best}, reached it and learnability did not"
    else:
        verdict = f"against the best baseline, {best}, it took {against['flop_ratio']:.2f}x the FLOPs"
    return (
        f"One seed (seed 0): {reach}; {verdict}. Final test {summary['metric'].removeprefix('test_').replace('_', ' ')}: "
        f"learnability {row['final_metric']:.4f}, {best} {summary['policies'][best]['final_metric']:.4f}.\n"
    )


def bench(result: dict) -> str:
    """The bench over seeds: which baseline was best in each seed, the table, the verdict, and how noisy the
    seconds are (the step time of arms that do uniform's work per step, against uniform's)."""
    seeds, best = result["seeds"], result["verdict"]["best_baseline"]
    counts = ", ".join(f"{b} in {best.count(b)}" for b in sorted(set(best), key=best.index))
    same_work = [
        v
        for p, stat in result["systems"]["step_time_over_ledger"].items()
        if p in BASELINES and p != "uniform"
        for v in stat["values"]
        if v is not None
    ]
    noise = (
        f" Seconds are noisy on a shared 2-core machine: arms whose steps do uniform's work measured "
        f"{min(same_work):.2f}-{max(same_work):.2f}x uniform's step time across seeds, so a seconds ratio that close to "
        "1 is no difference."
        if same_work
        else ""
    )
    return (
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))}); the best baseline (fewest FLOPs to the target, per seed): "
        f"{counts} of {len(seeds)}. Over the seeds, where every seed reached the target: the geometric mean [95% interval] of each ratio (taken on the log scale, so never below 0), the mean [95% interval] of the final metric; each "
        f"seed's value where some never did (k/n reached).{_uniform_words(result)}{noise}\n\n{bench_markdown(result)}\n\n"
        f"{verdict(result)}\n"
    )


def _uniform_words(result: dict) -> str:
    """Where uniform itself crossed, from each seed's committed summary (metrics/<name>/bench/<objective>/seed-N/)."""
    name, objective = Path(result["data"]).name, result["objective"]
    paths = [
        REPO / "metrics" / name / "bench" / objective / f"seed-{s}" / name / objective / "summary.json" for s in result["seeds"]
    ]
    if not all(p.is_file() for p in paths):
        return ""
    runs = [json.loads(p.read_text()) for p in paths]
    at_end = sum(r["uniform_steps_to_target"] >= r["uniform_steps"] for r in runs)
    if not at_end:
        return ""
    return (
        f" Uniform is read with the same rule; still climbing at the end of its {runs[0]['uniform_steps']} steps in "
        f"{at_end} of {len(runs)} seeds, it reaches its own target (the mean of its last evaluations) at its last "
        "evaluation there, so *x uniform's* is a share of that budget."
    )


def levers(result: dict) -> str:
    """--study levers: which baseline was best, and each lever's row against it."""
    seeds, best = result["seeds"], result["best_baseline"]
    counts = ", ".join(f"{b} in {best.count(b)}" for b in sorted(set(best), key=best.index))
    return (
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))}) on `{result['data']}`; the best baseline (fewest FLOPs to the "
        f"target, per seed): {counts} of {len(seeds)}, its final test {result['metric'].replace('_', ' ')} "
        f"{interval(result['best_final_metric'])}. Each lever is learnability ({result['learner']} learner, "
        f"{result['reference']} reference, {result['actor']} actor, {result['steps']} steps{_unless_steps(result)}) with the "
        "train settings in "
        f"its row{lever_policies(result)}, against the best baseline of its seed, the reference paid in full. Ratios: geometric mean [95% interval, on the "
        "log scale] where every seed reached the target, each seed's value where some never did (k/n); metrics: mean [95% interval].\n\n"
        f"{levers_table(result)}\n"
    )


def _unless_steps(result: dict) -> str:
    return " unless its row sets steps" if any("steps" in r["changes"] for r in result["rows"]) else ""


def regimes(result: dict) -> str:
    """--study regimes: the map, and how often each point's advice from the others matched its outcome."""
    check = result["leave_one_out"]
    missed = [p for p, v in check["per_point"].items() if v["advised"] != v["measured"]]
    checked = (
        f"Each point advised from the others alone (leave one out): {check['agreed']} of {check['points']} agree"
        + (f"; wrong at {', '.join(missed)}." if missed else ".")
        if check["agreed"] is not None
        else "One point: nothing to check it against."
    )
    return (
        f"{len(result['seeds'])} seeds ({', '.join(map(str, result['seeds']))}) per point on `{result['data']}`, "
        f"{result['steps']} steps; learnability as configured against each seed's best baseline of "
        f"{', '.join(result['baselines'])}, the reference paid in full; the pilot is {result['pilot_steps']} uniform "
        "steps. Selection pays at a point when every seed reached the target, the 95% interval of its FLOPs over the "
        "best baseline's ends below 1, and the mean final is not below the baseline's.\n\n"
        f"{regimes_table(result)}\n\n{_regime_seconds(result)}\n\n{checked}\n"
    )


def _regime_seconds(result: dict) -> str:
    """The map's seconds beside its FLOPs: a point can pay in FLOPs and still cost more on this machine's clock."""
    each = "; ".join(f"{r['point']} {ratio(r['time_ratio_vs_best'])}" for r in result["rows"])
    below = "; ".join(
        f"{r['point']} {sum(v is not None and v < 1 for v in r['flop_ratio_vs_best']['values'])} of "
        f"{r['flop_ratio_vs_best']['runs']}"
        for r in result["rows"]
    )
    return (
        f"Seeds that reached the target in fewer FLOPs than their best baseline: {below}. On the clock of the machine "
        "that ran it (seconds to the target: the median step's seconds times the steps, plus the reference's training "
        f"and the pool's scoring), x the best baseline's: {each}."
    )


def advice(advice: dict) -> str:
    """`winnow advise --against`: what the map advised on data it was not fitted on, and what was measured there."""
    if "measured" not in advice:
        raise KeyError(f"advice on {advice['data']} was not checked: run `winnow advise --against STUDY_JSON`")
    n, m, f = advice["nearest"], advice["measured"], advice["features"]
    flops = m["flop_ratio_vs_best"]
    reached = f"{flops['reached']}/{flops['runs']} seeds reached uniform's target"
    return (
        f"`{advice['data']}`: curated {f['curated_share']:.1%} of the pool, reference val {f['reference_val']:.3f}, "
        f"pilot val {f['pilot_val']:.3f}, scorer {f['scorer_over_learner']:.3f}x the learner's FLOPs. Nearest point: "
        f"{n['point']} of `{n['data']}` (distance {n['distance']:.2f}{', far: beyond 2' if advice['far'] else ''}), "
        f"so the advice is that selection {'should pay' if advice['selection_should_pay'] else 'should not pay'}"
        f"{_paying_point(advice)}. "
        f"Measured on this data ({m['seeds']} seeds, `{m['file']}`): {reached}, final "
        f"{interval(m['final_over_best'], 4)} against it; selection {'paid' if m['pays'] else 'did not pay'}. "
        f"**The advice {'agrees' if m['agrees'] else 'was wrong'}.**\n"
    )


def _paying_point(advice: dict) -> str:
    """Where the nearest point did not pay: how far the nearest one that did is (a near tie decides the advice)."""
    other = advice.get("scorer_point")
    if advice["selection_should_pay"] or not other:
        return ""
    return f" (the nearest point where it paid, {other['point']}, is at distance {other['distance']:.2f})"


LINES = ("reference training", "pool scoring", "selection per step", "learner's steps")


def flop_lines(result: dict, label: str, repo: Path = REPO) -> str:
    """--study levers: where each lever's FLOPs to the target go, line by line of the ledger, as shares of the best
    baseline's FLOPs to the same target, read from each seed's committed summary (metrics/<name>/bench/<objective>/
    <label>/levers/seed-N/<lever>/): what a cheaper reference or actor could save, and what it could not."""
    name, objective = Path(result["data"]).name, result["objective"]
    lines = [
        "| lever | seeds reached | " + " | ".join(LINES) + " | total: FLOPs, x best baseline's |",
        "|---|---|" + "---|" * (len(LINES) + 1),
    ]
    learner_alone = []
    for row in result["rows"]:
        lever, policy, shares = row["lever"], row.get("policy", "learnability"), []
        for seed in result["seeds"]:
            path = repo / "metrics" / name / "bench" / objective / label / "levers" / f"seed-{seed}" / lever / name / objective
            if not (path / "summary.json").is_file():
                raise MissingInput(f"{path.relative_to(repo) / 'summary.json'} is not there (a seed's run of the levers study)")
            summary = json.loads((path / "summary.json").read_text())
            steps = summary["policies"][policy]["steps_to_target"]
            if steps is None:
                continue
            best = summary["policies"][summary["verdict"]["best_baseline"]]["flops_to_target"]
            c = summary["ledger"]["policies"][policy]["costs"]
            selecting = steps if c.get("selecting_steps") is None else min(steps, c["selecting_steps"])
            per_step = c["per_step"] - c["learner_training_per_step"]  # what selection adds to each selecting step
            split = (c["reference_training"], c["pool_scoring"], selecting * per_step, steps * c["learner_training_per_step"])
            shares.append([v / best for v in split])
        if not shares:
            lines.append(f"| {lever} | 0/{len(result['seeds'])} | " + " | ".join("-" for _ in range(len(LINES) + 1)) + " |")
            continue
        cells = [_mean_range([s[i] for s in shares]) for i in range(len(LINES))] + [_mean_range([sum(s) for s in shares])]
        lines.append(f"| {lever} | {len(shares)}/{len(result['seeds'])} | " + " | ".join(cells) + " |")
        learner_alone.append((lever, [s[-1] for s in shares], [sum(s[:-1]) for s in shares]))

    def room(v: list[float], o: list[float]) -> str:
        left = 1 - sum(v) / len(v)
        if left <= 0:
            return "so even free, the reference, the scoring and selection would not end below 1.0 on average"
        return (
            f"which leaves {left:.2f} for the reference, the scoring and selection to end below 1.0 on average, against "
            f"the {sum(o) / len(o):.2f} they spent"
        )

    alone = "; ".join(f"{lever} {sum(v) / len(v):.2f} ({min(v):.2f}-{max(v):.2f}), {room(v, o)}" for lever, v, o in learner_alone)
    return (
        "Each line of the ledger to the target, as a share of the best baseline's FLOPs to it (mean over the seeds "
        "that reached the target, their range in brackets; each seed's `summary.json`). *selection per step* is what "
        "selection adds to each selecting step: the actor's scoring of the super-batch and its training step (and "
        "the reference's per-step cost where JEST or a refreshed reference has one).\n\n"
        + "\n".join(lines)
        + (
            f"\n\nThe learner's steps alone, were selection free, as shares of the best baseline's FLOPs: {alone}.\n"
            if alone
            else "\n"
        )
    )
