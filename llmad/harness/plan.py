"""Planning: a recipe expands into one ``RunSpec`` per (method x compatible dataset x sweep point x seed), each
hashed into its cache key ``<out>/runs/<hash>/``; strong baselines are added when a recipe lacks them."""
from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from llmad.config import DataConfig, from_dict
from llmad.data.specs import with_columns
from llmad.errors import LlmadError
from llmad.harness.recipe import ENTRY_SWEEPABLE, MethodEntry, Recipe, config_class, config_for_class

# Part of every cache key: bump it only when a change must invalidate every cached run.
HARNESS_VERSION = 1
# Settings that change how a run is shown or paced, never what it computes: left out of the cache hash.
NON_SEMANTIC = {"sft": {"progress", "logging_steps", "max_time_s", "save_total_limit", "extra"},
                "numeric": {"out"}}
# Config keys added after runs were cached, with the value that computes what the runs did before the key existed:
# left out of the hash at that value, so earlier caches stay valid (any other value is hashed as usual).
ADDED_AT_OLD_BEHAVIOUR = {"fusion": {("stack", "test_lm"): "full"}}
STRONG = {"baseline": {("rf", "plain"), ("hgb", "context")}, "numeric": {("iforest",), ("hgb",)}}


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
        for (section, key), old in ADDED_AT_OLD_BEHAVIOUR.get(self.kind, {}).items():
            if isinstance(cfg.get(section), dict) and cfg[section].get(key) == old:
                cfg[section] = {k: v for k, v in cfg[section].items() if k != key}
        return {"harness": HARNESS_VERSION, "kind": self.kind, "data": self.data, "config": cfg,
                "seed": self.seed, "limits": self.limits, "extras": self.extras}

    @property
    def hash(self) -> str:
        """sha256 of the resolved config (16 hex digits)."""
        from llmad.io import to_jsonable

        blob = json.dumps(to_jsonable(self.hash_payload()), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def template_extras(kind: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Hashes of the prompt templates a run renders: editing a template invalidates its cached runs."""
    from llmad.render import template_hash

    out: dict[str, Any] = {}
    template = (cfg.get("sft") or {}).get("template") if kind == "fusion" else cfg.get("template")
    if template and kind in ("sft", "fusion", "icl", "replay"):
        with contextlib.suppress(LlmadError):
            out["template_hash"] = template_hash(str(template))
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
                    if m.method in ("sft", "fusion") and limits["train"] is not None:
                        # SFT subsamples train itself (seeded, stated in its outputs); a fusion's LM is an SFT.
                        lm = conf if m.method == "sft" else dict(conf.get("sft") or {})
                        if lm.get("train_limit") is not None:
                            raise LlmadError(f"method {m.name}: train_limit given twice (entry and config)")
                        lm["train_limit"] = limits["train"]
                        if m.method == "fusion":
                            conf["sft"] = lm
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
                        data = asdict(DataConfig(spec=with_columns(d.spec, d.columns), data_dir=d.data_dir,
                                                 split=d.split or "run",
                                                 seed=seed, test_workflow=d.test_workflow, limit=d.limit))
                    built = from_dict(cls, config_for_class(m.method, conf), where=f"method {m.name}")
                    resolved = asdict(built)
                    extras = template_extras(m.method, resolved)
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


def is_strong(kind: str, cfg: dict[str, Any]) -> bool:
    """Whether a resolved method config is one of the strong references."""
    if kind == "baseline":
        return (cfg.get("method"), cfg.get("features")) in STRONG["baseline"]
    if kind == "numeric":
        return (cfg.get("method"),) in STRONG["numeric"]
    return False

