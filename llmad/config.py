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
    data_dir: str | None = option(None, "data folder (default: $LLMAD_DATA_DIR, ./data, the checkout's data/, "
                                        "../shared/data)")
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


def _key(where: str, name: str) -> str:
    """``file: a.b`` key paths: the first key after a file name follows ``: ``, the rest ``.``."""
    return f"{where}.{name}" if ": " in where else f"{where}: {name}"


_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}


def _describe(tp: Any) -> str:
    """``tp`` in words for an error message (``a string``, ``a list of integers``, ``a string or null``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in _WORDS:
        return _WORDS[tp]
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict or tp is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _got(value: Any) -> str:
    text = repr(value)
    return f"got {type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def check_value(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against type hint ``tp`` (an int passes as a float; a list becomes a tuple where the hint
    wants one).

    The one type check of every config class (recipes, ``--config`` files, saved detectors): a wrong type is one
    ``LlmadError`` naming the key path, before any work is spent.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        for a in args:
            try:
                return check_value(value, a, where)
            except LlmadError:
                continue
        raise LlmadError(f"{where}: expected {_describe(tp)}, {_got(value)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return from_dict(tp, value, where=where)
        raise LlmadError(f"{where}: expected a mapping, {_got(value)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise LlmadError(f"{where}: expected one of {list(args)}, {_got(value)}")
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str),
          type(None): lambda v: v is None}.get(tp)
    if ok is not None:
        if not ok(value):
            raise LlmadError(f"{where}: expected {_describe(tp)}, {_got(value)}")
        return value  # an int stays an int in a float field: run hashes of existing recipes stay the same
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise LlmadError(f"{where}: expected {_describe(tp)}, {_got(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise LlmadError(f"{where}: expected {len(args)} items, {_got(value)}")
            return tuple(check_value(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        items = [check_value(v, args[0], f"{where}[{i}]") if args else v for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise LlmadError(f"{where}: expected a mapping, {_got(value)}")
        if len(args) == 2:
            return {check_value(k, args[0], where): check_value(v, args[1], _key(where, str(k)))
                    for k, v in value.items()}
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong value types fail loudly, naming the key path."""
    if data is not None and not isinstance(data, dict):
        raise LlmadError(f"{where}: expected a mapping, {_got(data)}")
    data = dict(data or {})
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known), key=str)
    if unknown:
        raise LlmadError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; expected some of {sorted(known)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: check_value(value, hints.get(name, Any), _key(where, name)) for name, value in data.items()}
    return cls(**kwargs)


def merge(cfg: T, overrides: dict[str, Any]) -> T:
    """Return a copy of ``cfg`` with non-None ``overrides`` applied (CLI options win over the file)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    known = {f.name for f in fields(cfg)}
    unknown = sorted(set(clean) - known)
    if unknown:
        raise LlmadError(f"unknown option(s) {unknown} for {type(cfg).__name__}")
    return dataclasses.replace(cfg, **clean)


# A YAML file may expand (aliases counted each time they are used) to at most this many nodes: a real recipe
# is a few hundred; an alias bomb ("billion laughs") is billions and would hang whatever walks the result.
MAX_YAML_NODES = 100_000
MAX_YAML_BYTES = 10_000_000


def _expanded_nodes(node: yaml.Node, memo: dict[int, int], limit: int) -> int:
    """Node count of ``node`` with every alias expanded, memoised per node so a bomb is counted, not built."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = limit + 1  # a cycle (recursive alias) counts as too big
    total = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            total += _expanded_nodes(child, memo, limit)
            if total > limit:
                break
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            total += _expanded_nodes(k, memo, limit) + _expanded_nodes(v, memo, limit)
            if total > limit:
                break
    memo[key] = total
    return total


def parse_yaml(text: str, where: str, max_nodes: int = MAX_YAML_NODES) -> Any:
    """Parse YAML text safely and boundedly: the node graph is composed first and its alias-expanded size capped."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return None
        if _expanded_nodes(node, {}, max_nodes) > max_nodes:
            raise LlmadError(f"{where}: YAML expands to more than {max_nodes:,} values (aliases repeated, or "
                             f"recursive); refusing to load it")
        loader = yaml.SafeLoader("")
        try:
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise LlmadError(f"{where}: invalid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise LlmadError(f"{where}: YAML nested too deeply; refusing to load it") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (recipe or ``--config`` file): missing, too big, non-UTF-8, bad syntax or an alias bomb
    is one clear error naming the file."""
    p = Path(path)
    if not p.is_file():
        raise LlmadError(f"file {p}: no such recipe/config file")
    if p.stat().st_size > MAX_YAML_BYTES:
        raise LlmadError(f"file {p}: {p.stat().st_size:,} bytes is too big for a recipe/config file")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = p.read_bytes()[:e.start].count(b"\n") + 1
        raise LlmadError(f"file {p}, line {line}: not UTF-8 text (byte {e.object[e.start]:#04x}); save it as UTF-8")
    data = parse_yaml(text, f"file {p}")
    if not isinstance(data, dict):
        raise LlmadError(f"file {p}: expected a mapping at the top level")
    return data


__all__ = ["DataConfig", "TemplateConfig", "from_dict", "check_value", "merge", "load_yaml", "parse_yaml", "field",
           "option", "field_help"]
