"""The comparison harness behind ``llmad compare RECIPE.yaml``: recipes -> runs (cached by config hash) -> tables,
plots and a report.

A recipe (YAML, ``recipes/*.yaml``) maps 1:1 onto the dataclasses below; each method entry's ``config`` maps onto
that method's own config dataclass (``BaselineConfig``, ``SFTConfig``, ``ICLConfig``, ``NumericConfig`` ...), so
a recipe says exactly what the CLI would. Unknown keys fail before anything runs.

    recipe ──plan──> RunSpec per (method x dataset x sweep point x seed) ──hash──> <out>/runs/<hash>/
          ──adapter (one small function per method kind)──> metrics + predictions (+ artifacts)
          ──leakage guard (what the adapter says it used vs the test part)──> metrics.json (written last = done)
          ──aggregate──> results.{md,csv,json} + plots/*.png + report.{md,html}

A run folder with ``metrics.json`` is finished and is never recomputed; a rerun only re-aggregates. A run that fails
is recorded (``error.json``) and the others continue. ``--resume`` continues interrupted runs from their own
checkpoints (SFT); without it a half-written run folder is cleared and started again.
"""
from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import html
import json
import math
import shutil
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from llmad.config import DataConfig, from_dict, load_yaml
from llmad.errors import LlmadError

HARNESS_VERSION = 1
METHOD_KINDS = ("baseline", "sft", "icl", "replay", "numeric")
JOB_KINDS = ("baseline", "sft", "icl", "replay")
SERIES_PREFIXES = ("nezha", "smd", "asd", "csv")
# Sweeping one of these draws a learning curve (x = number of labeled samples the method may learn from).
LABELED_KEYS = ("train_limit", "shots", "train_examples")
# Settings that change how a run is shown or paced, never what it computes: left out of the cache hash.
NON_SEMANTIC = {"sft": {"progress", "logging_steps", "max_time_s", "save_total_limit", "extra"},
                "numeric": {"out"}}
HEADLINES = ("f1", "accuracy", "precision", "recall")


class LeakageError(LlmadError):
    """A run would use test rows for fitting, thresholds, demonstrations or normalisation statistics."""


# ------------------------------------------------------------------------------------------------ recipe
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

    @property
    def family(self) -> str:
        """``jobs`` or ``series``."""
        return "series" if self.spec.split(":", 1)[0] in SERIES_PREFIXES else "jobs"


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
    # replay only: the detector streamed (baseline:rf | baseline:hgb-context | an sft method of this recipe | a
    # saved detector folder); its train/validation/test limits count whole DAG runs, not rows.
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
            hit = [x for x in cur if isinstance(x, dict) and _entry_name(x) == key]
            if not hit and key.isdigit() and int(key) < len(cur):
                hit = [cur[int(key)]]
            if not hit and key == "*":
                for x in cur:
                    _set_path(x, ".".join(parts[i + 1:]), copy.deepcopy(value))
                return
            if not hit:
                names = [_entry_name(x) for x in cur if isinstance(x, dict)]
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


def _entry_name(d: dict[str, Any]) -> str | None:
    """The name a dataset or method entry will have (explicit, else derived)."""
    if "name" in d and d["name"]:
        return str(d["name"])
    if "spec" in d:
        return _dataset_default_name(str(d["spec"]))
    if d.get("method") == "replay" and d.get("source"):
        return f"replay-{Path(str(d['source'])).name.replace('baseline:', '')}"
    if "method" in d:
        try:
            return _method_default_name(str(d["method"]), d.get("config") or {})
        except Exception:
            return None
    return None


def parse_overrides(items: Iterable[str]) -> list[tuple[str, Any]]:
    """``key=value`` strings -> (key, YAML-parsed value)."""
    import yaml

    out = []
    for item in items:
        if "=" not in item:
            raise LlmadError(f"--set {item!r}: expected key=value (e.g. methods.rf-plain.config.n_estimators=50)")
        k, v = item.split("=", 1)
        try:
            out.append((k.strip(), yaml.safe_load(v)))
        except yaml.YAMLError:
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
    if isinstance(recipe.report, dict):
        recipe.report = from_dict(ReportConfig, recipe.report, where=f"{where}.report")
    for name in ("datasets", "methods"):
        items = raw.get(name) or []
        if not isinstance(items, list):
            raise LlmadError(f"{where}: {name} must be a list")
        cls = DatasetEntry if name == "datasets" else MethodEntry
        built = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise LlmadError(f"{where}: {name}[{i}] must be a mapping")
            built.append(from_dict(cls, item, where=f"{where}.{name}[{i}]"))
        setattr(recipe, name, built)
    if not isinstance(recipe.seeds, list) or not recipe.seeds or not all(isinstance(s, int) for s in recipe.seeds):
        raise LlmadError(f"{where}: seeds must be a non-empty list of integers")
    if recipe.report.headline not in HEADLINES:
        raise LlmadError(f"{where}: report.headline {recipe.report.headline!r}: expected one of {HEADLINES}")
    _validate(recipe, where)
    return recipe


def _dataset_default_name(spec: str) -> str:
    tail = spec.split(":", 1)[-1] if ":" in spec else spec
    return Path(tail.rstrip("/")).stem or tail


def _validate(recipe: Recipe, where: str) -> None:
    if not recipe.datasets:
        raise LlmadError(f"{where}: no datasets")
    for d in recipe.datasets:
        d.name = d.name or _dataset_default_name(d.spec)
    names = [d.name for d in recipe.datasets]
    if len(set(names)) != len(names):
        raise LlmadError(f"{where}: dataset names must be unique, got {names}")
    for i, m in enumerate(recipe.methods):
        if m.method not in METHOD_KINDS:
            raise LlmadError(f"{where}.methods[{i}]: method {m.method!r}: expected one of {', '.join(METHOD_KINDS)}")
        cls = config_class(m.method)
        owned = sorted(set(m.config) & HARNESS_OWNED.get(m.method, set()))
        if owned:
            raise LlmadError(f"{where}.methods[{i}]: {owned} are set by the harness (from seeds/datasets), "
                             f"not in config")
        cfg = from_dict(cls, _config_for_class(m.method, m.config), where=f"{where}.methods[{i}].config")
        for key, values in m.sweep.items():
            if not isinstance(values, list) or not values:
                raise LlmadError(f"{where}.methods[{i}].sweep.{key}: expected a non-empty list")
            if key not in {f.name for f in fields(cls)} and key not in ENTRY_SWEEPABLE:
                raise LlmadError(f"{where}.methods[{i}].sweep: unknown key {key!r} for {cls.__name__}")
        m.name = m.name or _method_default_name(m.method, m.config, cfg)
        if m.datasets:
            unknown = sorted(set(m.datasets) - set(names))
            if unknown:
                raise LlmadError(f"{where}: method {m.name}: unknown dataset(s) {unknown}; have {names}")
        if m.method == "sft" and (m.validation_limit or m.test_limit):
            raise LlmadError(f"{where}: method {m.name}: sft scores the whole validation/test part "
                             f"(use the dataset's limit instead of validation_limit/test_limit)")
        if m.method == "replay":
            if not m.source:
                raise LlmadError(f"{where}: method {m.name}: replay needs source: baseline:rf | baseline:hgb-context "
                                 f"| <an sft method of this recipe> | <a saved detector folder>")
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
            if up.method != "sft" or up.sweep:
                raise LlmadError(f"{where}: replay {m.name}: source {m.source!r} must be an sft method without a "
                                 f"sweep")


ENTRY_SWEEPABLE = ("train_limit", "validation_limit", "test_limit")
# Keys the harness fills from the recipe (seeds, dataset entries): a recipe must not set them in config.
HARNESS_OWNED = {"baseline": {"seed"}, "sft": {"seed"}, "icl": {"seed"},
                 "numeric": {"seed", "data", "data_dir", "split", "test_types", "out"}, "replay": set()}


def config_class(kind: str) -> type:
    """The config dataclass a method kind's ``config`` maps onto."""
    if kind == "baseline":
        from llmad.detectors.baselines import BaselineConfig

        return BaselineConfig
    if kind == "sft":
        from llmad.detectors.sft.detector import SFTConfig

        return SFTConfig
    if kind == "icl":
        from llmad.detectors.icl.detector import ICLConfig

        return ICLConfig
    if kind == "numeric":
        from llmad.api.numeric import NumericConfig

        return NumericConfig
    if kind == "replay":
        return _replay_config_class()
    raise LlmadError(f"unknown method kind {kind!r}")


def _config_for_class(kind: str, cfg: dict[str, Any]) -> dict[str, Any]:
    out = dict(cfg)
    if kind == "icl" and isinstance(out.get("label_words"), list):
        out["label_words"] = tuple(out["label_words"])
    return out


def _method_default_name(kind: str, cfg: dict[str, Any], built: Any = None) -> str:
    if kind == "baseline":
        return f"{cfg.get('method', 'rf')}-{cfg.get('features', 'plain')}"
    if kind == "sft":
        return f"sft-{Path(str(cfg.get('model', 'minilm'))).name}-{Path(str(cfg.get('template', 'compact'))).stem}"
    if kind == "icl":
        return f"icl-{Path(str(cfg.get('model', 'smollm2-135m'))).name}-{cfg.get('shots', 4)}shot"
    if kind == "numeric":
        return f"{cfg.get('method', 'iforest')}"
    return f"{kind}-{cfg.get('reveal', 'events')}"


def add_strong_baselines(recipe: Recipe) -> list[str]:
    """Make sure the strong references run on every dataset; returns the names added (for the report)."""
    if not recipe.strong_baselines:
        return []
    added = []
    families = {d.family for d in recipe.datasets}
    if "jobs" in families:
        have = {(m.config.get("method", "rf"), m.config.get("features", "plain")) for m in recipe.methods
                if m.method == "baseline" and not m.sweep and not m.train_limit and not m.test_limit}
        for meth, feats in (("rf", "plain"), ("hgb", "context")):
            if (meth, feats) not in have:
                recipe.methods.append(MethodEntry(method="baseline", name=f"{meth}-{feats}",
                                                  config={"method": meth, "features": feats}))
                added.append(f"{meth}-{feats}")
    if "series" in families:
        have = {m.config.get("method", "iforest") for m in recipe.methods if m.method == "numeric" and not m.sweep}
        for meth in ("iforest", "hgb"):
            if meth not in have:
                recipe.methods.append(MethodEntry(method="numeric", name=f"numeric-{meth}", config={"method": meth}))
                added.append(f"numeric-{meth}")
    names = [m.name for m in recipe.methods]
    if len(set(names)) != len(names):
        raise LlmadError(f"a strong baseline's name clashes with a recipe method: {names}")
    return added


STRONG = {"baseline": {("rf", "plain"), ("hgb", "context")}, "numeric": {("iforest",), ("hgb",)}}


def is_strong(kind: str, cfg: dict[str, Any]) -> bool:
    """Whether a resolved method config is one of the strong references."""
    if kind == "baseline":
        return (cfg.get("method"), cfg.get("features")) in STRONG["baseline"]
    if kind == "numeric":
        return (cfg.get("method"),) in STRONG["numeric"]
    return False


# ------------------------------------------------------------------------------------------------ runs
@dataclass
class RunSpec:
    """One fully resolved run: everything that determines its result (hashed) plus labels for tables."""

    method: str  # the entry's name (row label)
    kind: str
    dataset: str
    data: dict[str, Any]
    config: dict[str, Any]  # the method config dataclass as a dict, seed filled in
    seed: int
    limits: dict[str, int | None]
    sweep: dict[str, Any]
    extras: dict[str, Any] = field(default_factory=dict)  # template hashes etc. (hashed)

    @property
    def row(self) -> str:
        """Table row label: the method name plus its sweep point."""
        if not self.sweep:
            return self.method
        return f"{self.method} [{', '.join(f'{k}={v}' for k, v in self.sweep.items())}]"

    def hash_payload(self) -> dict[str, Any]:
        """What the cache key is computed from."""
        cfg = {k: v for k, v in self.config.items() if k not in NON_SEMANTIC.get(self.kind, set())}
        return {"harness": HARNESS_VERSION, "kind": self.kind, "data": self.data, "config": cfg,
                "seed": self.seed, "limits": self.limits, "extras": self.extras}

    @property
    def hash(self) -> str:
        """sha256 of the resolved config (16 hex digits)."""
        from llmad.io import to_jsonable

        blob = json.dumps(to_jsonable(self.hash_payload()), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _template_extras(kind: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Hashes of the prompt templates a run renders: editing a template invalidates its cached runs."""
    from llmad.render import template_hash

    out: dict[str, Any] = {}
    if cfg.get("template") and kind in ("sft", "icl", "replay"):
        with contextlib.suppress(LlmadError):
            out["template_hash"] = template_hash(str(cfg["template"]))
    if kind == "icl":
        for name in ("task", "demos", "query", "stats"):
            with contextlib.suppress(LlmadError):
                out[f"icl_{name}_hash"] = template_hash(name, kind="icl")
    return out


def plan(recipe: Recipe) -> list[RunSpec]:
    """Expand a recipe into runs: method x compatible dataset x sweep point x seed."""
    import itertools

    specs = []
    for m in recipe.methods:
        family = "series" if m.method == "numeric" else "jobs"
        cls = config_class(m.method)
        cfg_fields = {f.name for f in fields(cls)}
        keys = list(m.sweep)
        points = [dict(zip(keys, vals)) for vals in itertools.product(*(m.sweep[k] for k in keys))] or [{}]
        for d in recipe.datasets:
            if d.family != family or (m.datasets and d.name not in m.datasets):
                continue
            for point in points:
                for seed in (m.seeds or recipe.seeds):
                    conf = dict(m.config)
                    limits = {"train": m.train_limit, "validation": m.validation_limit, "test": m.test_limit}
                    for k, v in point.items():
                        if k in ENTRY_SWEEPABLE:
                            limits[k.split("_")[0]] = v
                        else:
                            conf[k] = v
                    if m.method == "sft" and limits["train"] is not None:
                        if conf.get("train_limit") is not None:
                            raise LlmadError(f"method {m.name}: train_limit given twice (entry and config)")
                        conf["train_limit"] = limits["train"]
                        limits["train"] = None
                    if "seed" in cfg_fields:
                        conf["seed"] = seed
                    data: dict[str, Any]
                    if family == "series":
                        conf.update(data=d.spec, data_dir=d.data_dir)
                        if d.split:
                            conf["split"] = d.split
                        if d.test_types:
                            conf["test_types"] = d.test_types
                        data = {"spec": d.spec, "split": conf.get("split", "time"), "data_dir": d.data_dir,
                                "test_types": d.test_types}
                    else:
                        data = asdict(DataConfig(spec=d.spec, data_dir=d.data_dir, split=d.split or "run",
                                                 seed=seed, test_workflow=d.test_workflow, limit=d.limit))
                    built = from_dict(cls, _config_for_class(m.method, conf), where=f"method {m.name}")
                    resolved = asdict(built)
                    extras = _template_extras(m.method, resolved)
                    if m.method == "replay":
                        extras["source"] = m.source
                    specs.append(RunSpec(method=m.name, kind=m.method, dataset=d.name, data=data, config=resolved,
                                         seed=seed, limits=limits, sweep=point, extras=extras))
    # A replay of a recipe's SFT model depends on that run: its hash includes the upstream hash.
    by_key = {(s.method, s.dataset, s.seed): s for s in specs if not s.sweep}
    for s in specs:
        src = s.extras.get("source")
        if s.kind == "replay" and src in {m.name for m in recipe.methods}:
            up = by_key.get((src, s.dataset, s.seed))
            if up is None:
                raise LlmadError(f"replay {s.method}: its source {src} has no run on {s.dataset} seed {s.seed}")
            s.extras["source_hash"] = up.hash
    return specs


# ------------------------------------------------------------------------------------------------ guard
def job_keys(frame: pd.DataFrame, part: str = "") -> np.ndarray:
    """A stable id per job row (workflow/run/job); published rows missing from the data get a per-part id."""
    wf = frame["workflow"].astype(str).to_numpy() if "workflow" in frame else np.full(len(frame), "")
    run = frame["run_id"].astype(str).to_numpy()
    job = frame["job_id"].astype(str).to_numpy()
    keys = np.char.add(np.char.add(np.char.add(np.char.add(wf, "/"), run), "/"), job).astype(object)
    unmatched = run == "unmatched"
    if unmatched.any():
        keys[unmatched] = [f"unmatched/{part}/{i}" for i in np.flatnonzero(unmatched)]
    return keys


class LeakageGuard:
    """Refuses a run when anything it learned from (fit rows, threshold rows, demonstrations, normalisation
    statistics) touches the test part. Adapters declare what they use; the guard checks before test scoring."""

    def __init__(self) -> None:
        self.test_keys: set[Any] | None = None
        self.test_spans: dict[str, list[tuple[int, int]]] | None = None
        self.used: dict[str, int] = {}

    def set_test(self, keys: Iterable[Any]) -> None:
        """The test part's row ids."""
        self.test_keys = set(keys)

    def set_test_spans(self, spans: Iterable[tuple[str, int, int]]) -> None:
        """The test part as (series, start, stop) point ranges."""
        self.test_spans = {}
        for name, a, b in spans:
            self.test_spans.setdefault(name, []).append((a, b))

    def use(self, purpose: str, keys: Iterable[Any]) -> None:
        """Declare rows used for ``purpose``; raises LeakageError if any is a test row."""
        if self.test_keys is None:
            raise LlmadError("leakage guard: the adapter must declare the test part before anything else")
        keys = list(keys)
        bad = [k for k in keys if k in self.test_keys]
        if bad:
            raise LeakageError(f"leakage: {len(bad)} of the {len(keys)} rows used for {purpose} are test rows "
                               f"(e.g. {bad[0]}); run refused")
        self.used[purpose] = self.used.get(purpose, 0) + len(keys)

    def use_spans(self, purpose: str, spans: Iterable[tuple[str, int, int]]) -> None:
        """Declare series point ranges used for ``purpose``; raises LeakageError on overlap with test ranges."""
        if self.test_spans is None:
            raise LlmadError("leakage guard: the adapter must declare the test part before anything else")
        n = 0
        for name, a, b in spans:
            n += b - a
            for ta, tb in self.test_spans.get(name, []):
                if a < tb and ta < b:
                    raise LeakageError(f"leakage: {purpose} uses points {max(a, ta)}..{min(b, tb)} of {name}, "
                                       f"which are test points; run refused")
        self.used[purpose] = self.used.get(purpose, 0) + n

    def report(self) -> dict[str, Any]:
        """What was checked, for provenance."""
        return {"checked": dict(self.used), "test_rows": len(self.test_keys) if self.test_keys is not None else
                sum(b - a for v in (self.test_spans or {}).values() for a, b in v), "verdict": "no overlap with test"}


# ------------------------------------------------------------------------------------------------ adapters
@dataclass
class RunResult:
    """What an adapter hands back: standard test metrics, per-item predictions, method details, artifacts."""

    metrics: dict[str, Any]  # flat: accuracy, precision, recall, f1, roc_auc, pr_auc, ... on test
    predictions: pd.DataFrame  # label, score, prediction (+ key, anomaly_type ...)
    details: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> path relative to the run folder


class RunContext:
    """What an adapter gets: its spec, its folder, the guard, progress hooks and shared caches."""

    def __init__(self, spec: RunSpec, run_dir: Path, guard: LeakageGuard, resume: bool, cache: dict[str, Any],
                 progress: "_Progress", log: Callable[[str], None], report: ReportConfig | None = None):
        self.spec, self.run_dir, self.guard, self.resume, self.cache = spec, run_dir, guard, resume, cache
        self.progress, self.log = progress, log
        self.report = report or ReportConfig()

    def stage(self, text: str, total: float | None = None) -> None:
        """Show what the run is doing now (and reset the inner bar)."""
        self.progress.stage(text, total)

    def advance(self, n: float = 1) -> None:
        """Advance the inner bar."""
        self.progress.advance(n)

    def job_split(self, context: bool = False, causal: bool = False):
        """The split of this run's dataset, loaded once per process (peer features on the whole table)."""
        from llmad.data import load_split

        d = self.spec.data
        key = json.dumps([d, context and "ctx", causal], sort_keys=True, default=str)
        if key not in self.cache:
            self.stage(f"loading {d['spec']} ({d['split']} split)")
            self.cache.clear()  # one split in memory at a time: job tables are large
            self.cache[key] = load_split(d["spec"], split=d["split"], seed=d["seed"], data_dir=d["data_dir"],
                                         test_workflow=d["test_workflow"], limit=d["limit"], context=context,
                                         causal=causal)
        return self.cache[key]

    def limited(self, frame: pd.DataFrame, part: str) -> pd.DataFrame:
        """Seeded subsample of a part per the method entry's ``<part>_limit``."""
        n = self.spec.limits.get(part)
        if n and len(frame) > n:
            return frame.sample(n=n, random_state=self.spec.seed).reset_index(drop=True)
        return frame


def _scored_frame(test: pd.DataFrame, scores: np.ndarray, threshold: float) -> pd.DataFrame:
    cols = [c for c in ("workflow", "run_id", "job_id", "label", "anomaly_type") if c in test.columns]
    out = test[cols].copy().reset_index(drop=True)
    out.insert(0, "key", job_keys(test, "test"))
    out["score"] = np.asarray(scores, dtype=float)
    out["prediction"] = (out["score"] >= threshold).astype(int)
    return out


def _job_metrics(test: pd.DataFrame, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    from llmad.metrics.classification import classification_report

    return classification_report(test["label"], scores, threshold=threshold, anomaly_types=test["anomaly_type"])


def adapter_baseline(ctx: RunContext) -> RunResult:
    """Classical detector on job features (same steps as ``llmad.api.baseline.run_baseline``, on the cached split)."""
    from llmad.detectors.baselines import BaselineConfig, BaselineDetector
    from llmad.metrics.classification import timed_scoring

    cfg = from_dict(BaselineConfig, ctx.spec.config)
    # Peer features always: one cached table then serves plain and context baselines alike.
    split = ctx.job_split(context=True, causal=cfg.causal and cfg.features == "context")
    train, val = ctx.limited(split.train, "train"), ctx.limited(split.validation, "validation")
    test = ctx.limited(split.test, "test")
    ctx.guard.set_test(job_keys(test, "test"))
    ctx.guard.use("fit (train rows, incl. scaler statistics)", job_keys(train, "train"))
    ctx.guard.use("threshold (validation rows)", job_keys(val, "validation"))
    ctx.stage(f"fitting {cfg.method} on {len(train)} jobs")
    t0 = time.perf_counter()
    det = BaselineDetector.from_config(cfg).fit(train, val)
    fit_s = time.perf_counter() - t0
    ctx.stage(f"scoring {len(test)} test jobs")
    scores, ms = timed_scoring(det.score, test)
    m = _job_metrics(test, scores, det.threshold_)
    m.update(fit_seconds=fit_s, score_ms_per_item=ms, n_train=int(len(train)), n_validation=int(len(val)))
    return RunResult(m, _scored_frame(test, scores, det.threshold_),
                     details={"split": split.kind, "split_description": split.description,
                              "split_sizes": split.sizes(), "threshold": det.threshold_})


def adapter_sft(ctx: RunContext) -> RunResult:
    """``llmad.api.sft.run_sft`` in the run folder (checkpoints there, so ``--resume`` continues a killed run)."""
    from llmad.detectors.sft.detector import SFTConfig
    from llmad.api.sft import SFTRunConfig, needs_context, run_sft

    cfg = from_dict(SFTConfig, {**ctx.spec.config, "progress": False})
    d = ctx.spec.data
    data = DataConfig(**d)
    # The same split run_sft loads (deterministic): its row ids are what the guard checks.
    split = ctx.job_split(context=True, causal=cfg.causal and needs_context(cfg.template))
    ctx.guard.set_test(job_keys(split.test, "test"))
    ctx.guard.use("fit (train rows)", job_keys(split.train, "train"))
    ctx.guard.use("early stopping + threshold (validation rows)", job_keys(split.validation, "validation"))
    out = ctx.run_dir / "sft"
    resume = ctx.resume and (out / "checkpoints").is_dir()
    ctx.stage(f"fine-tuning {cfg.model} ({cfg.template} template)")
    res = run_sft(SFTRunConfig(data=data, sft=cfg, out=str(out), resume=resume, keep_checkpoints=False,
                               save_model=True), printer=ctx.log)
    if res.get("paused"):
        raise LlmadError(f"sft paused at step {res['train_info']['steps']} (max_time_s): rerun with --resume")
    met = res["metrics"]
    preds = pd.read_csv(out / "predictions.csv")
    test = split.test
    if len(preds) != len(test) or not (preds["job_id"].astype(str).to_numpy() ==
                                       test["job_id"].astype(str).to_numpy()).all():
        raise LlmadError("sft predictions do not line up with the harness's test part (split changed?)")
    preds.insert(0, "key", job_keys(test, "test"))
    m = dict(met["test"])
    m.update(fit_seconds=met["train"].get("train_s"), score_ms_per_item=met["inference_ms_per_job"],
             n_train=met["train"].get("train_rows"), n_validation=int(len(split.validation)),
             argmax_accuracy=met["test_argmax"]["accuracy"], argmax_f1=met["test_argmax"]["f1"])
    artifacts = {"model": "sft/model"}
    det = res.get("detector")
    if det is not None:
        ctx.stage("embeddings (t-SNE) and one attention map")
        _sft_extras(ctx, det, test, preds, n=ctx.report.tsne_points)
        artifacts.update(tsne="tsne.csv", attention="attention.json")
    return RunResult(m, preds, details={"sft": {k: met[k] for k in ("train", "sizes", "threshold", "split")}},
                     artifacts=artifacts)


def _sft_extras(ctx: RunContext, det: Any, test: pd.DataFrame, preds: pd.DataFrame, n: int = 600) -> None:
    """t-SNE coordinates of test-job embeddings and the attention of one flagged anomalous job, cached in the run."""
    from sklearn.manifold import TSNE

    from llmad.io import write_frame_csv, write_json

    rng = np.random.default_rng(ctx.spec.seed)
    y = test["label"].to_numpy()
    # Keep anomalies visible: up to half of the sample is anomalous.
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    n_pos = min(len(pos), n // 2)
    idx = np.sort(np.concatenate([rng.choice(pos, n_pos, replace=False),
                                  rng.choice(neg, min(len(neg), n - n_pos), replace=False)]))
    texts = det.render(test.iloc[idx])
    emb = det.embed_texts(texts)
    perplexity = float(min(30, max(2, (len(idx) - 1) / 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=ctx.spec.seed).fit_transform(emb)
    write_frame_csv(ctx.run_dir / "tsne.csv", pd.DataFrame({
        "x": xy[:, 0], "y": xy[:, 1], "label": y[idx], "anomaly_type": test["anomaly_type"].to_numpy()[idx],
        "score": preds["score"].to_numpy()[idx]}))
    write_json(ctx.run_dir / "attention.json", sft_attention(det, test, preds))


def sft_attention(det: Any, test: pd.DataFrame, preds: pd.DataFrame) -> dict[str, Any]:
    """Last-layer attention (mean over heads) for one correctly flagged anomalous test job (else the top-scored)."""
    import torch

    hit = np.flatnonzero((preds["label"].to_numpy() == 1) & (preds["prediction"].to_numpy() == 1))
    i = int(hit[np.argmax(preds["score"].to_numpy()[hit])]) if len(hit) else int(np.argmax(preds["score"].to_numpy()))
    text = det.render(test.iloc[[i]])[0]
    model = det.model_
    enc = det.tokenizer_(text, truncation=True, max_length=det.config.max_length, return_tensors="pt")
    prev = getattr(model.config, "_attn_implementation", None)
    with contextlib.suppress(Exception):
        model.set_attn_implementation("eager")  # fused attention kernels return no weights
    try:
        with torch.inference_mode():
            out = model(**{k: v.to(det.device_) for k, v in enc.items()}, output_attentions=True)
    finally:
        if prev and prev != "eager":
            with contextlib.suppress(Exception):
                model.set_attn_implementation(prev)
    if not out.attentions:
        raise LlmadError("the SFT model returned no attention weights")
    att = out.attentions[-1][0].float().mean(0).cpu().numpy()
    tokens = det.tokenizer_.convert_ids_to_tokens(enc["input_ids"][0])
    return {"text": text, "tokens": tokens, "attention": att.round(5).tolist(), "layer": len(out.attentions) - 1,
            "label": int(preds["label"].iloc[i]), "score": float(preds["score"].iloc[i]),
            "job": str(preds["key"].iloc[i])}


_LM_CACHE: dict[Any, Any] = {}


def adapter_icl(ctx: RunContext) -> RunResult:
    """``ICLDetector`` on the cached split: demonstrations/statistics from train, threshold on validation."""
    from llmad.detectors.icl.detector import ICLConfig, ICLDetector, select_demonstrations

    cfg = from_dict(ICLConfig, _config_for_class("icl", ctx.spec.config)).validate()
    split = ctx.job_split(context=True)
    train, val = ctx.limited(split.train, "train"), ctx.limited(split.validation, "validation")
    test = ctx.limited(split.test, "test")
    ctx.guard.set_test(job_keys(test, "test"))
    tk = job_keys(train, "train")
    if cfg.shots and cfg.select != "nearest":
        demos = select_demonstrations(train, cfg.shots, cfg.select, cfg.seed)
        demo_keys = job_keys(demos, "train")
        ctx.guard.use("demonstrations", demo_keys)
    elif cfg.shots:
        demos, demo_keys = train, tk
        ctx.guard.use("demonstrations (nearest-neighbour pool)", tk)
        ctx.guard.use("normalisation statistics (nearest-neighbour features)", tk)
    else:
        demos, demo_keys = train.iloc[:0], []
    if cfg.stats:
        ctx.guard.use("per-class feature statistics", tk)
    if cfg.lora_r:
        ctx.guard.use("LoRA tuning examples", tk)
    if cfg.mode == "score" and cfg.threshold == "validation":
        ctx.guard.use("threshold (validation rows)", job_keys(val, "validation"))
    lm = None
    if not cfg.lora_r:  # a LoRA-tuned model is changed in place: never shared
        key = (cfg.model, cfg.load_in_4bit)
        if key not in _LM_CACHE:
            from llmad.models.causal_lm import load_causal_lm

            ctx.stage(f"loading {cfg.model}")
            _LM_CACHE.clear()
            _LM_CACHE[key] = load_causal_lm(cfg.model, load_in_4bit=cfg.load_in_4bit,
                                            trust_remote_code=cfg.trust_remote_code)
        lm = _LM_CACHE[key]
    ctx.stage(f"{cfg.shots}-shot prompt, threshold on {len(val)} validation jobs")
    t0 = time.perf_counter()
    det = ICLDetector(config=cfg).fit(train, val, lm=lm)
    fit_s = time.perf_counter() - t0
    if cfg.shots and cfg.select != "nearest":
        used = det.demos_["job_id"].astype(str).tolist()
        if sorted(used) != sorted(demos["job_id"].astype(str).tolist()):
            raise LeakageError("leakage guard: the detector's demonstrations differ from the train rows the guard "
                               "checked; run refused")
    ctx.stage(f"scoring {len(test)} test jobs", total=len(test))
    scores, t0 = [], time.perf_counter()
    chunk = max(cfg.batch_size * 4, 16)
    for i in range(0, len(test), chunk):  # chunks only to move the bar; the prefix cache is kept across them
        part = test.iloc[i:i + chunk]
        scores.append(det.score(part))
        ctx.advance(len(part))
    s = np.concatenate(scores) if scores else np.zeros(0)
    ms = 1000 * (time.perf_counter() - t0) / max(len(test), 1)
    m = _job_metrics(test, s, det.threshold_)
    m.update(fit_seconds=fit_s, score_ms_per_item=ms, n_train=int(len(train)), n_validation=int(len(val)))
    if cfg.mode == "score":
        m["argmax_accuracy"] = float(np.mean((s >= 0).astype(int) == test["label"].to_numpy()))
    info = det.info()
    info.pop("label_variants", None)
    return RunResult(m, _scored_frame(test, s, det.threshold_),
                     details={"icl": info, "demonstration_keys": list(map(str, demo_keys))[:64]})


def _series_spans(series: Iterable[Any]) -> list[tuple[str, int, int]]:
    out = []
    for s in series:
        meta = getattr(s, "meta", {}) or {}
        out.append((str(meta.get("parent", s.name)), int(meta.get("_start", 0)),
                    int(meta.get("_stop", meta.get("_start", 0) + len(s)))))
    return out


def adapter_numeric(ctx: RunContext) -> RunResult:
    """``llmad.api.numeric.run_numeric``: z-score and windows from train, threshold on validation points."""
    from llmad.api.numeric import NumericConfig, load_split as numeric_split, run_numeric

    cfg = from_dict(NumericConfig, {**ctx.spec.config, "out": str(ctx.run_dir / "numeric")})
    ctx.stage(f"loading {cfg.data}")
    split = numeric_split(cfg)
    ctx.guard.set_test_spans(_series_spans(split.test))
    ctx.guard.use_spans("z-score normalisation + training windows (train)", _series_spans(split.train))
    ctx.guard.use_spans("label pool + threshold (validation)", _series_spans(split.validation))
    ctx.stage(f"{cfg.method} on {cfg.data}")
    met = run_numeric(cfg)
    preds = pd.read_csv(ctx.run_dir / "numeric" / "predictions.csv")
    t = met["test"]
    m = {k: t.get(k) for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc") if k in t}
    if "accuracy" not in m:
        m["accuracy"] = float(np.mean(preds["prediction"] == preds["label"]))
    from sklearn.metrics import confusion_matrix

    m["confusion_matrix"] = confusion_matrix(preds["label"], preds["prediction"], labels=[0, 1]).tolist()
    m["n"], m["positives"] = int(len(preds)), int(preds["label"].sum())
    ev = t.get("event", {})
    if "event_recall" in ev:
        m["event_recall"] = ev["event_recall"]
    m.update(fit_seconds=met["timing"]["fit_seconds"],
             score_ms_per_item=1000 * met["timing"]["score_seconds"] / max(len(preds), 1))
    return RunResult(m, preds, details={"numeric": {k: met[k] for k in ("method", "window", "stride", "shots",
                                                                          "selection", "threshold", "notes")}})


def _replay_config_class() -> type:
    from llmad.stream import StreamConfig

    return StreamConfig


def adapter_replay(ctx: RunContext) -> RunResult:
    """``llmad.stream.run_replay`` over whole test runs with a detector from ``source`` (a baseline fitted on the
    split's train runs, this recipe's SFT run on the same dataset and seed, or a saved detector folder)."""
    from llmad.stream import StreamConfig, open_detector, run_replay, split_run_ids

    cfg = from_dict(StreamConfig, ctx.spec.config).check()
    d = ctx.spec.data
    if d["split"] == "paper":
        raise LlmadError("replay needs whole DAG runs; the paper split is job-level (use split: run)")
    source = ctx.spec.extras.get("source")
    if not source:
        raise LlmadError("a replay method needs source: baseline:rf | baseline:hgb-context | <an sft method of this "
                         "recipe> | <a saved detector folder>")
    ctx.stage(f"run ids of {d['spec']} ({d['split']} split)")
    ids = split_run_ids(d["spec"], d["split"], d["seed"], d["data_dir"], d["test_workflow"])
    lim = ctx.spec.limits
    from llmad.stream import _sample_ids

    test_runs = _sample_ids(ids["test"], lim.get("test"), d["seed"])
    ctx.guard.set_test(test_runs)
    detector = None
    upstream = ctx.spec.extras.get("source_hash")
    if source.startswith("baseline:"):
        ctx.guard.use("fit (train runs of the baseline)", _sample_ids(ids["train"], lim.get("train"), d["seed"]))
        ctx.guard.use("threshold (validation runs)", _sample_ids(ids["validation"], lim.get("train"), d["seed"]))
    elif upstream:
        up_dir = ctx.run_dir.parent / upstream
        if not (up_dir / "metrics.json").is_file():
            raise LlmadError(f"replay source {source!r} did not finish (runs/{upstream}): nothing to replay")
        up = json.loads((up_dir / "run.json").read_text())
        ud = up["data"]
        up_ids = split_run_ids(ud["spec"], ud["split"], ud["seed"], ud["data_dir"], ud["test_workflow"]) \
            if (ud["spec"], ud["split"], ud["seed"], ud["test_workflow"]) != \
               (d["spec"], d["split"], d["seed"], d["test_workflow"]) else ids
        ctx.guard.use(f"fit of {source} (its train runs)", up_ids["train"])
        ctx.guard.use(f"threshold of {source} (its validation runs)", up_ids["validation"])
        ctx.stage(f"loading {source}")
        detector = open_detector(str(up_dir / "sft" / "model"), quantize=cfg.quantize)
    else:
        ctx.log(f"replay source {source}: a saved detector from outside the recipe; its training rows are not "
                f"known to the leakage guard")
    if cfg.threshold == "validation":
        ctx.guard.use("alert threshold (validation runs)", _sample_ids(ids["validation"], lim.get("validation"),
                                                                       d["seed"]))
    ctx.stage(f"replaying {len(test_runs)} test runs", total=len(test_runs))
    t0 = time.perf_counter()
    res, out_dir = run_replay(source, d["spec"], cfg, split=d["split"], part="test", seed=d["seed"],
                              runs=lim.get("test"), val_runs=lim.get("validation"), train_runs=lim.get("train"),
                              test_workflow=d["test_workflow"], data_dir=d["data_dir"],
                              out=ctx.run_dir / "replay", progress=lambda msg: ctx.advance(1), detector=detector)
    wall = time.perf_counter() - t0
    jobs = pd.read_csv(out_dir / "predictions.csv")
    if cfg.reveal == "features":
        last = sorted((c for c in jobs.columns if c.startswith("pred_T")), key=lambda c: int(c[6:]))[-1]
        pred = jobs[last].to_numpy().astype(int)
        score = pred.astype(float)
    else:
        pred = jobs["alerted"].astype(bool).to_numpy().astype(int)
        score = jobs["max_score"].to_numpy(dtype=float)
        score = np.where(np.isfinite(score), score, np.nanmin(score) if np.isfinite(score).any() else 0.0)
    preds = pd.DataFrame({"key": job_keys(jobs, "test"), "run_id": jobs["run_id"], "job_id": jobs["job_id"],
                          "label": jobs["label"].astype(int), "anomaly_type": jobs["anomaly_type"],
                          "score": score, "prediction": pred})
    if cfg.reveal == "events":
        for c in ("alert_before_execute_end", "lead_job_s", "alert_life_frac"):
            preds[c] = jobs[c]
    from llmad.metrics.classification import classification_report

    m = classification_report(preds["label"], predictions=preds["prediction"], scores=score,
                              anomaly_types=preds["anomaly_type"])
    em = res.metrics
    for k in ("caught_before_execute_end_share", "median_lead_job_s", "median_lead_run_s",
              "false_alerts_per_normal_run", "anomalous_ever_correct_share", "median_first_correct_step_anomalous"):
        if k in em:
            m[k] = em[k]
    m.update(fit_seconds=0.0, score_ms_per_item=1000 * wall / max(len(preds), 1),
             events_per_s=res.throughput.get("events_per_s"))
    artifacts = {}
    if res.curve is not None:
        from llmad.io import write_frame_csv

        write_frame_csv(ctx.run_dir / "early_detection.csv", res.curve)
        artifacts["early_detection"] = "early_detection.csv"
    if res.features_table is not None:
        from llmad.io import write_frame_csv

        write_frame_csv(ctx.run_dir / "features_steps.csv", res.features_table)
        artifacts["features_steps"] = "features_steps.csv"
    return RunResult(m, preds, details={"replay": {k: v for k, v in em.items() if k != "steps"},
                                        "throughput": res.throughput, "threshold": res.threshold,
                                        "source": source, "test_runs": len(test_runs)}, artifacts=artifacts)


ADAPTERS: dict[str, Callable[[RunContext], RunResult]] = {
    "baseline": adapter_baseline, "sft": adapter_sft, "icl": adapter_icl, "numeric": adapter_numeric,
    "replay": adapter_replay,
}


# ------------------------------------------------------------------------------------------------ progress
class _Progress:
    """One bar over runs and one inner bar for the current run (rich); silent when ``quiet``."""

    def __init__(self, total: int, quiet: bool):
        self.quiet = quiet
        self._p = None
        if not quiet:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn)

            self._p = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TimeElapsedColumn(), transient=False)
            self._runs = self._p.add_task("runs", total=total)
            self._inner = self._p.add_task("", total=None)

    def __enter__(self) -> "_Progress":
        if self._p:
            self._p.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._p:
            self._p.stop()

    def log(self, msg: str) -> None:
        if self._p:
            self._p.console.print(msg, markup=False, highlight=False)
        elif not self.quiet:
            print(msg)

    def run_started(self, label: str) -> None:
        if self._p:
            self._p.update(self._runs, description=f"runs: {label}")

    def run_done(self) -> None:
        if self._p:
            self._p.advance(self._runs)

    def stage(self, text: str, total: float | None = None) -> None:
        if self._p:
            self._p.reset(self._inner, total=total, description=f"  {text}")

    def advance(self, n: float = 1) -> None:
        if self._p:
            self._p.advance(self._inner, n)


class _PeakRSS:
    """Peak resident memory of this process while a run executes (sampled; ru_maxrss only ever grows)."""

    def __enter__(self) -> "_PeakRSS":
        import psutil

        self._proc, self.peak, self._stop = psutil.Process(), 0.0, threading.Event()
        self._sample()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def _sample(self) -> None:
        with contextlib.suppress(Exception):
            self.peak = max(self.peak, self._proc.memory_info().rss / 2**20)

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join(timeout=2)
        self._sample()


# ------------------------------------------------------------------------------------------------ executing
@dataclass
class RunStatus:
    """What happened to one run in this invocation."""

    spec: RunSpec
    status: str  # cached | done | failed | refused | skipped
    run_dir: Path
    seconds: float = 0.0
    message: str = ""


def _run_one(spec: RunSpec, run_dir: Path, resume: bool, cache: dict[str, Any], progress: _Progress,
             adapters: dict[str, Callable[[RunContext], RunResult]], report: ReportConfig | None = None
             ) -> RunStatus:
    from llmad.io import provenance, write_frame_csv, write_json
    from llmad.rundir import peak_rss_mb

    if (run_dir / "metrics.json").is_file():
        return RunStatus(spec, "cached", run_dir)
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)  # a half-written run from an interrupted invocation: start it again
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("error.json", "refused.json"):
        (run_dir / stale).unlink(missing_ok=True)
    write_json(run_dir / "run.json", {"hash": spec.hash, **asdict(spec), "hash_payload": spec.hash_payload()})
    guard = LeakageGuard()
    ctx = RunContext(spec, run_dir, guard, resume, cache, progress, progress.log, report)
    started = datetime.now(timezone.utc).isoformat()
    t0 = time.perf_counter()
    try:
        with _PeakRSS() as mem:
            res = adapters[spec.kind](ctx)
    except LeakageError as e:
        write_json(run_dir / "refused.json", {"reason": str(e), "guard": guard.used})
        return RunStatus(spec, "refused", run_dir, time.perf_counter() - t0, str(e))
    except KeyboardInterrupt:
        raise
    except Exception as e:  # one failed run must not stop the comparison
        msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
        write_json(run_dir / "error.json", {"error": msg, "traceback": traceback.format_exc()})
        return RunStatus(spec, "failed", run_dir, time.perf_counter() - t0, msg)
    wall = time.perf_counter() - t0
    pred = res.predictions
    missing = [c for c in ("label", "score", "prediction") if c not in pred]
    if missing:
        msg = f"adapter {spec.kind} returned predictions without {missing}"
        write_json(run_dir / "error.json", {"error": msg})
        return RunStatus(spec, "failed", run_dir, wall, msg)
    write_frame_csv(run_dir / "predictions.csv", pred)
    prov = provenance()
    prov.update(started_utc=started, finished_utc=datetime.now(timezone.utc).isoformat(), wall_seconds=wall,
                peak_rss_mb_during_run=mem.peak, process_peak_rss_mb=peak_rss_mb(), seed=spec.seed,
                config_hash=spec.hash, resolved=spec.hash_payload(), leakage_guard=guard.report())
    write_json(run_dir / "provenance.json", prov)
    write_json(run_dir / "details.json", {"details": res.details, "artifacts": res.artifacts})
    metrics = {**res.metrics, "wall_seconds": wall, "peak_rss_mb": mem.peak}
    write_json(run_dir / "metrics.json", metrics)  # last: its presence marks the run finished
    return RunStatus(spec, "done", run_dir, wall)


def execute(specs: list[RunSpec], out: Path, resume: bool = False, quiet: bool = False,
            adapters: dict[str, Callable[[RunContext], RunResult]] | None = None,
            report: ReportConfig | None = None) -> list[RunStatus]:
    """Run (or reuse) every spec under ``out/runs/<hash>``; failures are recorded, the rest continue."""
    adapters = adapters or ADAPTERS
    statuses: list[RunStatus] = []
    cache: dict[str, Any] = {}
    # Cheap runs first with the same data grouped, so a split is loaded once and results arrive early.
    order = sorted(range(len(specs)), key=lambda i: (json.dumps(specs[i].data, sort_keys=True, default=str),
                                                     METHOD_KINDS.index(specs[i].kind)))
    with _Progress(len(specs), quiet) as prog:
        for i in order:
            spec = specs[i]
            prog.run_started(f"{spec.row} on {spec.dataset} (seed {spec.seed})")
            st = _run_one(spec, out / "runs" / spec.hash, resume, cache, prog, adapters, report)
            statuses.append(st)
            if st.status in ("failed", "refused"):
                prog.log(f"[{st.status}] {spec.row} on {spec.dataset} seed {spec.seed}: {st.message}")
            elif st.status == "done":
                prog.log(f"[done {st.seconds:.0f}s] {spec.row} on {spec.dataset} seed {spec.seed}")
            prog.run_done()
    cache.clear()
    _LM_CACHE.clear()
    return statuses


# ------------------------------------------------------------------------------------------------ aggregate
def _metric_from_counts(metric: str, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, n: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "f1":
            d = 2 * tp + fp + fn
            return np.where(d > 0, 2 * tp / np.where(d > 0, d, 1), 0.0)
        if metric == "precision":
            d = tp + fp
            return np.where(d > 0, tp / np.where(d > 0, d, 1), 0.0)
        if metric == "recall":
            d = tp + fn
            return np.where(d > 0, tp / np.where(d > 0, d, 1), 0.0)
        if metric == "accuracy":
            return (n - fp - fn) / n
    raise LlmadError(f"unknown headline metric {metric!r}")


def bootstrap_replicates(labels: np.ndarray, predictions: np.ndarray, metric: str = "f1", n_boot: int = 1000,
                         seed: int = 0) -> np.ndarray:
    """The metric on ``n_boot`` resamples; the same resamples as ``llmad.metrics.bootstrap_ci`` (vectorised)."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(predictions).astype(bool)
    n = len(y)
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    step = max(1, min(n_boot, 4_000_000 // max(n, 1)))
    for a in range(0, n_boot, step):
        k = min(step, n_boot - a)
        idx = np.stack([rng.integers(0, n, n) for _ in range(k)])
        yy, pp = y[idx], p[idx]
        tp = (yy & pp).sum(1)
        fp = (~yy & pp).sum(1)
        fn = (yy & ~pp).sum(1)
        out[a:a + k] = _metric_from_counts(metric, tp, fp, fn, n)
    return out


def mean_ci(preds: list[pd.DataFrame], metric: str, n_boot: int, ci: float, seed: int = 0) -> tuple[float, float]:
    """Percentile CI of the across-seed mean: each seed's test rows are resampled independently."""
    reps = [bootstrap_replicates(p["label"].to_numpy(), p["prediction"].to_numpy(), metric, n_boot, seed + i)
            for i, p in enumerate(preds)]
    mean = np.mean(reps, axis=0)
    alpha = 1 - ci
    return float(np.quantile(mean, alpha / 2)), float(np.quantile(mean, 1 - alpha / 2))


TABLE_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc")


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{nd}f}"


def aggregate(recipe: Recipe, statuses: list[RunStatus]) -> pd.DataFrame:
    """One row per method x dataset (x sweep point): mean and std over seeds, bootstrap CI of the headline."""
    groups: dict[tuple[str, str], list[RunStatus]] = {}
    order: list[tuple[str, str]] = []
    for st in statuses:
        key = (st.spec.dataset, st.spec.row)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(st)
    ds_order = [d.name for d in recipe.datasets]
    m_order = [m.name for m in recipe.methods]
    order.sort(key=lambda k: (ds_order.index(k[0]), m_order.index(groups[k][0].spec.method),
                              json.dumps(groups[k][0].spec.sweep, sort_keys=True, default=str)))
    h = recipe.report.headline
    rows = []
    for key in order:
        sts = sorted(groups[key], key=lambda s: s.spec.seed)
        spec = sts[0].spec
        ok = [s for s in sts if (s.run_dir / "metrics.json").is_file()]
        row: dict[str, Any] = {"dataset": spec.dataset, "method": spec.row, "kind": spec.kind,
                               "strong_baseline": is_strong(spec.kind, spec.config),
                               "split": spec.data.get("split"), "seeds": len(ok), "seeds_planned": len(sts)}
        for k, v in spec.sweep.items():
            row[f"sweep_{k}"] = v
        if not ok:
            row["status"] = ",".join(sorted({s.status for s in sts}))
            rows.append(row)
            continue
        mets = [json.loads((s.run_dir / "metrics.json").read_text()) for s in ok]
        row["status"] = "ok" if len(ok) == len(sts) else f"{len(sts) - len(ok)} of {len(sts)} seeds missing"
        row["n_test"] = int(np.mean([m.get("n", 0) for m in mets]))
        for k in TABLE_METRICS:
            vals = [m.get(k) for m in mets]
            vals = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
            row[f"{k}_mean"] = float(np.mean(vals)) if vals else float("nan")
            row[f"{k}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")
        preds = [pd.read_csv(s.run_dir / "predictions.csv", usecols=["label", "prediction"]) for s in ok]
        lo, hi = mean_ci(preds, h, recipe.report.bootstrap, recipe.report.ci)
        row[f"{h}_ci_low"], row[f"{h}_ci_high"] = lo, hi
        row["fit_seconds"] = float(np.mean([m.get("fit_seconds") or 0.0 for m in mets]))
        row["wall_seconds"] = float(np.mean([m.get("wall_seconds") or 0.0 for m in mets]))
        row["score_ms_per_item"] = float(np.mean([m.get("score_ms_per_item") or 0.0 for m in mets]))
        rows.append(row)
    for pub in recipe.report.published:
        unknown = sorted(set(pub) - {"method", "dataset", "source", *TABLE_METRICS})
        if unknown or "method" not in pub or "dataset" not in pub:
            raise LlmadError(f"report.published entry {pub}: needs method, dataset, source and metric values "
                             f"({', '.join(TABLE_METRICS)}); unknown keys {unknown}")
        text = ", ".join(f"{k} {pub[k]:.4g}" for k in TABLE_METRICS if isinstance(pub.get(k), (int, float)))
        text = f"{pub.get('source', 'published')}: {text}"
        for r in rows:
            if r["method"] == pub["method"] and r["dataset"] == pub["dataset"]:
                r["published"] = f"{r['published']}; {text}" if r.get("published") else text
    return pd.DataFrame(rows)


def table_markdown(recipe: Recipe, table: pd.DataFrame) -> str:
    """The results table as Markdown (mean ± std over seeds, CI of the headline)."""
    h = recipe.report.headline
    pct = int(round(recipe.report.ci * 100))
    has_pub = "published" in table.columns
    head = ["dataset", "method", "split", "seeds", "test n", f"{h} (mean ± sd)", f"{h} {pct}% CI", "accuracy",
            "ROC-AUC", "PR-AUC", "fit s"]
    if has_pub:
        head.append("published")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for _, r in table.iterrows():
        name = f"**{r['method']}**" if r.get("strong_baseline") else str(r["method"])
        if r.get("status") not in ("ok",) and not r.get("seeds"):
            cells = [r["dataset"], name, str(r.get("split")), f"0/{r['seeds_planned']}", "–", r["status"],
                     *["–"] * 5]
        else:
            sd = r.get(f"{h}_std")
            hv = _fmt(r.get(f"{h}_mean")) + (f" ± {_fmt(sd)}" if sd is not None and math.isfinite(sd) else "")
            cells = [r["dataset"], name, str(r.get("split")), f"{r['seeds']}/{r['seeds_planned']}",
                     str(int(r["n_test"])), hv, f"[{_fmt(r.get(f'{h}_ci_low'))}, {_fmt(r.get(f'{h}_ci_high'))}]",
                     _fmt(r.get("accuracy_mean")), _fmt(r.get("roc_auc_mean")), _fmt(r.get("pr_auc_mean")),
                     _fmt(r.get("fit_seconds"), 1)]
        if has_pub:
            cells.append(r["published"] if isinstance(r.get("published"), str) else "")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _first_seed(statuses: list[RunStatus]) -> dict[tuple[str, str], RunStatus]:
    """Per (dataset, row): the finished run with the smallest seed (what curves show)."""
    out: dict[tuple[str, str], RunStatus] = {}
    for st in sorted(statuses, key=lambda s: s.spec.seed):
        if (st.run_dir / "metrics.json").is_file():
            out.setdefault((st.spec.dataset, st.spec.row), st)
    return out


def make_plots(recipe: Recipe, statuses: list[RunStatus], table: pd.DataFrame, plot_dir: Path) -> tuple[
        list[tuple[str, str]], list[str]]:
    """All PNGs; returns [(caption, path relative to the output folder)] and notes on plots skipped."""
    from sklearn import metrics as skm

    plt = _plt()
    plot_dir.mkdir(parents=True, exist_ok=True)
    figs: list[tuple[str, str]] = []
    notes: list[str] = []
    first = _first_seed(statuses)
    h = recipe.report.headline

    def save(fig, name: str, caption: str) -> None:
        fig.tight_layout()
        fig.savefig(plot_dir / name, dpi=110)
        plt.close(fig)
        figs.append((caption, f"{plot_dir.name}/{name}"))

    for d in recipe.datasets:
        runs = [(row, st) for (ds, row), st in first.items() if ds == d.name]
        if not runs:
            continue
        slug = _slug(d.name)
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
        for row, st in runs:
            p = pd.read_csv(st.run_dir / "predictions.csv", usecols=["label", "score"])
            y, s = p["label"].to_numpy(), p["score"].to_numpy()
            if 0 < y.sum() < len(y):
                fpr, tpr, _ = skm.roc_curve(y, s)
                a1.plot(fpr, tpr, label=f"{row} (AUC {skm.auc(fpr, tpr):.3f})")
                pr, rc, _ = skm.precision_recall_curve(y, s)
                a2.plot(rc, pr, label=f"{row} (AP {skm.average_precision_score(y, s):.3f})")
        a1.plot([0, 1], [0, 1], ":", color="grey")
        a1.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC: {d.name}")
        a2.set(xlabel="recall", ylabel="precision", title=f"precision-recall: {d.name}")
        for a in (a1, a2):
            a.legend(fontsize=7, loc="lower right" if a is a1 else "lower left")
        save(fig, f"roc_pr_{slug}.png", f"ROC and precision-recall curves on {d.name} (first seed of each method)")

        n = len(runs)
        cols = min(4, n)
        fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(3.1 * cols, 2.9 * ((n + cols - 1) // cols)),
                                 squeeze=False)
        for ax, (row, st) in zip(axes.ravel(), runs):
            cm = json.loads((st.run_dir / "metrics.json").read_text()).get("confusion_matrix") or [[0, 0], [0, 0]]
            cm = np.asarray(cm)
            ax.imshow(cm, cmap="Blues")
            for (i, j), v in np.ndenumerate(cm):
                ax.text(j, i, str(v), ha="center", va="center", color="black" if v < cm.max() / 2 else "white",
                        fontsize=9)
            ax.set_xticks([0, 1], ["normal", "anomalous"], fontsize=7)
            ax.set_yticks([0, 1], ["normal", "anomalous"], fontsize=7)
            ax.set_xlabel("predicted", fontsize=7)
            ax.set_ylabel("true", fontsize=7)
            ax.set_title(row, fontsize=8)
        for ax in axes.ravel()[n:]:
            ax.axis("off")
        save(fig, f"confusion_{slug}.png", f"Confusion matrices on {d.name} (test, validation threshold)")

    # Learning curves: rows of one method that differ only in a labeled-sample count.
    for m in recipe.methods:
        keys = [k for k in m.sweep if k in LABELED_KEYS]
        if not keys:
            continue
        k = keys[0]
        sub = table[(table["method"].str.startswith(m.name + " [")) & table.get(f"sweep_{k}").notna()] \
            if f"sweep_{k}" in table else table.iloc[:0]
        if sub.empty or f"{h}_mean" not in sub:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for ds, g in sub.groupby("dataset", sort=False):
            g = g.sort_values(f"sweep_{k}")
            x = g[f"sweep_{k}"].astype(float).to_numpy()
            yv = g[f"{h}_mean"].to_numpy(dtype=float)
            ax.plot(x, yv, marker="o", label=f"{ds}")
            lo, hi = g[f"{h}_ci_low"].to_numpy(dtype=float), g[f"{h}_ci_high"].to_numpy(dtype=float)
            ax.fill_between(x, lo, hi, alpha=0.2)
            for _, r in table[(table["dataset"] == ds) & table["strong_baseline"]].iterrows():
                ax.axhline(r[f"{h}_mean"], ls="--", lw=0.8, color="grey")
                ax.text(x.max(), r[f"{h}_mean"], f" {r['method']}", fontsize=7, va="bottom", ha="right")
        if (x > 0).all():
            ax.set_xscale("log")
        ax.set(xlabel=k.replace("_", " "), ylabel=f"test {h}", title=f"learning curve: {m.name}")
        ax.legend(fontsize=8)
        save(fig, f"learning_{_slug(m.name)}.png", f"Learning curve of {m.name}: test {h} vs {k} "
                                                   f"(band: bootstrap CI; dashed: strong baselines)")

    replay = [st for st in first.values() if st.spec.kind == "replay"]
    for d in recipe.datasets:
        curves = [st for st in replay if st.spec.dataset == d.name and (st.run_dir / "early_detection.csv").is_file()]
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for st in curves:
            c = pd.read_csv(st.run_dir / "early_detection.csv")
            line, = ax.plot(c["life_fraction"], c["caught_share"], label=f"{st.spec.row}: anomalous jobs alerted")
            ax.plot(c["life_fraction"], c["false_alert_share"], "--", color=line.get_color(), lw=0.9,
                    label=f"{st.spec.row}: normal jobs alerted")
        ax.set(xlabel="fraction of the job's lifetime elapsed", ylabel="share of jobs", xlim=(0, 1), ylim=(0, 1),
               title=f"early detection on {d.name} (test runs, first seed)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
        save(fig, f"early_{_slug(d.name)}.png", f"Early-detection curves on {d.name}: share of jobs alerted by each "
                                                f"fraction of their lifetime (solid: anomalous, dashed: normal)")
    if not replay:
        notes.append("no early-detection curves: the recipe has no replay runs")

    sft = [st for st in first.values() if st.spec.kind == "sft"]
    if not sft:
        notes.append("no t-SNE or attention plot: the recipe has no SFT method")
    for st in sft:
        tag = f"{_slug(st.spec.row)}_{_slug(st.spec.dataset)}"
        ts = st.run_dir / "tsne.csv"
        if ts.is_file():
            t = pd.read_csv(ts)
            fig, ax = plt.subplots(figsize=(6.5, 5))
            for typ, g in t.groupby("anomaly_type", sort=True):
                normal = str(typ) == "normal"
                ax.scatter(g["x"], g["y"], s=8 if normal else 14, alpha=0.45 if normal else 0.85,
                           marker="o" if normal else "^", label=f"{typ} ({len(g)})",
                           color="lightgrey" if normal else None)
            ax.set(title=f"t-SNE of {st.spec.row} embeddings ({st.spec.dataset} test jobs)", xticks=[], yticks=[])
            ax.legend(fontsize=7, markerscale=1.5)
            save(fig, f"tsne_{tag}.png", f"t-SNE of mean-pooled {st.spec.row} embeddings of test jobs on "
                                         f"{st.spec.dataset}, by anomaly type")
        else:
            notes.append(f"no t-SNE for {st.spec.row} on {st.spec.dataset}: the run kept no embeddings")
        at = st.run_dir / "attention.json"
        if at.is_file():
            a = json.loads(at.read_text())
            att, toks = np.asarray(a["attention"]), a["tokens"]
            size = max(5.0, 0.22 * len(toks))
            fig, ax = plt.subplots(figsize=(size + 1.5, size))
            im = ax.imshow(att, cmap="viridis")
            ax.set_xticks(range(len(toks)), toks, rotation=90, fontsize=6)
            ax.set_yticks(range(len(toks)), toks, fontsize=6)
            fig.colorbar(im, ax=ax, fraction=0.04)
            ax.set_title(f"{st.spec.row}: last-layer attention (mean over heads), P(anomalous)={a['score']:.2f}",
                         fontsize=8)
            save(fig, f"attention_{tag}.png", f"Attention of {st.spec.row} on one anomalous test job "
                                              f"({a['job']}, label {a['label']})")
    return figs, notes


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(s))[:80]


# ------------------------------------------------------------------------------------------------ report
def _status_rows(statuses: list[RunStatus]) -> list[dict[str, Any]]:
    rows = []
    for st in sorted(statuses, key=lambda s: (s.spec.dataset, s.spec.row, s.spec.seed)):
        wall = st.seconds
        if st.status == "cached" and (st.run_dir / "metrics.json").is_file():
            wall = json.loads((st.run_dir / "metrics.json").read_text()).get("wall_seconds", 0.0)
        rows.append({"dataset": st.spec.dataset, "method": st.spec.row, "seed": st.spec.seed,
                     "status": st.status, "hash": st.spec.hash, "wall_seconds": round(float(wall or 0.0), 1),
                     "message": st.message})
    return rows


def write_report(recipe: Recipe, statuses: list[RunStatus], out: Path, added: list[str]) -> dict[str, Any]:
    """results.{md,csv,json}, plots and report.{md,html}; returns paths and the table."""
    from llmad.io import atomic_write_text, write_frame_csv, write_json, provenance

    table = aggregate(recipe, statuses)
    md_table = table_markdown(recipe, table)
    atomic_write_text(out / "results.md", md_table)
    write_frame_csv(out / "results.csv", table)
    write_json(out / "results.json", {"recipe": recipe.name, "headline": recipe.report.headline,
                                      "ci": recipe.report.ci, "bootstrap": recipe.report.bootstrap,
                                      "rows": table.to_dict(orient="records")})
    figs, notes = ([], ["plots disabled in the recipe"])
    if recipe.report.plots:
        figs, notes = make_plots(recipe, statuses, table, out / "plots")
    status = _status_rows(statuses)
    write_json(out / "status.json", status)
    prov = provenance()
    h, pct = recipe.report.headline, int(round(recipe.report.ci * 100))
    counts = {k: sum(1 for s in status if s["status"] == k) for k in ("done", "cached", "failed", "refused")}
    limits = sorted({f"{s.spec.row}: {k} part limited to {v} {'runs' if s.spec.kind == 'replay' else 'rows'} "
                     f"(seeded)" for s in statuses for k, v in s.spec.limits.items() if v})
    limits += sorted({f"{d.name}: every part limited to {d.limit} rows (seeded)" for d in recipe.datasets if d.limit})
    limits += sorted({f"{s.spec.row}: train subsampled to {s.spec.config['train_limit']} rows (seeded)"
                      for s in statuses if s.spec.kind == "sft" and s.spec.config.get("train_limit")})
    about = [
        f"Rows: one per method x dataset; {h} is the mean over seeds (± sample sd when several seeds), "
        f"with a {pct}% percentile-bootstrap CI ({recipe.report.bootstrap} resamples of the test rows, each seed "
        f"resampled independently; for time series the points are resampled as if independent, so the CI is "
        f"optimistic there). Thresholds come from validation, never test.",
        "Strong baselines (bold) always run: " + (", ".join(sorted({r for r in table["method"]
                                                                      if table.loc[table['method'] == r,
                                                                                   'strong_baseline'].any()}))
                                                  or "none") + (f" (added by the harness: {', '.join(added)})"
                                                                if added else "") + ".",
        f"Runs in this invocation: {counts['done']} ran, {counts['cached']} from cache, {counts['failed']} failed, "
        f"{counts['refused']} refused by the leakage guard.",
    ]
    md = [f"# {recipe.name}", "", recipe.description.strip(), "", "## Results", "", md_table,
          *[f"- {a}" for a in about]]
    if limits:
        md += ["", "Subsampling:", *[f"- {x}" for x in limits]]
    bad = [s for s in status if s["status"] in ("failed", "refused")]
    if bad:
        md += ["", "## Failed or refused runs", ""]
        md += [f"- {s['method']} on {s['dataset']} (seed {s['seed']}): **{s['status']}**: {s['message']}" for s in bad]
    md += ["", "## Plots", ""]
    for cap, path in figs:
        md += [f"### {cap}", "", f"![{cap}]({path})", ""]
    if notes:
        md += ["Not plotted:", *[f"- {n}" for n in notes], ""]
    md += ["## Runs", "", "| dataset | method | seed | status | wall s | folder |", "|---|---|---|---|---|---|"]
    md += [f"| {s['dataset']} | {s['method']} | {s['seed']} | {s['status']} | {s['wall_seconds']} | "
           f"runs/{s['hash']} |" for s in status]
    md += ["", "## Provenance", "",
           f"git commit `{prov.get('git_commit')}`, python {prov.get('python')}, "
           + ", ".join(f"{k} {v}" for k, v in prov.get("versions", {}).items()) + ". Each run folder holds "
           "run.json (resolved config + hash), provenance.json (versions, template hashes, seed, wall time, peak "
           "memory, leakage-guard checks), metrics.json and predictions.csv.", ""]
    report_md = "\n".join(md)
    atomic_write_text(out / "report.md", report_md)
    paths = {"results_md": out / "results.md", "results_csv": out / "results.csv",
             "results_json": out / "results.json", "report_md": out / "report.md"}
    if recipe.report.html:
        atomic_write_text(out / "report.html", _html(recipe, table, about, limits, bad, figs, notes, status, prov,
                                                     out))
        paths["report_html"] = out / "report.html"
    return {"table": table, "paths": paths, "figures": figs, "notes": notes, "status": status}


def _html(recipe: Recipe, table: pd.DataFrame, about: list[str], limits: list[str], bad: list[dict],
          figs: list[tuple[str, str]], notes: list[str], status: list[dict], prov: dict, out: Path) -> str:
    """A self-contained HTML report: the table as HTML, the plots inlined as base64 PNG."""
    e = html.escape
    h, pct = recipe.report.headline, int(round(recipe.report.ci * 100))
    has_pub = "published" in table.columns
    head = ["dataset", "method", "split", "seeds", "test n", f"{h} (mean ± sd)", f"{h} {pct}% CI", "accuracy",
            "ROC-AUC", "PR-AUC", "fit s"] + (["published"] if has_pub else [])
    body = []
    for line in table_markdown(recipe, table).splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        strong = cells[1].startswith("**")
        cells[1] = cells[1].strip("*")
        body.append(f"<tr{' class=strong' if strong else ''}>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{e(recipe.name)}: llmad compare</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}tr.strong td{font-weight:600;background:#f5f8ff}"
        "img{max-width:100%;border:1px solid #eee}figure{margin:1.5em 0}figcaption{font-size:13px;color:#555}"
        "</style></head><body>",
        f"<h1>{e(recipe.name)}</h1><p>{e(recipe.description.strip())}</p>",
        "<h2>Results</h2><table id=results><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in head)
        + "</tr></thead><tbody>" + "".join(body) + "</tbody></table>",
        "<ul>" + "".join(f"<li>{e(a)}</li>" for a in about + limits) + "</ul>",
    ]
    if bad:
        parts.append("<h2>Failed or refused runs</h2><ul>" + "".join(
            f"<li>{e(s['method'])} on {e(s['dataset'])} (seed {s['seed']}): <b>{e(s['status'])}</b>: "
            f"{e(s['message'])}</li>" for s in bad) + "</ul>")
    parts.append("<h2>Plots</h2>")
    for cap, path in figs:
        data = base64.b64encode((out / path).read_bytes()).decode()
        parts.append(f"<figure><img alt=\"{e(cap)}\" src=\"data:image/png;base64,{data}\">"
                     f"<figcaption>{e(cap)}</figcaption></figure>")
    if notes:
        parts.append("<p>Not plotted:</p><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    parts.append("<h2>Runs</h2><table id=runs><tr><th>dataset</th><th>method</th><th>seed</th><th>status</th>"
                 "<th>wall s</th><th>folder</th></tr>" + "".join(
                     f"<tr><td>{e(s['dataset'])}</td><td>{e(s['method'])}</td><td>{s['seed']}</td>"
                     f"<td>{e(s['status'])}</td><td>{s['wall_seconds']}</td><td>runs/{e(s['hash'])}</td></tr>"
                     for s in status) + "</table>")
    parts.append(f"<h2>Provenance</h2><p>git commit <code>{e(str(prov.get('git_commit')))}</code>, python "
                 f"{e(str(prov.get('python')))}, " + e(", ".join(f"{k} {v}" for k, v in
                                                                 prov.get("versions", {}).items())) + "</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------ entry point
def compare(recipe_path: str | Path | dict[str, Any], out: str | Path | None = None, resume: bool = False,
            overrides: Iterable[str] | dict[str, Any] = (), quiet: bool = False,
            adapters: dict[str, Callable[[RunContext], RunResult]] | None = None) -> dict[str, Any]:
    """Load a recipe, run (or reuse) every run, write the results table, plots and report under ``out``."""
    from llmad.io import write_json

    recipe = load_recipe(recipe_path, overrides)
    added = add_strong_baselines(recipe)
    specs = plan(recipe)
    if not specs:
        raise LlmadError("the recipe plans no runs (no method fits any dataset)")
    out = Path(out) if out else Path("runs") / "compare" / _slug(recipe.name)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "recipe.resolved.json", {"recipe": recipe, "strong_baselines_added": added,
                                              "runs": [{"hash": s.hash, "method": s.row, "dataset": s.dataset,
                                                        "seed": s.seed} for s in specs]})
    t0 = time.perf_counter()
    statuses = execute(specs, out, resume=resume, quiet=quiet, adapters=adapters, report=recipe.report)
    run_s = time.perf_counter() - t0
    rep = write_report(recipe, statuses, out, added)
    rep.update(out=out, run_seconds=run_s, total_seconds=time.perf_counter() - t0, statuses=statuses, recipe=recipe)
    return rep


__all__ = ["Recipe", "DatasetEntry", "MethodEntry", "ReportConfig", "RunSpec", "RunResult", "RunContext",
           "LeakageGuard", "LeakageError", "load_recipe", "plan", "execute", "aggregate", "write_report", "compare",
           "ADAPTERS", "bootstrap_replicates", "job_keys", "add_strong_baselines"]
