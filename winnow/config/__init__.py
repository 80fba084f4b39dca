"""params.yaml, validated into typed objects at the edge.

Everything below the CLI and the flows takes these pydantic models (or plain values out of
them), never the raw dict. Each field declares its type and range; unknown keys are
forbidden; only checks that span several fields are written by hand. A wrong key or value
raises ConfigError naming the dotted key and what is allowed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ValidationError, field_validator, model_validator

from winnow.config.sections import (
    ACTOR_DATA,
    DEFAULT_ARMS,
    OBJECTIVE_NAMES,
    POLICY_NAMES,
    PRECISIONS,
    REGIME_SECTIONS,
    BenchConfig,
    CurateConfig,
    DataConfig,
    EvaluateConfig,
    Int,
    OptimConfig,
    ReferenceConfig,
    ScoreConfig,
    Section,
    ServeConfig,
    TrainConfig,
)
from winnow.curation.rules import RULES as CURATION_RULES
from winnow.errors import ConfigError
from winnow.method.policies import POLICIES as SELECTION_POLICIES


class Params(Section):
    seed: Int = 0
    objective: Literal[OBJECTIVE_NAMES] = "classification"  # type: ignore[valid-type]
    artifacts: str = "artifacts"  # checkpoints and the score store (DVC-cached)
    metrics: str = "metrics"  # small JSON/CSV results (committed to git)
    plots: str = "plots"
    reports: str = "reports"
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    precision: Literal[PRECISIONS] = "auto"  # type: ignore[valid-type]  # auto: bf16 autocast on CUDA, fp32 on CPU
    data: DataConfig = DataConfig()
    reference: ReferenceConfig = ReferenceConfig()
    score: ScoreConfig = ScoreConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    bench: BenchConfig = BenchConfig()
    curate: CurateConfig = CurateConfig()
    serve: ServeConfig = ServeConfig()

    @field_validator("device")
    @classmethod
    def _a_device(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda|cuda:\d+", device):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N; got {device!r}")
        return device

    @model_validator(mode="after")
    def _selection_fits_the_objective(self):
        from models import patch_size

        objective = _objective(self.objective)
        if self.train.selection == "jest" and not objective.joint:
            raise ValueError(
                f"train.selection: 'jest' selects batches jointly because a contrastive loss depends on which pairs share "
                f"a batch; the {self.objective} loss of an example does not (no joint term), so use 'topk' or 'softmax'"
            )
        if self.train.score_resolution is not None and self.train.actor == "learner":
            raise ValueError(
                "train.score_resolution sets the actor's resolution, and train.actor is 'learner' (the learner scores itself "
                "at full size); set a train.actor or leave train.score_resolution null"
            )
        for key, size in (("score.resolution", self.score.resolution), ("train.score_resolution", self.train.score_resolution)):
            scorer = self.reference.model if key == "score.resolution" else self.train.actor
            patch = patch_size(scorer) if size is not None and scorer in objective.models else None
            if patch and size % patch:
                raise ValueError(f"{key} ({size}) must be a multiple of {scorer}'s patch size ({patch})")
            if size is not None and size > self.data.image_size:
                raise ValueError(
                    f"{key} ({size}) must not exceed data.image_size ({self.data.image_size}): scorers run at "
                    "a lower resolution than the learner, never a higher one"
                )
        return self

    @model_validator(mode="after")
    def _levers_are_train_settings(self):
        """Each lever of --study levers names train.* settings (the study checks the train section each makes
        before its first run: a lever need not fit a config that never runs it)."""
        for name, changes in self.bench.levers.items():
            unknown = sorted(set(changes) - set(TrainConfig.model_fields))
            if unknown:
                raise ValueError(f"bench.levers.{name}: {', '.join(unknown)} is not a train.* setting")
        return self

    @model_validator(mode="after")
    def _regimes_are_settings(self):
        """Each point of --study regimes changes data, reference, score or train settings (checked in full, with
        the values, when the study starts)."""
        for name, changes in self.bench.regimes.items():
            if "/" in name or name in (".", ".."):
                raise ValueError(f"bench.regimes.{name}: a point's name is a folder name (no '/')")
            for key in changes:
                section = key.split(".", 1)[0]
                if "." not in key or section not in REGIME_SECTIONS:
                    raise ValueError(
                        f"bench.regimes.{name}.{key}: a point changes dotted keys of {', '.join(REGIME_SECTIONS)} "
                        "(e.g. data.num_curated, reference.model)"
                    )
        return self

    @property
    def ladder(self) -> tuple[str, ...]:
        """--study ladder's learners: bench.ladder, or the objective's (small to large, one family)."""
        return self.bench.ladder or _objective(self.objective).ladder

    def regime(self, name: str) -> "Params":
        """The params point `name` of bench.regimes makes (validated as --set would); one that does not fit is a
        ConfigError naming it. A point that changes the data gets a dataset of its own, <data.name>-<name>."""
        changes = self.bench.regimes[name]
        overrides = [f"{key}={json.dumps(value)}" for key, value in changes.items()]
        if any(key.startswith("data.") for key in changes):
            overrides.append(f"data.name={self.data.name}-{name}")
        try:
            return with_overrides(self, overrides)
        except ConfigError as e:
            raise ConfigError(f"bench.regimes.{name}: {e}") from None

    def lever_train(self, name: str) -> TrainConfig:
        """The train section lever `name` of bench.levers makes; one that does not fit is a ConfigError naming it."""
        try:
            return TrainConfig.model_validate({**self.train.model_dump(), **self.bench.levers[name]})
        except ValidationError as e:
            raise ConfigError(f"bench.levers.{name}: {e.errors()[0]['msg']}") from None

    @model_validator(mode="after")
    def _curation_fits(self):
        for key, rule in (("curate.rule", self.curate.rule), ("bench.peer_rule", self.bench.peer_rule)):
            needs = CURATION_RULES[rule].objective if rule else None
            if needs and needs != self.objective:
                what = CURATION_RULES[rule].purpose
                raise ValueError(f"{key}: {rule!r} {what}; it needs the {needs} objective, not {self.objective}")
        if self.curate.rule == "learnability":
            policy = SELECTION_POLICIES[self.curate.policy]
            if self.curate.policy not in self.train.policies:
                raise ValueError(
                    f"curate.policy: {self.curate.policy!r} is not in train.policies, so no checkpoint of it is trained; "
                    "add it to train.policies or set curate.policy to one that is"
                )
            if self.curate.scorer == "actor" and (not policy.actor_loss or self.train.actor == "learner"):
                raise ValueError(
                    f"curate.scorer: 'actor', and the {self.curate.policy!r} run trains no actor of its own; "
                    "set curate.scorer: learner, or curate.policy to a policy with an online loss"
                )
        return self

    @model_validator(mode="after")
    def _models_of_the_objective(self):
        objective = _objective(self.objective)
        models = [("reference.model", self.reference.model), ("train.model", self.train.model)]
        models += [("train.actor", self.train.actor)] if self.train.actor != "learner" else []
        models += [(f"bench.scorers[{i}]", m) for i, m in enumerate(self.bench.scorers)]
        models += [(f"bench.learners[{i}]", m) for i, m in enumerate(self.bench.learners)]
        models += [(f"bench.ladder[{i}]", m) for i, m in enumerate(self.bench.ladder or ())]
        models += [("bench.transfer_learner", self.bench.transfer_learner)] if self.bench.transfer_learner else []
        for key, model in models:
            if model not in objective.models:
                also = " or 'learner' (the learner scores itself)" if key == "train.actor" else ""
                raise ValueError(
                    f"{key}: {model!r} is not a {self.objective} model; choose one of {sorted(objective.models)}{also} "
                    f"(set per-objective models under objectives.{self.objective})"
                )
        for key, model in models[2:]:  # every scorer reads the learner's targets
            for other in (self.train.model, *self.bench.learners, *self.ladder):
                if not objective.shares_targets(model, other):
                    raise ValueError(
                        f"{key}: {model!r} reads the targets differently from the learner {other!r} "
                        "(another caption tokeniser); the actor scores the learner's batches, so choose one that shares it"
                    )
        for learner in self.bench.learner_steps:
            if learner not in self.ladder:
                raise ValueError(f"bench.learner_steps.{learner}: not a learner of the ladder {list(self.ladder)}")
        if self.train.refresh_reference and not objective.shares_targets(self.reference.model, self.train.model):
            raise ValueError(
                f"train.refresh_reference: the reference {self.reference.model!r} reads the targets differently from the "
                f"learner {self.train.model!r} (another caption tokeniser); a refreshed reference scores its batches"
            )
        return self


def _objective(name: str):
    """The objective's behaviour (winnow.method.objectives): models and open_clip load here, not when config loads."""
    from winnow.method.objectives import OBJECTIVES

    return OBJECTIVES[name]


def _message(error: dict) -> str:
    """One pydantic error as winnow says it: the dotted key, what is wrong, what is allowed."""
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    if error["type"] == "extra_forbidden":
        section: type[BaseModel] = Params
        for part in error["loc"][:-1]:
            section = section.model_fields[part].annotation
        where = " under " + key.rsplit(".", 1)[0] if len(error["loc"]) > 1 else ""
        return f"unknown key {key!r}; allowed keys{where}: {sorted(section.model_fields)}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] in ("value_error", "assertion_error"):
        return f"{key}: {message}" if key else message
    return f"{key}: {message}, got {error['input']!r}"


def _validate(raw: dict) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise ConfigError("; ".join(_message(error) for error in e.errors())) from None


# params.yaml's `objectives:` section, for a params file that has none (tests check the two agree).
DEFAULT_OBJECTIVES = {
    "classification": {"bench": {"peer_rule": "cleanlab", "transfer_learner": "vit-tiny"}},
    "contrastive": {
        "reference": {"model": "clip-pico", "lr": 0.001},
        "train": {"model": "clip-tiny", "actor": "clip-pico", "lr": 0.001},
        "score": {"batch_size": 128},
        "bench": {
            "scorers": ["clip-pico", "clip-nano", "clip-tiny"],
            "learners": ["clip-nano", "clip-tiny", "clip-small"],
            "peer_rule": "clip_score",
            "transfer_learner": "clip-small",
            "regimes": {
                "as-configured": {},
                "mismatched-0.1": {"data.pathologies.mismatched_caption": 0.10},
                "mismatched-0.4": {"data.pathologies.mismatched_caption": 0.40},
                "curated-4pct": {"data.num_curated": 2000},
                "curated-10pct": {"data.num_curated": 5000},
                "scorer-as-learner": {"reference.model": "clip-tiny", "train.actor": "clip-tiny"},
            },
        },
    },
}


def params_from_dict(raw: dict, overrides: list[str] | tuple[str, ...] = ()) -> Params:
    """Validate raw params. `objectives.<objective>` holds sections applied over the shared ones
    when that objective runs (CLIP needs other models and learning rates than the classifier);
    `overrides` ('a.b=value') apply last, so a --set wins over both. A key left out takes its
    default, and the defaults are params.yaml's (tests/test_config.py)."""
    raw = dict(raw or {})
    per_objective = raw.pop("objectives", DEFAULT_OBJECTIVES) or {}
    if not isinstance(per_objective, dict):
        raise ConfigError("objectives must be a mapping of objective -> sections")
    for name, sections in per_objective.items():
        if name not in OBJECTIVE_NAMES:
            raise ConfigError(f"objectives.{name}: unknown objective; choose from {list(OBJECTIVE_NAMES)}")
        if not isinstance(sections or {}, dict):
            raise ConfigError(f"objectives.{name} must be a mapping of sections, got {sections!r}")
        for section, values in (sections or {}).items():
            if section not in ("reference", "score", "train", "evaluate", "bench", "curate"):
                raise ConfigError(
                    f"objectives.{name}.{section}: only reference, score, train, evaluate, bench and curate "
                    "can differ per objective"
                )
            if not isinstance(values or {}, dict) or not isinstance(raw.get(section) or {}, dict):
                raise ConfigError(f"objectives.{name}.{section} and {section} must be mappings of keys to values")
    for section, values in (per_objective.get(raw.get("objective", "classification")) or {}).items():
        raw[section] = {**(raw.get(section) or {}), **(values or {})}
    for override in overrides:  # over the objective's sections too: `--set reference.lr=...` is never silently undone
        if not override.startswith("objectives."):
            apply_override(raw, override)
    if isinstance(raw.get("data"), dict) and "root" in raw["data"]:
        raw["data"] = _split_root(dict(raw["data"]))
    return _validate(raw)


def _split_root(data: dict) -> dict:
    """`data.root: some/where/mine` is shorthand for data.dir=some/where, data.name=mine."""
    root = data.pop("root")
    if "dir" in data or "name" in data:
        raise ConfigError("data.root is shorthand for data.dir + data.name: set one or the other, not both")
    if not isinstance(root, str) or not root.strip("/"):
        raise ConfigError(f"data.root must be a folder path, got {root!r}")
    path = Path(root)
    return {**data, "dir": str(path.parent), "name": path.name}


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Read and validate params.yaml; `overrides` are 'a.b=value' strings (YAML values)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such params file (run from the repository root, or pass --params)")
    if not path.is_file():
        raise ConfigError(f"{path}: is a folder, not a params file (pass --params path/to/params.yaml)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file ({e.reason} at byte {e.start}); pass a params.yaml") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of keys to values, got a {type(raw).__name__}")
    for override in overrides or []:  # first here, so that an override of `objective` or `objectives.*` takes effect
        apply_override(raw, override)
    try:
        return params_from_dict(raw, overrides or [])
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def apply_override(raw: dict, override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like key.sub=value")
    dotted, value = override.split("=", 1)
    data = raw.get("data")
    if dotted in ("data.root", "data.dir", "data.name") and isinstance(
        data, dict
    ):  # a new root replaces dir + name, and the reverse
        if dotted == "data.root":
            data.pop("dir", None), data.pop("name", None)
        elif "root" in data:
            raw["data"] = _split_root(dict(data))
    node = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
    node[leaf] = yaml.safe_load(value)


def to_dict(params: Params) -> dict:
    """Plain values, as params.yaml holds them (what dvc.yaml's ${...} templating reads)."""
    return params.model_dump()


def resolved(params: Params) -> dict:
    """The params as plain YAML-ready values, each objective's sections already applied (objectives: {}), so
    that a file of them reads back as exactly these params (a torchrun rank, a fresh process of a study)."""
    return {**json.loads(json.dumps(to_dict(params))), "objectives": {}}


def write_params(params: Params, path: Path) -> Path:
    """These exact params as a params file (see `resolved`)."""
    path.write_text(yaml.safe_dump(resolved(params)))
    return path


def with_overrides(params: Params, overrides: list[str]) -> Params:
    """These params with `overrides` ('a.b=value') applied and validated again, as `--set` would."""
    return params_from_dict(resolved(params), overrides)


# what other modules read from here: the whole file's Params and its loading, and the sections (config/sections.py)
__all__ = [
    "ACTOR_DATA",
    "DEFAULT_ARMS",
    "OBJECTIVE_NAMES",
    "POLICY_NAMES",
    "BenchConfig",
    "ConfigError",
    "CurateConfig",
    "DataConfig",
    "EvaluateConfig",
    "OptimConfig",
    "Params",
    "ReferenceConfig",
    "ScoreConfig",
    "ServeConfig",
    "TrainConfig",
    "apply_override",
    "load_params",
    "params_from_dict",
    "resolved",
    "to_dict",
    "with_overrides",
    "write_params",
]
