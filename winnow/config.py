"""params.yaml, validated into typed objects at the edge.

Everything below the CLI and the flows takes these dataclasses (or plain values
out of them), never the raw dict. A wrong key or value raises ConfigError naming
the dotted key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from winnow.errors import ConfigError
from winnow.selection import POLICIES as SELECTION_POLICIES

POLICIES = tuple(SELECTION_POLICIES)  # the names; what each policy does is winnow.selection.POLICIES
SELECTIONS = ("topk", "softmax")
PRECISIONS = ("auto", "fp32", "bf16")  # no fp16: it needs loss scaling, and bf16 runs wherever fp16 would on current GPUs
OBJECTIVES = (
    "classification",
    "contrastive",
)  # the names, for the CLI without loading models; behaviour: winnow.objectives.OBJECTIVES


@dataclass(frozen=True)
class Pathologies:
    """Rates, per pool example, of each web-like defect (the rest is clean).

    Label defects only matter to the classifier and caption defects only to CLIP: a
    noisy label is a clean image-text pair, a mismatched caption a clean labelled image.
    """

    noisy_label: float = 0.30
    duplicate: float = 0.10
    blank: float = 0.03
    corrupt: float = 0.03
    undecodable: float = 0.005
    off_distribution: float = 0.05
    mismatched_caption: float = 0.25
    uninformative_caption: float = 0.05

    def validate(self, key: str) -> None:
        for name, rate in dataclasses.asdict(self).items():
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"{key}.{name} must be in [0, 1), got {rate}")
        if sum(dataclasses.asdict(self).values()) >= 1.0:
            raise ConfigError(
                f"{key}: the rates add up to {sum(dataclasses.asdict(self).values()):.3f}; they must leave room for clean "
                "examples (< 1)"
            )


@dataclass(frozen=True)
class DataConfig:
    dir: str = "data"  # where datasets live; the one run is dir/name
    name: str = "synthetic"  # the dataset: its outputs live under this name, so runs on different data never collide
    seed: int = 0  # the generator's; the top-level seed drives training, so a bench over seeds keeps its data
    image_size: int = 32
    num_pool: int = 50000
    num_curated: int = 8000
    num_test: int = 2000
    num_transfer: int = 3000
    shard_size: int = 5000
    class_imbalance: float = 1.0
    duplicate_sources: int = 100
    pathologies: Pathologies = field(default_factory=Pathologies)

    @property
    def root(self) -> str:
        """The dataset's folder (data contract: pool/, curated/, eval/, manifest.json)."""
        return str(Path(self.dir) / self.name)

    def validate(self, key: str) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ConfigError(f"{key}.name must be a folder name (no '/'), got {self.name!r}; the folder holding it is {key}.dir")
        for name in ("image_size", "num_pool", "num_curated", "num_test", "num_transfer", "shard_size", "duplicate_sources"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{key}.{name} must be positive, got {getattr(self, name)}")
        if self.image_size < 16:
            raise ConfigError(f"{key}.image_size must be at least 16, got {self.image_size}")
        if self.class_imbalance < 0:
            raise ConfigError(f"{key}.class_imbalance must be >= 0 (0 is balanced), got {self.class_imbalance}")
        self.pathologies.validate(f"{key}.pathologies")


@dataclass(frozen=True)
class OptimConfig:
    """One model's training run: which builder, for how long, how fast."""

    model: str = "cnn-small"
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100

    def validate(self, key: str) -> None:
        for name in ("steps", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{key}.{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"{key}.lr must be positive, got {self.lr}")
        if self.weight_decay < 0 or self.warmup_steps < 0:
            raise ConfigError(f"{key}: weight_decay and warmup_steps must be >= 0")


@dataclass(frozen=True)
class ReferenceConfig(OptimConfig):
    model: str = "cnn-small"
    steps: int = 1000


@dataclass(frozen=True)
class ScoreConfig:
    batch_size: int = 128
    dask_workers: int = 0  # > 0: score shards in parallel on a local Dask cluster of this many worker processes
    dask_address: str | None = None  # or on a running Dask cluster (tcp://scheduler:8786); workers must see data/ and artifacts/

    def validate(self, key: str) -> None:
        if self.batch_size <= 0:
            raise ConfigError(f"{key}.batch_size must be positive, got {self.batch_size}")
        if self.dask_workers < 0:
            raise ConfigError(f"{key}.dask_workers must be >= 0 (0 scores in this process), got {self.dask_workers}")
        if self.dask_workers and self.dask_address:
            raise ConfigError(f"{key}: set dask_workers (a local cluster) or dask_address (a running one), not both")


@dataclass(frozen=True)
class TrainConfig(OptimConfig):
    policies: tuple[str, ...] = POLICIES
    keep_fraction: float = 0.5
    selection: str = "topk"
    temperature: float = 1.0
    eval_every: int = 100
    checkpoint_every: int = 250
    shuffle_buffer: int = 50000  # examples held decoded; a larger pool streams through a buffer of this size
    nproc_per_node: int = 1  # > 1: the train stage launches itself as this many DDP ranks on this node (torchrun)

    @property
    def super_batch_size(self) -> int:
        """B / rho: how many examples are drawn to keep batch_size of them."""
        return int(round(self.batch_size / self.keep_fraction))

    def validate(self, key: str) -> None:
        super().validate(key)
        for policy in self.policies:
            if policy not in POLICIES:
                raise ConfigError(f"{key}.policies: unknown policy {policy!r}; choose from {list(POLICIES)}")
        if "uniform" not in self.policies:
            raise ConfigError(f"{key}.policies must include 'uniform': it is the baseline every ratio is measured against")
        if len(set(self.policies)) != len(self.policies):
            raise ConfigError(f"{key}.policies lists a policy twice: {list(self.policies)}")
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ConfigError(f"{key}.keep_fraction must be in (0, 1], got {self.keep_fraction}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"{key}.selection must be one of {list(SELECTIONS)}, got {self.selection!r}")
        if self.temperature <= 0:
            raise ConfigError(f"{key}.temperature must be positive, got {self.temperature}")
        if self.eval_every <= 0 or self.checkpoint_every <= 0:
            raise ConfigError(f"{key}: eval_every and checkpoint_every must be positive")
        if self.nproc_per_node < 1:
            raise ConfigError(f"{key}.nproc_per_node must be at least 1, got {self.nproc_per_node}")
        if self.batch_size % self.nproc_per_node or self.super_batch_size % self.nproc_per_node:
            raise ConfigError(
                f"{key}: batch_size ({self.batch_size}) and the super-batch ({self.super_batch_size}) must divide evenly "
                f"over nproc_per_node ({self.nproc_per_node}) ranks"
            )
        if self.shuffle_buffer < self.super_batch_size:
            raise ConfigError(
                f"{key}.shuffle_buffer ({self.shuffle_buffer}) must hold at least a super-batch ({self.super_batch_size})"
            )


@dataclass(frozen=True)
class EvaluateConfig:
    probe_steps: int = 300
    probe_lr: float = 1e-2

    def validate(self, key: str) -> None:
        if self.probe_steps <= 0 or self.probe_lr <= 0:
            raise ConfigError(f"{key}: probe_steps and probe_lr must be positive")


@dataclass(frozen=True)
class BenchConfig:
    """`winnow bench`: policies side by side over seeds, and the proxy study of cheaper references."""

    seeds: int = 3
    policies: tuple[str, ...] = ("uniform", "easy_reference", "learnability")
    amortise_over: int = 10  # runs that share one reference and its scores
    proxies: tuple[str, ...] = ("cnn-tiny", "cnn-nano")  # cheaper references for the proxy study

    def validate(self, key: str) -> None:
        if self.seeds < 1 or self.amortise_over < 1:
            raise ConfigError(f"{key}: seeds and amortise_over must be at least 1")
        for policy in self.policies:
            if policy not in POLICIES:
                raise ConfigError(f"{key}.policies: unknown policy {policy!r}; choose from {list(POLICIES)}")
        if "uniform" not in self.policies:
            raise ConfigError(f"{key}.policies must include 'uniform'")


@dataclass(frozen=True)
class ServeConfig:
    """`winnow serve`: when the pipeline reruns (one of the two, or neither: on demand only)."""

    cron: str | None = "0 3 * * *"
    interval_minutes: float | None = None

    def validate(self, key: str) -> None:
        if self.cron and self.interval_minutes:
            raise ConfigError(f"{key}: set cron or interval_minutes, not both")
        if self.interval_minutes is not None and self.interval_minutes <= 0:
            raise ConfigError(f"{key}.interval_minutes must be positive, got {self.interval_minutes}")
        if self.cron is not None and len(self.cron.split()) != 5:
            raise ConfigError(f"{key}.cron must have 5 fields (minute hour day month weekday), got {self.cron!r}")


@dataclass(frozen=True)
class Params:
    seed: int = 0
    objective: str = "classification"
    artifacts: str = "artifacts"  # checkpoints and the score store (DVC-cached)
    metrics: str = "metrics"  # small JSON/CSV results (committed to git)
    plots: str = "plots"
    reports: str = "reports"
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    data: DataConfig = field(default_factory=DataConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def validate(self) -> "Params":
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {list(OBJECTIVES)}, got {self.objective!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {list(PRECISIONS)}; got {self.precision!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {self.device!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value.validate(f.name)
        from winnow.objectives import OBJECTIVES as BEHAVIOURS  # models and open_clip load here, not on import

        names = BEHAVIOURS[self.objective].models
        for key, model in (
            ("reference.model", self.reference.model),
            ("train.model", self.train.model),
            *((f"bench.proxies[{i}]", m) for i, m in enumerate(self.bench.proxies)),
        ):
            if model not in names:
                raise ConfigError(
                    f"{key}: {model!r} is not a {self.objective} model; choose one of {sorted(names)} "
                    f"(set per-objective models under objectives.{self.objective})"
                )
        return self


def _build(cls, raw, key: str):
    """Build dataclass `cls` from a dict, checking every key and type."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{key or 'params'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"{key}.{unknown[0]}" if key else unknown[0]
        raise ConfigError(f"unknown key {where!r}; allowed keys{' under ' + key if key else ''}: {sorted(names)}")
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, f"{key}.{name}" if key else name)
    return cls(**kwargs)


def _coerce(hint, value, key: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and re.fullmatch(r"[+-]?\d+(\.\d*)?[eE][+-]?\d+", value.strip()):
        return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string; it is the number everyone means
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, hint) or (hint is not bool and isinstance(value, bool)):
        raise ConfigError(f"{key} must be {hint.__name__}, got {value!r}")
    return value


# params.yaml's `objectives:` section, for a params file that has none (tests check the two agree).
DEFAULT_OBJECTIVES = {
    "contrastive": {
        "reference": {"model": "clip-tiny", "lr": 0.001},
        "train": {"model": "clip-tiny", "lr": 0.001},
        "score": {"batch_size": 128},
        "bench": {"proxies": ["clip-nano"]},
    }
}


def params_from_dict(raw: dict) -> Params:
    """Validate raw params. `objectives.<objective>` holds sections applied over the shared ones
    when that objective runs (CLIP needs other models and learning rates than the classifier).
    A key left out takes its default, and the defaults are params.yaml's (tests/test_config.py)."""
    raw = dict(raw or {})
    per_objective = raw.pop("objectives", DEFAULT_OBJECTIVES) or {}
    if not isinstance(per_objective, dict):
        raise ConfigError("objectives must be a mapping of objective -> sections")
    for name, sections in per_objective.items():
        if name not in OBJECTIVES:
            raise ConfigError(f"objectives.{name}: unknown objective; choose from {list(OBJECTIVES)}")
        for section in sections or {}:
            if section not in ("reference", "score", "train", "evaluate", "bench"):
                raise ConfigError(
                    f"objectives.{name}.{section}: only reference, score, train, evaluate and bench can differ per objective"
                )
    for section, values in (per_objective.get(raw.get("objective", "classification")) or {}).items():
        raw[section] = {**(raw.get(section) or {}), **values}
    if isinstance(raw.get("data"), dict) and "root" in raw["data"]:
        raw["data"] = _split_root(dict(raw["data"]))
    return _build(Params, raw, "").validate()


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
    for override in overrides or []:
        apply_override(raw, override)
    try:
        return params_from_dict(raw)
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
    return dataclasses.asdict(params)
