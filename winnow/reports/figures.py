"""The figures quoted in README.md and docs/: every block between markers is written from a committed file.

    <!-- figures: NAME -->
    ...written by `winnow figures` from FIGURES[NAME]'s file...
    <!-- /figures -->

`winnow figures` rewrites every block; `winnow figures --check` fails when a block of the working tree differs from
what its file says, so a number in the docs cannot drift from the metrics behind it. tests/test_figures.py checks the
same of the last commit (committed()): running `winnow pipeline` rewrites metrics/ with this machine's seconds, and
that must not turn a user's test suite red. Adding a figure is one entry in FIGURES and one marker in a page.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from winnow.errors import DataError, MissingInput
from winnow.files import write_text
from winnow.method.policies import BASELINES
from winnow.reports import claims
from winnow.reports.bench import lever_policies, verdict
from winnow.reports.pool import table as pool_table
from winnow.reports.tables import bench_markdown, interval, levers_table, ratio, regimes_table, table

REPO = Path(__file__).resolve().parents[2]
PAGES = ("README.md", "docs")  # where blocks may live: README.md and every docs/*.md
BLOCK = re.compile(r"(<!-- figures: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /figures -->)", re.S)


@dataclass(frozen=True)
class Figure:
    source: str | tuple[str, ...]  # the committed file it is written from, relative to the repository (or files)
    render: Callable[..., str]  # of the file's JSON; of {file: its JSON} where a figure reads several
    reads_tree: bool = False  # it also reads files its source names (each seed's run): render passes it `repo`

    @property
    def files(self) -> tuple[str, ...]:
        return self.source if isinstance(self.source, tuple) else (self.source,)


def _headline(summary: dict) -> str:
    return f"```\n{table(summary)}\n```\n"


def _one_line(summary: dict) -> str:
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


def _bench(result: dict) -> str:
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


def _levers(result: dict) -> str:
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


def _regimes(result: dict) -> str:
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


def _advice(advice: dict) -> str:
    """`winnow advise --against`: what the map advised on data it was not fitted on, and what was measured there."""
    if "measured" not in advice:
        raise KeyError(f"advice on {advice['data']} was not checked: run `winnow advise --against STUDY_JSON`")
    n, m, f = advice["nearest"], advice["measured"], advice["features"]
    flops = m["flop_ratio_vs_best"]
    reached = f"{flops['reached']}/{flops['runs']} seeds reached the best baseline's target"
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


def _step_time(result: dict) -> str:
    """benchmarks/step_time.py: a step on the clock against the ledger, with and without each speed-up; the clock
    ratio is the median over pairs (a uniform and a learnability run back to back), with an interval for it."""
    lines = [
        f"{result['cpu']} ({result['machine']}); {result['steps']} steps per run, the first {result['warmup']} not "
        f"timed, {result['repeats']} pairs per row (a uniform and a learnability run back to back, in a random order) "
        f"in one shuffled order in one process. Includes: {result['includes']}.\n",
        "| objective | max pool | AdamW | uniform step, ms (median) | learnability step, ms (median) | clock ratio "
        "(median of the pairs') | ledger ratio | clock over ledger [interval] | data share of a learnability step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        low, high = r["clock_over_ledger_interval"]
        lines.append(
            f"| {r['objective']} | {r['pool']} | {r['adamw']} | {r['uniform_step_ms']:.1f} | {r['learnability_step_ms']:.1f} "
            f"| {r['clock_ratio']:.2f} | {r['ledger_ratio']:.2f} | {r['clock_over_ledger']:.2f} [{low:.2f}, {high:.2f}] "
            f"| {r['data_share_of_step']['learnability']:.1%} |"
        )
    coverage = {r["interval_coverage"] for r in result["rows"]}
    lines.append(
        f"\nThe interval is distribution-free, for the median of the pairs' ratios: the k-th smallest and largest pair, "
        f"covering it with probability {', '.join(f'{c:.1%}' for c in sorted(coverage))} "
        "(`benchmarks/step_time.py`, median_interval)."
    )

    def verdict(r: dict) -> str:
        low, high = r["clock_over_ledger_interval"]
        return "within it" if high <= 1.15 else "not within it" if low > 1.15 else "not told apart from it by this run"

    last = {r["objective"]: r for r in result["rows"]}  # each objective's last row: the loop as it runs
    lines.append(
        "\nWith every speed-up the loop runs (each objective's last row), a learnability step costs "
        + " and ".join(
            f"{r['clock_over_ledger']:.2f}x [{r['clock_over_ledger_interval'][0]:.2f}, "
            f"{r['clock_over_ledger_interval'][1]:.2f}] its ledger for {o}"
            for o, r in last.items()
        )
        + " on this CPU. Against the at most 1.15x issue 25 asks for: "
        + "; ".join(f"{o} {verdict(r)}" for o, r in last.items())
        + "."
    )
    # a uniform step runs the same code in an objective's last two arms: the last speed-up acts only where an actor
    # scores (CLIP: clip-tiny's table is fixed, uniform has no actor; classifier: a uniform step has no pool without
    # a gradient), so those two uniform steps say how far apart two measurements of the same code fall
    same = []
    for objective, label in (("classification", "the classifier's"), ("contrastive", "CLIP's")):
        rows = [r for r in result["rows"] if r["objective"] == objective]
        if len(rows) < 2 or (objective == "contrastive" and rows[-1]["adamw"] != "foreach, lazy rows"):
            continue
        a, b = rows[-2]["uniform_step_ms"], rows[-1]["uniform_step_ms"]
        same.append(
            f"{label} uniform step measured {a:.1f} and {b:.1f} ms in its last two rows ({abs(a - b) / min(a, b):.0%} apart)"
        )
    if same:
        lines[-1] += " How far apart two measurements of the same code fall: " + "; ".join(same) + "."
    t = result.get("tokenising") or {}
    if "templated_winnow_captions_per_s" in t:
        lines.append(
            f"\nCaptions tokenised per second, open_clip's tokenizer against winnow's: {t['templated_open_clip_captions_per_s']:,} "
            f"against {t['templated_winnow_captions_per_s']:,} on the built-in pool's first shard ({t['distinct_in_shard']:,} "
            f"distinct captions of {t['captions']:,}); {t['distinct_open_clip_captions_per_s']:,} against "
            f"{t['distinct_winnow_captions_per_s']:,} when every caption differs."
        )
    return "\n".join(lines) + "\n"


def _scoring(result: dict) -> str:
    """benchmarks/scoring_throughput.py: scoring's rows per second against the bare forward, cold and warm."""
    bare = result["bare_forward_rows_per_s"]
    arms = (
        ("bare forward: rows decoded and in memory (the ceiling)", "bare_forward"),
        ("decode alone, the decoded cache off", "decode"),
        ("scoring one shard after another (decode, then forward), cache off", "scoring_inline"),
        ("scoring with the next shard decoding ahead in a thread, cache off", "scoring_ahead"),
        ("scoring as the stage runs it, the decoded cache warm", "scoring_warm"),
    )
    lines = [
        f"{result['device']}; {result['model']} ({result['objective']}) at {result['size']} px, batch {result['batch']}, "
        f"{result['rows']:,} rows of `{result['data']}`, {result['precision']}; {result['repeats']} repeats per arm in one "
        f"shuffled order in one process, medians. Includes: {result['includes']}.\n",
        "| arm | rows/s | over the bare forward |",
        "|---|---|---|",
        *(f"| {words} | {result[f'{key}_rows_per_s']:,.0f} | {result[f'{key}_rows_per_s'] / bare:.2f} |" for words, key in arms),
    ]
    slower = "slower" if result["bound"] == "decode" else "faster"
    stage = "decodes the next shard ahead" if result["decode_ahead_pays_here"] else "scores one shard after another"
    warm = result["scoring_warm_over_bare_forward"]
    return (
        "\n".join(lines)
        + f"\n\nBound by: {result['bound']} (decode alone is {slower} than the forward); here the score stage {stage}. "
        f"With the decoded cache warm, scoring runs at {warm:.2f}x the bare forward's rows per second (issue 25 asks for "
        f"at least 0.9x): {'met' if warm >= 0.9 else 'not met'} in this run.\n"
    )


def _compile_step(result: dict) -> str:
    """benchmarks/compile_step.py: a training step with the learner and the actor compiled (torch.compile) and eager."""
    lines = [
        f"{result['machine']}; {result['steps']} steps per run, the first {result['warmup']} not in the step time, "
        f"{result['repeats']} runs per arm in one shuffled order in one process; medians. Includes: {result['includes']}.\n",
        "| objective | policy | step, eager, ms | step, compiled, ms | compiled over eager | graphs; graph breaks | "
        "compiling, s (each run of the arm, in order) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        first = " (the objective's first compiled run)" if r["compiled_first_in_process"] else ""
        lines.append(
            f"| {r['objective']} | {r['policy']} | {r['step_ms_eager']:.1f} | {r['step_ms_compiled']:.1f} | "
            f"{r['compiled_over_eager']:.2f} | {r['graphs']}; {r['graph_breaks']} | "
            f"{', '.join(f'{v:.0f}' for v in r['compile_seconds'])}{first} |"
        )
    lines += [
        "",
        f"In one process that trains one {result['default_steps']}-step run of each arm above:",
        "",
        "| objective | compiling, s (each arm's first compiled run) | saved over one default run of each arm, s | net, s |",
        "|---|---|---|---|",
    ]
    for objective, o in result["objectives"].items():
        lines.append(
            f"| {objective} | {o['compile_seconds_in_all']:.0f} | {o['saved_seconds_one_default_run_of_each_arm']:+.0f} | "
            f"{o['net_seconds']:+.0f} |"
        )
    return "\n".join(lines) + "\n"


def _host_memory(result: dict) -> str:
    """benchmarks/host_memory.py: a step's seconds and a process's peak memory, freed buffers kept in glibc's heap
    (method/host_memory.py) against glibc's defaults, each setting in a fresh process, in paired rounds."""
    lines = [
        f"{result['cpu']}; {result['rounds']} rounds, each one fresh process per setting, back to back in a random "
        f"order; {result['pairs']} uniform and {result['pairs']} learnability runs of {result['steps']} steps per "
        f"process, the first {result['warmup']} not timed. Includes: {result['includes']}.\n",
        "| objective | policy | step, glibc defaults, ms | step, kept in the heap, ms | kept over defaults [interval] |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        for policy in ("uniform", "learnability"):
            low, high = r[f"{policy}_step interval"]
            lines.append(
                f"| {r['objective']} | {policy} | {r[f'{policy}_step_ms (glibc defaults)']:.1f} | "
                f"{r[f'{policy}_step_ms (kept in the heap)']:.1f} | {r[f'{policy}_step kept over defaults']:.2f} "
                f"[{low:.2f}, {high:.2f}] |"
            )
    lines += [
        "",
        "| objective | peak memory, glibc defaults, MiB | peak memory, kept in the heap, MiB | learnability "
        "over uniform, glibc defaults | learnability over uniform, kept in the heap |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['objective']} | {r['peak_rss_mib (glibc defaults)']:.0f} | {r['peak_rss_mib (kept in the heap)']:.0f} | "
            f"{r['learnability over uniform (glibc defaults)']:.2f} | {r['learnability over uniform (kept in the heap)']:.2f} |"
        )
    coverage = {r["interval_coverage"] for r in result["rows"]}
    lines.append(
        "\nThe interval is distribution-free, for the median of the rounds' ratios (covering it with probability "
        f"{', '.join(f'{c:.1%}' for c in sorted(coverage))}); medians elsewhere.\n"
    )
    return "\n".join(lines)


def _stage_startup(result: dict) -> str:
    """benchmarks/stage_startup.py: one stage from the shell, Prefect's temporary server started early or by Prefect."""
    med = result["median_seconds"]
    return (
        f"`{result['command']}`, {result['repeats']} runs per arm in one shuffled order from one process, medians; "
        f"{result['machine']}. Includes: {result['includes']}.\n\n"
        "| the temporary server started | seconds, median | every run |\n|---|---|---|\n"
        + "".join(
            f"| {words} | {med[arm]:.1f} | {', '.join(f'{v:.1f}' for v in result['seconds'][arm])} |\n"
            for words, arm in (
                ("by winnow, as the CLI's first act", "early"),
                ("by Prefect, when the flow asks (`WINNOW_PREFECT_EARLY=0`)", "prefect"),
            )
        )
        + f"\n{result['saved_seconds_per_stage']:.1f} s saved per stage.\n"
    )


LINES = ("reference training", "pool scoring", "selection per step", "learner's steps")


def _flop_lines(result: dict, label: str, repo: Path = REPO) -> str:
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


def _mean_range(values: list[float]) -> str:
    return f"{sum(values) / len(values):.2f} ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else f"{values[0]:.2f}"


def _end_to_end(runs: list[dict], before: str = "b6a1254") -> str:
    """benchmarks/end_to_end.sh: the default pipeline as dvc repro runs it, every stage rerun, at each commit, against
    the run at `before` (the last commit before issue 25's changes) of the same pairing: the one nearest in time, as
    each call of the script runs its commits one after the other on one machine's load."""
    from datetime import datetime

    def at(r: dict) -> float:
        return datetime.fromisoformat(r["date"]).timestamp()

    lines = [
        f"`{runs[0]['command']}`, timed from the first stage to the last, the environment's set-up not included; the "
        f"commits in a shuffled order, one run each; each row against the {before} run on its machine nearest to it in "
        "time (the same call of the script).\n",
        f"| commit | machine | run at | end to end | x {before}'s |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: r["date"]):
        bases = [b for b in runs if b["commit"].startswith(before) and b["machine"] == r["machine"]]
        base = min(bases, key=lambda b: abs(at(b) - at(r)))["seconds"]
        lines.append(
            f"| {r['commit'][:7]} ({r['rev']}) | {r['machine']} | {r['date']} | {_minutes(r['seconds'])} | {r['seconds'] / base:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _parallel_arms(result: dict) -> str:
    """benchmarks/parallel_arms.py: every policy's train stage one at a time against N at once, in rounds (each
    setting a fresh process, the two in a random order); the ratio is read within a round."""
    n, rounds = result["arms"], result["rounds"]
    lines = [
        f"{result['machine']}, objective {result['objective']}; {len(rounds)} rounds, each setting once per round in a "
        f"random order, each in a fresh process. Includes: {result['includes']}.\n",
        f"| round (order) | one at a time | {n} at once | {n} at once over one at a time | median step, ms, one at a time "
        f"(uniform; learnability) | the same, {n} at once |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rounds, 1):
        one, many = r["runs"]["1"], r["runs"][str(n)]
        order = ", then ".join(f"{a} at once" if a > 1 else "one at a time" for a in r["order"])
        lines.append(
            f"| {i} ({order}) | {_minutes(one['seconds'])} | {_minutes(many['seconds'])} | {r['ratio']:.2f} | "
            f"{one['step_ms']['uniform']:.1f}; {one['step_ms']['learnability']:.1f} | "
            f"{many['step_ms']['uniform']:.1f}; {many['step_ms']['learnability']:.1f} |"
        )
    low, high = result["ratio_range"]
    same = " and ".join(
        f"{'one at a time' if a == '1' else f'{a} at once'}: {'yes' if ok else 'no'}"
        for a, ok in result["same_numbers_every_round"].items()
    )
    lines.append(
        f"\nMedian ratio {result['ratio_median']:.2f} (rounds {low:.2f} to {high:.2f}); each setting's final metrics the same every round: {same}."
    )
    return "\n".join(lines) + "\n"


def _minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s"


FIGURES: dict[str, Figure] = {
    "claims": Figure(tuple(dict.fromkeys(f for c in claims.CLAIMS for f in c.files)), claims.figure),
    "classification": Figure("metrics/synthetic/classification/summary.json", _headline),
    "classification-verdict": Figure("metrics/synthetic/classification/summary.json", _one_line),
    "contrastive": Figure("metrics/synthetic/contrastive/summary.json", _headline),
    "contrastive-verdict": Figure("metrics/synthetic/contrastive/summary.json", _one_line),
    "bench-classification": Figure("metrics/synthetic/bench/classification.json", _bench),
    "bench-contrastive": Figure("metrics/synthetic/bench/contrastive.json", _bench),
    "bench-mnist": Figure("metrics/mnist/bench/classification.json", _bench),
    "bench-mnist-pairs": Figure("metrics/mnist-pairs/bench/contrastive.json", _bench),
    "levers-mnist-pairs-jest": Figure("metrics/mnist-pairs/bench/contrastive-levers-jest.json", _levers),
    "levers-mnist-2pct": Figure("metrics/mnist-2pct/bench/classification-levers.json", _levers),
    "levers-synthetic": Figure("metrics/synthetic/bench/classification-levers.json", _levers),
    "regimes-synthetic": Figure("metrics/synthetic/bench/classification-regimes.json", _regimes),
    "advise-mnist-2pct": Figure("metrics/mnist-2pct/advise-classification.json", _advice),
    "regimes-synthetic-contrastive": Figure("metrics/synthetic/bench/contrastive-regimes.json", _regimes),
    "regimes-synthetic-contrastive-replication": Figure("metrics/synthetic/bench/contrastive-regimes-replication.json", _regimes),
    "advise-mnist-pairs": Figure("metrics/mnist-pairs/advise-contrastive.json", _advice),
    "step-time": Figure("metrics/synthetic/bench/step_time.json", _step_time),
    "scoring-classification": Figure("metrics/synthetic/bench/scoring_classification.json", _scoring),
    "scoring-contrastive": Figure("metrics/synthetic/bench/scoring_contrastive.json", _scoring),
    "levers-mnist-2pct-cnn-tiny": Figure("metrics/mnist-2pct/bench/classification-levers-cnn-tiny-scorer.json", _levers),
    "levers-mnist-2pct-tiny-reference": Figure("metrics/mnist-2pct/bench/classification-levers-cnn-tiny-reference.json", _levers),
    "levers-mnist-2pct-short-budgets": Figure("metrics/mnist-2pct/bench/classification-levers-short-budgets.json", _levers),
    "flops-mnist-2pct-tiny-reference": Figure(
        "metrics/mnist-2pct/bench/classification-levers-cnn-tiny-reference.json",
        functools.partial(_flop_lines, label="cnn-tiny-reference"),
        reads_tree=True,
    ),
    "levers-mnist-2pct-long-budget": Figure("metrics/mnist-2pct/bench/classification-levers-long-budget.json", _levers),
    "flops-mnist-2pct-long-budget": Figure(
        "metrics/mnist-2pct/bench/classification-levers-long-budget.json",
        functools.partial(_flop_lines, label="long-budget"),
        reads_tree=True,
    ),
    "flops-mnist-2pct-cnn-tiny": Figure(
        "metrics/mnist-2pct/bench/classification-levers-cnn-tiny-scorer.json",
        functools.partial(_flop_lines, label="cnn-tiny-scorer"),
        reads_tree=True,
    ),
    "end-to-end": Figure("metrics/synthetic/bench/end_to_end.jsonl", _end_to_end),
    "end-to-end-contrastive": Figure("metrics/synthetic/bench/end_to_end_contrastive.jsonl", _end_to_end),
    "parallel-arms-contrastive": Figure("metrics/synthetic/bench/parallel_arms_contrastive.json", _parallel_arms),
    "stage-startup": Figure("metrics/synthetic/bench/stage_startup.json", _stage_startup),
    "compile-step": Figure("metrics/synthetic/bench/compile_step.json", _compile_step),
    "host-memory": Figure("metrics/synthetic/bench/host_memory.json", _host_memory),
    "levers-mnist-2pct-5-seeds": Figure("metrics/mnist-2pct/bench/classification-levers-anneal-floor-5-seeds.json", _levers),
    "pool-pretraining": Figure("metrics/synthetic/bench/classification-pool-pretraining.json", pool_table),
}


@contextlib.contextmanager
def committed(repo: Path = REPO):
    """A temporary folder holding README.md, docs/ and metrics/ as HEAD has them: the pages and the files they are
    written from as a clone of this commit sees them, whatever a local run has written since. Outside a git checkout
    (an unpacked release), the folder itself."""

    def git(*args: str) -> bytes:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True).stdout

    try:
        top = git("ls-tree", "--name-only", "HEAD").decode().split()
    except (OSError, subprocess.CalledProcessError):
        yield repo
        return
    archive = git("archive", "HEAD", "--", *[name for name in (*PAGES, "metrics") if name in top])
    with tempfile.TemporaryDirectory(prefix="winnow-committed-") as folder:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        yield Path(folder)


def pages(repo: Path = REPO) -> list[Path]:
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def render(name: str, repo: Path = REPO) -> str:
    if name not in FIGURES:
        raise KeyError(f"no figure {name!r}; the figures are {', '.join(FIGURES)} (winnow/reports/figures.py)")
    figure = FIGURES[name]
    missing = [path for path in figure.files if not (repo / path).is_file()]
    if missing:
        raise MissingInput(
            f"figure {name!r} is written from {', '.join(missing)}, which is not there (the bench or benchmark that "
            "writes it: docs/benchmarks.md; or restore it with git)"
        )
    read = {path: _load(repo / path) for path in figure.files}
    data = read if isinstance(figure.source, tuple) else read[figure.source]
    text = figure.render(data, repo=repo) if figure.reads_tree else figure.render(data)
    return text if text.endswith("\n") else text + "\n"  # the closing marker on a line of its own


def _load(path: Path):
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines()] if path.suffix == ".jsonl" else json.loads(text)


OPEN, CLOSE = re.compile(r"<!-- figures: (?P<name>[\w.-]+) -->"), "<!-- /figures -->"


def check_markers(page: Path, text: str) -> None:
    """Every block opened, then closed, each on a line of its own, none inside another: else an error naming the
    line, before anything is written (a lost closing marker would make a block swallow the prose after it)."""
    opened = None  # (line, name) of the block open at this point
    for number, line in enumerate(text.splitlines(), 1):
        start, end = OPEN.search(line), CLOSE in line
        if start and (line.strip() != start.group(0) or opened):
            where = f"inside the block {opened[1]!r} opened at line {opened[0]}" if opened else "not alone on its line"
            raise DataError(f"{page}:{number}: the marker of {start.group('name')!r} is {where}; close each block first")
        if end and (line.strip() != CLOSE or not opened):
            why = "closes no block" if not opened else "is not alone on its line"
            raise DataError(f"{page}:{number}: {CLOSE} {why}; each block is <!-- figures: NAME --> ... {CLOSE}")
        if start:
            opened = (number, start.group("name"))
        elif end:
            opened = None
    if opened:
        raise DataError(f"{page}:{opened[0]}: the block {opened[1]!r} is never closed; add {CLOSE} after its text")


def rewrite(page: Path, repo: Path = REPO) -> str:
    """The page with every block written from its file."""
    text = page.read_text()
    check_markers(page, text)
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("name"), repo) + m.group(4), text)


def stale(repo: Path = REPO) -> list[str]:
    """The blocks whose text differs from what their file says ('page: name'), and any block a page quotes twice."""
    out = []
    for page in pages(repo):
        text, seen = page.read_text(), set()
        check_markers(page.relative_to(repo), text)
        for m in BLOCK.finditer(text):
            name = m.group("name")
            if name in seen:  # a page pasted into itself quotes its figures twice
                out.append(f"{page.relative_to(repo)}: {name} (quoted twice)")
            seen.add(name)
            if m.group("body") != render(name, repo):
                out.append(f"{page.relative_to(repo)}: {name}")
    return out


def write_all(repo: Path = REPO) -> list[Path]:
    """Rewrite every page that has a stale block; the pages written. Every page's markers are checked before any
    page is written."""
    for page in pages(repo):
        check_markers(page.relative_to(repo), page.read_text())
    written = []
    for page in pages(repo):
        new = rewrite(page, repo)
        if new != page.read_text():
            write_text(new, page)
            written.append(page)
    return written
