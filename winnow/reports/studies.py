"""The study reports: reports/<dataset>/bench-<objective>-<study>.md, each with its table, plot and command."""

from __future__ import annotations

import os
from pathlib import Path

from winnow.config import params_from_dict
from winnow.files import write_text
from winnow.reports.bench import label_words, lever_policies
from winnow.reports.plots import plot_jest, plot_regimes, plot_study
from winnow.reports.run import trains_on_words
from winnow.reports.tables import (
    STUDY_WORDS,
    curate_study_table,
    interval,
    jest_table,
    levers_table,
    mean_std,
    regimes_table,
    study_table,
)


def write_study_report(result: dict, paths) -> Path:
    """reports/<dataset>/bench-<objective>-<study>.md: the study's table and plot, with the command."""
    study, objective = result["study"], result["objective"]
    path = paths.study_report(study)
    plot = paths.bench_plots / f"study_{paths.study_name(study)}.png"
    page = {"jest": _jest_page, "curate": _curate_page, "levers": _levers_page, "regimes": _regimes_page}.get(study, _size_page)
    title, text, alt = page(result, plot)
    link = Path(os.path.relpath(plot, path.parent)).as_posix()
    write_text(
        f"""# winnow bench: {objective}, {title}

{text}

![{alt}]({link})

Regenerate: `uv run winnow bench --objective {objective} --study {study}{settings_words(result)}{label_words(paths)}` (the
settings the result records; any other `--set` it was run with is in docs/benchmarks.md); the numbers, every run included,
are in `{paths.study_json(study).as_posix()}`.
""",
        path,
    )
    return path


def settings_words(result: dict) -> str:
    """The `--set` options that rerun a study as its result records it: the data and seeds where not the defaults,
    and for --study levers its baselines, scorers, steps and levers (each lever's train changes, as YAML flow)."""
    defaults = params_from_dict({})  # params.yaml's (tests/test_config.py checks the two agree)
    words = []
    if result.get("data") and result["data"] != defaults.data.root:
        words.append(f"--set data.root={result['data']}")
    seeds = result["seeds"]
    if seeds[0] != defaults.seed:
        words.append(f"--set seed={seeds[0]}")
    if len(seeds) != defaults.bench.seeds:
        words.append(f"--set bench.seeds={len(seeds)}")
    if result["study"] == "levers":
        levers = ", ".join(f"{r['lever']}: {_flow(r['changes'])}" for r in result["rows"])
        words += [
            f'--set "bench.policies=[{",".join(result["baselines"])}]"',
            f"--set reference.model={result['reference']}",
            f"--set train.actor={result['actor']}",
            f"--set train.steps={result['steps']}",
            f'--set "bench.levers={{{levers}}}"',
        ]
    if result["study"] == "regimes":
        points = ", ".join(f"{r['point']}: {_flow(r['changes'])}" for r in result["rows"])
        words += [f'--set "bench.policies=[{",".join(result["baselines"])}]"', f'--set "bench.regimes={{{points}}}"']
    return "".join(f" {w}" for w in words)


def _flow(changes: dict) -> str:
    """A lever's or point's changes as YAML flow, as a `--set` takes them."""

    def value(v) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return str(v)

    return "{" + ", ".join(f"{k}: {value(v)}" for k, v in changes.items()) + "}"


def _size_page(result: dict, plot: Path) -> tuple[str, str, str]:
    """--study scorers | learners: the ratios against the size of the scorer, or of the learner."""
    study = result["study"]
    plot_study(result, plot)
    who = f"The learner is {result['learner']}" if study == "scorers" else f"The reference and the actor are {result['scorer']}"
    text = f"""{STUDY_WORDS[study][1]} {who}; the actor trains on the {trains_on_words(result["actor_trains_on"])}.
Each row: learnability against uniform on the same learner and seed, {result["steps"]} steps; seeds
{", ".join(map(str, result["seeds"]))} (mean ± std over seeds; a count in brackets when some seeds never reached the target).
Ratios are to uniform's final held-out metric: steps, FLOPs and measured seconds, the reference's
training and the pool's scoring counted in full (and amortised over {result["amortise_over"]} runs in the last two columns).

{study_table(result)}"""
    return study, text, "ratios against size"


def _jest_page(result: dict, plot: Path) -> tuple[str, str, str]:
    plot_jest(result, plot)
    text = f"""Joint example selection (JEST, `train.selection: jest`) against per-example learnability and uniform, on a
{result["learner"]} learner, seeds {", ".join(map(str, result["seeds"]))}, {result["steps"]} steps each. Each row is
learnability (per example, or JEST's joint batches) against uniform in the same seed; the ratios are to
uniform's final {result["metric"]} ({mean_std(result["uniform_final_metric"])}): steps, FLOPs and measured seconds,
the reference's training and the pool's scoring counted in full (FLOPs also amortised over
{result["amortise_over"]} runs). "scoring px": the resolution the reference and the actor learn and score at
(the learner always trains at full size); a lower one is counted at the FLOPs it costs. Mean ± std over
seeds; a count in brackets when some seeds never reached the target.

{jest_table(result)}"""
    return "JEST", text, "target metric per learner step"


def _levers_page(result: dict, plot: Path) -> tuple[str, str, str]:
    plot_jest(result, plot, "each lever against the baselines")
    best = result["best_baseline"]
    counts = ", ".join(f"{b} in {best.count(b)}" for b in sorted(set(best), key=best.index))
    text = f"""Which remedy for a weak reference pays, on `{result["data"]}`. Per seed ({", ".join(map(str, result["seeds"]))}) one
{result["reference"]} reference and one run of each baseline ({", ".join(result["baselines"])}) are shared by every lever;
each lever is learnability on a {result["learner"]} learner ({result["steps"]} steps, scored by a {result["actor"]} actor)
with the train settings in its row{lever_policies(result)}. Every arm is read with the one stopping rule on the validation split; the
best baseline is the one with the fewest FLOPs to the target in each seed ({counts} of {len(best)} seeds; its final
test {result["metric"].replace("_", " ")}: {interval(result["best_final_metric"])}). Ratios: geometric mean [95% interval, on the log
scale] over the seeds that reached the target (k/n reached), the reference's training and the pool's scoring paid in full. The last
column is the plateau alarm: the share of each super-batch with negative learnability over the run's last tenth.

{levers_table(result)}"""
    return "levers", text, "validation metric per learner step"


def _regimes_page(result: dict, plot: Path) -> tuple[str, str, str]:
    plot_regimes(result, plot)
    check = result["leave_one_out"]
    checked = (
        f"Checked against itself: each point advised from the others alone (the nearest of them, as `winnow advise` "
        f"does) matched its own outcome at {check['agreed']} of {check['points']} points."
        if check["agreed"] is not None
        else "One point: nothing to check it against."
    )
    text = f"""Where selection saves compute against the best baseline, and where it does not, around `{result["data"]}`.
At each point (a change to the data or to the scorers), per seed ({", ".join(map(str, result["seeds"]))}): the baselines
({", ".join(result["baselines"])}) and learnability as configured, {result["steps"]} steps, read with the one stopping rule
on the validation split against the seed's best baseline, the reference's training and the pool's scoring paid in
full; and a uniform pilot of {result["pilot_steps"]} steps. *Selection pays* where every seed reached the target in
fewer FLOPs than the best baseline (the interval's upper end below 1) and ended no lower on average. The first
columns are what `winnow advise` measures on new data before any selection run: the curated set's share of the pool,
the reference's validation {result["metric"]}, the pilot's, and the scorer's forward FLOPs over the learner's (means
over seeds). Ratios: geometric mean [95% interval, on the log scale] (k/n seeds reached); metrics: mean [95% interval].

{regimes_table(result)}

{checked}"""
    return "regimes (where selection pays)", text, "FLOPs to the target against the best baseline at each point"


def _curate_page(result: dict, plot: Path) -> tuple[str, str, str]:
    plot_jest(result, plot, "curated pools against the full pool and online learnability")
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
    text = f"""Curate once, then train plainly. Per seed ({", ".join(map(str, result["seeds"]))}): the {result["reference"]} reference learns
from the curated set and scores the pool once; `winnow curate` keeps a fraction of the pool by rule `{result["rule"]}`
(rows `{result["rule"]}-<fraction>`){peer_words}; the {result["learner"]} learner then trains {result["steps"]} steps,
uniformly, on each curated pool. Beside them: online learnability on the full pool (the paper's method){transfer_words}.

Every ratio is to uniform on the full pool, same learner and seed, to reach its final {result["metric"]}: steps,
FLOPs and measured seconds. A curated run pays the reference's training, the pool's scoring and any further pass
over the pool (cleanlab's probabilities) and curation's own seconds, in full (and amortised over
{result["amortise_over"]} runs in the `amortised` columns). Mean ± std over seeds; a count in brackets when some
seeds never reached the target.

{curate_study_table(result)}"""
    return "curate", text, "target metric per learner step"
