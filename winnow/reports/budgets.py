"""The budgets study's table and page (winnow/studies/budget_rule.py holds the rule and the readings)."""

from __future__ import annotations

import os

from winnow.files import write_text
from winnow.reports.tables import ratio
from winnow.stages.paths import Paths


def table(result: dict) -> str:
    rows = [
        "| arm | verdict | FLOPs to target, x comparator (budget, sustained) | final val minus comparator's |",
        "|---|---|---|---|",
    ]
    for policy, v in result["verdicts"].items():
        fixed = v["readings"][v["fixed_reading"]]
        rows.append(
            f"| {policy} | {v['verdict']} | {ratio(fixed['flop_ratio'])} | {signed(fixed['final_val_minus_comparator'])} |"
        )
    return "\n".join(rows)


_READINGS = (
    "The readings. *budget*: each arm's final validation metric at each budget, FLOPs of the whole run, interpolated "
    "between budgets (linearly in FLOPs; *log FLOPs*: on their logarithm, the budgets doubling); *sustained*: from the "
    "smallest budget on which every larger one stays at the target; *first*: where it first gets there; *smoothed*: "
    "each budget read as the mean of its last {window} evaluations, uniform's target likewise. *in-run*: the run at "
    "the largest budget read evaluation by evaluation, smoothed over k, against uniform's curve smoothed the same "
    "way. A reading already at the target at its first point is an upper bound (censored): a verdict it could turn is "
    "*undecided*."
)


def verdict_cell(r: dict) -> str:
    """A reading's verdict, and why where a censored reading or a comparator that never got there left it open."""
    bounds = r.get("bounds") or {}
    why = [
        f"{text} in {n} seed{'s' if n > 1 else ''}"
        for key, text in (
            ("arm_censored", "the arm at the target from its first point"),
            ("comparator_censored", "the comparator at the target from its first point"),
            ("comparator_missed", "the comparator never at the target"),
        )
        if (n := bounds.get(key, 0))
    ]
    return r["verdict"] + (f" ({'; '.join(why)})" if why else "")


def signed(s: dict) -> str:
    if s["low"] is None:
        return f"{s['mean']:+.4f} (1 seed)"
    return f"{s['mean']:+.4f} [{s['low']:+.4f}, {s['high']:+.4f}]"


def _data_line(result: dict) -> str:
    if result.get("data_seeds"):
        return (
            "Each seed its own data (bench.data_seeds): the built-in pool generated anew, or a dataset's curated and "
            "val rows drawn again, so the intervals cover the data as well as training."
        )
    return "Every seed shares one dataset (bench.data_seeds off): the intervals cover training noise only."


PROTOCOL_SEEDS = 5
# what issue 42's bench asks for: the baselines a reviewer asks for and learnability with and without the curated share
PROTOCOL_ARMS = ("uniform", "balanced", "curated_only", "curated_mix", "learnability", "learnability_mix")


def cost_line(result: dict) -> str:
    """What a seed of the study took on the machine that ran it: its training steps at their median step time."""
    cost = result.get("step_seconds_per_seed")
    if not cost or cost["mean"] is None or cost["reached"] < cost["runs"]:
        return ""
    each = ", ".join(f"{v / 3600:.1f}" for v in cost["values"])
    return (
        f"A seed's training steps took {cost['mean'] / 3600:.1f} h (per seed: {each} h; every arm at every budget, "
        "each run's steps at its median step time, on the machine that ran it; the data's making and loading, "
        "checkpoints, the reference, scoring and evaluations come on top)."
    )


def cut_line(result: dict) -> str:
    """What this run left out of the protocol (fewer seeds, arms not run), said on its page."""
    cuts = []
    asked = result.get("seeds_asked", len(result["seeds"]))
    if len(result["seeds"]) < asked:
        cuts.append(f"under way: {len(result['seeds'])} of the {asked} seeds asked are in")
    if len(result["seeds"]) < PROTOCOL_SEEDS:
        n = len(result["seeds"])
        cuts.append(f"{n} seed{'s' if n > 1 else ''}, not {PROTOCOL_SEEDS}")
    missing = [a for a in PROTOCOL_ARMS if a not in result["final_val"]]
    if missing:
        cuts.append("arms not run: " + ", ".join(missing))
    return "Cut from the protocol: " + "; ".join(cuts) + "." if cuts else "Nothing cut from the protocol."


def _each_baseline(result: dict) -> list[str]:
    """Each selecting arm against each baseline, under the fixed reading: FLOPs to uniform's target over the
    baseline's (and the final metric against it)."""
    verdicts = {p: v for p, v in result["verdicts"].items() if "against_each_baseline" in v}
    if not verdicts:
        return []
    baselines = list(next(iter(verdicts.values()))["against_each_baseline"])
    lines = [
        f"## Each arm against each baseline ({result['fixed_reading']}): FLOPs to uniform's target, x the baseline's",
        "",
        "| arm | " + " | ".join(baselines) + " |",
        "|---|" + "---|" * len(baselines),
    ]
    for policy, v in verdicts.items():
        cells = [_against(result, v["against_each_baseline"][b]["flop_ratio"], b) for b in baselines]
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def figure(result: dict) -> str:
    """What a page quotes of the study (`winnow figures`, FIGURES["budgets"]): what was run and cut, the verdicts under the fixed
    reading, each arm's final validation metric at each budget, and the kept class mix beside uniform's."""
    n = len(result["seeds"])
    seeds = f"{n} of {result.get('seeds_asked', n)} seeds" + (" (a single seed: no interval)" if n == 1 else "")
    budgets = ", ".join(f"{b:g}x" for b in result["budgets"])
    lines = [
        f"{seeds}; budgets {budgets} of {result['base_steps']} steps, each run's schedule ending there. Comparator, by "
        f"the rule fixed before looking: **{result['comparator']}** on the seeds in (the baseline with the fewest FLOPs "
        f"to uniform's target over seeds, chosen again as seeds land); reading: **{result['fixed_reading']}**. "
        + " ".join(filter(None, (cut_line(result), cost_line(result)))),
        "",
        table(result),
        "",
        *_by_budget(result, {"final_val": "Validation metric at each budget (mean over seeds)"}, heading="**"),
        *_by_budget(
            result,
            {"kept_classes_effective": "Kept class mix: effective number of classes (exp of its entropy) at each budget"},
            heading="**",
        ),
    ]
    return "\n".join(lines).rstrip()


def _by_budget(result: dict, titles: dict[str, str], heading: str = "## ") -> list[str]:
    """One table per entry of `titles`: each arm's mean at each budget (an arm with nothing recorded left out)."""
    header = "| arm | " + " | ".join(f"{b:g}x" for b in result["budgets"]) + " |"
    lines = []
    for split, title in titles.items():
        rows = [
            f"| {policy} | " + " | ".join(_mean(by_budget[f"{b:g}"]) for b in result["budgets"]) + " |"
            for policy, by_budget in result.get(split, {}).items()
            if by_budget[f"{result['budgets'][0]:g}"]["mean"] is not None  # no class mix (contrastive) for this arm
        ]
        if not rows:
            continue
        title = f"**{title}**" if heading == "**" else f"{heading}{title}"
        lines += [title, "", header, "|---|" + "---|" * len(result["budgets"]), *rows, ""]
    return lines


def _against(result: dict, stat: dict, baseline: str) -> str:
    """An arm's FLOPs over a baseline's, saying so where it is the baseline that never reached the target (in no
    seed): "never" alone would read as the arm's failure."""
    reached = [result["per_seed"][str(s)]["arms"][baseline]["flops_to_target"][result["fixed_reading"]] for s in result["seeds"]]
    if all(r is None for r in reached):
        return f"{baseline} never reached it"
    return ratio(stat)


def write_report(result: dict, paths: Paths) -> None:
    """The study's page: the rule, fixed in advance; the verdicts; each reading beside it; the final metrics by
    budget; the plot of the final metrics by budget."""
    from winnow.reports.plots import plot_budgets

    plot = paths.bench_plots / f"study_{paths.study_name('budgets')}.png"
    plot_budgets(result, plot)
    budgets = ", ".join(f"{b:g}x" for b in result["budgets"])
    lines = [
        f"# Budgets: {result['objective']}, {len(result['seeds'])} seed{'s' if len(result['seeds']) > 1 else ''}",
        "",
        f"`uv run winnow bench --study budgets --objective {result['objective']}`. Each arm trained at {budgets} of "
        f"{result['base_steps']} steps, its schedule ending at its budget. Target: uniform's plateau, its final validation "
        "metric at the largest budget (the quantity every budget is read by). Comparator: "
        f"**{result['comparator']}**, the baseline with the fewest FLOPs to the target over seeds. Reading, fixed before "
        f"the runs: **{result['fixed_reading']}** (studies/budget_rule.py); the others are printed under it, and a verdict "
        "that flips among them is *undecided*. " + _data_line(result),
        "",
        _READINGS.format(window=result.get("target_window", 1)),
        "",
        " ".join(filter(None, (cut_line(result), cost_line(result)))),
        "",
        table(result),
        "",
        *[
            f"{arm} dropped at most {share:.2%} of the pool (under 1%): folded into uniform, not a comparator of its own."
            for arm, share in result.get("folded_into_uniform", {}).items()
        ],
        "",
    ]
    lines += _each_baseline(result)
    for policy, v in result["verdicts"].items():
        lines += [
            f"## {policy} under each reading",
            "",
            "| reading | comparator | FLOPs, x comparator | final val minus comparator's | verdict |",
            "|---|---|---|---|---|",
        ]
        for name, r in v["readings"].items():
            lines.append(
                f"| {name} | {r['comparator']} | {ratio(r['flop_ratio'])} | {signed(r['final_val_minus_comparator'])} | "
                f"{verdict_cell(r)} |"
            )
        lines.append("")
    lines += _by_budget(
        result,
        {
            "final_val": "Validation metric at each budget",
            "final_val_minus_comparator": f"Validation metric minus the comparator's ({result['comparator']}) at each budget",
            "final_test": "Test metric at each budget (read once a run, reported only)",
            "kept_classes_effective": "Kept class mix at each budget: the effective number of classes (exp of its entropy)",
        },
    )
    rel = os.path.relpath(plot, paths.study_report("budgets").parent)
    lines += [f"![final validation metric at each budget]({rel})", ""]
    write_text("\n".join(lines), paths.study_report("budgets"))


def _mean(s: dict) -> str:
    if s["mean"] is None:
        return "-"
    return f"{s['mean']:.4f}" if s["low"] is None else f"{s['mean']:.4f} [{s['low']:.4f}, {s['high']:.4f}]"
