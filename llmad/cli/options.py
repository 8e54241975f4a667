"""Typer options generated from config dataclass fields, so each option's help text lives once (in the field).

A config field written with :func:`llmad.config.option` carries its help, its flag and whether it is a CLI option::

    @app.command(cls=ConfigCommand)
    @config_options(DataConfig, into="data")
    @config_options("llmad.detectors.baselines:BaselineConfig", into="method")
    def baseline(data: dict, method: dict, out: Optional[str] = typer.Option(None, "--out")) -> None:
        run_baseline(merge(DataConfig(), data), merge(BaselineConfig(), method), out=out)

Each ``cli=True`` field becomes one option whose default is ``None``, so "not given" stays distinguishable from
"given the default" (a ``--config`` file or a recipe then keeps its value); the field's default is shown in
``--help``. The command receives ``{field: value}`` of the options actually given, ready for ``llmad.config.merge``.

A config named as ``"module:Class"`` is imported only when that command runs or shows its help
(:class:`ConfigCommand` builds its options on first use): most configs live beside torch / sklearn code, and
``llmad --help`` should not import those.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Union

import typer
from typer.core import TyperCommand, TyperGroup

from llmad.cli.vocabulary import DEPRECATED
from llmad.errors import warn

SPECS = "__llmad_config_specs__"


@dataclass
class ConfigBinding:
    """How one config class is bound to a command: the dict parameter and field -> python parameter name."""

    cls: type
    into: str
    params: dict[str, str] = field(default_factory=dict)  # field -> parameter name (the option's click name)
    excluded: tuple[str, ...] = ()
    converters: dict[str, Callable[[Any], Any]] = field(default_factory=dict)


@dataclass
class _Spec:
    """One ``config_options(...)`` call, kept until the command's options are built."""

    ref: type | str
    into: str
    prefix: str | None
    exclude: tuple[str, ...]
    flags: dict[str, str]
    short: dict[str, str]
    helps: dict[str, str]
    defaults: dict[str, Any]
    panel: str | None

    def config_class(self) -> type:
        """The config dataclass (imported now when given as ``"module:Class"``), its option names checked."""
        cls = self.ref
        if isinstance(cls, str):
            module, _, name = cls.partition(":")
            cls = getattr(importlib.import_module(module), name)
        named = set(self.exclude) | set(self.flags) | set(self.short) | set(self.helps) | set(self.defaults)
        unknown = named - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"config_options({cls.__name__}): no field(s) {sorted(unknown)}")
        return cls


def cli_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of config dataclass ``cls`` that are CLI options (``cli`` metadata true or absent)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]


def flag_decls(f: dataclasses.Field, tp: Any, prefix: str | None = None, override: str | None = None) -> list[str]:
    """typer declarations of field ``f`` (resolved type ``tp``): ``override``, its ``flag`` metadata, or its name."""
    spec = override or f.metadata.get("flag")
    if spec:
        return spec.replace(",", " ").split()
    name = (f"{prefix}_{f.name}" if prefix else f.name).replace("_", "-")
    return [f"--{name}/--no-{name}" if _base_type(tp) is bool else f"--{name}"]


def _base_type(tp: Any) -> Any:
    """``X`` of ``X | None`` / ``Optional[X]``; ``tp`` otherwise."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _cli_type(tp: Any) -> tuple[Any, Callable[[Any], Any] | None]:
    """(typer-readable type, converter to the field's value) or (None, None) when the CLI cannot express it."""
    base = _base_type(tp)
    if base in (str, int, float, bool):
        return base, None
    if typing.get_origin(base) in (list, tuple) and set(typing.get_args(base)) <= {str, Ellipsis}:
        # A list of strings is given as one comma-separated value (``--test-types cpu,memory``).
        kind = typing.get_origin(base)
        return str, lambda s: kind(t.strip() for t in s.split(",") if t.strip())
    return None, None


def _help_text(f: dataclasses.Field, decls: list[str], extra: str, default: Any) -> str | None:
    """The field's help (+ ``extra``) and ``[default: ...]``, escaped for typer's rich markup (``[x]`` is a tag)."""
    text = " ".join(t for t in (f.metadata.get("help", ""), extra) if t)
    shown = _default_text(default, decls)
    if shown is not None:
        text = f"{text} [default: {shown}]".strip()
    if not text:
        return None
    if getattr(typer.core, "DEFAULT_MARKUP_MODE", None) == "rich":
        from rich.markup import escape

        text = escape(text)
    return text


def _default_text(default: Any, decls: list[str]) -> str | None:
    """A default as ``--help`` shows it (a ``--x/--no-x`` bool: the flag that is on); None when not worth showing."""
    if default is dataclasses.MISSING or default is None:
        return None
    if isinstance(default, bool):
        if "/" not in decls[0]:
            return None  # a single flag is off unless given
        on, off = decls[0].split("/", 1)
        return (on if default else off).lstrip("-")
    if isinstance(default, (list, tuple)):
        return ",".join(map(str, default))
    return str(default)


def _primary(decls: Iterable[str]) -> str:
    """The long flag a declaration list stands for (``--x`` of ``--x/--no-x``)."""
    return next(iter(decls)).split("/", 1)[0]


def _off(value: bool) -> bool:
    """A single off-switch flag (``--no-cache`` for ``use_cache``): given means the field is False."""
    return not value


@dataclass
class _Resolved:
    signature: inspect.Signature
    bindings: list[ConfigBinding]
    generated: set[str]


def _resolve(wrapper: Callable) -> _Resolved:
    """Build the command's full signature: its own parameters, each ``into`` dict replaced by its config's options.

    Configs are taken innermost decorator first; a field whose parameter name or primary flag is already taken
    (by the command itself or an earlier config) shares that parameter: its value goes into both dicts.
    """
    cached = getattr(wrapper, "__llmad_resolved__", None)
    if cached is not None:
        return cached
    base = wrapper.__llmad_base__
    specs: list[_Spec] = getattr(wrapper, SPECS)
    sig = inspect.signature(base)
    hints = typing.get_type_hints(base)
    intos = {s.into for s in specs}
    own = [n for n in sig.parameters if n not in intos]
    by_flag: dict[str, str] = {}
    for name in own:
        default = sig.parameters[name].default
        if isinstance(default, typer.models.OptionInfo):
            decls = [d for d in (default.param_decls or ()) if d.startswith("--")]
            by_flag[_primary(decls) if decls else "--" + name.replace("_", "-")] = name
    taken = set(own)
    generated: dict[str, list[inspect.Parameter]] = {s.into: [] for s in specs}
    bindings = []
    for spec in specs:
        cls = spec.config_class()
        fhints = typing.get_type_hints(cls)
        binding = ConfigBinding(cls, spec.into, excluded=spec.exclude)
        for f in cli_fields(cls):
            tp, conv = _cli_type(fhints[f.name])
            if f.name in spec.exclude or tp is None:
                continue  # not offered here, or not one option (a dict): tests/cli/test_options.py reports it
            decls = flag_decls(f, fhints[f.name], spec.prefix, spec.flags.get(f.name))
            if f.name in spec.short:
                decls.append(spec.short[f.name])
            default = spec.defaults.get(f.name, f.default)
            if tp is bool and "/" not in decls[0] and default is True:
                conv = _off  # --no-cache / --quiet: given means False
            if conv is not None:
                binding.converters[f.name] = conv
            pname = f"{spec.prefix}_{f.name}" if spec.prefix else f.name
            if pname not in taken:
                if _primary(decls) in by_flag:
                    pname = by_flag[_primary(decls)]
                else:
                    # The default is part of the help text: the option's own default is None ("not given").
                    info = typer.Option(None, *decls, help=_help_text(f, decls, spec.helps.get(f.name, ""), default),
                                        show_default=False, rich_help_panel=spec.panel)
                    generated[spec.into].append(inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY,
                                                                  default=info, annotation=Optional[tp]))
                    by_flag[_primary(decls)] = pname
                    taken.add(pname)
            binding.params[f.name] = pname
        bindings.append(binding)
    params = []
    for name, p in sig.parameters.items():
        if name in intos:
            params.extend(generated[name])  # the options take the place of the dict parameter
        else:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(name, p.annotation)))
    res = _Resolved(inspect.Signature(params), bindings, {p.name for ps in generated.values() for p in ps})
    wrapper.__llmad_resolved__ = res
    return res


def _stub_signature(base: Callable, intos: set[str]) -> inspect.Signature:
    """The command's own parameters only (what typer sees before :class:`ConfigCommand` builds the options)."""
    sig = inspect.signature(base)
    hints = typing.get_type_hints(base)
    return inspect.Signature([p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(n, p.annotation))
                              for n, p in sig.parameters.items() if n not in intos])


def _publish(wrapper: Callable, sig: inspect.Signature) -> None:
    wrapper.__signature__ = sig  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in sig.parameters.values()}


def config_options(cls: type | str, into: str, *, prefix: str | None = None, exclude: Iterable[str] = (),
                   flags: dict[str, str] | None = None, short: dict[str, str] | None = None,
                   helps: dict[str, str] | None = None, defaults: dict[str, Any] | None = None,
                   panel: str | None = None) -> Callable[[Callable], Callable]:
    """Decorator: one typer option per ``cli=True`` field of ``cls``; the command gets ``into={field: value}``.

    ``cls``: the config dataclass, or ``"module:Class"`` to import it only when the command is used (register the
    command with ``@app.command(cls=ConfigCommand)`` then). Per command: ``exclude`` fields it does not offer
    (tests/cli/test_options.py lists them with the reason); ``flags`` replaces a field's declarations, ``short``
    adds a short form (``{"model": "-m"}``); ``helps`` appends to a field's help; ``defaults`` are the defaults
    this command's base config uses, for ``--help`` only; ``prefix`` names options ``--PREFIX-field`` (a second
    config with clashing names); ``panel``: a rich help panel.

    A field whose parameter name or flag is already declared (by the command or another decorated config) shares
    that parameter. A single-flag bool (no ``--x/--no-x``) whose field defaults to True turns the field off
    (``--no-cache``, ``--quiet``).
    """
    spec = _Spec(cls, into, prefix, tuple(exclude), dict(flags or {}), dict(short or {}), dict(helps or {}),
                 dict(defaults or {}), panel)
    if not isinstance(cls, str):
        spec.config_class()  # wrong field names fail at import, not at first use

    def decorate(fn: Callable) -> Callable:
        if _config_wrapper(fn) is fn:
            wrapper = fn  # stacked: one wrapper holds every config
        else:
            @functools.wraps(fn)
            def wrapper(**kwargs: Any) -> Any:
                res = _resolve(wrapper)
                values = {name: kwargs.pop(name, None) for name in res.generated}
                values.update({n: kwargs[n] for n in kwargs})
                for b in res.bindings:
                    given = {}
                    for fname, pname in b.params.items():
                        value = values.get(pname)
                        if value is not None:
                            given[fname] = b.converters[fname](value) if fname in b.converters else value
                    kwargs[b.into] = given
                return fn(**kwargs)

            wrapper.__llmad_base__ = fn  # type: ignore[attr-defined]
            wrapper.__llmad_self__ = wrapper  # type: ignore[attr-defined]
            setattr(wrapper, SPECS, [])
            del wrapper.__wrapped__  # typer must read the generated signature, not the original one
        if into not in inspect.signature(wrapper.__llmad_base__).parameters:
            raise TypeError(f"{fn.__name__} has no parameter {into!r} for the options of {cls}")
        getattr(wrapper, SPECS).append(spec)
        wrapper.__llmad_resolved__ = None
        specs = getattr(wrapper, SPECS)
        if any(isinstance(s.ref, str) for s in specs):
            _publish(wrapper, _stub_signature(wrapper.__llmad_base__, {s.into for s in specs}))
        else:
            _publish(wrapper, _resolve(wrapper).signature)
        return wrapper

    return decorate


def command_path(ctx: Any) -> str:
    """The command's path below ``llmad`` (``data info``), from the click context chain."""
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(reversed(names))


def rewrite_deprecated(path: str, args: list[str]) -> list[str]:
    """``args`` with the old spellings of ``path``'s flags (``llmad.cli.vocabulary.DEPRECATED``) replaced, each
    named once in a ``warning [deprecated-flag]`` (``llmad.errors.warn``)."""
    old_new = DEPRECATED.get(path, {})
    out, warned = [], set()
    for i, a in enumerate(args):
        if a == "--":
            out.extend(args[i:])
            break
        flag, eq, value = a.partition("=")
        if flag in old_new:
            a = old_new[flag] + eq + value
            if flag not in warned:
                warned.add(flag)
                warn("deprecated-flag", f"{flag} is now {old_new[flag]}")
        out.append(a)
    return out


def _hint_extra(ctx: Any, cmd: Any, args: list[str], error: Exception) -> Exception:
    """A "did you mean --data SPEC?" hint for a dataset spec given where the command wants ``--data``."""
    opts = {o for p in cmd.get_params(ctx) for o in getattr(p, "opts", ())}
    spec = next((a for a in args if not a.startswith("-") and ":" in a and a in str(error)), None)
    if spec is None or "--data" not in opts:
        return error
    return type(error)(f"{error.message}; did you mean --data {spec}?", ctx=ctx)


def _plain_flags(params: list) -> list:
    """Flags show no type in ``--help`` (typer would print ``--help <bool>``)."""
    for p in params:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""
    return params


def model_folder(model: str) -> str:
    """``--model``: a run folder whose ``model/`` holds the saved detector means that ``model/`` (said on stderr)."""
    from pathlib import Path

    p = Path(model)
    if p.is_dir() and not (p / "detector.json").is_file() and (p / "model" / "detector.json").is_file():
        typer.echo(f"note: --model {model} is a run folder; using its saved detector {p / 'model'}", err=True)
        return str(p / "model")
    return model


class LlmadCommand(TyperCommand):
    """A typer command that accepts the old spelling of a renamed flag (with a warning), hints at ``--data`` for
    a stray dataset argument and shows flags without a ``<bool>`` type in its help."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Rewrite deprecated flags, then parse; an unexpected extra argument that is a spec gets a hint."""
        args = rewrite_deprecated(command_path(ctx), list(args))
        try:
            return super().parse_args(ctx, list(args))  # click's parser consumes the list it is given
        except Exception as e:
            if "unexpected extra argument" in str(getattr(e, "message", "")):
                raise _hint_extra(ctx, self, args, e) from None
            raise

    def get_params(self, ctx: Any) -> list:
        """Every parameter (flags shown without a type)."""
        return _plain_flags(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """The usage line with arguments as ``RECIPE`` / ``[DATASET]`` (typer would write ``{recipe}``)."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if p.param_type_name != "argument":
                pieces.extend(p.get_usage_pieces(ctx))
                continue
            name = (p.metavar or p.name).upper() + ("..." if p.nargs != 1 else "")
            pieces.append(name if p.required else f"[{name}]")
        return pieces


class LlmadGroup(TyperGroup):
    """The ``llmad`` group (and its sub-groups): flags shown without a ``<bool>`` type in ``--help``."""

    def get_params(self, ctx: Any) -> list:
        """Every parameter (flags shown without a type)."""
        return _plain_flags(super().get_params(ctx))


class ConfigCommand(LlmadCommand):
    """A typer command whose config options are built on first use (parsing or ``--help``), not at start-up."""

    _loaded = False

    def load(self) -> None:
        """Import the command's config classes and take the options (and the callback) built from them."""
        if self._loaded:
            return
        self._loaded = True
        fn = _config_wrapper(self.callback)
        if fn is None:
            return
        _publish(fn, _resolve(fn).signature)
        from typer.main import get_command_from_info
        from typer.models import CommandInfo

        real = get_command_from_info(CommandInfo(name=self.name, callback=fn), pretty_exceptions_short=True,
                                     rich_markup_mode=self.rich_markup_mode)
        self.params, self.callback = real.params, real.callback

    def get_params(self, ctx: Any) -> list:
        """Every parameter, the generated options included."""
        self.load()
        return super().get_params(ctx)


def bindings(command: Callable) -> list[ConfigBinding]:
    """The config classes bound to a command callback by :func:`config_options` (innermost decorator first)."""
    fn = _config_wrapper(command)
    return _resolve(fn).bindings if fn is not None else []


def _config_wrapper(fn: Any) -> Callable | None:
    """The :func:`config_options` wrapper behind ``fn`` (typer's own wrapper copies its ``__dict__``, so the
    wrapper keeps a reference to itself)."""
    return getattr(fn, "__llmad_self__", None)


__all__ = ["config_options", "ConfigCommand", "LlmadCommand", "LlmadGroup", "rewrite_deprecated", "command_path",
           "model_folder", "ConfigBinding", "cli_fields", "flag_decls", "bindings"]
