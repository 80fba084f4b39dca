"""The README's first table: does selection save compute against the best baseline, setting by setting, from the
committed results of the benches and studies (never from prose).

Each CLAIM names one committed result and the selecting arm read from it: a bench's arm (`winnow bench`), a lever's
row (`--study levers`), or a regime map (`--study regimes`). One rule decides every row, the regime map's, made
stricter for one seed: selection pays where every seed reached uniform's target in fewer FLOPs than the best baseline, the 95% interval of its
FLOPs over the baseline's ends below 1 (the reference paid in full; one seed has no interval, so it never pays here,
where the regime map reads the one value), and its mean final metric is not below the baseline's. The best baseline is
the one with the fewest FLOPs to the target, seed by seed: its final metric is not always the highest of the
baselines'. A regime map's point that pays and was rerun on fresh seeds (the claim's `replication`) pays only if it
pays there too.
"""

from __future__ import annotations

from dataclasses import dataclass

from winnow.method.ledger import SHARED, shared_over_best
from winnow.method.policies import BASELINES
from winnow.reports.tables import ratio
from winnow.studies.runs import spread


@dataclass(frozen=True)
class Claim:
    data: str  # the data, in words
    selection: str  # the selecting arm and its settings, in words
    source: str  # the committed result, relative to the repository
    arm: str  # a bench arm or a lever's name; "" for the regime map
    section: str  # the page of docs/studies/ that tells the whole of it
    replication: str = ""  # a regime map: the same points rerun on fresh seeds; a point pays only if it pays there too

    @property
    def files(self) -> tuple[str, ...]:
        return (self.source, self.replication) if self.replication else (self.source,)


BENCH, REAL, SMALL, PAIRS, MAP, MAP_CLIP = ("bench", "mnist", "mnist-2pct", "mnist-pairs", "regimes", "clip-map")
BUDGETS = "budgets"
CLAIMS: tuple[Claim, ...] = (
    Claim("the built-in pretraining pool (1% curated), classifier, at budgets with schedules of their own",
          "learnability (ClassAct)", "metrics/synthetic/bench/classification-budgets.json", "learnability", BUDGETS),
    Claim("the built-in pretraining pool (1% curated), classifier, at budgets with schedules of their own",
          "learnability on top of the curated set (half of each batch curated)",
          "metrics/synthetic/bench/classification-budgets.json", "learnability_mix", BUDGETS),
    Claim("the former built-in pool (now the regime curated-suffices), classifier", "learnability (ClassAct)", "metrics/synthetic/bench/classification.json",
          "learnability", BENCH),
    Claim("the former built-in pool (4% curated), CLIP", "learnability (ActiveCLIP)", "metrics/synthetic/bench/contrastive.json",
          "learnability", BENCH),
    Claim("real digits, 30% label noise", "learnability", "metrics/mnist/bench/classification.json", "learnability",
          REAL),
    Claim("real digits, curated set 2% of the pool", "learnability",
          "metrics/mnist-2pct/bench/classification-levers.json", "learnability", SMALL),
    Claim("real digits, curated set 2% of the pool", "learnability, annealed to uniform, with a floor (the validation "
          "split's pick)", "metrics/mnist-2pct/bench/classification-levers-anneal-floor-5-seeds.json", "anneal+floor",
          SMALL),
    Claim("real digits, curated set 2% of the pool", "annealed, with a floor, a cnn-tiny reference and actor",
          "metrics/mnist-2pct/bench/classification-levers-cnn-tiny-scorer.json", "anneal+floor", SMALL),
    Claim("real digits, curated set 2% of the pool", "annealed, with a floor, a cnn-tiny reference, the cnn-nano actor",
          "metrics/mnist-2pct/bench/classification-levers-cnn-tiny-reference.json", "anneal+floor", SMALL),
    Claim("real digits, curated set 2% of the pool", "annealed, with a floor, a cnn-tiny reference, the cnn-nano actor, 3000 steps (twice the budget)",
          "metrics/mnist-2pct/bench/classification-levers-long-budget.json", "anneal+floor", SMALL),
    Claim("real digits as image-text pairs, 30% mismatched captions", "learnability (ActiveCLIP)",
          "metrics/mnist-pairs/bench/contrastive.json", "learnability", PAIRS),
    Claim("real digits as image-text pairs, 30% mismatched captions", "JEST's joint batches",
          "metrics/mnist-pairs/bench/contrastive-levers-jest.json", "jest", PAIRS),
    Claim("around the former built-in pool: the classifier's regime map (noise, curated share)", "learnability at each point",
          "metrics/synthetic/bench/classification-regimes.json", "", MAP),
    Claim("around the former built-in pool: the CLIP regime map (mismatched captions, curated share)", "learnability (ActiveCLIP) at each point",
          "metrics/synthetic/bench/contrastive-regimes.json", "", MAP_CLIP,
          replication="metrics/synthetic/bench/contrastive-regimes-replication.json"),
)  # fmt: skip


def read(claim: Claim, result: dict) -> dict:
    """One claim's figures against each seed's best baseline: the arm's steps, FLOPs, seconds and final spreads, the
    seeds, and which baseline was best (per seed)."""
    if "fixed_reading" in result:  # a budgets study: its fixed reading against the comparator fixed before looking
        return _read_budgets(claim, result)
    if "verdict" in result:  # a bench
        against = result["verdict"]["against_best"][claim.arm]
        steps, flops, final = against["step_ratio"], against["flop_ratio"], against["final_over_best"]
        seconds = against["time_ratio"]
        best = result["verdict"]["best_baseline"]
        tried = [p for p in result["policies"] if p in BASELINES]
        mine = result["policies"][claim.arm]
        per_seed = zip(flops["values"], mine["flop_ratio_full"]["values"], mine["flop_ratio_amortised"]["values"], strict=True)
    else:  # a levers study
        rows = {r["lever"]: r for r in result["rows"]}
        if claim.arm not in rows:
            raise KeyError(f"{claim.source} has no lever {claim.arm!r} (it has {', '.join(rows)})")
        row = rows[claim.arm]
        steps, flops, final = row["step_ratio_vs_best"], row["flop_ratio_vs_best"], row["final_over_best"]
        seconds = row["time_ratio_vs_best"]
        best, tried = result["best_baseline"], result["baselines"]
        runs = sorted((r for r in result["runs"] if r["lever"] == claim.arm), key=lambda r: r["seed"])
        per_seed = [(r["flop_ratio_vs_best"], r["flop_ratio_full"], r["flop_ratio_amortised"]) for r in runs]
    tried = [p for p in BASELINES if p in tried]  # the registry's order
    per_seed = list(per_seed)
    shared = {  # the reference and its scores paid once for n learners (method/ledger.SHARED)
        n: spread([shared_over_best(*values, result["amortise_over"], n) for values in per_seed], log=True) for n in SHARED[1:]
    }
    return {
        "shared": shared,
        "seeds": len(result["seeds"]),
        "best": best,
        "tried": tried,
        "steps": steps,
        "flops": flops,
        "seconds": seconds,
        "final": final,
    }


def _read_budgets(claim: Claim, result: dict) -> dict:
    """A budgets study's arm (winnow/studies/budgets.py): FLOPs to the target under the study's fixed reading (each
    budget's run read at its end, sustained) over its comparator's, the final validation metric against it, and the
    study's verdict, "undecided" where another reasonable reading flips it. It has no step or seconds ratio, nor the
    ledger's split of the reference's cost: those cells read '-'."""
    verdict = result["verdicts"][claim.arm]
    fixed = verdict["readings"][verdict["fixed_reading"]]
    seeds = len(result["seeds"])
    return {
        "shared": dict.fromkeys(SHARED[1:]),
        "seeds": seeds,
        "best": [result["comparator"]] * seeds,
        "tried": list(verdict["against_each_baseline"]),  # its baselines, curated_only early-stopped on val among them
        "steps": None,
        "flops": fixed["flop_ratio"],
        "seconds": None,
        "final": fixed["final_val_minus_comparator"],
        "verdict": verdict["verdict"],
        "flips": sorted(name for name, r in verdict["readings"].items() if r["verdict"] != fixed["verdict"]),
    }


def verdict_words(got: dict) -> tuple[bool, str]:
    """Whether a row pays, and its verdict in words: pays() and why not, or a budgets study's own verdict ("undecided"
    naming the readings that flip it)."""
    if got.get("verdict") == "undecided":
        return False, f"undecided: {', '.join(got['flips'])} read otherwise"
    if "verdict" in got:  # the study's own, by the same rule as pays()
        return (True, "yes") if got["verdict"] == "yes" else (False, _why_not(got["flops"], got["final"]))
    paid = pays(got["flops"], got["final"])
    return paid, "yes" if paid else _why_not(got["flops"], got["final"])


def _cell(stat: dict | None) -> str:
    return "-" if stat is None else ratio(stat)


def fewer_flops(flops: dict) -> bool:
    """Every seed reached the target, in fewer FLOPs than the best baseline: the interval's upper end below 1 (read
    the same way for a spread of seconds ratios)."""
    return flops["reached"] == flops["runs"] and flops.get("high") is not None and flops["high"] < 1.0


def pays(flops: dict, final: dict) -> bool:
    """Fewer FLOPs to the target in every seed (fewer_flops), and a mean final metric not below the baseline's."""
    return fewer_flops(flops) and final["mean"] is not None and final["mean"] >= 0.0


def _why_not(flops: dict, final: dict) -> str:
    """Why a row does not pay: what its FLOPs say, and that it ends below on average where it does."""
    reason = _flops_reason(flops)
    below = final["mean"] is not None and final["mean"] < 0.0
    if reason is None:
        return "no: ends below"
    return f"{reason}; ends below{' on average' if final['runs'] > 1 else ''}" if below else reason


def _flops_reason(flops: dict) -> str | None:
    if flops["reached"] == 0:
        return "no: never reached the target"
    if flops["reached"] < flops["runs"]:
        return f"no: reached the target in {flops['reached']} of {flops['runs']} seeds"
    if flops.get("high") is None:
        return "no: one seed, no interval"
    if flops["high"] >= 1.0:
        return "no: more FLOPs" if flops["low"] >= 1.0 else "no: not fewer FLOPs (the interval reaches 1)"
    return None


def _final(stat: dict) -> str:
    if stat["mean"] is None:
        return "-"
    if stat.get("low") is None:
        return f"{stat['mean']:+.4f}" + (" (one seed)" if stat["runs"] == 1 else "")
    return f"{stat['mean']:+.4f} [{stat['low']:+.4f}, {stat['high']:+.4f}]"


def _few_seeds(seeds: int) -> str:
    """What an interval from so few seeds means for the verdict."""
    return f" ({seeds} seeds: an interval that wide all but rules a saving out)" if seeds <= 2 else ""


def _map_row(claim: Claim, results: dict[str, dict], link: str) -> str:
    """A regime map's row: its paying points' figures, and what their rerun on fresh seeds said."""
    result = results[claim.source]
    points, paying, failed = map_points(claim, results)
    verdict = (
        f"yes in FLOPs at {', '.join(r['point'] for r in paying)}: {len(paying)} of {len(points)} points"
        if paying
        else f"no: 0 of {len(points)} points"
    )
    notes, again = [], _rerun(claim, results)
    if again:
        fresh = f"fresh seeds {', '.join(map(str, results[claim.replication]['seeds']))}"
        for r in paying + failed:
            if r["point"] in again:
                said = f"{ratio(again[r['point']]['flop_ratio_vs_best'])}, final {_final(again[r['point']]['final_over_best'])}"
                notes.append(f"{r['point']} {'replicated' if r in paying else 'paid, and did not replicate'} on {fresh}: {said}")
    return (
        f"| {link} | {claim.selection} | {len(result['seeds'])} per point | {', '.join(result['baselines'])} | "
        f"each point's | {_at(paying, 'step_ratio_vs_best', ratio)} | {_at(paying, 'flop_ratio_vs_best', ratio)} | "
        f"{_at(paying, 'time_ratio_vs_best', ratio)} | {_at(paying, 'final_over_best', _final)} | "
        f"{verdict}{_brackets(notes)}{_few_seeds(len(result['seeds']))} |"
    )


def _brackets(notes: list[str]) -> str:
    return f" ({'; '.join(notes)})" if notes else ""


def map_points(claim: Claim, results: dict[str, dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """A regime map's points, those that pay, and those that paid but not when rerun on fresh seeds (a point pays
    only where it pays in its replication too, when it has one)."""
    points, again = results[claim.source]["rows"], _rerun(claim, results)
    failed = [r for r in points if r["pays"] and r["point"] in again and not again[r["point"]]["pays"]]
    paying = [r for r in points if r["pays"] and r not in failed]
    return points, paying, failed


def _rerun(claim: Claim, results: dict[str, dict]) -> dict[str, dict]:
    """A regime map's replication, point by point (empty when it has none)."""
    return {r["point"]: r for r in results[claim.replication]["rows"]} if claim.replication else {}


def _at(points: list[dict], key: str, show) -> str:
    """A regime map's cell: each paying point's figure, or '-' where none paid."""
    return "; ".join(f"{r['point']}: {show(r[key])}" for r in points) or "-"


def _best_words(best: list[str]) -> str:
    return ", ".join(f"{b} {best.count(b)}" for b in sorted(set(best), key=best.index))


def table(results: dict[str, dict], base: str = "docs/studies") -> str:
    """The claims as a Markdown table, each row read from its committed result (`results`: source -> its JSON); each
    row links its page of docs/studies/, at `base` from the page that quotes the table."""
    lines = [
        "| data | selection | seeds | baselines tried | best baseline (seeds) | steps, x best baseline's | FLOPs, x best baseline's "
        "| seconds, x best baseline's (a shared 2-core CPU: read within a row) | final, minus best baseline's "
        "| saves compute? |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for claim in CLAIMS:
        result = results[claim.source]
        link = f"[{claim.data}]({base}/{claim.section}.md)"
        if claim.arm == "":  # a regime map: how many of its points pay, and the figures of those that do
            lines.append(_map_row(claim, results, link))
            continue
        got = read(claim, result)
        paid, words = verdict_words(got)
        lines.append(
            f"| {link} | {claim.selection} | {got['seeds']} | {', '.join(got['tried'])} | {_best_words(got['best'])} | "
            f"{_cell(got['steps'])} | "
            f"{ratio(got['flops'])} | {_cell(got['seconds'])} | {_final(got['final'])} | {'**yes**' if paid else words} |"
        )
    return "\n".join(lines)


def short_table(results: dict[str, dict]) -> str:
    """The README's table: one short row per setting (the full one is docs/results.md's). The FLOPs are to uniform's
    target (these benches' target), over the best baseline's FLOPs to the same target."""
    lines = [
        "| setting | selection | seeds | FLOPs to uniform's target, x best baseline's | the same, the reference paid once "
        f"for {' / '.join(map(str, SHARED[1:]))} learners | saves compute? |",
        "|---|---|---|---|---|---|",
    ]
    for claim in CLAIMS:
        result = results[claim.source]
        link = f"[{claim.data}](docs/studies/{claim.section}.md)"
        if claim.arm == "":
            _, paying, _ = map_points(claim, results)
            flops = _at(paying, "flop_ratio_vs_best", ratio)
            verdict = (
                f"yes at {len(paying)} of {len(result['rows'])} points" if paying else f"no: 0 of {len(result['rows'])} points"
            )
            lines.append(f"| {link} | {claim.selection} | {len(result['seeds'])} per point | {flops} | - | {verdict} |")
            continue
        got = read(claim, result)
        paid, words = verdict_words(got)
        shared = " / ".join(_cell(got["shared"][n]) for n in SHARED[1:])
        lines.append(
            f"| {link} | {claim.selection} | {got['seeds']} | {ratio(got['flops'])} | {shared} | {'**yes**' if paid else words} |"
        )
    return "\n".join(lines)


def short_figure(results: dict[str, dict]) -> str:
    """The README's block: how many settings pay, and the short table."""
    return f"{count(results)}\n\n{short_table(results)}\n"


def by_page(results: dict[str, dict]) -> str:
    """docs/benchmarks.md's index of verdicts: each study page of the claims, with each of its settings' verdict."""
    lines = []
    for section in dict.fromkeys(c.section for c in CLAIMS):
        said = []
        for claim in (c for c in CLAIMS if c.section == section):
            result = results[claim.source]
            if claim.arm == "":
                _, paying, _ = map_points(claim, results)
                verdict = f"yes at {len(paying)} of {len(result['rows'])} points" if paying else "no at any point"
            else:
                verdict = verdict_words(read(claim, result))[1]
            said.append(f"{claim.data}, {claim.selection}: {verdict}")
        lines.append(f"- [studies/{section}.md](studies/{section}.md): " + "; ".join(said) + ".")
    return "\n".join(lines) + "\n"


SMALL_CURATED = "mnist-2pct"  # the regime the method is for: too little clean data to train the learner alone


def small_curated(results: dict[str, dict]) -> str:
    """The claim for a curated set too small to train on alone, in its two halves: never ending below the best
    baseline's final metric (in every seed), and fewer FLOPs to its target (the interval's upper end below 1)."""
    rows = [(c, read(c, results[c.source])) for c in CLAIMS if SMALL_CURATED in c.source]
    never_below = [c for c, got in rows if got["final"]["values"] and all(v >= 0.0 for v in got["final"]["values"])]
    fewer = [c for c, got in rows if fewer_flops(got["flops"])]

    seeds = {c: got["seeds"] for c, got in rows}

    def named(found: list[Claim]) -> str:
        return "; ".join(f"{c.selection} ({seeds[c]} seeds)" for c in found)

    return (
        f"On real digits with the curated set at 2% of the pool, the regime the method is for, in the table's "
        f"{len(rows)} rows (more levers were tried there: docs/benchmarks.md). *Never ends below the best baseline's final metric, in any seed*: "
        f"{'met by ' + named(never_below) if never_below else 'met by none'}. *Reaches uniform's target in fewer FLOPs than "
        f"the best baseline, the reference paid in full*: {'met by ' + named(fewer) if fewer else '**met by none**'}."
    )


def count(results: dict[str, dict]) -> str:
    """How many of the settings pay, and how many of each regime map's points (counted apart: a point is one change
    to the built-in pool, not a setting of its own); and how many of those also took fewer seconds."""
    settings, points, clock, maps = 0, 0, 0, []
    n_settings = sum(claim.arm != "" for claim in CLAIMS)
    for claim in CLAIMS:
        result = results[claim.source]
        if claim.arm == "":
            _, paying, _ = map_points(claim, results)
            points += len(paying)
            clock += sum(fewer_flops(r["time_ratio_vs_best"]) for r in paying)
            maps.append(
                f"{claim.data.split(': ')[-1]}: {len(paying)} of {len(result['rows'])}, {len(result['seeds'])} seeds each"
            )
            continue
        got = read(claim, result)
        if verdict_words(got)[0]:
            settings += 1
            clock += got["seconds"] is not None and fewer_flops(got["seconds"])
    return (
        f"Selection reaches uniform's target in fewer FLOPs than the best baseline, ending level or above, the reference paid in "
        f"full, in **{settings} of the {n_settings} settings** measured, and at **{points} of the regime maps' points** "
        f"({'; '.join(maps)}). In seconds, on a shared 2-core CPU, **{clock} of those {settings + points}** took less "
        "time too."
    )


def figure(results: dict[str, dict]) -> str:
    """docs/results.md's block: how many settings pay, the full table, and the small-curated claim's two halves."""
    return f"{count(results)}\n\n{table(results, base='studies')}\n\n{small_curated(results)}\n"
