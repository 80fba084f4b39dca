"""The run report: reports/<dataset>/<objective>.md, a page a newcomer can read alone."""

from __future__ import annotations

import os
from pathlib import Path

from winnow.files import write_text
from winnow.reports.plots import plot_curves, plot_mix
from winnow.reports.tables import table


def write_run_report(summary: dict, curves: dict[str, list[dict]], paths, params) -> Path:
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
{ref.get("final_metric", float("nan")):.3f} held-out {ref.get("test_metric", "accuracy").replace("_", " ")}) {_reference_words(ref)}.
Target: the mean of uniform's last {summary["target_window"]} evaluations of {summary.get("curve_metric", summary["metric"]).replace("_", " ")}; every arm, uniform
included, is read where its curve, smoothed over as many evaluations, reaches it for good. step ratio = steps to reach it / uniform's
own steps to reach it. *final test* is the test set, read once, after the full {params.train.steps} steps.
The baselines ({", ".join(summary["verdict"]["baselines"])}) select nothing; selection is judged against the best of them.

```
{table(summary)}
```

![validation curve per step]({link}/accuracy.png)

{f"![what each policy selected]({link}/selected_mix.png)" if summary["pool_mix"] else "(The data records no pathology, so what each policy selected cannot be broken down.)"}

{_plateau_section(summary, curves)}{_curate_section(summary, paths, path)}
Regenerate: `winnow pipeline` (everything) or `winnow summary` (this page, from the metrics on disk).
"""
    write_text(text, path)
    return path


def _plateau_section(summary: dict, curves: dict[str, list[dict]]) -> str:
    """The plateau alarm: has the reference stopped helping? The share of each super-batch with negative
    learnability over the run, and where each learner's validation curve passed the reference's own metric."""
    rows = {p: row["negative_learnability"] for p, row in summary["policies"].items() if row.get("negative_learnability")}
    ref = summary.get("reference", {}).get("val_metric")
    if not rows or ref is None:
        return ""
    metric = summary["curve_metric"].split("_", 1)[1]
    lines = [
        "| policy | negative learnability, each tenth of the run | passed the reference's val metric at step |",
        "|---|---|---|",
    ]
    for policy, shares in rows.items():
        passed = next((int(r["step"]) for r in curves[policy] if float(r[metric]) >= ref), None)
        lines.append(f"| {policy} | {' '.join(f'{v:.2f}' for v in shares)} | {passed if passed is not None else 'never'} |")
    table = "\n".join(lines)
    return f"""## The plateau alarm: has the reference stopped helping?

The reference scores {ref:.3f} {summary["curve_metric"].replace("_", " ")}. Learnability is the actor's loss minus the
reference's; the share of each super-batch where it is negative (the actor already does better than the
reference) climbs as the learner outgrows its teacher. Near one half, the scores no longer separate what is
worth learning from the rest, and a schedule that hands back to uniform batches (`train.anneal_last`) or a
floor (`train.floor`) is the remedy to try. The step log has it per step (`negative_learnability`).

{table}

"""


def _curate_section(summary: dict, paths, report_path: Path) -> str:
    """The run report's look at the data: what `winnow curate` kept and refused, when it ran."""
    record = summary.get("curate")
    if not record:
        return ""
    link = Path(os.path.relpath(paths.curate_plots, report_path.parent)).as_posix()
    curate_report = Path(os.path.relpath(paths.curate_report, report_path.parent)).as_posix()
    noise = record["pathology"].get(summary["noise"])
    how = f"{record['fraction']:.0%} of the pool" if record["fraction"] is not None else f"what {record['rule']} keeps"
    noisy = (
        f", {noise['kept']:,} of its {noise['pool']:,} {summary['noise'].replace('_', ' ')} examples among them" if noise else ""
    )
    return f"""## What curation kept

`winnow curate` (rule `{record["rule"]}`, {how}) kept {record["kept_rows"]:,} of {record["pool_rows"]:,} pool examples{noisy}
([curate report]({curate_report}); the curated dataset: `{record["dest"]}`). A random sample of each side:

![kept examples]({link}/kept.png)

![dropped examples]({link}/dropped.png)
"""


def _reference_words(ref: dict) -> str:
    if ref.get("loaded_from"):
        return f"was loaded from `{ref['loaded_from']}` (reference.checkpoint), not trained here: the ledger counts no training for it"
    return f"learned from {ref.get('train_examples', '?')} curated examples"


def trains_on_words(setting: str) -> str:
    return "kept batch" if setting == "kept" else "whole super-batch"


def _actor_words(params) -> str:
    if params.train.actor == "learner":
        return "the learner's own loss (train.actor: learner)"
    at = f" at {params.train.score_resolution} px" if params.train.score_resolution else ""
    return f"the loss of a {params.train.actor} actor{at} trained alongside it on each {trains_on_words(params.train.actor_trains_on)}"


def _selection_words(params) -> str:
    """How a policy keeps its batch, in words."""
    cfg = params.train
    how = {
        "topk": "(the top scores)",
        "softmax": f"(sampled from softmax(score / {cfg.temperature:g}))",
        "jest": f"(jointly, JEST: in {cfg.jest_chunks} chunks, each later one by the scores conditioned on those chosen, "
        f"sampled at temperature {cfg.temperature:g})",
        "weighted": f"(all of it, each example weighted by n * softmax(score / {cfg.temperature:g}))",
    }[cfg.selection]
    levers = [
        f"temperature relaxing to {cfg.temperature_end:g}" if cfg.temperature_end is not None else "",
        f"{cfg.floor:.0%} of each batch drawn uniformly" if cfg.floor else "",
        f"uniform batches for the last {cfg.anneal_last:.0%} of steps" if cfg.anneal_last else "",
    ]
    return how + "".join(f"; {lever}" for lever in levers if lever)
