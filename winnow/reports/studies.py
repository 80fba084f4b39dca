"""The study reports: reports/<dataset>/bench-<objective>-<study>.md, each with its table, plot and command."""

from __future__ import annotations

import os
from pathlib import Path

from winnow.files import write_text
from winnow.reports.plots import plot_jest, plot_study
from winnow.reports.run import trains_on_words
from winnow.reports.tables import STUDY_WORDS, curate_study_table, jest_table, mean_std, study_table


def write_study_report(result: dict, paths) -> Path:
    """reports/<dataset>/bench-<objective>-<study>.md: the study's table and plot, with the command."""
    study, objective = result["study"], result["objective"]
    path = paths.study_report(study)
    plot = paths.bench_plots / f"study_{study}.png"
    if study == "jest":
        return _write_jest_report(result, paths, path, plot)
    if study == "curate":
        return _write_curate_study_report(result, paths, path, plot)
    plot_study(result, plot)
    link = Path(os.path.relpath(plot, path.parent)).as_posix()
    who = f"The learner is {result['learner']}" if study == "scorers" else f"The reference and the actor are {result['scorer']}"
    text = f"""# winnow bench: {objective}, {study}

{STUDY_WORDS[study][1]} {who}; the actor trains on the {trains_on_words(result["actor_trains_on"])}.
Each row: learnability against uniform on the same learner and seed, {result["steps"]} steps; seeds
{", ".join(map(str, result["seeds"]))} (mean ± std over seeds; a count in brackets when some seeds never reached the target).
Ratios are to uniform's final held-out metric: steps, FLOPs and measured seconds, the reference's
training and the pool's scoring counted in full (and amortised over {result["amortise_over"]} runs in the last two columns).

{study_table(result)}

![ratios against size]({link})

Regenerate: `uv run winnow bench --objective {objective} --study {study}`; the numbers, every run included,
are in `{paths.study_json(study).as_posix()}`.
"""
    write_text(text, path)
    return path


def _write_jest_report(result: dict, paths, path: Path, plot: Path) -> Path:
    plot_jest(result, plot)
    link = Path(os.path.relpath(plot, path.parent)).as_posix()
    text = f"""# winnow bench: {result["objective"]}, JEST

Joint example selection (JEST, `train.selection: jest`) against per-example learnability and uniform, on a
{result["learner"]} learner, seeds {", ".join(map(str, result["seeds"]))}, {result["steps"]} steps each. Each row is
learnability (per example, or JEST's joint batches) against uniform in the same seed; the ratios are to
uniform's final {result["metric"]} ({mean_std(result["uniform_final_metric"])}): steps, FLOPs and measured seconds,
the reference's training and the pool's scoring counted in full (FLOPs also amortised over
{result["amortise_over"]} runs). "scoring px": the resolution the reference and the actor learn and score at
(the learner always trains at full size); a lower one is counted at the FLOPs it costs. Mean ± std over
seeds; a count in brackets when some seeds never reached the target.

{jest_table(result)}

![target metric per learner step]({link})

Regenerate: `uv run winnow bench --objective {result["objective"]} --study jest`; the numbers, every run
included, are in `{paths.study_json("jest").as_posix()}`.
"""
    write_text(text, path)
    return path


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
included, are in `{paths.study_json("curate").as_posix()}`.
"""
    write_text(text, path)
    return path
