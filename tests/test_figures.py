"""Every figure README.md and docs/ quote between markers is what its committed file says (winnow/reports/figures.py)."""

import json
import re
import shutil
import subprocess

import pytest

from winnow.reports import figures, result_figures


def _repo_with_sources(tmp_path):
    """A repository holding every figure's committed source file and an empty docs/."""
    repo = tmp_path / "repo"
    for name in {path for f in figures.FIGURES.values() for path in f.files}:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(figures.REPO / name, repo / name)
    (repo / "docs").mkdir()
    return repo


def test_every_quoted_figure_is_what_its_committed_file_says():
    """Of the last commit: a local `winnow pipeline` rewrites metrics/, and the suite must stay green after it."""
    with figures.committed() as snapshot:
        assert figures.stale(snapshot) == [], "run `winnow figures` after regenerating the metrics, and commit both"


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.mark.e2e
def test_running_the_main_job_in_a_clone_and_then_the_tests_keeps_the_figures_test_green(prefect_server, tiny):
    """The README's two commands in the order a new user runs them: `winnow pipeline` rewrites the default run's
    summary with this machine's numbers, and the figures test, which reads the commit, still passes."""
    from winnow.cli import main

    repo, summary = tiny.parent, "metrics/synthetic/classification/summary.json"
    (repo / summary).parent.mkdir(parents=True)
    shutil.copy(figures.REPO / summary, repo / summary)
    (repo / "docs").mkdir()
    block = f"<!-- figures: classification-verdict -->\n{figures.render('classification-verdict')}<!-- /figures -->\n"
    (repo / "README.md").write_text(f"# a clone\n{block}")
    _git(repo, "init", "-q")
    _git(repo, "add", "README.md", "metrics")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a clone")

    assert main(["pipeline", "--params", str(tiny), "--set", f"data.root={repo / 'data' / 'synthetic'}"]) == 0

    assert figures.stale(repo) == ["README.md: classification-verdict"]  # the run rewrote the summary in the tree
    with figures.committed(repo) as snapshot:
        assert figures.stale(snapshot) == []  # what the suite checks: the commit, as it was


def test_the_results_page_quotes_the_default_runs_headline_from_its_file():
    text = (figures.REPO / "docs" / "results.md").read_text()
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


@pytest.mark.parametrize("name", [n for n in figures.FIGURES if n.startswith("flops-")])
def test_the_ledger_lines_of_a_lever_add_up_to_its_flops_against_the_best_baseline(name):
    """Where a lever's FLOPs go (each seed's ledger lines over the best baseline's FLOPs) sums to the ratio the levers
    study reports for it, seed by seed, so the split explains the very figure the table quotes; and the closing
    sentence says what room the learner's own steps leave."""
    figure = figures.FIGURES[name]
    result = json.loads((figures.REPO / figure.source).read_text())
    text = figures.render(name)
    for row in result["rows"]:
        line = next(line for line in text.splitlines() if line.startswith(f"| {row['lever']} |"))
        flops = row["flop_ratio_vs_best"]
        if flops["reached"] == 0:
            assert line.endswith("| - |")
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        total, learner = cells[-1], float(cells[-2].split()[0])
        assert total.startswith(f"{flops['mean']:.2f} ({min(v for v in flops['values'] if v is not None):.2f}-")
        room = "so even free" if learner >= 1.0 else f"which leaves {1 - learner:.2f} for the reference"
        assert f"{row['lever']} {learner:.2f}" in text and room in text


def test_a_split_where_no_lever_reached_the_target_says_no_more():
    result = json.loads((figures.REPO / figures.FIGURES["flops-mnist-2pct-tiny-reference"].source).read_text())
    never = {**result, "rows": [r for r in result["rows"] if r["flop_ratio_vs_best"]["reached"] == 0]}
    text = result_figures.flop_lines(never, label="cnn-tiny-reference")
    assert "| easy_reference | 0/5 |" in text and "The learner's steps alone" not in text


def test_a_figure_that_reads_each_seeds_run_reads_it_from_the_repository_it_is_given(tmp_path):
    repo = _repo_with_sources(tmp_path)  # the figures' sources, without the seeds' runs they name
    with pytest.raises(figures.MissingInput, match=r"metrics/mnist-2pct/bench/classification/cnn-tiny-reference/levers/seed-0/"):
        figures.render("flops-mnist-2pct-tiny-reference", repo)
    assert "| anneal+floor | 5/5 |" in figures.render("flops-mnist-2pct-tiny-reference")  # the real tree has them


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


def test_each_end_to_end_run_is_read_against_the_baseline_run_of_its_own_pairing():
    """benchmarks/end_to_end.sh appends a pair of runs per call; a later pair is read against its own baseline run,
    on its own machine, not the first one ever measured (a machine's load moves between calls, and CPUs differ)."""
    from winnow.reports.system_figures import end_to_end

    def run(commit, date, seconds, machine="m"):
        return {"rev": commit, "commit": commit + "0" * 33, "seconds": seconds, "date": date, "machine": machine, "command": "c"}

    runs = [
        run("aaaaaaa", "2026-11-30T22:49:51+00:00", 500.0),
        run("b6a1254", "2026-11-30T22:59:47+00:00", 600.0),
        run("b6a1254", "2026-12-01T05:00:00+00:00", 400.0, machine="other"),
        run("ccccccc", "2026-12-01T05:10:00+00:00", 300.0, machine="other"),
    ]
    rows = [line for line in end_to_end(runs).splitlines() if line.startswith("| ") and "min" in line]
    ratios = [row.rsplit("|", 2)[1].strip() for row in rows]
    assert ratios == ["0.83", "1.00", "1.00", "0.75"]


@pytest.mark.parametrize(
    "page, message",
    [
        ("a\n<!-- figures: claims -->\nold\nb\n", r"README.md:2: the block 'claims' is never closed"),
        (
            "<!-- figures: claims -->\nx\n<!-- figures: classification -->\nx\n<!-- /figures -->\n",
            r"README.md:3: the marker of 'classification' is inside the block 'claims' opened at line 1",
        ),
        (
            "a\n<!-- /figures -->\n<!-- figures: claims -->\nx\n<!-- /figures -->\n",
            r"README.md:2: <!-- /figures --> closes no block",
        ),
    ],
    ids=["unclosed", "nested", "misordered"],
)
def test_a_page_with_a_broken_marker_is_named_by_line_and_left_as_it_was(tmp_path, capsys, monkeypatch, page, message):
    from winnow import cli

    repo = _repo_with_sources(tmp_path)
    (repo / "README.md").write_text(page)
    monkeypatch.setattr(figures, "REPO", repo)
    monkeypatch.setattr(figures.stale, "__defaults__", (repo,))
    monkeypatch.setattr(figures.write_all, "__defaults__", (repo,))
    for argv in (["figures", "--check"], ["figures"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert re.search(message, err) and "Traceback" not in err
    assert (repo / "README.md").read_text() == page  # nothing written, no prose lost
