"""The bench report: reports/<dataset>/bench-<objective>.md, the verdict, the ledger and the systems figures."""

from __future__ import annotations

import os
from pathlib import Path

from winnow.files import write_text
from winnow.reports.plots import plot_bench
from winnow.reports.run import trains_on_words
from winnow.reports.tables import baseline_first, bench_table, number, ratio


def write_bench_report(result: dict, curves: dict[str, list[dict]], metric: str, paths) -> Path:
    """reports/<dataset>/bench-<objective>.md: the verdict, the ledger and the systems figures, each with its command."""
    plots, path = paths.bench_plots, paths.bench_report
    plot_bench(curves, result["targets"], metric, plots)
    link = Path(os.path.relpath(plots, path.parent)).as_posix()
    objective, n = result["objective"], len(result["seeds"])
    command = (
        f"uv run winnow bench --objective {objective}"
        + (f" --set data.root={result['data']}" if result.get("data") not in (None, "data/synthetic") else "")
        + f' --set bench.seeds={n} --set "bench.policies=[{",".join(p for p, _ in baseline_first(result["policies"]))}]"'
        + label_words(paths)
    )
    systems = result["systems"]
    step_time = ", ".join(f"{p} {ratio(v)}" for p, v in baseline_first(systems["step_time_over_ledger"]))
    text = f"""# winnow bench: {objective}

**What was run.** A {result["learner"]} learner trained under each policy on the same pool, with
{n} seeds ({", ".join(map(str, result["seeds"]))}); the reference is {result["reference"]}, trained on the curated set, and the
actor (whose loss scores each super-batch for hard_learner and learnability) is {result["actor"]}, trained on the
{trains_on_words(result["actor_trains_on"])}.
One stopping rule for every arm, uniform included: the target is the mean of uniform's last
{result.get("target_window", 1)} evaluations of {result.get("curve_metric", metric).replace("_", " ")} *in the same seed*; an arm
reaches it where its curve, smoothed the same way, stays at or above it (interpolated). Each ratio is measured
within a seed against uniform at its own crossing, then averaged: geometric mean and 95% interval (on the log scale) over the seeds that
reached it (k/n: how many did). *final* is the test set, read once after the full run. Regenerate everything
on this page with `{command}`.

**Verdict.** {verdict(result)}

## Steps and FLOPs to reach uniform's final {metric.replace("_", " ")}

step_ratio = steps to the target / uniform's steps to it; flop_ratio = FLOPs to the target / uniform's FLOPs
to it; time_ratio = seconds to the target / uniform's seconds to it (the median step's seconds times the steps,
evaluation excluded; arms trained in a seeded random order). The last column is the share of {result["noise"].replace("_", " ")} examples in the batches each policy trained on
(the pool has {number(result[f"pool_{result['noise']}_fraction"], "an unknown share", 3)}); final is the held-out
{metric.replace("_", " ")} after every step, and each *task* probe the linear-probe accuracy of the final learner's
frozen features on that transfer task (eval/*task*/), when the data has one.

```
{bench_table(result)}
```

![held-out metric per learner step]({link}/bench_steps.png)

![held-out metric per FLOP]({link}/bench_flops.png)

## The ledger (seed {result["seeds"][0]}, FLOPs)

Every line measured (winnow/method/flops.py): a training step whole (forward, backward, optimiser), scoring
as the loop scores; FLOPs are what `torch.utils.flop_counter.FlopCounterMode` counts plus one per element of
each pointwise op. The first two lines are paid once per reference; the others every step (the last, JEST's
reference logits from stored embeddings, is zero for per-example selection).

| policy | reference training | pool scoring | actor scoring / step | actor training / step | learner training / step | reference logits / step |
|---|---|---|---|---|---|---|
{_ledger_rows(result)}

How the saving moves with the size of the scorers and of the learner: `uv run winnow bench --study scorers`
and `--study learners` (reports beside this one).

## Systems figures (each a ratio measured in one run)

- Scoring throughput over the bare forward pass of the same model on the same shard (decoding,
  Parquet and DuckDB included; 1.0 is no overhead): {ratio(systems["scoring_over_bare_forward"])}.
- Learner wall time per step over what the ledger predicts from FLOPs (relative to uniform's step):
  {step_time}.
- DuckDB ingest: {ratio(systems["ingest_rows_per_s"])} rows/s.

All of it: `{command}`; the numbers are in `{paths.study_json("policies").as_posix()}`, the curves in
`{paths.bench_curve("uniform").parent.as_posix()}/` (`dvc plots show` draws them).
"""
    write_text(text, path)
    return path


def label_words(paths) -> str:
    """The `--set bench.label=...` that reruns a labelled study run (nothing for an unlabelled one)."""
    return f" --set bench.label={paths.label}" if paths.label else ""


def lever_policies(result: dict) -> str:
    """The words for a --study levers result's levers that train another policy than learnability (or nothing)."""
    others = sorted({r.get("policy", "learnability") for r in result["rows"]} - {"learnability"})
    return f" (a row whose policies name {' or '.join(others)} trains that instead)" if others else ""


def verdict(result: dict) -> str:
    """Learnability against the best baseline of each seed (the verdict), then against uniform alone."""
    learn = result["policies"].get("learnability", {})
    full, amort = learn.get("flop_ratio_full", {}), learn.get("flop_ratio_amortised", {})
    text = ""
    if "verdict" in result and "learnability" in result["verdict"]["against_best"]:
        best = sorted(set(result["verdict"]["best_baseline"]))
        against = result["verdict"]["against_best"]["learnability"]
        final = against["final_over_best"]
        text = (
            f"Against the best baseline of each seed ({', '.join(best)}), learnability to the target, in times the "
            f"baseline's, the reference paid in full: FLOPs **{ratio(against['flop_ratio'])}**, steps "
            f"{ratio(against['step_ratio'])}, seconds {ratio(against['time_ratio'])}; its final test metric was "
            f"{final['mean']:+.4f} against the baseline's (mean over seeds). "
        )
    runs = result["amortise_over"]
    return text + (
        f"Against uniform alone, in times uniform's: FLOPs {ratio(full)} with the reference counted in full, "
        f"{ratio(amort)} amortised over {runs} runs that reuse the same reference and scores; seconds "
        f"{ratio(learn.get('time_ratio_full', {'mean': None, 'runs': 0}))}."
    )


def _ledger_rows(result: dict) -> str:
    return "\n".join(
        f"| {p} | {c['reference_training']:.3g} | {c['pool_scoring']:.3g} | {c['actor_scoring_per_step']:.3g} | "
        f"{c['actor_training_per_step']:.3g} | {c['learner_training_per_step']:.3g} | "
        f"{c.get('reference_logits_per_step', 0.0):.3g} |"
        for p, c in baseline_first(result["ledger_seed0"])
    )
