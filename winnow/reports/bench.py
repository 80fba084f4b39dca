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
    command = f"uv run winnow bench --objective {objective}" + (
        f" --set data.root={result['data']}" if result.get("data") not in (None, "data/synthetic") else ""
    )
    systems = result["systems"]
    step_time = ", ".join(f"{p} {ratio(v)}" for p, v in baseline_first(systems["step_time_over_ledger"]))
    text = f"""# winnow bench: {objective}

**What was run.** A {result["learner"]} learner trained under each policy on the same pool, with
{n} seeds ({", ".join(map(str, result["seeds"]))}); the reference is {result["reference"]}, trained on the curated set, and the
actor (whose loss scores each super-batch for hard_learner and learnability) is {result["actor"]}, trained on the
{trains_on_words(result["actor_trains_on"])}.
The target is the uniform run's final held-out {metric.replace("_", " ")} *in the same seed*; each ratio is
measured within a seed, then averaged (mean ± standard deviation over seeds). Regenerate everything
on this page with `{command}`.

**Verdict.** {_verdict(result)}

## Steps and FLOPs to reach uniform's final {metric.replace("_", " ")}

step_ratio = steps to the target / uniform's steps; flop_ratio = FLOPs to the target / uniform's total
FLOPs; time_ratio = seconds to the target / uniform's training seconds, measured (evaluation excluded
from both). The last column is the share of {result["noise"].replace("_", " ")} examples in the batches each policy trained on
(the pool has {number(result[f"pool_{result['noise']}_fraction"], "an unknown share", 3)}); final is the held-out
{metric.replace("_", " ")} after every step, and each *task* probe the linear-probe accuracy of the final learner's
frozen features on that transfer task (eval/*task*/), when the data has one.

```
{bench_table(result)}
```

![held-out metric per learner step]({link}/bench_steps.png)

![held-out metric per FLOP]({link}/bench_flops.png)

## The ledger (seed {result["seeds"][0]}, FLOPs)

Forward FLOPs per example measured with `torch.utils.flop_counter.FlopCounterMode`; a backward pass
counts twice its forward. The first two lines are paid once per reference; the others every step
(the last, JEST's reference logits from stored embeddings, is zero for per-example selection).

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
`{(paths.bench / objective / "curves").as_posix()}/` (`dvc plots show` draws them).
"""
    write_text(text, path)
    return path


def _verdict(result: dict) -> str:
    """Learnability's FLOPs and seconds to the target over uniform's, the reference paid in full and amortised."""
    learn = result["policies"].get("learnability", {})
    full, amort = learn.get("flop_ratio_full", {}).get("mean"), learn.get("flop_ratio_amortised", {}).get("mean")
    clock = learn.get("time_ratio_full", {}).get("mean")

    def verdict(value, what):
        if value is None:
            return f"learnability never reached the target, so {what} it saved nothing."
        return f"learnability needed **{value:.2f}x** uniform's FLOPs {what}: " + (
            "compute-positive." if value < 1 else "**not** compute-positive."
        )

    runs = result["amortise_over"]
    return f"""With the reference's one-off cost (its training and the pool scoring) counted in full,
{verdict(full, "with the reference counted in full")} Amortised over {runs} runs that reuse the same
reference and scores, {verdict(amort, f"amortised over {runs} runs")} On the clock, reference training
and pool scoring counted in full, learnability took {number(clock, "(never reached)")}x uniform's seconds."""


def _ledger_rows(result: dict) -> str:
    return "\n".join(
        f"| {p} | {c['reference_training']:.3g} | {c['pool_scoring']:.3g} | {c['actor_scoring_per_step']:.3g} | "
        f"{c['actor_training_per_step']:.3g} | {c['learner_training_per_step']:.3g} | "
        f"{c.get('reference_logits_per_step', 0.0):.3g} |"
        for p, c in baseline_first(result["ledger_seed0"])
    )
