"""The ladder study's table, projection lines and page (winnow/studies/ladder.py runs it, studies/projection.py fits)."""

from __future__ import annotations

from winnow.files import write_text
from winnow.method.ledger import SHARED
from winnow.reports.budgets import signed
from winnow.reports.budgets import table as budgets_table
from winnow.reports.tables import ratio
from winnow.stages.paths import Paths

# the replay charged at N = 1, and the same run charged as if N learners shared its recording (method/ledger.SHARED)
SHARERS = (("replay", 1), *((f"replay_shared_{n}", n) for n in SHARED[1:]))


def _cell(row: dict, arm: str) -> str:
    verdict = row["verdicts"].get(arm)
    if verdict is None:
        return "-"
    fixed = verdict["readings"][verdict["fixed_reading"]]
    return f"{ratio(fixed['flop_ratio'])}: {verdict['verdict']}"


def table(result: dict) -> str:
    """One row per learner: its size against the scorers', its comparator, learnability's and the replay's FLOPs to
    uniform's target against the comparator's (fixed reading) with verdicts, and the final metric against it."""
    shared = " | ".join(f"replay charged as if {n} learners shared it" for _, n in SHARERS[1:])
    lines = [
        "| learner | forward MFLOPs | selection / learner FLOPs a step | comparator | learnability, x comparator | final "
        f"val minus comparator's | replay (N = 1) | {shared} |",
        "|---|---|---|---|---|---|---|" + "---|" * (len(SHARERS) - 1),
    ]
    for row in result["rows"]:
        learn = row["verdicts"].get("learnability")
        gap = signed(learn["readings"][learn["fixed_reading"]]["final_val_minus_comparator"]) if learn else "-"
        lines.append(
            f"| {row['learner']} | {row['learner_forward_flops'] / 1e6:.1f} | {row['selection_over_learner']:.3f} | "
            f"{row['comparator']} | {_cell(row, 'learnability')} | {gap} | "
            + " | ".join(_cell(row, arm) for arm, _ in SHARERS)
            + " |"
        )
    return "\n".join(lines)


def _spread(s: dict | None, fmt: str = ".2f") -> str:
    if s is None or s["mean"] is None:
        return "-"
    if s["low"] is None:
        return f"{s['mean']:{fmt}} (1 seed)"
    return f"{s['mean']:{fmt}} [{s['low']:{fmt}}, {s['high']:{fmt}}]"


def _crossing_line(online: dict) -> str:
    """Where the fitted line crosses 1, seed by seed and over seeds, in x and as a learner's training step."""
    if not online["slope_distinguishable"]:
        return (
            f"the slope b = {_spread(online['fit']['b'], '.3f')} is not distinguishable from 0 over "
            f"{online['seeds_fitted']} seeds: where the ratio crosses 1 is undetermined"
        )
    cross = online["crosses_1_at_x"]
    if cross is None:
        said = ", ".join(c if isinstance(c, str) else f"{c:.4f}" for c in online["crossings"])
        return f"the line crosses 1 in some seeds only (x per seed: {said})"
    step = online["selection_step_flops"] / cross["mean"]
    return (
        f"the line crosses 1 at x = {_spread(cross, '.4f')}: below it, a learner whose training step is above "
        f"{step / 1e6:,.0f} MFLOPs (the selection's {online['selection_step_flops'] / 1e6:,.1f} MFLOPs a step over x), "
        f"is projected to save; measured x {online['measured_x'][0]:.4f}-{online['measured_x'][1]:.4f}"
    )


def projection_lines(result: dict) -> list[str]:
    """The projection, labelled as one: the online fit read at each learner and at the paper's, where it crosses 1,
    and each replay's reuses to cross 1."""
    p = result["projection"]
    online = p["online"]
    lines = [f"**Projection** ({p['label']}, studies/projection.py):", ""]
    if online.get("fit") is None:
        lines.append(f"- learnability: no fit ({online['why']}).")
    else:
        fit = online["fit"]
        lines.append(
            f"- learnability, {online['model']}, fitted seed by seed over {online['seeds_fitted']} of "
            f"{online['seeds']} seeds: a = {_spread(fit['a'], '.3f')}, b = {_spread(fit['b'], '.3f')}"
            + (f" ({online['never_reached_note']})" if online["never_reached_note"] else "")
            + (
                "; the learners ran different steps, so the reference's share of each ratio differs too"
                if online["steps_differ"]
                else ""
            )
            + "."
        )
        low, high = online["measured_x"]
        for name, at in online["at"].items():
            far = ""
            if at["x"] < low / 2:
                far = f" ({low / at['x']:,.0f}x below the smallest measured x: the line assumed, not found)"
            elif at["x"] > high * 2:
                far = f" ({at['x'] / high:,.0f}x above the largest measured x: the line assumed, not found)"
            lines.append(f"  - at {name} (x = {at['x']:.5f}): {_spread(at['ratio'])}{far}")
        lines.append("  - " + _crossing_line(online))
    for r in p["replay"]:
        n = r["crosses_1_at_reuses"]
        if n is not None:
            where = f"from N = {_spread(n, '.1f')} reuses of the recording"
        else:
            where = "per seed: " + ", ".join(
                q.get("why") or (q["reuses"] if isinstance(q["reuses"], str) else f"N = {q['reuses']:.1f}") for q in r["per_seed"]
            )
        lines.append(f"- replay on {r['learner']}, {r['model']}: below 1 {where}.")
    return lines


def write_report(result: dict, paths: Paths) -> None:
    budgets = ", ".join(f"{b:g}x" for b in result["budgets"])
    lines = [
        f"# The learner ladder: {result['objective']}, {len(result['seeds'])} seeds",
        "",
        f"`uv run winnow bench --study ladder --objective {result['objective']}`. Fixed scorers: reference "
        f"{result['reference']}, actor {result['actor']}. Each learner trained at {budgets} of its steps under the "
        "budgets protocol (studies/budget_rule.py): uniform's plateau at the largest budget as the target, the baseline "
        "with the fewest FLOPs over seeds as the comparator, each its own. "
        + (
            f"The replay trains each larger learner on the sequence {result['recorded_by']}'s learnability run kept, "
            "charged the recording's selection in full (N = 1), and the same run charged again as if 3 and 10 learners "
            "shared it. With the actor fixed (train.actor a model, trained on the kept rows), what a run keeps does not "
            "depend on its learner: the replay measures what selection paid once saves, not whether a small learner's "
            "choices suit a large one."
            if result["recorded_by"]
            else "No replay (one learner, or no learnability arm to record)."
        ),
        "",
        table(result),
        "",
        *projection_lines(result),
        "",
    ]
    for row in result["rows"]:
        lines += [f"## {row['learner']} ({row['steps']} steps at 1x)", "", budgets_table(row), ""]
    write_text("\n".join(lines), paths.study_report("ladder"))
