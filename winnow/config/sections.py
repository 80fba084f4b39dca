"""params.yaml's sections, one per stage (data, reference, score, train, evaluate, bench, curate, serve), and the types
their fields share: each field declares its type and range; only checks that span several fields are written by
hand. The whole file, its loading and its overrides are winnow/config/__init__.py's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from winnow.curation.rules import RULES as CURATION_RULES
from winnow.method.policies import POLICIES as SELECTION_POLICIES
from winnow.method.schedules import Schedule
from winnow.method.selection import METHODS as SELECTION_METHODS

REGIME_SECTIONS = ("data", "reference", "score", "train")  # what a point of --study regimes may change
POLICY_NAMES = tuple(SELECTION_POLICIES)  # what each policy does is winnow.method.policies.POLICIES
# the arms a run trains unless told: every policy but the two baselines a study names (balanced, curated_mix) and the
# selecting policies on top of the curated set (*_mix), which join them when the default pool is regenerated (issue 42)
DEFAULT_ARMS = tuple(
    p for p in POLICY_NAMES if p != "balanced" and not SELECTION_POLICIES[p].blend and not SELECTION_POLICIES[p].replays
)
ACTOR_DATA = ("kept", "super_batch")  # what the actor trains on each step: the learner's batch, or all it scored
PRECISIONS = ("auto", "fp32", "bf16")  # no fp16: it needs loss scaling, and bf16 runs wherever fp16 would on current GPUs
OBJECTIVE_NAMES = ("classification", "contrastive")  # for the CLI without loading models; behaviour: winnow.method.objectives

Policy = Literal[POLICY_NAMES]  # type: ignore[valid-type]
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]
Int = Annotated[int, Strict()]  # a whole number: `true` or 1.5 is refused, not read as 1
Positive = Annotated[int, Strict(), Field(gt=0)]


class Section(BaseModel):
    """A params.yaml section: typed fields, no unknown keys, immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _true_is_not_a_number(cls, value, info):
        """YAML's true and false are not numbers: pydantic would read them as 1.0 and 0.0 for a float field, so
        --set train.lr=true would train at 1.0 and train.keep_fraction=true turn selection off."""
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        if isinstance(value, bool) and field is not None and float in (field.annotation, *get_args(field.annotation)):
            raise ValueError(f"must be a number, got {str(value).lower()}")
        return value


class Pathologies(Section):
    """Rates, per pool example, of each web-like defect (the rest is clean).

    Label defects only matter to the classifier and caption defects only to CLIP: a
    noisy label is a clean image-text pair, a mismatched caption a clean labelled image.
    """

    noisy_label: Rate = 0.12
    duplicate: Rate = 0.10
    blank: Rate = 0.03
    corrupt: Rate = 0.03
    undecodable: Rate = 0.005
    off_distribution: Rate = 0.05
    mismatched_caption: Rate = 0.25
    uninformative_caption: Rate = 0.05

    @model_validator(mode="after")
    def _room_for_clean(self):
        total = sum(self.model_dump().values())
        if total >= 1.0:
            raise ValueError(f"the rates add up to {total:.3f}; they must leave room for clean examples (< 1)")
        return self


class DataConfig(Section):
    dir: str = "data"  # where datasets live; the one run is dir/name
    name: str = "synthetic"  # the dataset: its outputs live under this name, so runs on different data never collide
    seed: Int = 0  # the generator's; the top-level seed drives training, so a bench over seeds keeps its data
    image_size: Int = Field(32, ge=16)
    num_pool: Positive = 50000
    num_curated: Positive = 500  # 1% of the pool, balanced over classes (the pool is not)
    num_test: Positive = 2000
    num_val: Positive = 2000  # the validation split: curves, targets and crossings read it; test is read once
    num_transfer: Positive = 3000
    shard_size: Positive = 5000
    class_imbalance: float = Field(1.0, ge=0.0)  # Zipf exponent of the pool's class frequencies (0 = balanced)
    # which class a wrong label names: "frequency", in proportion to each class's share of the pool (alt-text and
    # annotators favour common classes), so every label keeps a precision near 1 - its noise, as in JFT or LAION;
    # "uniform", any class alike, so a rare class's label mostly names other classes (the curated-suffices regime)
    label_noise: Literal["uniform", "frequency"] = "frequency"
    # how an image that is not image_size square becomes one: "squash" resizes both sides (the whole picture; a
    # label about an object near the border keeps it; what every committed run used), "crop" resizes the shorter
    # side and keeps the centre square (the aspect ratio kept: open_clip's and torchvision's evaluation transform)
    fit: Literal["squash", "crop"] = "squash"
    # processes that decode images (datasets/workers.py); null: the cores left after the compute threads (on the
    # CPU, torch's threads take them all: 0, decoding in line beside a thread); 0: in line. How fast, never what:
    # the same pixels and rows whatever the count, so no stage's output depends on it
    workers: Annotated[int, Strict(), Field(ge=0)] | None = None
    duplicate_sources: Positive = 1000
    pathologies: Pathologies = Pathologies()

    @property
    def root(self) -> str:
        """The dataset's folder (data contract: pool/, curated/, eval/, manifest.json)."""
        return str(Path(self.dir) / self.name)

    @field_validator("name")
    @classmethod
    def _a_folder_name(cls, name: str) -> str:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"must be a folder name (no '/'), got {name!r}; the folder holding it is data.dir")
        return name


class OptimConfig(Section):
    """One model's training run: which builder, for how long, how fast."""

    model: str = "cnn-small"
    steps: Positive = 1500
    batch_size: Positive = 64
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(0.05, ge=0.0)
    warmup_steps: Int = Field(100, ge=0)


class ReferenceConfig(OptimConfig):
    model: str = "cnn-nano"
    steps: Positive = 1000
    # a state dict of `model`'s architecture (torchvision, open_clip or winnow's own) to load instead of training:
    # a model you already have, amortised; the ledger counts no training for it (paid elsewhere)
    checkpoint: str | None = None


Resolution = Annotated[int, Strict(), Field(ge=8)]


class ScoreConfig(Section):
    batch_size: Positive = 128
    resolution: Resolution | None = None  # the reference trains on and scores images resized to this size (null: data.image_size)
    dask_workers: Int = Field(0, ge=0)  # > 0: score shards in parallel on a local Dask cluster of this many worker processes
    dask_address: str | None = None  # or on a running Dask cluster (tcp://scheduler:8786); workers must see data/ and artifacts/

    @model_validator(mode="after")
    def _one_cluster(self):
        if self.dask_workers and self.dask_address:
            raise ValueError("set dask_workers (a local cluster) or dask_address (a running one), not both")
        return self


class TrainConfig(OptimConfig):
    policies: tuple[Policy, ...] = DEFAULT_ARMS
    actor: str = "cnn-nano"  # the small online model whose loss scores each super-batch; `learner`: the learner itself
    actor_trains_on: Literal[ACTOR_DATA] = "kept"  # type: ignore[valid-type]
    keep_fraction: float = Field(0.5, gt=0.0, le=1.0)  # rho: keep batch_size of a super-batch of batch_size / rho
    selection: Literal[SELECTION_METHODS] = "topk"  # type: ignore[valid-type]
    temperature: float = Field(1.0, gt=0.0)
    # the schedule (method/schedules.py): uniform batches for the last share of steps; a uniform share of each kept
    # batch; softmax or weighted selection's temperature at the last step, relaxing geometrically from `temperature`
    anneal_last: float = Field(0.0, ge=0.0, lt=1.0)
    floor: float = Field(0.0, ge=0.0, lt=1.0)
    temperature_end: float | None = Field(None, gt=0.0)
    # the reference refreshed during training (ClassAct-Online): it scores each super-batch online and trains a step
    # each step on curated rows and, this share of its batch, the learner's kept rows
    refresh_reference: bool = False
    refresh_kept_share: float = Field(0.5, ge=0.0, le=1.0)
    # curated_mix and every *_mix policy: this share of each batch from the curated set (upsampled), the rest from the
    # pool (uniform for curated_mix; what the policy keeps of a super-batch of the rest / keep_fraction for the others)
    curated_share: float = Field(0.5, gt=0.0, lt=1.0)
    jest_chunks: Positive = 4  # selection jest: the batch is drawn in this many chunks, each conditioned on the ones before
    score_resolution: Resolution | None = None  # the actor trains on and scores images resized to this size (null: full size)
    # the replay policy (datasets/replay.py): the sequence it trains on, a selecting policy of this run (its recorded
    # learners/<policy>.sequence.parquet) or such a file; and how many learners share that recording's selection cost
    replay: str | None = None
    replay_users: Positive = 1
    eval_every: Positive = 100
    eval_examples: Positive | None = None  # the curves read at most this many validation rows (a fixed sample); null: all
    target_window: Positive = 3  # the target: the mean of uniform's last k evaluations; every curve smoothed over k
    checkpoint_every: Positive = 250
    shuffle_buffer: Positive = 50000  # examples held decoded; a larger pool streams through a buffer of this size
    nproc_per_node: Int = Field(1, ge=1)  # > 1: the train stage launches itself as this many DDP ranks on this node (torchrun)
    # > 1: `winnow pipeline` trains this many arms at once, each in a process of its own, and every arm (however it is
    # launched, dvc repro too) runs on torch's CPU threads over parallel_arms: on one machine, one config, one result
    parallel_arms: Int = Field(1, ge=1)

    @property
    def super_batch_size(self) -> int:
        """B / rho: how many examples are drawn to keep batch_size of them (B for weighted selection, which trains
        on its whole draw)."""
        return self.batch_size if self.selection == "weighted" else int(round(self.batch_size / self.keep_fraction))

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.anneal_last, self.floor, self.temperature_end)

    @model_validator(mode="after")
    def _consistent(self):
        if "uniform" not in self.policies:
            raise ValueError("policies must include 'uniform': it is the baseline every ratio is measured against")
        if len(set(self.policies)) != len(self.policies):
            raise ValueError(f"policies lists a policy twice: {list(self.policies)}")
        if self.batch_size % self.nproc_per_node or self.super_batch_size % self.nproc_per_node:
            raise ValueError(
                f"batch_size ({self.batch_size}) and the super-batch ({self.super_batch_size}) must divide evenly "
                f"over nproc_per_node ({self.nproc_per_node}) ranks"
            )
        if self.parallel_arms > 1 and self.nproc_per_node > 1:
            raise ValueError(
                f"train.parallel_arms ({self.parallel_arms}) trains arms side by side, train.nproc_per_node "
                f"({self.nproc_per_node}) one arm over several ranks: set one of them to 1"
            )
        if self.selection == "jest" and self.jest_chunks > self.batch_size // self.nproc_per_node:
            raise ValueError(
                f"jest_chunks ({self.jest_chunks}) cannot exceed the examples each rank keeps per step "
                f"({self.batch_size // self.nproc_per_node})"
            )
        if self.selection == "jest" and self.floor:
            raise ValueError("train.floor draws a uniform share of each batch per example; jest chooses its batch jointly")
        if self.refresh_reference and (self.actor == "learner" or self.selection == "jest"):
            raise ValueError(
                "train.refresh_reference trains the reference beside an actor and scores per example: set train.actor to a "
                "model (not 'learner') and a per-example selection (not jest)"
            )
        if self.temperature_end is not None and self.selection == "topk":
            raise ValueError(
                "train.temperature_end relaxes a temperature; topk has none: use selection softmax or weighted, or leave it null"
            )
        if self.shuffle_buffer < self.super_batch_size:
            raise ValueError(f"shuffle_buffer ({self.shuffle_buffer}) must hold at least a super-batch ({self.super_batch_size})")
        if "replay" in self.policies and not self.replay:
            raise ValueError(
                "the 'replay' policy trains on a recorded training sequence: set train.replay to a selecting policy of "
                "this run (learnability, ...) or to a sequence file (learners/<policy>.sequence.parquet)"
            )
        if self.replay in SELECTION_POLICIES and not SELECTION_POLICIES[self.replay].selects:
            raise ValueError(f"train.replay: {self.replay!r} selects nothing, so it records no training sequence")
        return self


class EvaluateConfig(Section):
    probe_steps: Positive = 300
    probe_lr: float = Field(1e-2, gt=0.0)


class BenchConfig(Section):
    """`winnow bench`: policies side by side over seeds; the scorer-size and learner-size studies."""

    seeds: Int = Field(3, ge=1)
    policies: tuple[Policy, ...] = DEFAULT_ARMS  # the baselines and the selection policies
    amortise_over: Int = Field(10, ge=1)  # runs that share one reference and its scores
    scorers: tuple[str, ...] = ("cnn-nano", "cnn-tiny", "cnn-small")  # reference = actor, for the train.model learner
    learners: tuple[str, ...] = ("cnn-tiny", "cnn-small", "cnn-medium")  # learners, each scored by reference.model/train.actor
    # --study ladder: learners far larger than the fixed scorers, each under the budgets protocol against baselines of
    # its own; the first one's learnability sequence replayed on the others (null: the objective's, Params.ladder).
    # learner_steps: train.steps for a learner of the ladder (fewer for the big ones where time is short); unset: train.steps
    ladder: tuple[str, ...] | None = Field(None, min_length=2)
    learner_steps: dict[str, Positive] = {}
    keep_fractions: tuple[Annotated[float, Field(gt=0.0, le=1.0)], ...] = (0.5, 0.2, 0.1)  # --study jest: JEST at each
    low_resolution: Resolution = 16  # --study jest: and again with the reference and the actor scoring at this size
    curate_fractions: tuple[Annotated[float, Field(gt=0.0, le=1.0)], ...] = (0.5, 0.3)  # --study curate: curate.rule at each
    # --study curate: the filter a user would pick instead (null: none), keeping peer_fraction (cleanlab decides its own)
    peer_rule: Literal[tuple(CURATION_RULES)] | None = None  # type: ignore[valid-type]
    peer_fraction: float = Field(0.3, gt=0.0, le=1.0)
    transfer_learner: str | None = None  # --study curate: another family trained on the same curated pool (null: none)
    memory_scale: Int = Field(10, ge=1)  # --study memory | import_memory: the default pool and one this many times larger
    # --study levers: learnability with each lever (train.* changes) alone and together, against the best baseline
    levers: dict[str, dict[str, Any]] = {
        "learnability": {},
        "anneal": {"anneal_last": 0.2},
        "floor": {"floor": 0.25},
        "relaxing": {"selection": "softmax", "temperature": 0.25, "temperature_end": 2.0},
        "weighted": {"selection": "weighted", "temperature": 0.5},
        "refreshed": {"refresh_reference": True},
        "anneal+floor": {"anneal_last": 0.2, "floor": 0.25},
    }
    # --study regimes: each point a change to the data (the built-in generator's) or the scorers, in dotted keys;
    # learnability as configured against the best baseline at each, with a uniform pilot: the map `winnow advise` reads
    regimes: dict[str, dict[str, Any]] = {
        "as-configured": {},
        "noise-0.05": {"data.pathologies.noisy_label": 0.05},
        "noise-0.3": {"data.pathologies.noisy_label": 0.30},
        "curated-4pct": {"data.num_curated": 2000},
        "curated-10pct": {"data.num_curated": 5000},
        # the former built-in pool: rare labels mostly name other classes, 4% curated; the curated set alone wins there
        "curated-suffices": {
            "data.label_noise": "uniform",
            "data.pathologies.noisy_label": 0.30,
            "data.num_curated": 2000,
        },
        "scorer-as-learner": {"reference.model": "cnn-small", "train.actor": "cnn-small"},
    }
    # --study budgets: each arm trained at each of these multiples of train.steps, its schedule ending there; FLOPs to
    # uniform's target read across budgets (docs/DESIGN.md, Selection): ascending, at least two
    budgets: tuple[Annotated[float, Field(gt=0.0)], ...] = (0.5, 1.0, 2.0, 4.0)
    # each seed its own data, so intervals cover the data as well as training: the built-in pool generated from
    # data.seed = the seed; an imported dataset's curated and val rows drawn again from their union (test kept)
    data_seeds: bool = False
    pilot_steps: Positive = 150  # `winnow advise` and --study regimes: the short uniform run whose val metric is a feature
    # a name for one study run (say, 5 seeds of one lever): its runs, JSON, report and plot are named <study>-<label>,
    # beside the study's full run instead of over it; null: the study's own name
    label: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=40)] | None = None

    @field_validator("budgets")
    @classmethod
    def _budgets_ascend(cls, budgets: tuple[float, ...]) -> tuple[float, ...]:
        if len(budgets) < 2 or list(budgets) != sorted(set(budgets)):
            raise ValueError(f"must be at least two distinct budgets in ascending order, got {list(budgets)}")
        return budgets

    @field_validator("label")
    @classmethod
    def _label_is_no_run_folder(cls, label: str | None) -> str | None:
        if label is not None and re.fullmatch(r"seed-[0-9]+", label):
            raise ValueError(f"{label!r} names a seed's run folder; pick another label")
        return label

    @model_validator(mode="after")
    def _has_baseline(self):
        if "uniform" not in self.policies:
            raise ValueError("policies must include 'uniform'")
        return self


class CurateConfig(Section):
    """`winnow curate`: keep a fraction of the pool by a rule, written as a dataset (winnow.curation, winnow.stages.curate)."""

    rule: Literal[tuple(CURATION_RULES)] = "easy_reference"  # type: ignore[valid-type]
    fraction: float = Field(0.5, gt=0.0, le=1.0)  # of the pool's rows kept (cleanlab decides its own)
    balance: bool = False  # keep `fraction` of each class, so a hard class is not drained first
    policy: Policy = "learnability"  # rule learnability: the train stage whose finished checkpoint scores the pool
    scorer: Literal["actor", "learner"] = "actor"  # ... with its actor (small) or its learner

    @model_validator(mode="after")
    def _consistent(self):
        if not CURATION_RULES[self.rule].ranks and self.balance:
            raise ValueError(f"balance: {self.rule} decides per class what it keeps; set balance: false with rule {self.rule}")
        return self


class ServeConfig(Section):
    """`winnow serve`: when the pipeline reruns (one of the two, or neither: on demand only)."""

    cron: str | None = "0 3 * * *"  # 5 fields: minute hour day month weekday
    interval_minutes: float | None = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _one_schedule(self):
        if self.cron is not None and len(self.cron.split()) != 5:
            raise ValueError(f"cron must have 5 fields (minute hour day month weekday), got {self.cron!r}")
        if self.cron and self.interval_minutes:
            raise ValueError("set cron or interval_minutes, not both")
        return self
