"""The summary of a run: the uniform target, steps to reach it, what each policy selected.

Plain functions over the metric files the stages write; plots with matplotlib (Agg).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run the train stage for this policy first")
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def steps_to_target(curve: list[dict], target: float, metric: str = "accuracy") -> int | None:
    """First eval step whose metric is at or above the target; None if never."""
    return next((int(row["step"]) for row in curve if row[metric] >= target), None)


NOISE_WORDS = {"noisy_label": "wrong labels kept", "mismatched_caption": "mismatched kept"}


def summarize(curves: dict[str, list[dict]], trained: dict[str, dict], evaluated: dict[str, dict], pool_mix: dict[str, float],
              uniform_steps: int, metric: str = "accuracy", noise: str = "noisy_label") -> dict:
    """`metric` is the eval-log column the target is set on; `noise` the pathology whose selected share is reported."""
    target = curves["uniform"][-1][metric]
    policies = {}
    for policy, curve in curves.items():
        reached = steps_to_target(curve, target, metric)
        mix = trained[policy]["selected_mix"]
        policies[policy] = {
            "final_accuracy": curve[-1][metric],
            "best_accuracy": max(row[metric] for row in curve),
            "steps_to_target": reached,
            "step_ratio": reached / uniform_steps if reached is not None else None,
            f"{noise}_fraction_selected": mix.get(noise, 0.0),
            "selected_mix": mix,
            "texture_probe_accuracy": evaluated.get(policy, {}).get("texture_probe_accuracy"),
            "train_seconds": trained[policy]["seconds"],
        }
    return {"metric": f"test_{metric}", "target": target, "uniform_steps": uniform_steps, "noise": noise,
            f"pool_{noise}_fraction": pool_mix.get(noise, 0.0), "pool_mix": pool_mix, "policies": policies}


def table(summary: dict) -> str:
    """The summary as a fixed-width table, for the terminal and the report."""
    noise = summary["noise"]
    lines = [f"target: uniform's final {summary['metric']} = {summary['target']:.4f} after {summary['uniform_steps']} steps; "
             f"pool {noise} rate {summary[f'pool_{noise}_fraction']:.3f}",
             f"{'policy':<16}{'final':>10}{'steps to target':>17}{'step ratio':>12}{NOISE_WORDS[noise]:>19}{'texture probe':>15}"]
    for policy, row in summary["policies"].items():
        ratio = f"{row['step_ratio']:.2f}x" if row["step_ratio"] is not None else "never"
        steps = str(row["steps_to_target"]) if row["steps_to_target"] is not None else "-"
        probe = f"{row['texture_probe_accuracy']:.3f}" if row["texture_probe_accuracy"] is not None else "-"
        lines.append(f"{policy:<16}{row['final_accuracy']:>10.4f}{steps:>17}{ratio:>12}{row[f'{noise}_fraction_selected']:>19.3f}{probe:>15}")
    return "\n".join(lines)


def plot_curves(curves: dict[str, list[dict]], target: float, path: Path, metric: str = "accuracy") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for policy, curve in curves.items():
        ax.plot([r["step"] for r in curve], [r[metric] for r in curve], label=policy, lw=2 if policy in ("uniform", "learnability") else 1.2)
    ax.axhline(target, color="grey", ls="--", lw=1, label="target (uniform final)")
    ax.set_xlabel("learner step")
    ax.set_ylabel(f"held-out {metric}")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_mix(summary: dict, path: Path) -> None:
    """Stacked bars: the pathology mix of the pool and of each policy's selected batches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k, v in summary["pool_mix"].items() if v > 0]
    rows = {"pool": summary["pool_mix"], **{p: r["selected_mix"] for p, r in summary["policies"].items()}}
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    left = np.zeros(len(rows))
    for kind in kinds:
        values = np.array([rows[r].get(kind, 0.0) for r in rows])
        ax.barh(list(rows), values, left=left, label=kind)
        left += values
    ax.set_xlabel("fraction of examples")
    ax.invert_yaxis()
    ax.legend(frameon=False, fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(summary: dict, curves: dict[str, list[dict]], paths, params) -> Path:
    """reports/<objective>.md with the table and the plots; regenerate with `winnow summary`."""
    plots = Path("plots") / params.objective
    metric = summary["metric"].removeprefix("test_")
    plot_curves(curves, summary["target"], plots / "accuracy.png", metric)
    plot_mix(summary, plots / "selected_mix.png")
    ref = summary.get("reference", {})
    text = f"""# winnow run: {params.objective}

The learner ({params.train.model}, {params.objective}) trained {params.train.steps} steps of batch {params.train.batch_size} under each policy,
keeping {params.train.keep_fraction:.0%} of each super-batch of {params.train.super_batch_size}. The reference ({params.reference.model},
{ref.get('test_accuracy', float('nan')):.3f} held-out {ref.get('test_metric', 'accuracy').replace('_', ' ')}) learned from {ref.get('train_examples', '?')} curated examples.
Target: uniform's final held-out {metric.replace('_', ' ')}. step ratio = steps to reach it / uniform's {params.train.steps} steps.

```
{table(summary)}
```

![held-out accuracy per step](../{plots}/accuracy.png)

![what each policy selected](../{plots}/selected_mix.png)

Regenerate: `winnow pipeline` (everything) or `winnow summary` (this page, from the metrics on disk).
"""
    path = Path("reports") / f"{params.objective}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
