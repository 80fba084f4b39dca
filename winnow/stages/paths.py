"""Where every stage's files live: one owner for paths (docs/DESIGN.md, The chain)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from winnow.config import Params
from winnow.method.policies import POLICIES


@dataclass(frozen=True)
class Paths:
    """Where every stage's files live, derived from params and never hard-coded elsewhere.

    Outputs are kept per dataset (data.name) and objective, so runs on different data never
    overwrite each other. The score store is shared: its scorers are keyed by model and data.
    """

    data: Path
    artifacts_root: Path
    metrics_root: Path
    plots_root: Path
    reports_root: Path
    dataset: str
    objective: str
    label: str | None = None  # bench.label: a study run named apart

    @classmethod
    def of(cls, params: Params) -> "Paths":
        return cls(
            Path(params.data.root),
            Path(params.artifacts),
            Path(params.metrics),
            Path(params.plots),
            Path(params.reports),
            params.data.name,
            params.objective,
            params.bench.label,
        )

    @property
    def artifacts(self) -> Path:
        return self.artifacts_root / self.dataset / self.objective

    @property
    def metrics(self) -> Path:
        return self.metrics_root / self.dataset / self.objective

    @property
    def plots(self) -> Path:
        return self.plots_root / self.dataset / self.objective

    @property
    def report(self) -> Path:
        return self.reports_root / self.dataset / f"{self.objective}.md"

    @property
    def store(self) -> Path:
        return self.artifacts_root / "scores.duckdb"

    def score_shards(self, scorer_id: str) -> Path:
        return self.artifacts_root / "score_shards" / scorer_id

    def scoring_record(self, scorer_id: str) -> Path:
        """What scoring measured (rows, seconds, rates), kept with the scorer's shards for every later reuse."""
        return self.score_shards(scorer_id) / "scoring.json"

    @property
    def reference(self) -> Path:
        return self.artifacts / "reference.pt"

    @property
    def scorer(self) -> Path:
        """Which scorer in the store holds this run's reference losses (written by score, read by train)."""
        return self.artifacts / "scorer.json"

    def learner(self, policy: str) -> Path:
        return self.artifacts / "learners" / f"{policy}.pt"

    def sequence(self, policy: str) -> Path:
        """A selecting run's training sequence, beside its checkpoint: the pool ids it kept at each step."""
        return self.artifacts / "learners" / f"{policy}.sequence.parquet"

    def stamp(self, stage: str, item: str | None = None) -> Path:
        """The lineage key of the run that last wrote a stage's outputs (winnow.stages.lineage.record_run)."""
        if stage == "data":
            return self.artifacts_root / self.dataset / "stamps" / "data.key"
        return self.artifacts / "stamps" / (f"{stage}-{item}.key" if item else f"{stage}.key")

    def lock(self, name: str) -> Path:
        """The lock a run holds while it writes an output only one run may write at a time (files.exclusive)."""
        return self.artifacts / "locks" / f"{name}.lock"

    @property
    def dataset_owner(self) -> Path:
        """Which data folder this dataset name's outputs belong to (two folders of one name would collide)."""
        return self.artifacts_root / self.dataset / "dataset.json"

    # each stage's records: small JSON and CSV committed to git, under metrics/<dataset>/<objective>/
    @property
    def reference_record(self) -> Path:
        return self.metrics / "reference.json"

    @property
    def score_record(self) -> Path:
        return self.metrics / "score.json"

    def train_record(self, policy: str) -> Path:
        return self.metrics / "train" / f"{policy}.json"

    def curve(self, policy: str) -> Path:
        """The run's held-out metric at each evaluation (step, examples seen, metric)."""
        return self.metrics / "curves" / f"{policy}.csv"

    def step_log(self, policy: str) -> Path:
        """One row per step: loss, learning rate, the pathology mix of the kept batch."""
        return self.metrics / "steps" / f"{policy}.csv"

    @property
    def evaluate_record(self) -> Path:
        return self.metrics / "evaluate.json"

    @property
    def curate_record(self) -> Path:
        return self.metrics / "curate.json"

    @property
    def summary_record(self) -> Path:
        return self.metrics / "summary.json"

    @property
    def headline(self) -> Path:
        """The few figures `dvc metrics show` and `dvc metrics diff` print: one small JSON per policy, one row each."""
        return self.metrics / "headline"

    def pool_pass(self, what: str, key: str) -> Path:
        """A pass of a model over the pool that curation reads (losses or probabilities), cached by its inputs' key."""
        return self.artifacts / "curate" / f"{what}-{key}"

    @property
    def curated(self) -> Path:
        """`winnow curate`'s dataset, a data root of its own (so its runs are named <dataset>-<objective>)."""
        return self.artifacts_root / "curated" / f"{self.dataset}-{self.objective}"

    def study_curated(self, arm: str) -> Path:
        """A curated pool of `winnow bench --study curate`, beside the run's artifacts."""
        return self.artifacts_root / "curated" / arm

    @property
    def curate_plots(self) -> Path:
        return self.plots_root / self.dataset / f"{self.objective}-curate"

    @property
    def curate_report(self) -> Path:
        return self.reports_root / self.dataset / f"curate-{self.objective}.md"

    @property
    def bench(self) -> Path:
        """`winnow bench` results: <objective>.json, <objective>/curves/, memory.json."""
        return self.metrics_root / self.dataset / "bench"

    def bench_curve(self, policy: str) -> Path:
        """`winnow bench`'s mean curve of a policy over seeds (dvc plots show draws it)."""
        return self.bench / self.objective / (self.label or "") / "curves" / f"{policy}.csv"

    @property
    def bench_plots(self) -> Path:
        return self.plots_root / self.dataset / "bench" / self.objective / (self.label or "")

    @property
    def bench_report(self) -> Path:
        return self.reports_root / self.dataset / f"bench-{self.objective}{f'-policies-{self.label}' if self.label else ''}.md"

    def study_name(self, study: str) -> str:
        """A study's name in its file names: <study>-<bench.label> for a labelled run."""
        return f"{study}-{self.label}" if self.label else study

    def study_report(self, study: str) -> Path:
        """Where `winnow bench --study STUDY` leaves what a person reads: its report, or for the memory studies
        their JSON."""
        if study == "policies":
            return self.bench_report
        if study in ("memory", "import_memory"):
            return self.study_json(study)
        return self.reports_root / self.dataset / f"bench-{self.objective}-{self.study_name(study)}.md"

    def study_json(self, study: str) -> Path:
        """A study's numbers (every run included)."""
        if study in ("memory", "import_memory"):
            return self.bench / f"{self.study_name(study)}.json"
        if study == "policies" and not self.label:
            return self.bench / f"{self.objective}.json"
        return self.bench / f"{self.objective}-{self.study_name(study)}.json"


def replay_source(params) -> Path:
    """The training sequence train.replay names: a selecting policy of this run (its recorded sequence), or a file."""
    name = params.train.replay
    return Paths.of(params).sequence(name) if name in POLICIES else Path(name)
