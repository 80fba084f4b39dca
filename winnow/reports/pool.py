"""The pool study's table (winnow/studies/pool.py holds the properties and how each is measured)."""

from __future__ import annotations


def table(result: dict) -> str:
    lines = ["| property | met | mean [95% interval] | per seed |", "|---|---|---|---|"]
    for p in result["properties"].values():
        interval = f"{p['mean']:.4f}" + (f" [{p['low']:.4f}, {p['high']:.4f}]" if p["low"] is not None else "")
        values = ", ".join(f"{v:.4f}" for v in p["values"])
        lines.append(f"| {p['what']} | {'yes' if p['met'] else 'no'} | {interval} | {values} |")
    return "\n".join(lines)


def figure(result: dict) -> str:
    """docs/studies/pool.md's block: what was run, then the table."""
    met = sum(p["met"] for p in result["properties"].values())
    return (
        f"{len(result['seeds'])} seeds, each its own pool; uniform and curated_only trained {result['steps']} steps (the "
        f"largest budget), their schedules ending there. {met} of {len(result['properties'])} properties met.\n\n"
        f"{table(result)}"
    )
