"""Sandboxed Jinja rendering of jobs and prompts. Templates are files (``prompts/`` or a user path).

Field values are passed as *data* in the render context: Jinja never evaluates the content of a variable,
so a log field holding ``{{ ... }}`` or an instruction-like string comes out literally. The sandbox stops a
user template from reaching Python internals.
"""
from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from llmad.data.flowbench import PAPER_FEATURES
from llmad.data.paper import pyfloat
from llmad.errors import LlmadError

# Bounds of what a template may build: one string/list value, and one rendered text (a job sentence is ~300
# characters, an ICL prompt with many demonstrations a few tens of thousands). Jinja's own sandbox bounds range().
MAX_VALUE_CHARS = 1_000_000
MAX_RENDER_CHARS = 2_000_000
MAX_POWER_BITS = 100_000


def prompts_dir() -> Path:
    """The built-in templates: ``llmad/prompts`` in an installed wheel, the top-level ``prompts/`` in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "prompts", here.parent / "prompts"):
        if (candidate / "job").is_dir():
            return candidate
    raise LlmadError(f"built-in templates not found (looked in {here / 'prompts'} and {here.parent / 'prompts'}); "
                     "reinstall llmad")


PROMPTS_DIR = prompts_dir()


def compact_num(v: Any) -> str:
    """Few-token numbers for WordPiece: integers without ``.0``, 3 significant digits, k/M/G for large values."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "na"
    a = abs(f)
    if a >= 1e4:
        div, suf = (1e9, "g") if a >= 1e9 else (1e6, "m") if a >= 1e6 else (1e3, "k")
        return f"{f / div:.3g}{suf}"
    if a >= 100 or f == int(f):
        return str(int(round(f)))
    return f"{f:.3g}"


def ratio(v: Any) -> str:
    """A relative value as a short string (``1.03x``), ``na`` when missing.

    Two decimals below 10: the anomalies Flow-Bench injects (CPU / disk contention on a node) often move a host's
    or a job's ratio by a few percent (montage: median host slowness 1.03 for anomalous jobs vs 1.00), and one
    decimal rounded that away (ROC-AUC of montage's host slowness 0.69 raw, 0.65 at one decimal, 0.69 at two).
    Same WordPiece token count as one decimal ("1", ".", "03", "##x").
    """
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "na"
    if math.isnan(f) or math.isinf(f):
        return "na"
    return f"{f:.2f}x" if f < 10 else f"{f:.0f}x"


def isnan(v: Any) -> bool:
    """True for missing values (None/NaN)."""
    try:
        return v is None or math.isnan(float(v))
    except (TypeError, ValueError):
        return False


class ConfinedLoader(FileSystemLoader):
    """A template, and whatever it includes, must be a file inside one of the search folders *after* resolving
    symlinks: ``{% include 'link' %}`` with ``link -> /etc/passwd`` is refused (Jinja itself only refuses ``..``)."""

    def get_source(self, environment, template):
        """The source of ``template``, refused when its real path leaves every search folder."""
        source, filename, uptodate = super().get_source(environment, template)
        real = Path(filename).resolve()
        roots = [Path(d).resolve() for d in self.searchpath]
        if not any(real.is_relative_to(r) for r in roots):
            raise LlmadError(f"template {template!r} resolves to {real}, outside the template folder "
                             f"{roots[-1]}; includes must stay inside it (symlinks leaving it are refused)")
        return source, filename, uptodate


def _too_big(n: int) -> LlmadError:
    return LlmadError(f"builds a value of {n:,} characters or items; the limit is {MAX_VALUE_CHARS:,}")


def _size(v: Any) -> int:
    return len(v) if isinstance(v, (str, bytes, list, tuple)) else 0


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with ``*``, ``+``, ``**`` and ``%`` bounded so ``'x' * 10**8`` is refused before it
    is built, and method/filter calls refused an integer argument above the value bound (``'x'.ljust(10**8)``)."""

    intercepted_binops = frozenset({"*", "+", "**", "%"})

    def call_binop(self, context, operator, left, right):
        """Apply ``left OPERATOR right`` unless the result would pass the size bounds."""
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if _size(seq) and isinstance(n, int) and _size(seq) * max(n, 0) > MAX_VALUE_CHARS:
                    raise _too_big(_size(seq) * n)
        elif operator == "+" and _size(left) + _size(right) > MAX_VALUE_CHARS:
            raise _too_big(_size(left) + _size(right))
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            if abs(left) > 1 and abs(left).bit_length() * right > MAX_POWER_BITS:
                raise LlmadError(f"computes {left}**{right}, a number too large to render")
        result = super().call_binop(context, operator, left, right)
        if _size(result) > MAX_VALUE_CHARS:
            raise _too_big(_size(result))
        return result

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja's own signature
        """Call ``__obj`` unless an integer argument asks for more than the value bound (padding, repeats)."""
        for a in (*args, *kwargs.values()):
            if isinstance(a, int) and not isinstance(a, bool) and a > MAX_VALUE_CHARS:
                raise _too_big(a)
        result = super().call(__context, __obj, *args, **kwargs)
        if _size(result) > MAX_VALUE_CHARS:
            raise _too_big(_size(result))
        return result


@lru_cache(maxsize=16)
def _env(extra_dir: str | None) -> ImmutableSandboxedEnvironment:
    dirs = [str(PROMPTS_DIR)] + ([extra_dir] if extra_dir else [])
    env = BoundedSandbox(loader=ConfinedLoader(dirs, followlinks=False), undefined=StrictUndefined,
                                        autoescape=False, keep_trailing_newline=False,
                                        trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pyfloat=pyfloat, num=compact_num, ratio=ratio)
    env.tests["nan"] = isnan
    return env


def resolve_template(name: str, kind: str = "job") -> tuple[str, str | None]:
    """(template name for the loader, extra search dir): a built-in name under prompts/<kind> or a file path."""
    p = Path(name).expanduser()
    if p.suffix in (".j2", ".jinja", ".txt") or p.exists():
        if not p.is_file():
            raise LlmadError(f"template file {p} does not exist")
        return p.name, str(p.resolve().parent)
    builtin = PROMPTS_DIR / kind / f"{name}.j2"
    if not builtin.is_file():
        known = sorted(q.stem for q in (PROMPTS_DIR / kind).glob("*.j2"))
        raise LlmadError(f"unknown {kind} template {name!r}; built-in: {', '.join(known)}, or pass a .j2 file path")
    return f"{kind}/{name}.j2", None


def get_template(name: str, kind: str = "job"):
    """Load a sandboxed template by built-in name or path."""
    tname, extra = resolve_template(name, kind)
    try:
        return _env(extra).get_template(tname)
    except TemplateSyntaxError as e:
        raise LlmadError(f"template {e.filename or name}, line {e.lineno}: {e.message}") from None
    except TemplateNotFound:
        raise LlmadError(f"template {name!r} not found") from None


def template_hash(name: str, kind: str = "job") -> str:
    """sha256 of the template source (for provenance)."""
    tname, extra = resolve_template(name, kind)
    src, _, _ = _env(extra).loader.get_source(_env(extra), tname)
    return hashlib.sha256(src.encode()).hexdigest()[:16]


def bounded_render(tpl, name: str, **context: Any) -> str:
    """Render ``tpl`` chunk by chunk, stopping once the text passes ``MAX_RENDER_CHARS`` (a loop that prints a
    large value many times); every failure (undefined variable, sandbox refusal) is one ``LlmadError``."""
    parts, total = [], 0
    try:
        for chunk in tpl.generate(**context):
            total += len(chunk)
            if total > MAX_RENDER_CHARS:
                raise LlmadError(f"template {name!r}: one rendered text passes {MAX_RENDER_CHARS:,} characters; "
                                 f"refusing it")
            parts.append(chunk)
    except LlmadError as e:
        msg = str(e)
        raise LlmadError(msg if msg.startswith("template") else f"template {name!r}: {msg}") from None
    except SecurityError as e:
        raise LlmadError(f"template {name!r}: refused by the sandbox: {e}") from None
    except Exception as e:  # undefined variables, type errors in the template
        raise LlmadError(f"template {name!r}: {type(e).__name__}: {e}") from None
    return "".join(parts)


def render_file(name: str, kind: str = "icl", **context: Any) -> str:
    """Render any prompt template (``prompts/<kind>/<name>.j2`` or a path) with ``context`` as data."""
    return bounded_render(get_template(name, kind), name, **context)


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return df.to_dict(orient="records")


def render_jobs(jobs: pd.DataFrame, template: str = "paper", causal: bool = False,
                features: Sequence[str] | None = None) -> list[str]:
    """Render each job row to a sentence with a job template (``paper``, ``compact``, ``context`` or a path);
    ``features`` default: the table's own (a ``jobs:`` map), else the nine Flow-Bench features."""
    from llmad.data.jobs import job_features

    features = job_features(jobs) if features is None else features
    tpl = get_template(template, "job")
    frame = jobs
    if reads_context(template):
        from llmad.data.context import add_context_features

        if not any(c.startswith("ctx_") for c in jobs.columns):
            frame = add_context_features(jobs, causal=causal)
    feats = list(features)
    return [bounded_render(tpl, template, job=rec, features=feats) for rec in _records(frame)]


@lru_cache(maxsize=32)
def template_source(name: str) -> str:
    """The Jinja source of job template ``name`` (a name under prompts/job or a .j2 path)."""
    tname, extra = resolve_template(name, "job")
    return _env(extra).loader.get_source(_env(extra), tname)[0]


def reads_context(template: str) -> bool:
    """Whether a job template reads the ``ctx_*`` peer features (then they must be computed before rendering)."""
    return template == "context" or "ctx_" in template_source(template)


def render_one(job: dict[str, Any], template: str = "paper", features: Iterable[str] = PAPER_FEATURES) -> str:
    """Render a single job mapping (context columns must already be present for ``context``)."""
    return bounded_render(get_template(template, "job"), template, job=dict(job), features=list(features))


def token_counts(texts: Sequence[str], tokenizer) -> np.ndarray:
    """Tokens per text under ``tokenizer`` (special tokens included)."""
    enc = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    return np.array([len(e) for e in enc])
