"""The ladder study's table, projection lines and page (winnow/studies/ladder.py runs it, studies/projection.py fits)."""

from __future__ import annotations

from winnow.files import write_text
from winnow.reports.budgets import interval, signed
from winnow.reports.budgets import table as budgets_table
from winnow.stages.paths import Paths

SHARERS = (("replay", 1), ("replay_shared_3", 3), ("replay_shared_10", 10))


def _cell(row: dict, arm: str) -> str:
    verdict = row["verdicts"].get(arm)
    if verdict is None:
        return "-"
    fixed = verdict["readings"][verdict["fixed_reading"]]
    return f"{interval(fixed['flop_ratio'])}: {verdict['verdict']}"


def table(result: dict) -> str:
    """One row per learner: its size against the scorers', its comparator, learnability's and the replay's FLOPs to
    uniform's target against the comparator's (fixed reading) with verdicts, and the final metric against it."""
    lines = [
        "| learner | forward MFLOPs | scorer / learner FLOPs | comparator | learnability, x comparator | final val minus "
        "comparator's | replay (N = 1) | replay, N = 3 | replay, N = 10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        learn = row["verdicts"].get("learnability")
        gap = signed(learn["readings"][learn["fixed_reading"]]["final_val_minus_comparator"]) if learn else "-"
        lines.append(
            f"| {row['learner']} | {row['learner_forward_flops'] / 1e6:.1f} | {row['scorer_flops_over_learner']:.3f} | "
            f"{row['comparator']} | {_cell(row, 'learnability')} | {gap} | "
            + " | ".join(_cell(row, arm) for arm, _ in SHARERS)
            + " |"
        )
    return "\n".join(lines)


def _x(v: float | None) -> str:
    return "never on the grid" if v is None else f"{v:.4f}"


def _crossing_line(online: dict) -> str:
    """Where the fitted ratio crosses 1, as a learner's forward FLOPs, with the band's edges' crossings around it."""
    fit, cross = online["fit"], online["crosses_1_at_learner_flops"]
    if fit["b"] <= 0:
        return "the ratio does not fall as the learner grows here: no crossing is projected"
    if fit["a"] >= 1:
        return f"no learner size is projected below 1: the line's value for an unbounded learner is a = {fit['a']:.3f}"

    def mflops(v):
        return "-" if v is None else f"{v / 1e6:,.1f}"

    edges = f"[{mflops(cross['band_low_edge'])}, {mflops(cross['band_high_edge'])}]"
    return (
        f"crosses 1 at a learner of {mflops(cross['mean'])} forward MFLOPs {edges} (where the band's edges cross 1; "
        "-: not on the grid of scorer / learner 1e-6 to 10): larger learners are projected below 1, smaller ones above"
    )


def projection_lines(result: dict) -> list[str]:
    """The projection, labelled as one: the online fit read at each learner and at the paper's, where it crosses 1,
    and each replay's reuses to cross 1."""
    p = result["projection"]
    online = p["online"]
    lines = [f"**Projection** ({p['label']}, studies/projection.py):", ""]
    if online.get("fit") is None:
        lines.append(f"- learnability: no fit ({online.get('why', 'no points')}).")
    else:
        fit = online["fit"]
        lines.append(
            f"- learnability, {online['model']}: a = {fit['a']:.3f}, b = {fit['b']:.3f}, over {fit['n']} seed-points"
            + (f" ({online['never_reached_note']})" if online["never_reached_note"] else "")
            + "."
        )
        for name, at in online["at"].items():
            lines.append(f"  - at {name} (scorer / learner {at['x']:.5f}): {at['ratio']:.2f} [{at['low']:.2f}, {at['high']:.2f}]")
        lines.append("  - " + _crossing_line(online))
    for r in p["replay"]:
        n = r["crosses_1_at_reuses"]
        where = (
            "never (the replayed steps alone cost more than the comparator's)"
            if n["mean"] is None
            else (f"{n['mean']:.1f}" + (f" [{n['low']:.1f}, {n['high']:.1f}]" if n["low"] is not None else " (1 seed)"))
            + f" ({n['reached']}/{n['runs']} seeds)"
        )
        lines.append(f"- replay on {r['learner']}, {r['model']}: below 1 from N = {where} reuses of the recording.")
    return lines


def write_report(result: dict, paths: Paths) -> None:
    budgets = ", ".join(f"{b:g}x" for b in result["budgets"])
    lines = [
        f"# The learner ladder: {result['objective']}, {len(result['seeds'])} seeds",
        "",
        f"`uv run winnow bench --study ladder --objective {result['objective']}`. Fixed scorers: reference "
        f"{result['reference']}, actor {result['actor']}. Each learner trained at {budgets} of its steps under the "
        "budgets protocol (studies/budgets.py): uniform's plateau at the largest budget as the target, the baseline "
        "with the fewest FLOPs over seeds as the comparator, each its own. "
        + (
            f"The replay trains each larger learner on the sequence {result['recorded_by']}'s learnability run kept, "
            "charged the recording's selection in full (N = 1) and shared by 3 and 10 learners."
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
