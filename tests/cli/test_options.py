"""CLI options come from the config dataclasses (``llmad.cli.options.config_options``): each help text lives once.

For every command and config class: every ``cli=True`` field has an option, and every option maps to a field or
is one of the command's few documented command-only options. Adding a config field without an option (or an
option without a field) fails here.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from llmad.api.adapt import AdaptConfig
from llmad.api.icl import ICLRun
from llmad.api.nll import NLLRunConfig
from llmad.api.numeric import NumericConfig
from llmad.api.transfer import TransferConfig
from llmad.api.sft import SFTRunConfig
from llmad.cli import app
from llmad.cli.options import ConfigCommand, bindings, cli_fields, config_options
from llmad.cli.vocabulary import DEPRECATED
from llmad.config import DataConfig, TemplateConfig, option
from llmad.detectors.baselines import BaselineConfig
from llmad.detectors.icl.config import ICLConfig
from llmad.detectors.nll.config import NLLConfig
from llmad.detectors.sft.config import SFTConfig
from llmad.rundir import RunOptions
from llmad.stream.config import StreamConfig

# command -> the config classes whose fields are its options
COMMANDS = {
    "baseline": {DataConfig, BaselineConfig, RunOptions},
    "render": {DataConfig, TemplateConfig},
    "sft": {SFTConfig, DataConfig, SFTRunConfig, RunOptions},
    "predict": {RunOptions},
    "icl": {ICLConfig, ICLRun, RunOptions},
    "nll": {NLLConfig, DataConfig, NLLRunConfig, RunOptions},
    "replay": {StreamConfig, RunOptions},
    "watch": {StreamConfig},
    "numeric": {NumericConfig, RunOptions},
    "adapt": {AdaptConfig, RunOptions},
    "transfer": {TransferConfig, RunOptions},
    "compare": {RunOptions},
    "pretrain moment": {RunOptions},
}
# cli=True fields a command deliberately does not offer, and why
EXCLUDED = {
    ("watch", "StreamConfig", "reveal"): "a live feed reveals what its records carry",
    ("watch", "StreamConfig", "speed"): "a live feed runs in real time",
    ("watch", "StreamConfig", "batch"): "watch batches by --batch-lines",
    ("watch", "StreamConfig", "workers"): "watch scores one batch at a time",
    ("adapt", "AdaptConfig", "out"): "the shared --out of RunOptions",
    ("nll", "DataConfig", "limit"): "--limit is the test sample (NLLRunConfig.test_limit); train: --train-limit",
}
# Options that belong to the command, not to a config (where outputs go, how to print, which stored model ...).
COMMAND_ONLY = {
    "baseline": set(),
    "render": {"dataset", "part", "out"},
    "sft": {"config"},
    "icl": set(),
    "nll": set(),
    "replay": {"model", "data", "data_dir", "split", "part", "test_workflow", "seed", "limit", "train_limit",
               "val_limit", "columns"},
    "predict": {"model", "data", "data_dir", "split", "part", "test_workflow", "seed", "limit", "quantize", "columns"},
    "compare": {"recipe", "resume", "set_"},
    "pretrain moment": {"data", "seq_len", "d_model", "layers", "heads", "steps", "batch_size", "lr", "mask_ratio",
                        "max_windows", "seed", "data_dir"},
    "watch": {"path", "model", "alerts", "state", "fmt", "follow", "poll", "idle_exit", "batch_lines", "max_runs",
              "checkpoint_s", "columns"},
    "numeric": set(),
    "adapt": set(),
    "transfer": set(),
}
# Commands without a config class: all their options are their own.
NO_CONFIG = {"windows-text", "data info", "data list", "data fetch", "data import"}

# Every flag of every command before options were generated (flags must keep their names and short forms; a flag
# renamed on purpose keeps working as a deprecated alias, llmad.cli.vocabulary.DEPRECATED).
FLAGS_BEFORE = {
    'baseline': ['--causal', '--data', '--data-dir', '--features', '--limit', '--method', '--no-causal', '--out',
                 '--seed', '--split', '--test-workflow'],
    'compare': ['--out', '--quiet', '--resume', '--set', '-o', '-q', '-s'],
    'data fetch': ['--base-url', '--data-dir', '--manifest', '--timeout'],
    'data info': ['--data-dir', '--json'],
    'data list': ['--data-dir'],
    'icl': ['--batch-size', '--calibrate', '--data', '--data-dir', '--limit', '--load-in-4bit', '--lora', '--lr',
            '--max-new-tokens', '--max-prompt-tokens', '--mode', '--model', '--no-cache', '--no-stats', '--order',
            '--out', '--seed', '--select', '--shots', '--split', '--stats', '--template', '--test-workflow',
            '--threshold', '--train-demos', '--train-examples', '--train-shots', '--train-steps',
            '--trust-remote-code', '--val-limit', '-d', '-k', '-m', '-o', '-t'],
    'numeric': ['--data', '--data-dir', '--finetune', '--limit-series', '--max-steps', '--method', '--model', '--out',
                '--seed', '--shots', '--split', '--stride', '--test-types', '--threshold', '--view', '--window'],
    'predict': ['--data', '--data-dir', '--int8', '--limit', '--model', '--out', '--part', '--seed', '--split',
                '--test-workflow', '-d', '-m', '-o'],
    'pretrain moment': ['--batch-size', '--d-model', '--data', '--data-dir', '--heads', '--layers', '--lr',
                        '--mask-ratio', '--max-windows', '--out', '--seed', '--seq-len', '--steps'],
    'render': ['--causal', '--data-dir', '--n', '--no-causal', '--out', '--part', '--seed', '--split', '--template',
               '--test-workflow', '-o', '-t'],
    'replay': ['--alert', '--backend', '--batch', '--data', '--data-dir', '--k', '--model', '--n', '--out', '--part',
               '--quantize', '--quiet', '--reveal', '--runs', '--seed', '--speed', '--split', '--test-workflow',
               '--threshold', '--train-runs', '--val-runs', '--workers', '-d', '-m', '-q'],
    'sft': ['--batch-size', '--class-weight', '--config', '--data', '--data-dir', '--epochs', '--eval-steps',
            '--freeze', '--init-from', '--keep-checkpoints', '--limit', '--lora', '--lr', '--max-length',
            '--max-steps', '--max-time', '--model', '--no-prefix-augment', '--out', '--patience', '--precision',
            '--prefix-augment', '--quiet', '--resume', '--seed', '--split', '--template', '--test-workflow',
            '--threshold', '--train-limit', '--trust-remote-code', '-d', '-m', '-o', '-q', '-t'],
    'watch': ['--alert', '--alerts', '--backend', '--batch-lines', '--checkpoint-s', '--follow', '--format',
              '--idle-exit', '--k', '--max-runs', '--model', '--n', '--no-follow', '--poll', '--quantize', '--state',
              '--threshold', '-m'],
    'windows-text': ['--data', '--data-dir', '--limit', '--out', '--part', '--seed', '--split', '--stride',
                     '--template', '--view', '--window'],
}


def _commands(typer_app: typer.Typer = app, prefix: str = "") -> dict[str, typing.Callable]:
    """Command path -> the callback as registered (decorated), over the app and its sub-apps."""
    out = {}
    for c in typer_app.registered_commands:
        out[prefix + (c.name or c.callback.__name__.replace("_", "-"))] = c.callback
    for g in typer_app.registered_groups:
        out.update(_commands(g.typer_instance, prefix + g.name + " "))
    return out


def _click(path: str):
    """The click command of ``path`` with its generated options built (ConfigCommand builds them on first use)."""
    cmd = get_command(app)
    for part in path.split():
        cmd = cmd.commands[part]
    if isinstance(cmd, ConfigCommand):
        cmd.load()
    return cmd


def _option_fields(cls: type) -> list[dataclasses.Field]:
    """cli=True fields that are options (a nested config such as SFTRunConfig.sft is a section, not an option)."""
    hints = typing.get_type_hints(cls)
    return [f for f in cli_fields(cls) if not dataclasses.is_dataclass(hints[f.name])]


def test_every_command_is_classified():
    assert set(_commands()) == set(COMMANDS) | NO_CONFIG


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_config_fields_and_options_match(name):
    callback = _commands()[name]
    bound = bindings(callback)
    assert {b.cls for b in bound} == COMMANDS[name], f"{name}: decorate it with config_options(...) per config"
    params = {p.name: p for p in _click(name).params}
    from_fields: set[str] = set()
    for b in bound:
        for f in _option_fields(b.cls):
            key = (name, b.cls.__name__, f.name)
            if key in EXCLUDED:
                assert f.name not in b.params, f"{key} is listed as excluded but has an option"
                continue
            assert f.name in b.params, f"{name}: config field {b.cls.__name__}.{f.name} has no CLI option"
            assert b.params[f.name] in params, f"{name}: option for {b.cls.__name__}.{f.name} missing"
            from_fields.add(b.params[f.name])
    stray = set(params) - from_fields - COMMAND_ONLY[name] - {"help"}
    assert not stray, f"{name}: options {sorted(stray)} map to no config field (add a field, or list them in " \
                      f"COMMAND_ONLY with a reason)"
    unused = COMMAND_ONLY[name] - set(params)
    assert not unused, f"{name}: COMMAND_ONLY lists {sorted(unused)}, which the command does not have"


def test_excluded_entries_are_real_fields():
    for (cmd, cls_name, field_name), why in EXCLUDED.items():
        cls = next(c for c in COMMANDS[cmd] if c.__name__ == cls_name)
        assert field_name in {f.name for f in cli_fields(cls)} and why


@pytest.mark.parametrize("cls", sorted({c for cs in COMMANDS.values() for c in cs}, key=lambda c: c.__name__))
def test_every_option_field_has_help(cls):
    missing = [f.name for f in _option_fields(cls) if not f.metadata.get("help")]
    assert not missing, f"{cls.__name__}: write these fields with llmad.config.option(default, help): {missing}"


@pytest.mark.parametrize("name", sorted(FLAGS_BEFORE))
def test_flags_that_existed_still_exist(name):
    have = {o for p in _click(name).params for o in [*p.opts, *getattr(p, "secondary_opts", [])]}
    have |= {old for old, new in DEPRECATED.get(name, {}).items() if new in have}
    assert set(FLAGS_BEFORE[name]) <= have, f"{name}: flags gone: {sorted(set(FLAGS_BEFORE[name]) - have)}"


@pytest.mark.parametrize("name", sorted(FLAGS_BEFORE))
def test_help_renders(name):
    res = CliRunner().invoke(app, [*name.split(), "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_help_text_comes_from_the_field():
    params = {p.name: p for p in _click("baseline").params}
    assert params["method"].help == "rf | hgb | iforest | knn \\[default: rf]"  # escaped for rich markup
    assert params["method"].help.startswith(dataclasses.fields(BaselineConfig)[0].metadata["help"])


# ------------------------------------------------------------------------------------------ the machinery itself
@dataclass
class Toy:
    name: str = option("a", "the name [x]")
    count: int | None = option(None, "how many")
    fast: bool = option(False, "go fast")
    cache: bool = option(True, "reuse the cache", flag="--no-cache")
    tags: list[str] | None = option(None, "comma list")
    long_a: int = option(8, "first length", flag="--length")
    long_b: int = option(160, "second length", flag="--length")
    seed: int = option(0, "seed")
    notes: dict = option(help="recipes only", factory=dict, cli=False)


@dataclass
class Other:
    seed: int = option(0, "other seed")
    model: str = option("m0", "a model")


def _toy_app():
    seen = {}
    toy = typer.Typer()

    @toy.command()
    @config_options(Toy, into="t", short={"name": "-n"})
    @config_options(Other, into="o", defaults={"model": "m1"})
    def run(t: dict, o: dict, out: Optional[str] = typer.Option(None, "--out")) -> None:
        seen.update(t=t, o=o, out=out)

    @toy.command()
    def other() -> None:  # a second command keeps typer from collapsing the app into one command
        pass

    return toy, seen


@pytest.mark.parametrize("argv, t, o", [
    ([], {}, {}),
    (["-n", "b", "--count", "3", "--fast"], {"name": "b", "count": 3, "fast": True}, {}),
    (["--no-fast", "--no-cache"], {"fast": False, "cache": False}, {}),
    (["--tags", "x, y"], {"tags": ["x", "y"]}, {}),
    (["--length", "5"], {"long_a": 5, "long_b": 5}, {}),
    (["--seed", "7", "--model", "m2"], {"seed": 7}, {"seed": 7, "model": "m2"}),
])
def test_given_options_only(argv, t, o):
    toy, seen = _toy_app()
    res = CliRunner().invoke(toy, ["run", *argv])
    assert res.exit_code == 0, res.output
    assert seen["t"] == t and seen["o"] == o


def test_generated_help():
    toy, _ = _toy_app()
    out = CliRunner().invoke(toy, ["run", "--help"], terminal_width=200).output
    assert "the name [x] [default: a]" in out  # brackets are text, not rich markup
    assert "--fast" in out and "--no-fast" in out and "[default: no-fast]" in out
    assert "--no-cache" in out and "--cache " not in out
    assert "a model [default: m1]" in out  # the command's own default
    assert out.count("--length") == 1 and out.count("--seed") == 1
    assert "--notes" not in out
    b = {x.cls: x for x in bindings(toy.registered_commands[0].callback)}
    assert set(b) == {Toy, Other} and b[Toy].params["long_b"] == "long_a"


def test_bad_field_names_fail_early():
    with pytest.raises(TypeError, match="nope"):
        config_options(Toy, into="t", exclude=("nope",))


def test_lazy_config_is_imported_on_first_use():
    toy = typer.Typer()
    seen = {}

    @toy.command(cls=ConfigCommand)
    @config_options(f"{__name__}:Other", into="o")
    def lazy(o: dict, out: Optional[str] = typer.Option(None, "--out")) -> None:
        seen.update(o=o, out=out)

    @toy.command()
    def other() -> None:
        pass

    res = CliRunner().invoke(toy, ["lazy", "--model", "m3", "--out", "x"])
    assert res.exit_code == 0, res.output
    assert seen == {"o": {"model": "m3"}, "out": "x"}
    assert "a model [default: m0]" in CliRunner().invoke(toy, ["lazy", "--help"], terminal_width=200).output


def test_llmad_help_imports_no_config_module():
    """`llmad --help` stays fast: the configs beside torch/sklearn code load only for their own command."""
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from llmad.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'sklearn', 'transformers', 'llmad.detectors', 'llmad.api', "
            "'llmad.stream') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------ commands build their configs
def test_baseline_builds_configs(monkeypatch):
    import llmad.api.baseline as api

    got = {}

    def fake(data, cfg, out=None, **kw):
        got.update(data=data, cfg=cfg, out=out)
        return SimpleNamespace(summary="ok", out_dir=out, metrics={})

    monkeypatch.setattr(api, "run_baseline", fake)
    res = CliRunner().invoke(app, ["baseline", "-d", "flowbench:montage", "--method", "hgb", "--seed", "3",
                                   "--causal"])
    assert res.exit_code == 0, res.output
    assert got["data"] == DataConfig(spec="flowbench:montage", seed=3)
    assert got["cfg"] == BaselineConfig(method="hgb", causal=True, seed=3) and got["out"] is None


def test_sft_merges_file_and_options(monkeypatch, tmp_path):
    import llmad.api.sft as api
    import llmad.models.resolve as resolve

    got = {}
    monkeypatch.setattr(api, "run_sft", lambda cfg, **kw: got.update(cfg=cfg) or SimpleNamespace(summary="ok"))
    monkeypatch.setattr(resolve, "resolve_model", lambda *a, **k: None)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("data: {spec: 'flowbench:montage', split: paper}\nsft: {epochs: 1.0, lr: 0.001}\n"
                        "keep_checkpoints: true\n")
    res = CliRunner().invoke(app, ["sft", "--config", str(cfg_file), "--lr", "0.01", "--seed", "4", "-q",
                                   "--patience", "0", "--max-time", "9", "--threshold", "youden"])
    assert res.exit_code == 0, res.output
    c = got["cfg"]
    assert (c.data.spec, c.data.split, c.data.seed) == ("flowbench:montage", "paper", 4)
    assert (c.sft.epochs, c.sft.lr, c.sft.seed, c.sft.progress) == (1.0, 0.01, 4, False)
    assert (c.sft.early_stopping_patience, c.sft.max_time_s, c.sft.threshold_objective) == (0, 9.0, "youden")
    assert c.keep_checkpoints is True and c.resume is False


def test_icl_builds_configs(monkeypatch):
    import llmad.api.icl as api
    import llmad.models.resolve as resolve

    got = {}
    monkeypatch.setattr(api, "run_icl",
                        lambda cfg, run, **kw: got.update(cfg=cfg, run=run) or SimpleNamespace(summary="ok"))
    monkeypatch.setattr(resolve, "resolve_model", lambda *a, **k: None)
    res = CliRunner().invoke(app, ["icl", "-k", "2", "--lora", "4", "--lr", "0.01", "--no-cache",
                                   "--max-new-tokens", "20", "-d", "flowbench:montage", "--seed", "5"])
    assert res.exit_code == 0, res.output
    c, r = got["cfg"], got["run"]
    assert (c.shots, c.lora_r, c.learning_rate, c.use_cache, c.seed) == (2, 4, 0.01, False, 5)
    assert c.max_new_tokens == c.cot_max_new_tokens == 20
    assert (r.data, r.seed, r.val_limit) == ("flowbench:montage", 5, 200)
    res = CliRunner().invoke(app, ["icl", "--max-new-tokens", "0"])
    assert res.exit_code != 0
