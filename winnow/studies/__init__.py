"""`winnow bench --study NAME`: each study a module of this package with `run(params) -> result` (which writes
its JSON and report), `table(result) -> str` and `report(result, paths)` (its page, drawn from the JSON).
STUDIES is the one place a study's name lives: the CLI's choices and help, the bench flow and the tests read
it. A new study is one file and one entry."""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Study:
    name: str
    help: str

    def run(self, params) -> dict:
        """Run the study (every run it needs, resuming what exists); writes its JSON and report."""
        return importlib.import_module(f"winnow.studies.{self.name}").run(params)

    def table(self, result: dict) -> str:
        return importlib.import_module(f"winnow.studies.{self.name}").table(result)

    def report(self, params) -> dict:
        """Rewrite the study's summaries over seeds from the per-seed values its JSON keeps (studies/summaries.py),
        and its report and plots from that, rerunning nothing (after a change to how seeds are summarised or
        reports drawn); its result. A study module with a `rebuild(params)` (studies/budgets.py) writes its JSON
        again instead, from its runs' committed metrics."""
        from winnow.files import write_json
        from winnow.stages.inputs import read_json
        from winnow.stages.paths import Paths
        from winnow.studies.summaries import refresh

        module = importlib.import_module(f"winnow.studies.{self.name}")
        if hasattr(module, "rebuild"):  # a study that reads its runs' committed metrics again (studies/budgets.py)
            return module.rebuild(params)
        paths = Paths.of(params)
        result = refresh(read_json(paths.study_json(self.name), f"run `winnow bench --study {self.name}` first"))
        write_json(result, paths.study_json(self.name))
        module.report(result, paths)
        return result


STUDIES: dict[str, Study] = {
    s.name: s
    for s in (
        Study("policies", "bench.policies side by side over bench.seeds, with the ledger and the verdict (the default)"),
        Study("scorers", "learnability with reference = actor of each size in bench.scorers, one learner"),
        Study("learners", "each learner in bench.learners, scored by one small reference and actor"),
        Study(
            "jest",
            "contrastive: uniform, per-example learnability and JEST at each of bench.keep_fractions, at full "
            "and at bench.low_resolution scoring",
        ),
        Study(
            "curate",
            "uniform on the full pool, on the pool curated by curate.rule at each of bench.curate_fractions and by "
            "bench.peer_rule, and online learnability; and bench.transfer_learner on the full and the curated pool",
        ),
        Study(
            "levers",
            "learnability with each of bench.levers (anneal to uniform, a floor, a relaxing temperature, weighted) "
            "against each seed's best baseline",
        ),
        Study(
            "regimes",
            "the map: learnability against the best baseline at each of bench.regimes (noise, curated share, scorer "
            "size), with the pilot's features that `winnow advise` reads",
        ),
        Study(
            "budgets",
            "every bench.policies arm at each of bench.budgets x train.steps, its schedule ending there; FLOPs to "
            "uniform's plateau read across budgets against one comparator, every other reading printed beside the verdict",
        ),
        Study(
            "ladder",
            "each learner of bench.ladder under the budgets protocol, against baselines of its own, with fixed scorers; "
            "the first one's learnability sequence replayed on the others; the projection of where selection pays",
        ),
        Study(
            "pool",
            "is the built-in pool a pretraining pool: label precision, curated share, curated_only against uniform and "
            "uniform's plateau at the largest budget, each seed generating its own pool (no selecting arm run)",
        ),
        Study("memory", "peak memory of scoring and training on the default pool and one bench.memory_scale times larger"),
        Study("import_memory", "peak memory of `winnow data import` from each kind of source, the pool and a larger one"),
    )
}
