"""Plots of results (matplotlib, Agg), each written whole or not at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from winnow.files import atomic_path
from winnow.method.policies import BASELINES
from winnow.reports.tables import STUDY_WORDS


def plot_curves(curves: dict[str, list[dict]], target: float, path: Path, metric: str = "accuracy") -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for policy, curve in curves.items():
        ax.plot(
            [r["step"] for r in curve],
            [r[metric] for r in curve],
            label=policy,
            lw=2 if policy in ("uniform", "learnability") else 1.2,
            ls=":" if policy in BASELINES and policy != "uniform" else "-",
        )
    ax.axhline(target, color="grey", ls="--", lw=1, label="target (mean of uniform's last evaluations)")
    ax.set_xlabel("learner step")
    ax.set_ylabel(f"validation {metric}")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, 120)


def plot_mix(summary: dict, path: Path) -> None:
    """Stacked bars: the pathology mix of the pool and of each policy's selected batches."""
    plt = _pyplot()
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
    save_figure(fig, path, 120)


def plot_bench(curves: dict[str, list[dict]], targets: list[float], metric: str, folder: Path) -> None:
    """Held-out metric against learner steps and against FLOPs (reference counted in full), seed means."""
    plt = _pyplot()
    target = float(np.mean(targets))
    for x, label, name in (
        ("step", "learner step", "bench_steps.png"),
        ("flops_over_uniform_full", "FLOPs / uniform's total FLOPs (reference counted in full)", "bench_flops.png"),
    ):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for policy, rows in curves.items():
            ax.plot(
                [r[x] for r in rows],
                [r[metric] for r in rows],
                label=policy,
                lw=2 if policy in ("uniform", "learnability") else 1.2,
                ls=":" if policy in BASELINES and policy != "uniform" else "-",
                marker="." if x != "step" else None,
            )
        ax.axhline(target, color="grey", ls="--", lw=1, label="target (uniform final, mean)")
        if x != "step":
            ax.axvline(1.0, color="grey", ls=":", lw=1)
        ax.set_xlabel(label)
        ax.set_ylabel(f"held-out {metric.replace('_', ' ')} (mean over seeds)")
        ax.legend(frameon=False)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        save_figure(fig, folder / name, 120)


def plot_study(result: dict, path: Path) -> None:
    """step, FLOP and time ratios (geometric mean and 95% interval over seeds; mean ± std in a result written before
    intervals were) against the size on the study's axis."""
    plt = _pyplot()
    key = STUDY_WORDS[result["study"]][0]
    scorers = result["study"] == "scorers"
    x = [r["scorer_flops_over_learner"] if scorers else r["learner_forward_flops"] / 1e6 for r in result["rows"]]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for ratio, label in (
        ("step_ratio", "steps"),
        ("flop_ratio_full", "FLOPs, reference in full"),
        ("time_ratio_full", "seconds, reference in full"),
    ):
        stats = [r[ratio] for r in result["rows"]]
        mean = [s["mean"] if s["mean"] is not None else np.nan for s in stats]
        legacy = [("low" not in s, s["std"] or 0.0) for s in stats]  # mean ± std, written before intervals were
        below = [std if old else s["mean"] - s["low"] if s["low"] is not None else 0.0 for s, (old, std) in zip(stats, legacy)]
        above = [std if old else s["high"] - s["mean"] if s["high"] is not None else 0.0 for s, (old, std) in zip(stats, legacy)]
        ax.errorbar(x, mean, yerr=[below, above], marker="o", capsize=3, label=label)
    for xi, r in zip(x, result["rows"]):
        ax.annotate(
            r[key],
            (xi, 0.02),
            textcoords="offset points",
            xytext=(0, 4),
            ha="center",
            fontsize=8,
            xycoords=("data", "axes fraction"),
        )
    ax.axhline(1.0, color="grey", ls="--", lw=1, label="uniform")
    ax.set_xscale("log")
    ax.set_xlabel("scorer FLOPs / learner FLOPs per example" if scorers else "learner forward MFLOPs per example")
    ax.set_ylabel("learnability / uniform, to uniform's final metric")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, 120)


def plot_jest(result: dict, path: Path, title: str = "JEST against per-example learnability and uniform") -> None:
    """The target metric against learner steps per arm (mean over seeds), uniform's final value dashed."""
    plt = _pyplot()
    metric = result["metric"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for arm, rows in result["curves"].items():
        dotted = arm.endswith("px") or ":" in arm or "full pool" in arm and arm != "uniform, full pool"  # another learner
        style = dict(color="black", lw=2) if arm.startswith("uniform") else dict(ls=":" if dotted else "-")
        ax.plot([r["step"] for r in rows], [r[metric] for r in rows], label=arm, **style)
    target = result["uniform_final_metric"]["mean"] if "uniform_final_metric" in result else None
    if target is not None:
        ax.axhline(target, color="grey", ls="--", lw=1)
    ax.set_xlabel("learner step")
    ax.set_ylabel(f"{metric} (mean over seeds)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, 120)


def plot_regimes(result: dict, path: Path) -> None:
    """The map: each point's FLOPs to the target over the best baseline's (every seed, the mean marked), against how
    far the reference's validation metric is ahead of the pilot's; green where selection pays. 1.0 dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for row in result["rows"]:
        x = row["reference_val"]["mean"] - row["pilot_val"]["mean"]
        color = "forestgreen" if row["pays"] else "firebrick"
        values = [v for v in row["flop_ratio_vs_best"]["values"] if v is not None]
        ax.scatter([x] * len(values), values, color=color, alpha=0.35, s=14)
        missing = row["flop_ratio_vs_best"]["runs"] - len(values)
        y = row["flop_ratio_vs_best"]["mean"]
        if y is not None:
            ax.scatter([x], [y], color=color, s=50, marker="D")
        label = row["point"] + (f" ({missing} never)" if missing else "")
        ax.annotate(label, (x, y if y is not None else 1.0), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.axhline(1.0, color="grey", ls="--", lw=1)
    ax.set_xlabel(f"reference val {result['metric']} minus the pilot's")
    ax.set_ylabel("FLOPs to the target, x best baseline's")
    ax.set_title("where selection pays (green) and where it does not (red)")
    fig.tight_layout()
    save_figure(fig, path, 120)


def plot_budgets(result: dict, path: Path) -> None:
    """The budgets study: each arm's final validation metric at each budget (its schedule ending there; the early-
    stopped curated_only's at its best validation evaluation instead; mean and 95% interval over seeds) against the budget's learner steps; uniform's target (its final validation metric at the
    largest budget, mean over seeds) dashed. The FLOPs a step costs differ between arms: the readings in FLOPs are the page's tables."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    steps = [b * result["base_steps"] for b in result["budgets"]]
    for policy, by_budget in result["final_val"].items():
        stats = [by_budget[f"{b:g}"] for b in result["budgets"]]
        mean = np.array([s["mean"] for s in stats], dtype=float)
        low = np.array([s["low"] if s.get("low") is not None else s["mean"] for s in stats], dtype=float)
        high = np.array([s["high"] if s.get("high") is not None else s["mean"] for s in stats], dtype=float)
        baseline = policy in BASELINES or policy.endswith("_early")
        ax.errorbar(
            steps,
            mean,
            yerr=[mean - low, high - mean],
            marker="o",
            capsize=3,
            label=policy,
            lw=2 if policy in ("uniform", "learnability") else 1.2,
            ls=":" if baseline and policy != "uniform" else "-",
        )
    ax.axhline(
        float(np.mean(result["targets"])),
        color="grey",
        ls="--",
        lw=1,
        label="uniform's target (its last evaluations at the largest budget)",
    )
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps, [f"{b:g}x\n{s:g}" for b, s in zip(result["budgets"], steps)])
    ax.set_xlabel("budget: learner steps, each run's schedule ending there")
    ax.set_ylabel(f"final {result.get('curve_metric', 'validation metric')}")
    n = len(result["seeds"])
    ax.set_title(f"{n} seed{'s' if n > 1 else ''}" + ("" if n > 1 else " (no interval)"), fontsize=9)
    ax.legend(frameon=False, fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, 120)


def plot_examples(rows: list[tuple], path: Path, title: str, columns: int = 8) -> None:
    """An image grid: each tile an example, captioned with its label or caption, score and pathology."""
    plt = _pyplot()
    n_rows = max(1, -(-len(rows) // columns))
    height = n_rows * 2.05 + 0.4
    fig, axes = plt.subplots(n_rows, columns, figsize=(columns * 1.45, height), squeeze=False)
    # a fixed layout: tight_layout measures every title's text and costs more than drawing the grid
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.8 / height, wspace=0.08, hspace=0.45)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (image, text, score, pathology) in zip(axes.ravel(), rows):
        ax.imshow(image, interpolation="nearest")
        text = text if len(text) <= 22 else text[:21] + "…"
        kind = "" if pathology in (None, "clean") else f"\n[{pathology}]"
        ax.set_title(f"{text}\n{score:.2f}{kind}", fontsize=6.5, color="firebrick" if kind else "black")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path, 110)


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display), imported when a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int) -> None:
    """Save and close a figure, whole or not at all (the format follows the path's suffix)."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip("."))
    finally:
        plt.close(fig)
