"""Typed config dataclasses shared by the CLI, the Python API and recipes (a YAML maps 1:1 onto them).

Method-specific configs live beside their method (``SFTConfig`` in ``llmad.detectors.sft.config`` ...) and
use the same helpers: ``from_dict`` rejects unknown keys loudly, ``merge`` applies CLI overrides.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from llmad.errors import LlmadError

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING,
           flag: str | None = None, cli: bool = True) -> Any:
    """A config field whose ``help`` is the one text shown by ``--help``, recipes docs and error messages.

    ``flag`` overrides the CLI flag name (default ``--`` + the field name with ``_`` -> ``-``; a bool gets
    ``--x/--no-x``): space-separated declarations, e.g. ``"--patience"``, ``"--model -m"`` or ``"--cache/--no-cache"``.
    ``cli=False`` marks a field that is set from recipes/API only (it then needs no CLI option).
    ``llmad.cli.options.config_options`` turns the fields into typer options.
    """
    meta = {"help": help, "flag": flag, "cli": cli}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def field_help(cls: type, name: str) -> str:
    """The help text of config field ``name`` of dataclass ``cls`` (empty when none was given)."""
    for f in fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


@dataclass
class DataConfig:
    """Which data, which split, which part: ``spec`` is e.g. ``flowbench:1000genome``."""

    spec: str = option("flowbench:1000genome", "dataset spec, e.g. flowbench:1000genome", flag="--data -d")
    data_dir: str | None = option(None, "data folder (default: $LLMAD_DATA_DIR, ./data, ../shared/data)")
    split: str = option("run", "run | paper (the paper's job-level split) | workflow (unseen workflow) | time | row "
                               "(jobs: tables without run ids)")
    seed: int = option(0, "seed of the split and of every seeded subsample")
    test_workflow: str | None = option(None, "unseen workflow for --split workflow")
    limit: int | None = option(None, "subsample each split part to N jobs (seeded; quick runs)")
    columns: str | None = option(None, "column map (YAML) of a jobs:<table> spec [<table>.llmad.yaml, else inferred]")


@dataclass
class TemplateConfig:
    """Which Jinja template renders a job: a name under ``prompts/job`` or a path."""

    name: str = option("paper", "job template: paper | compact | context | PATH.j2", flag="--template -t")
    causal: bool = option(False, "context template: peers finished before this job's event time only")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys fail loudly, nested dataclasses recurse."""
    data = dict(data or {})
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise LlmadError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; expected some of {sorted(known)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        tp = hints.get(name)
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            value = from_dict(tp, value, where=f"{where}.{name}")
        kwargs[name] = value
    return cls(**kwargs)


def merge(cfg: T, overrides: dict[str, Any]) -> T:
    """Return a copy of ``cfg`` with non-None ``overrides`` applied (CLI options win over the file)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    known = {f.name for f in fields(cfg)}
    unknown = sorted(set(clean) - known)
    if unknown:
        raise LlmadError(f"unknown option(s) {unknown} for {type(cfg).__name__}")
    return dataclasses.replace(cfg, **clean)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with a clear error for a missing file or bad syntax."""
    p = Path(path)
    if not p.is_file():
        raise LlmadError(f"file {p}: no such recipe/config file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise LlmadError(f"file {p}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise LlmadError(f"file {p}: expected a mapping at the top level")
    return data


__all__ = ["DataConfig", "TemplateConfig", "from_dict", "merge", "load_yaml", "field", "option", "field_help"]
_ = types  # keep import for typing.get_type_hints on PEP 604 unions
