"""Recipe schema: a YAML recipe maps 1:1 onto these dataclasses, and each method entry's ``config`` onto that
method's own config dataclass (``BaselineConfig``, ``SFTConfig``, ``ICLConfig``, ``NumericConfig`` ...), so a recipe
says exactly what the CLI would. Unknown keys fail before anything runs; ``--set a.b.c=value`` overrides win."""
from __future__ import annotations

import copy
import importlib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from llmad.config import check_value, from_dict, load_yaml, parse_yaml
from llmad.data.specs import spec_family
from llmad.errors import LlmadError

METHOD_KINDS = ("baseline", "sft", "fusion", "icl", "replay", "numeric", "nll")
# Sweeping one of these draws a learning curve (x = number of labeled samples the method may learn from).
LABELED_KEYS = ("train_limit", "shots", "train_examples")
HEADLINES = ("f1", "accuracy", "precision", "recall")
TABLE_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc")
ENTRY_SWEEPABLE = ("train_limit", "validation_limit", "test_limit")
# Keys the harness fills from the recipe (seeds, dataset entries): a recipe must not set them in config.
HARNESS_OWNED = {"baseline": {"seed"}, "sft": {"seed"}, "fusion": {"seed"}, "icl": {"seed"}, "nll": {"seed"},
                 "numeric": {"seed", "data", "data_dir", "split", "test_types", "out"}, "replay": set()}


@dataclass
class DatasetEntry:
    """One dataset of a recipe: a name for tables plus where the data comes from and how it is split."""

    name: str | None = None  # default: the spec's last part (``flowbench:montage`` -> ``montage``)
    spec: str = "flowbench:1000genome"  # flowbench:<wf>|<path> (jobs) or nezha:/smd:/asd:/csv: (series)
    data_dir: str | None = None
    split: str | None = None  # jobs: run | paper | workflow [run]; series: time | fault [time]
    test_workflow: str | None = None  # jobs, split=workflow
    test_types: list[str] | None = None  # nezha, split=fault
    limit: int | None = None  # jobs: seeded subsample of every part (quick runs; stated in the table)
    columns: str | None = None  # jobs:<table>: its column map (YAML) [<table>.llmad.yaml, else inferred]

    @property
    def family(self) -> str:
        """``jobs`` or ``series``."""
        return spec_family(self.spec)


@dataclass
class MethodEntry:
    """One method of a recipe: its kind, its config (the kind's dataclass) and what the harness varies."""

    method: str = "baseline"  # baseline | sft | icl | replay | numeric
    name: str | None = None  # row label; default from the config (rf-plain, sft-minilm-compact ...)
    config: dict[str, Any] = field(default_factory=dict)  # keys of the method's config dataclass
    datasets: list[str] | None = None  # restrict to these dataset names (default: every compatible one)
    sweep: dict[str, list[Any]] = field(default_factory=dict)  # key -> values; one row per value
    seeds: list[int] | None = None  # override the recipe's seeds (e.g. an expensive method once)
    train_limit: int | None = None  # seeded subsample of the train part (sft: SFTConfig.train_limit)
    validation_limit: int | None = None  # baseline/icl: seeded subsample of validation
    test_limit: int | None = None  # baseline/icl: seeded subsample of test (stated in the table)
    # replay only: the detector streamed (baseline:rf | baseline:hgb-context | an sft or fusion method of this recipe
    # | a saved detector folder); its train/validation/test limits count whole DAG runs, not rows.
    source: str | None = None


@dataclass
class ReportConfig:
    """How results are summarised."""

    headline: str = "f1"  # f1 | accuracy | precision | recall: the metric with bootstrap CIs
    bootstrap: int = 1000
    ci: float = 0.95
    plots: bool = True
    tsne_points: int = 600
    html: bool = True
    # Published numbers printed beside ours: {method, dataset, source, <metric>: value, ...}
    published: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Recipe:
    """A whole comparison: datasets x methods x seeds, and the report."""

    name: str = "recipe"
    description: str = ""
    seeds: list[int] = field(default_factory=lambda: [0])
    datasets: list[DatasetEntry] = field(default_factory=list)
    methods: list[MethodEntry] = field(default_factory=list)
    strong_baselines: bool = True  # add rf-plain + hgb-context (jobs) / iforest + hgb (series) when missing
    report: ReportConfig = field(default_factory=ReportConfig)


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Apply one ``a.b.c=value`` override; list items are addressed by ``name`` or index."""
    parts = path.split(".")
    cur: Any = data
    for i, key in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(cur, list):
            hit = [x for x in cur if isinstance(x, dict) and entry_name(x) == key]
            if not hit and key.isdigit() and int(key) < len(cur):
                hit = [cur[int(key)]]
            if not hit and key == "*":
                for x in cur:
                    _set_path(x, ".".join(parts[i + 1:]), copy.deepcopy(value))
                return
            if not hit:
                names = [entry_name(x) for x in cur if isinstance(x, dict)]
                raise LlmadError(f"--set {path}: no entry named {key!r} (have: {', '.join(map(str, names))})")
            if last:
                raise LlmadError(f"--set {path}: cannot replace a whole list entry; set one of its keys")
            cur = hit[0]
            continue
        if not isinstance(cur, dict):
            raise LlmadError(f"--set {path}: {'.'.join(parts[:i])} is not a mapping")
        if last:
            cur[key] = value
        else:
            if cur.get(key) is None:
                cur[key] = {}
            cur = cur[key]


def entry_name(d: dict[str, Any]) -> str | None:
    """The name a dataset or method entry will have (explicit, else derived)."""
    if "name" in d and d["name"]:
        return str(d["name"])
    if "spec" in d:
        return dataset_default_name(str(d["spec"]))
    if d.get("method") == "replay" and d.get("source"):
        return f"replay-{Path(str(d['source'])).name.replace('baseline:', '')}"
    if "method" in d:
        try:
            return method_default_name(str(d["method"]), d.get("config") or {})
        except Exception:
            return None
    return None


def parse_overrides(items: Iterable[str]) -> list[tuple[str, Any]]:
    """``key=value`` strings -> (key, YAML-parsed value)."""
    out = []
    for item in items:
        if "=" not in item:
            raise LlmadError(f"--set {item!r}: expected key=value (e.g. methods.rf-plain.config.n_estimators=50)")
        k, v = item.split("=", 1)
        try:
            out.append((k.strip(), parse_yaml(v, f"--set {k.strip()}")))
        except LlmadError as e:
            if "expands to" in str(e):
                raise
            out.append((k.strip(), v))
    return out


def load_recipe(path: str | Path | dict[str, Any], overrides: Iterable[str] | dict[str, Any] = ()) -> Recipe:
    """Read a recipe YAML (or mapping), apply ``--set`` overrides (they win), validate every config loudly."""
    raw = copy.deepcopy(path) if isinstance(path, dict) else load_yaml(path)
    where = "recipe" if isinstance(path, dict) else str(path)
    pairs = list(overrides.items()) if isinstance(overrides, dict) else parse_overrides(overrides)
    for k, v in pairs:
        _set_path(raw, k, v)
    top = {k: v for k, v in raw.items() if k not in ("datasets", "methods")}
    recipe = from_dict(Recipe, top, where=where)
    for name in ("datasets", "methods"):
        items = raw.get(name) or []
        if not isinstance(items, list):
            raise LlmadError(f"{where}: {name}: expected a list, got {type(items).__name__}")
        cls = DatasetEntry if name == "datasets" else MethodEntry
        built = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise LlmadError(f"{where}: {name}[{i}]: expected a mapping, got {type(item).__name__}")
            built.append(from_dict(cls, item, where=f"{where}: {name}[{i}]"))
        setattr(recipe, name, built)
    if not isinstance(recipe.seeds, list) or not recipe.seeds or not all(isinstance(s, int) for s in recipe.seeds):
        raise LlmadError(f"{where}: seeds must be a non-empty list of integers")
    if recipe.report.headline not in HEADLINES:
        raise LlmadError(f"{where}: report.headline {recipe.report.headline!r}: expected one of {HEADLINES}")
    _validate(recipe, where)
    return recipe


def dataset_default_name(spec: str) -> str:
    """The table name of a dataset entry without ``name``: the spec's last part (``flowbench:montage`` -> montage)."""
    tail = spec.split(":", 1)[-1] if ":" in spec else spec
    return Path(tail.rstrip("/")).stem or tail


def _validate(recipe: Recipe, where: str) -> None:
    if not recipe.datasets:
        raise LlmadError(f"{where}: no datasets")
    for d in recipe.datasets:
        d.name = d.name or dataset_default_name(d.spec)
    names = [d.name for d in recipe.datasets]
    if len(set(names)) != len(names):
        raise LlmadError(f"{where}: dataset names must be unique, got {names}")
    for i, m in enumerate(recipe.methods):
        if m.method not in METHOD_KINDS:
            raise LlmadError(f"{where}: methods[{i}].method {m.method!r}: expected one of {', '.join(METHOD_KINDS)}")
        cls = config_class(m.method)
        owned = sorted(set(m.config) & HARNESS_OWNED.get(m.method, set()))
        if owned:
            raise LlmadError(f"{where}: methods[{i}].config: {owned} are set by the harness (from seeds/datasets), "
                             f"not in config")
        cfg = from_dict(cls, config_for_class(m.method, m.config), where=f"{where}: methods[{i}].config")
        for key, values in m.sweep.items():
            if not isinstance(values, list) or not values:
                raise LlmadError(f"{where}: methods[{i}].sweep.{key}: expected a non-empty list")
            if key not in {f.name for f in fields(cls)} and key not in ENTRY_SWEEPABLE:
                raise LlmadError(f"{where}: methods[{i}].sweep: unknown key {key!r} for {cls.__name__}")
            hint = typing.get_type_hints(MethodEntry if key in ENTRY_SWEEPABLE else cls)[key]
            for j, v in enumerate(values):  # every swept value is type-checked now, not when its run starts
                check_value(v, hint, f"{where}: methods[{i}].sweep.{key}[{j}]")
        m.name = m.name or method_default_name(m.method, m.config, cfg)
        if m.datasets:
            unknown = sorted(set(m.datasets) - set(names))
            if unknown:
                raise LlmadError(f"{where}: method {m.name}: unknown dataset(s) {unknown}; have {names}")
        if m.method == "fusion" and isinstance(m.config.get("sft"), dict) and "seed" in m.config["sft"]:
            raise LlmadError(f"{where}: methods[{i}].config.sft: ['seed'] is set by the harness (from seeds), "
                             f"not in config")
        if m.method in ("sft", "fusion") and (m.validation_limit or m.test_limit):
            raise LlmadError(f"{where}: method {m.name}: {m.method} scores the whole validation/test part "
                             f"(use the dataset's limit instead of validation_limit/test_limit)")
        if m.method == "replay":
            if not m.source:
                raise LlmadError(f"{where}: method {m.name}: replay needs source: baseline:rf | baseline:hgb-context "
                                 f"| <an sft or fusion method of this recipe> | <a saved detector folder>")
            if m.name == f"replay-{cfg.reveal}":
                m.name = f"replay-{Path(m.source).name.replace('baseline:', '')}"
        elif m.source:
            raise LlmadError(f"{where}: method {m.name}: source is only for replay methods")
        if m.method == "numeric" and (m.train_limit or m.validation_limit or m.test_limit):
            raise LlmadError(f"{where}: method {m.name}: numeric runs take shots/limit_series in config, "
                             f"not train/validation/test limits")
    mnames = [m.name for m in recipe.methods]
    if len(set(mnames)) != len(mnames):
        raise LlmadError(f"{where}: method names must be unique, got {mnames} (set name: on each entry)")
    for pub in recipe.report.published:
        unknown = sorted(set(pub) - {"method", "dataset", "source", *TABLE_METRICS})
        if unknown or "method" not in pub or "dataset" not in pub:
            raise LlmadError(f"{where}: report.published entry {pub}: needs method, dataset, source and metric "
                             f"values ({', '.join(TABLE_METRICS)}); unknown keys {unknown}")
    kinds = {m.name: m for m in recipe.methods}
    for m in recipe.methods:
        if m.method == "replay" and m.source in kinds:
            up = kinds[m.source]
            if up.method not in ("sft", "fusion") or up.sweep:
                raise LlmadError(f"{where}: replay {m.name}: source {m.source!r} must be an sft or fusion method "
                                 f"without a sweep")


# Method kind -> its config dataclass, imported on use (most live beside torch / sklearn code).
CONFIG_CLASSES = {"baseline": "llmad.detectors.baselines:BaselineConfig", "sft": "llmad.detectors.sft.config:SFTConfig",
                  "fusion": "llmad.detectors.fusion.config:FusionConfig",
                  "icl": "llmad.detectors.icl.config:ICLConfig", "numeric": "llmad.api.numeric:NumericConfig",
                  "nll": "llmad.detectors.nll.config:NLLConfig", "replay": "llmad.stream:StreamConfig"}


def config_class(kind: str) -> type:
    """The config dataclass a method kind's ``config`` maps onto."""
    if kind not in CONFIG_CLASSES:
        raise LlmadError(f"unknown method kind {kind!r}")
    module, _, name = CONFIG_CLASSES[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def config_for_class(kind: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """A recipe's config mapping made fit for the kind's dataclass (YAML lists -> tuples where it wants one)."""
    out = dict(cfg)
    if kind == "icl" and isinstance(out.get("label_words"), list):
        out["label_words"] = tuple(out["label_words"])
    return out


def method_default_name(kind: str, cfg: dict[str, Any], built: Any = None) -> str:
    """The row label of a method entry without ``name`` (rf-plain, sft-minilm-compact, icl-...-4shot ...)."""
    if kind == "baseline":
        return f"{cfg.get('method', 'rf')}-{cfg.get('features', 'plain')}"
    if kind == "sft":
        return f"sft-{Path(str(cfg.get('model', 'minilm'))).name}-{Path(str(cfg.get('template', 'compact'))).stem}"
    if kind == "fusion":
        lm = cfg.get("sft") or {}
        return (f"{cfg.get('kind', 'stack')}-{Path(str(lm.get('model', 'minilm'))).name}-"
                f"{Path(str(lm.get('template', 'compact'))).stem}")
    if kind == "icl":
        return f"icl-{Path(str(cfg.get('model', 'smollm2-135m'))).name}-{cfg.get('shots', 4)}shot"
    if kind == "numeric":
        return f"{cfg.get('method', 'iforest')}"
    if kind == "nll":
        return f"nll-{Path(str(cfg.get('model', 'smollm2-135m'))).name}" + ("-normal-only" if cfg.get("normal_only")
                                                                            else "")
    return f"{kind}-{cfg.get('reveal', 'events')}"
