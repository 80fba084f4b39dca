"""What each stage's JSON record holds, declared: written whole, read back validated, read by attribute.

A stage builds its record, writes it (`record.write(path)`, atomically) and returns it as a plain dict;
a later stage reads it with `Record.read(path, fix)`, which names the file and the stage to rerun when it is
missing, unreadable or of another shape. Fields left unset are left out of the file (a uniform run has no
actor), and read back as None.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, ValidationError

from winnow.errors import MissingInput, StaleInput
from winnow.files import write_json


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def as_dict(self) -> dict:
        return self.model_dump(exclude_unset=True)

    def write(self, path: Path) -> dict:
        write_json(self.as_dict(), path)
        return self.as_dict()

    @classmethod
    def read(cls, path: Path, fix: str) -> Self:
        """The record at `path`; missing, unreadable or of another shape is an error naming the file and `fix`."""
        if not path.exists():
            raise MissingInput(f"{path}: missing; {fix}")
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise StaleInput(f"{path}: not readable JSON ({e}); {fix}") from e
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise StaleInput(f"{path}: not a {cls.__name__} ({where}: {first['msg']}); {fix}") from e


class ReferenceRecord(Record):
    """metrics/<dataset>/<objective>/reference.json: the reference model trained on the curated set."""

    model: str
    resolution: int  # it learns and scores at this image size
    steps: int
    batch_size: int
    train_examples: int
    test_metric: str  # the objective's held-out metric
    final_metric: float  # ... after the last step
    val_metric: float | None = None  # ... and on the validation split the learners' curves read
    forward_flops_per_example: float  # at its training batch
    train_step_flops: float  # one measured training step (forward, backward, optimiser) at its batch: the ledger's line
    score_forward_flops_per_example: float  # at the scoring batch (the ledger's pool scoring)
    seconds: float  # training time, evaluation excluded
    parameters: int
    model_hash: str  # what a scorer in the store is keyed on
    loaded_from: str | None = None  # reference.checkpoint: loaded, not trained (steps 0: its training paid elsewhere)
    loaded_sha256: str | None = None


class ScoreRecord(Record):
    """metrics/<dataset>/<objective>/score.json: which scorer in the store holds this pool's reference losses, and
    what scoring measured (kept with the scorer's shards, so a reused scorer reports the figures it was scored with)."""

    scorer_id: str
    model_hash: str
    dataset_hash: str
    objective: str
    reused: bool
    num_examples: int
    unscorable: int
    seconds: float  # scoring the pool, summed over its shards and over every run that scored some
    seconds_this_run: float | None = None  # ... of which this run's (less when it resumed a killed one)
    rows_scored: int | None = None
    shards: int | None = None
    shards_scored: int | None = None
    workers: list[str] | None = None  # Dask workers that scored shards
    scoring_rows_per_s: float | None = None
    bare_forward_rows_per_s: float | None = None  # the same model's forward alone on one shard
    decode_seconds: float | None = None  # decoding the shards (and tokenising captions), in a thread ahead ...
    wait_seconds: float | None = None  # ... of which the forward waited this long (of `seconds`: decode not hidden) ...
    forward_seconds: float | None = None  # ... and the reference's forward with the loss (of `seconds`)
    bound: str | None = None  # decode | compute: which of decoding and the forward took longer
    decoded_ahead: bool | None = None  # the next shard decoded in a thread while one was scored (where that pays)
    rows_ingested: int | None = None
    shards_ingested: int | None = None
    ingest_seconds: float | None = None
    ingest_rows_per_s: float | None = None


class TrainRecord(Record):
    """metrics/<dataset>/<objective>/train/<policy>.json: one learner run and what the ledger needs of it."""

    policy: str
    steps: int
    final_metric: float | None  # on the test set, read once, at the end of the run
    # the learner on the curated set alone, early-stopped: its best evaluation on the curve's split, and the test set
    # read at those weights (a second reading of the same run; the FLOPs to that step are its cost)
    best_val_step: int | None = None
    best_val: float | None = None
    final_metric_at_best_val: float | None = None
    seconds: float  # training time summed over resumed runs, evaluation excluded
    seconds_per_step: float
    step_seconds_median: float | None = None  # the median step's seconds after the warm-up: what the ledger charges
    data_seconds_median: float | None = None  # ... of which waiting for data (drawing, decoding, the copy to the device)
    images_per_step: float | None = None  # delivered by the data path per learner step (super-batch and curated rows)
    clock: list[tuple[int, float]]  # [step, seconds so far] at each evaluation: time to a target
    eval_seconds: float | None = None  # the curve's evaluations, summed (not in `seconds`); test-set read apart
    test_seconds: float | None = None  # the one read of the test set at the end
    evaluations: int | None = None
    batch_size: int
    super_batch_size: int  # drawn from the pool each step (a blended run: for the pool's part of its batch)
    curated_share: float | None = None  # a blended run (curated_mix, *_mix): this share of every batch curated rows
    selection: str | None  # topk | softmax | jest; None for uniform
    selected_mix: dict[str, float]  # the pathology mix of its kept batches, mean over steps
    kept_class_share: list[float] | None = None  # each label's share of its kept rows over the run (index: label)
    pool_size: int
    pool_skipped: int
    forward_flops_per_example: float  # the learner's, at its batch
    learner_step_flops: float  # one measured training step of the learner at its batch (the ledger's line)
    actor: str | None = None  # the online scorer: a model name, or "learner" (it scores itself)
    actor_resolution: int | None = None
    actor_trains_on: str | None = None
    actor_trained_per_step: int | None = None
    actor_super_batch_forward_flops_per_example: float | None = None
    actor_forward_flops_per_example: float | None = None
    actor_scoring_flops_per_step: float | None = None  # measured: the online model scoring one super-batch
    actor_step_flops: float | None = None  # measured: one training step of the actor on what it trains on
    reference_logits_flops_per_step: float | None = None  # JEST: the reference's logits from stored features
    reference_refresh_flops_per_step: float | None = None  # a refreshed reference: its scoring and its training step
    refresh_kept_share: float | None = None  # ... the share of its batch from the learner's kept rows
    # a replay: the sequence it trained on, the learners sharing its recording, and what that recording's selection
    # cost (its one-off FLOPs, its per-step selection FLOPs, the steps that selected), before the division by users
    replay_of: str | None = None
    replay_users: int | None = None
    replayed_policy: str | None = None
    replayed_one_off_flops: float | None = None
    replayed_selection_flops_per_step: float | None = None
    pool_streamed: bool | None = None
    shuffle_buffer: int | None = None
    world_size: int | None = None
    curve_split: str = "eval/test"  # what its curve read: eval/val (eval/test only for data without a validation split)
    curve_examples: int | None = None  # how many of its rows (train.eval_examples bounds them)
    curve_final: float | None = None  # its curve's last value, on that split
    data: str = "pool"  # what it drew from: pool | curated | curated+pool | filtered (method/policies.py)
    schedule: dict | None = None  # a scheduled run (method/schedules.py): anneal_last, floor, temperature_end
    selecting_steps: int | None = None  # ... the steps that selected (the rest trained on uniform batches)
    annealed_step_seconds_median: float | None = None  # ... and the median of those uniform steps
    negative_learnability: list[float] | None = None  # the plateau alarm: its share of the super-batch, per tenth of the run
    weights_ess: list[float] | None = None  # soft selection: the effective sample size over n, per tenth of the run
    prepare_seconds: float | None = None  # the filtered baseline: filtering the pool, a one-off paid in full
    filter_dropped: dict[str, int] | None = None  # ... and the rows each filter dropped
