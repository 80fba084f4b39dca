"""Every figure README.md and docs/ quote between markers is what its committed file says (winnow/reports/figures.py)."""

import json
import shutil

import pytest

from winnow.reports import figures


def _repo_with_sources(tmp_path):
    """A repository holding every figure's committed source file and an empty docs/."""
    repo = tmp_path / "repo"
    for name in {path for f in figures.FIGURES.values() for path in f.files}:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(figures.REPO / name, repo / name)
    (repo / "docs").mkdir()
    return repo


def test_every_quoted_figure_is_what_its_committed_file_says():
    assert figures.stale() == [], "run `winnow figures` after regenerating the metrics"


def test_the_readme_quotes_the_headline_from_its_file():
    text = (figures.REPO / "README.md").read_text()
    assert "<!-- figures: classification -->" in text and "<!-- figures: classification-verdict -->" in text


def test_a_number_that_differs_from_its_file_is_found_and_rewritten(tmp_path):
    repo = _repo_with_sources(tmp_path)
    page = repo / "README.md"
    page.write_text("# x\n<!-- figures: classification-verdict -->\nlearnability reached it at 0.10x\n<!-- /figures -->\n")
    assert figures.stale(repo) == ["README.md: classification-verdict"]
    figures.write_all(repo)
    assert figures.stale(repo) == []
    summary = json.loads((repo / figures.FIGURES["classification-verdict"].source).read_text())
    assert f"{summary['policies']['learnability']['final_metric']:.4f}" in page.read_text()


def test_an_unknown_figure_is_named():
    with pytest.raises(KeyError, match="no figure 'nope'"):
        figures.render("nope")


def test_a_figure_quoted_twice_on_one_page_is_named(tmp_path):
    repo = _repo_with_sources(tmp_path)
    block = f"<!-- figures: classification-verdict -->\n{figures.render('classification-verdict', repo)}<!-- /figures -->\n"
    (repo / "README.md").write_text(f"# x\n{block}\n# y\n{block}")
    assert figures.stale(repo) == ["README.md: classification-verdict (quoted twice)"]


def test_the_ledger_lines_of_a_lever_add_up_to_its_flops_against_the_best_baseline():
    """Where a lever's FLOPs go (each seed's ledger lines over the best baseline's FLOPs) sums to the ratio the levers
    study reports for it, seed by seed, so the split explains the very figure the table quotes."""
    figure = figures.FIGURES["flops-mnist-2pct-tiny-reference"]
    result = json.loads((figures.REPO / figure.source).read_text())
    text = figures.render("flops-mnist-2pct-tiny-reference")
    for row in result["rows"]:
        line = next(line for line in text.splitlines() if line.startswith(f"| {row['lever']} |"))
        flops = row["flop_ratio_vs_best"]
        if flops["reached"] == 0:
            assert line.endswith("| - |")
            continue
        total = line.rstrip(" |").rsplit("| ", 1)[1]
        assert total.startswith(f"{flops['mean']:.2f} ({min(v for v in flops['values'] if v is not None):.2f}-")


def test_a_figure_whose_file_is_missing_names_the_file(tmp_path, capsys, monkeypatch):
    from winnow import cli

    repo = _repo_with_sources(tmp_path)
    (repo / "README.md").write_text("<!-- figures: claims -->\n<!-- /figures -->\n")
    gone = figures.FIGURES["claims"].files[2]
    (repo / gone).unlink()
    with pytest.raises(figures.MissingInput, match=f"'claims' is written from {gone}, which is not there"):
        figures.stale(repo)
    stale = figures.stale
    monkeypatch.setattr(figures, "stale", lambda: stale(repo))  # `winnow figures --check` on that repository
    assert cli.main(["figures", "--check"]) == 2
    assert f"winnow: error: figure 'claims' is written from {gone}" in capsys.readouterr().err
