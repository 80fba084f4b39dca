"""The code's shape, held: no module of winnow/ over 500 lines, no function over 80, no import circle between its
modules (a lazy import inside a function counts: it is a circle all the same), and a README read in minutes."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE_LINES, FUNCTION_LINES = 500, 80


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((REPO / "winnow").rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def test_no_module_of_winnow_is_over_500_lines_and_no_function_over_80():
    long_modules = {
        str(p.relative_to(REPO)): n for p in _modules().values() if (n := len(p.read_text().splitlines())) > MODULE_LINES
    }
    assert not long_modules, f"split these by what they hold: {long_modules}"
    long_functions = {}
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > FUNCTION_LINES:
                long_functions[f"{path.relative_to(REPO)}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert not long_functions, long_functions


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's winnow modules it imports, at the top or inside a function."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {r for t in targets if t.startswith("winnow") and (r := resolve(t)) and r != name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[str]:
    """Every module with a path of imports back to itself, as that path."""
    circles = []
    for start in graph:
        seen, frontier = set(), [(start, (start,))]
        while frontier:
            node, path = frontier.pop()
            for nxt in graph[node]:
                if nxt == start:
                    circles.append(" -> ".join((*path, start)))
                elif nxt not in seen:
                    seen.add(nxt)
                    frontier.append((nxt, (*path, nxt)))
    return circles


def test_no_two_modules_of_winnow_import_each_other_even_through_others():
    circles = _circles(_imports(_modules()))
    assert not circles, circles[:5]


def test_the_circle_check_finds_a_circle_through_other_modules_and_none_where_there_is_none():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})[0] == "a -> b -> c -> a"
    assert _circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_readme_is_read_in_minutes_and_opens_with_its_picture_a_committed_plot():
    import re
    import subprocess

    readme = (REPO / "README.md").read_text()
    assert len(readme) <= 10_000, f"README.md is {len(readme)} characters; move the detail to docs/"
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", readme)
    assert pictures and readme.index(pictures[0]) < readme.index("<!-- figures: claims-short -->")  # the picture first
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", pictures[0]], capture_output=True, text=True).stdout
    assert (REPO / pictures[0]).is_file() and (tracked.strip() == pictures[0] or not (REPO / ".git").exists())


def test_docs_benchmarks_is_an_index_of_one_page_per_study_each_linked_and_its_figures_checked():
    from winnow.reports import figures

    index = (REPO / "docs" / "benchmarks.md").read_text()
    studies = sorted((REPO / "docs" / "studies").glob("*.md"))
    assert studies and all(f"](studies/{page.name})" in index for page in studies)
    assert len(index) < 10_000 and index.count("<!-- figures: ") == 1  # the verdicts; every study's figures on its page
    quoted = [page for page in figures.pages() if page.parent.name == "studies"]
    assert quoted == studies  # `winnow figures` writes and checks the study pages' blocks too
