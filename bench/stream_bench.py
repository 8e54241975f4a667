"""Streaming early-detection benchmarks (issue 5). Results: bench/results/stream_results.json (one record per task,
updated as each finishes), rendered to bench/results/stream.md and stream.csv. Every call stays < 10 min; run niced:

    nice -n 10 .venv/bin/python bench/stream_bench.py detect --workflow 1000genome      # RF family, all test runs
    nice -n 10 .venv/bin/python bench/stream_bench.py detect --workflow montage --test-runs 20
    nice -n 10 .venv/bin/python bench/stream_bench.py detect --workflow predict_future_sales
    nice -n 10 .venv/bin/python bench/stream_bench.py sft-train --workflow 1000genome --variant plain
    nice -n 10 .venv/bin/python bench/stream_bench.py sft-train --workflow 1000genome --variant prefix
    nice -n 10 .venv/bin/python bench/stream_bench.py detect-sft --workflow 1000genome --test-runs 5
    nice -n 10 .venv/bin/python bench/stream_bench.py sft-train --workflow casa_nowcast_full --variant plain --steps 20
    nice -n 10 .venv/bin/python bench/stream_bench.py throughput --model runs/bench-stream/models/casa_nowcast_full-plain
    nice -n 10 .venv/bin/python bench/stream_bench.py throughput-rf --runs 40
    .venv/bin/python bench/stream_bench.py report

Models live under runs/bench-stream/ (git-ignored). Subsamples are stated in every record.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmad.io import atomic_write_text, provenance, write_frame_csv  # noqa: E402
from llmad.stream import (StreamConfig, _sample_ids, choose_stream_threshold, iter_runs, list_run_members,  # noqa
                          make_partial, prefix_augment, replay, split_run_ids)

RESULTS = ROOT / "bench" / "results"
RUNS = Path(os.environ.get("LLMAD_STREAM_BENCH_RUNS", ROOT / "runs" / "bench-stream"))


def load_results() -> dict:
    f = RESULTS / "stream_results.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def save_result(key: str, rec: dict) -> None:
    res = load_results()
    rec = {**rec, "key": key, "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "load_average_1m": os.getloadavg()[0]}
    res[key] = rec
    atomic_write_text(RESULTS / "stream_results.json", json.dumps(res, indent=2, default=_default) + "\n")
    print(f"saved {key}", file=sys.stderr)


def _default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if o != o else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _load(spec: str, ids: list[str], context: bool) -> pd.DataFrame:
    from llmad.data.context import add_context_features

    return pd.concat([add_context_features(r, causal=True) if context else r for r in iter_runs(spec, None, ids)],
                     ignore_index=True)


# ---------------------------------------------------------------------------------------------------- detect (RF)
def cmd_detect(a) -> None:
    """RF baselines (plain / context, with and without prefix augmentation): events + features reveal."""
    from llmad.detectors.baselines import BaselineDetector

    spec = f"flowbench:{a.workflow}"
    ids = split_run_ids(spec, "run", a.seed)
    tr_ids = _sample_ids(ids["train"], a.train_runs, a.seed)
    va_ids = _sample_ids(ids["validation"], a.val_runs, a.seed)
    te_ids = _sample_ids(ids["test"], a.test_runs, a.seed)
    wanted = a.detectors.split(",")
    for feats in ("plain", "context"):
        if not any(w.startswith(f"rf-{feats}") for w in wanted):
            continue
        train, val = _load(spec, tr_ids, feats == "context"), _load(spec, va_ids, feats == "context")
        for prefix in (False, True):
            name = f"rf-{feats}" + ("-prefix" if prefix else "")
            if name not in wanted:
                continue
            t0 = time.perf_counter()
            tr = prefix_augment(train, copies=1, seed=a.seed) if prefix else train
            det = BaselineDetector("rf", feats, causal=True, seed=a.seed, n_estimators=a.trees).fit(tr, val)
            fit_s = time.perf_counter() - t0
            for thr_mode in ("model", "validation"):
                cfg = StreamConfig(threshold=thr_mode)
                thr = det.threshold_ if thr_mode == "model" else choose_stream_threshold(
                    det, iter_runs(spec, None, va_ids), cfg)
                res = replay(iter_runs(spec, None, te_ids), det, cfg, thr)
                save_result(f"detect/{a.workflow}/{name}/thr-{thr_mode}", {
                    "task": "detect", "workflow": a.workflow, "detector": name, "threshold_mode": thr_mode,
                    "threshold": thr, "train_runs": len(tr_ids), "validation_runs": len(va_ids),
                    "test_runs": len(te_ids), "test_runs_total": len(ids["test"]), "train_rows": len(tr),
                    "fit_s": fit_s, "metrics": res.metrics, "throughput": {
                        k: v for k, v in res.throughput.items() if k != "rss_mb_per_run"}})
                if thr_mode == "validation":
                    write_frame_csv(RESULTS / "stream_curves" / f"{a.workflow}-{name}.csv", res.curve)
            fres = replay(iter_runs(spec, None, te_ids), det, StreamConfig(reveal="features"), det.threshold_)
            save_result(f"features/{a.workflow}/{name}", {
                "task": "features", "workflow": a.workflow, "detector": name, "threshold": det.threshold_,
                "test_runs": len(te_ids), "metrics": fres.metrics})


# ---------------------------------------------------------------------------------------------------- SFT
def cmd_sft_train(a) -> None:
    """A small-budget MiniLM SFT model (compact template), plain or prefix-augmented, on a train subsample."""
    from llmad.detectors.sft import SFTConfig, SFTDetector

    spec = f"flowbench:{a.workflow}"
    ids = split_run_ids(spec, "run", a.seed)
    train = _load(spec, _sample_ids(ids["train"], a.train_runs, a.seed), False)
    val = _load(spec, _sample_ids(ids["validation"], a.val_runs, a.seed), False)
    train = train.sample(n=min(a.train_limit, len(train)), random_state=a.seed).reset_index(drop=True)
    val = val.sample(n=min(a.val_limit, len(val)), random_state=a.seed).reset_index(drop=True)
    if a.variant == "prefix":
        train = prefix_augment(train, copies=1, seed=a.seed)  # llmad.stream's event-time cut (same rows as plain)
    # Each call trains for at most --chunk seconds and checkpoints; call again until it exits 0 (< 10 min a call).
    cfg = SFTConfig(max_steps=a.steps, batch_size=16, progress=False, early_stopping_patience=0, seed=a.seed,
                    max_time_s=a.chunk)
    out = RUNS / "models" / f"{a.workflow}-{a.variant}"
    t0 = time.perf_counter()
    det = SFTDetector(cfg).fit(train, val, output_dir=RUNS / "ckpt" / f"{a.workflow}-{a.variant}", resume=True)
    if det.paused_:
        print("training paused at its time budget: call again to resume", file=sys.stderr)
        sys.exit(3)
    det.save(out)
    save_result(f"sft-train/{a.workflow}/{a.variant}", {
        "task": "sft-train", "workflow": a.workflow, "variant": a.variant, "model_dir": str(out.relative_to(ROOT)),
        "train_rows": len(train), "validation_rows": len(val), "steps": a.steps, "batch_size": 16,
        "wall_s_last_chunk": time.perf_counter() - t0, "train_s": det.train_info_.get("train_s"),
        "threshold": det.threshold_,
        "note": "small training budget on 2 shared CPU cores: a streaming comparison, not a tuned model"})


def cmd_detect_sft(a) -> None:
    """Replay the plain and prefix-augmented SFT models on the same test runs (events + features reveal)."""
    from llmad.detectors import load_detector

    spec = f"flowbench:{a.workflow}"
    ids = split_run_ids(spec, "run", a.seed)
    te_ids = _sample_ids(ids["test"], a.test_runs, a.seed)
    for variant in a.variants.split(","):
        mdir = RUNS / "models" / f"{a.workflow}-{variant}"
        det = load_detector(mdir)
        res = replay(iter_runs(spec, None, te_ids), det, StreamConfig(), det.threshold_)
        save_result(f"detect/{a.workflow}/sft-{variant}/thr-model", {
            "task": "detect", "workflow": a.workflow, "detector": f"sft-minilm-compact-{variant}",
            "threshold_mode": "model", "threshold": det.threshold_, "test_runs": len(te_ids),
            "test_runs_total": len(ids["test"]), "metrics": res.metrics,
            "throughput": {k: v for k, v in res.throughput.items() if k != "rss_mb_per_run"}})
        if a.features:
            fres = replay(iter_runs(spec, None, te_ids), det, StreamConfig(reveal="features"), det.threshold_)
            save_result(f"features/{a.workflow}/sft-{variant}", {
                "task": "features", "workflow": a.workflow, "detector": f"sft-minilm-compact-{variant}",
                "threshold": det.threshold_, "test_runs": len(te_ids), "metrics": fres.metrics})


# ---------------------------------------------------------------------------------------------------- throughput
def _naive_events(run: pd.DataFrame, n: int, seed: int) -> list[tuple[int, float]]:
    ts = run[[c for c in ("ready", "submit", "stage_in_start", "stage_in_end", "execute_start", "execute_end",
                          "stage_out_start", "stage_out_end", "post_script_start", "post_script_end")]].to_numpy()
    ev = [(i, float(t)) for i in range(len(run)) for t in ts[i] if np.isfinite(t)]
    rng = np.random.default_rng(seed)
    return [ev[k] for k in rng.choice(len(ev), size=min(n, len(ev)), replace=False)]


def cmd_throughput(a) -> None:
    """casa_nowcast_full at max speed with an SFT model: events/s vs a naive per-event transformers pipeline."""
    import torch
    from transformers import pipeline

    from llmad.detectors import load_detector

    spec = "flowbench:casa_nowcast_full"
    members = sorted(m[0] for m in list_run_members(spec))
    chosen = _sample_ids(members, a.runs, a.seed)
    torch.set_num_threads(a.threads)
    det = load_detector(a.model, quantize=a.quantize)
    rec = {"task": "throughput", "model": str(a.model), "quantize": a.quantize, "threads": a.threads,
           "runs": chosen, "runs_total": len(members), "jobs_total": 876101}
    # Naive first (so a slow machine still records it): every event rendered and classified on its own through a
    # transformers pipeline (batch 1, fp32, the same model), on events sampled from the first replayed run.
    run = next(iter_runs(spec, None, chosen[:1]))
    evs = _naive_events(run, a.naive_events, a.seed)
    base = det if not a.quantize else load_detector(a.model)
    clf = pipeline("text-classification", model=base.model_, tokenizer=base.tokenizer_, device=-1, top_k=None)
    t0 = time.perf_counter()
    for i, t in evs:
        text = base.render(make_partial(run.iloc[[i]], t))[0]
        clf(text, truncation=True, max_length=base.config.max_length)
    naive_s = time.perf_counter() - t0
    rec["naive"] = {"events": len(evs), "wall_s": naive_s, "events_per_s": len(evs) / naive_s,
                    "how": "per event: make_partial + render + transformers text-classification pipeline, batch 1, "
                           "fp32, same model"}
    del run, clf
    res = replay(iter_runs(spec, None, chosen), det, StreamConfig(batch=a.batch), det.threshold_,
                 progress=lambda m: print(m, file=sys.stderr))
    rec["llmad"] = res.throughput
    rec["llmad_peak_rss_mb"] = peak_rss_mb()
    rec["speedup_vs_naive"] = res.throughput["events_per_s"] / rec["naive"]["events_per_s"]
    save_result(f"throughput/sft/{'int8' if a.quantize else 'fp32'}/{a.batch}", rec)


def cmd_throughput_rf(a) -> None:
    """casa_nowcast_full with the RF (context) baseline: events/s and RSS per run over many runs."""
    from llmad.detectors.baselines import BaselineDetector

    spec = "flowbench:casa_nowcast_full"
    ids = split_run_ids(spec, "run", a.seed)
    det = BaselineDetector("rf", "context", causal=True, n_estimators=a.trees).fit(
        _load(spec, _sample_ids(ids["train"], a.train_runs, a.seed), True),
        _load(spec, _sample_ids(ids["validation"], 4, a.seed), True))
    chosen = _sample_ids(ids["test"], a.runs, a.seed)
    res = replay(iter_runs(spec, None, chosen), det, StreamConfig(batch=a.batch), det.threshold_,
                 progress=lambda m: print(m, file=sys.stderr))
    save_result(f"throughput/rf-context/{a.batch}", {
        "task": "throughput", "model": f"rf-context ({a.trees} trees, {a.train_runs} train runs)",
        "runs": len(chosen), "runs_total": len(ids["test"]), "llmad": res.throughput,
        "llmad_peak_rss_mb": peak_rss_mb(), "metrics": res.metrics})


# ---------------------------------------------------------------------------------------------------- report
def _f(v, nd=3):
    return "" if v is None or (isinstance(v, float) and v != v) else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def cmd_report(a) -> None:
    res = load_results()
    rows = []
    for k, r in sorted(res.items()):
        if r.get("task") != "detect":
            continue
        m = r["metrics"]
        rows.append({"workflow": r["workflow"], "detector": r["detector"], "threshold": r["threshold_mode"],
                     "test_runs": f"{r['test_runs']}/{r['test_runs_total']}", "anomalous_jobs": m["anomalous_jobs"],
                     "caught": m["caught_share"], "before_execute_end": m["caught_before_execute_end_share"],
                     "by_execute_end": m["caught_by_execute_end_share"],
                     "median_lead_job_s": m["median_lead_job_s"], "median_lead_run_s": m["median_lead_run_s"],
                     "false_alerts_per_normal_run": m["false_alerts_per_normal_run"],
                     "false_alerts_per_run": m["false_alerts_per_run"], "alert_precision": m["alert_precision"],
                     "events_per_s": r["throughput"]["events_per_s"]})
    det = pd.DataFrame(rows)
    if len(det):
        write_frame_csv(RESULTS / "stream.csv", det)
    frows = []
    for k, r in sorted(res.items()):
        if r.get("task") != "features":
            continue
        for s in r["metrics"].get("steps", []):
            frows.append({"workflow": r["workflow"], "detector": r["detector"], "step": s["step"],
                          "accuracy": s["accuracy"], "recall_anomalous": s["recall_anomalous"],
                          "fpr": s["false_positive_rate"], "anomalous_right_by_step": s[
                              "correct_by_step_share_anomalous"]})
    feats = pd.DataFrame(frows)
    if len(feats):
        write_frame_csv(RESULTS / "stream_features.csv", feats)
    lines = ["# Streaming early detection (issue 5)", "",
             "Generated by `bench/stream_bench.py report` from `stream_results.json`. Machine: 2 CPU cores shared "
             "with 3-4 other agents (load average recorded per record), no GPU. Run split (seed 0): train / "
             "validation / test runs never mix. Event replay: fields appear as their timestamps pass, causal peer "
             "features, a job alerts once. `thr-model`: the model's own threshold (chosen on validation *complete* "
             "jobs); `thr-validation`: re-chosen on a replay of validation runs (per-job max score vs label).", ""]
    if len(det):
        lines += ["## Early detection on test runs", "",
                  "caught = anomalous jobs alerted at any time; before/by execute_end = alerted strictly before / at "
                  "the latest when execution ends (cpu time and runtime are only known at execute_end); lead = time "
                  "from the alert to the job's last event / to the run's last event (median over caught anomalous "
                  "jobs); false alerts = normal jobs alerted.", "",
                  "| workflow | detector | threshold | test runs | anomalous jobs | caught | before exec end | "
                  "by exec end | median lead job (s) | median lead run (s) | false alerts / normal run | "
                  "false alerts / run | alert precision | events/s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for _, r in det.iterrows():
            lines.append("| " + " | ".join([r["workflow"], r["detector"], r["threshold"], r["test_runs"],
                                              str(r["anomalous_jobs"]), _f(r["caught"]),
                                              _f(r["before_execute_end"]), _f(r["by_execute_end"]),
                                              _f(r["median_lead_job_s"], 0), _f(r["median_lead_run_s"], 0),
                                              _f(r["false_alerts_per_normal_run"], 2),
                                              _f(r["false_alerts_per_run"], 2), _f(r["alert_precision"]),
                                              _f(r["events_per_s"], 0)]) + " |")
        lines.append("")
    if len(feats):
        lines += ["## Features reveal (the paper's online study)", "",
                  "Step Tk: the first k of the paper's nine features known (wms, queue, runtime, post-script, "
                  "stage-in delay, stage-out delay, stage-in bytes, stage-out bytes, cpu time), the rest missing. "
                  "`right by Tk` = share of anomalous jobs whose prediction was right at some step <= k.", "",
                  "| workflow | detector | " + " | ".join(f"T{k} acc / right by" for k in range(1, 10)) + " |",
                  "|---|---|" + "---|" * 9]
        for (wf, dn), g in feats.groupby(["workflow", "detector"], sort=True):
            g = g.set_index("step")
            cells = [f"{_f(g.loc[f'T{k}', 'accuracy'], 2)} / {_f(g.loc[f'T{k}', 'anomalous_right_by_step'], 2)}"
                     for k in range(1, 10) if f"T{k}" in g.index]
            lines.append(f"| {wf} | {dn} | " + " | ".join(cells) + " |")
        lines.append("")
    tp = {k: r for k, r in res.items() if r.get("task") == "throughput"}
    if tp:
        lines += ["## Throughput (casa_nowcast_full, every event scored, max speed)", "",
                  "| model | runs (of total) | events | events/s | detector rows | cache hits | peak RSS MiB | "
                  "RSS first / last run MiB | naive events/s | speedup | load avg |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for k, r in sorted(tp.items()):
            t = r["llmad"]
            nv = r.get("naive", {})
            runs = r["runs"] if isinstance(r["runs"], int) else len(r["runs"])
            lines.append(f"| {k} | {runs} ({r.get('runs_total', '')}) | {t['events']} | {_f(t['events_per_s'], 0)} | "
                         f"{t['model_rows']} | {t['cache_hits']} | {_f(r['llmad_peak_rss_mb'], 0)} | "
                         f"{_f(t['rss_mb_first_run'], 0)} / {_f(t['rss_mb_last_run'], 0)} | "
                         f"{_f(nv.get('events_per_s'), 1)} | {_f(r.get('speedup_vs_naive'), 1)} | "
                         f"{_f(r['load_average_1m'], 1)} |")
        lines.append("")
    tr = {k: r for k, r in res.items() if r.get("task") == "sft-train"}
    if tr:
        lines += ["## SFT models used here", ""]
        for k, r in sorted(tr.items()):
            lines.append(f"- `{k}`: {r['train_rows']} train rows, {r['steps']} steps x batch {r['batch_size']}, "
                         f"threshold {r['threshold']:.3f}. {r['note']}")
        lines.append("")
    lines += ["## Notes", "",
              "- Throughput target (>= 2,000 scored events/s on 2 cores with the default SFT model) is *not* met: "
              "MiniLM (compact template) replays casa_nowcast_full at ~215 events/s fp32 (int8 was slower here, "
              "measured under a higher load). Caching leaves ~0.38 detector rows per event (distinct sentences); the "
              "model itself is the bottleneck (~80 sentences/s batched on these cores). The RF baseline does ~4,200 "
              "events/s at load ~14.",
              "- The naive side includes building the partial job row (pandas `make_partial` on one row) and rendering "
              "per event, as a naive consumer would; the ratio therefore includes more than the model-side gain.",
              "- RSS: the RF run grows while the score cache fills (200,000 entries by default) and is flat after "
              "it (418 MiB from run 17 to run 30); runs are parsed one at a time, so the stream length does not "
              "matter beyond the cache bound.",
              "- Features reveal for `*-context` detectors: the host and peer medians are known from T1 (only the "
              "job's own unrevealed features and the ratios built on them are hidden), so T1 is not comparable with "
              "the plain detectors' T1.",
              "- `*-prefix` RF: trained on the train jobs plus one copy of each cut at a random one of its events "
              "(`llmad.stream.prefix_augment`). It flags earlier and more (many more false alerts with the model "
              "threshold); a streaming threshold (`thr-validation`) trades part of that back.",
              "- Not measured yet: the plain vs prefix-augmented SFT models on the three workflows (the prefix model "
              "training was interrupted for time; resume with `sft-train --variant prefix`, then `detect-sft`).",
              ""]
    lines += ["Provenance: " + json.dumps({k: v for k, v in provenance().items() if k != "versions"}), ""]
    atomic_write_text(RESULTS / "stream.md", "\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("detect")
    d.add_argument("--workflow", required=True)
    d.add_argument("--train-runs", type=int, default=80)
    d.add_argument("--val-runs", type=int, default=None)
    d.add_argument("--test-runs", type=int, default=None)
    d.add_argument("--trees", type=int, default=100)
    d.add_argument("--detectors", default="rf-plain,rf-plain-prefix,rf-context,rf-context-prefix")
    s = sub.add_parser("sft-train")
    s.add_argument("--workflow", required=True)
    s.add_argument("--variant", choices=("plain", "prefix"), required=True)
    s.add_argument("--train-runs", type=int, default=60)
    s.add_argument("--val-runs", type=int, default=10)
    s.add_argument("--train-limit", type=int, default=1200)
    s.add_argument("--val-limit", type=int, default=300)
    s.add_argument("--steps", type=int, default=60)
    s.add_argument("--chunk", type=float, default=420.0)
    ds = sub.add_parser("detect-sft")
    ds.add_argument("--workflow", required=True)
    ds.add_argument("--test-runs", type=int, default=5)
    ds.add_argument("--variants", default="plain,prefix")
    ds.add_argument("--features", action="store_true")
    t = sub.add_parser("throughput")
    t.add_argument("--model", required=True)
    t.add_argument("--runs", type=int, default=2)
    t.add_argument("--naive-events", type=int, default=300)
    t.add_argument("--quantize", action="store_true")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--batch", default="run")
    tr = sub.add_parser("throughput-rf")
    tr.add_argument("--runs", type=int, default=40)
    tr.add_argument("--train-runs", type=int, default=20)
    tr.add_argument("--trees", type=int, default=200)
    tr.add_argument("--batch", default="run")
    sub.add_parser("report")
    for q in (d, s, ds, t, tr):
        q.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    {"detect": cmd_detect, "sft-train": cmd_sft_train, "detect-sft": cmd_detect_sft, "throughput": cmd_throughput,
     "throughput-rf": cmd_throughput_rf, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
