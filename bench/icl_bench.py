"""ICL benchmark on the paper's 1000genome split (LLM_AD test rows), resumable in chunks.

    nice -n 10 .venv/bin/python bench/icl_bench.py --phase speed             # prefix cache vs naive, one run
    nice -n 10 .venv/bin/python bench/icl_bench.py --phase tune --tune-round 0   # LoRA adapter (< 10 min a round)
    nice -n 10 .venv/bin/python bench/icl_bench.py --phase tune --tune-round 1   # ... continued on new examples
    nice -n 10 .venv/bin/python bench/icl_bench.py --budget-s 540            # table: scores more rows, resumes
    nice -n 10 .venv/bin/python bench/icl_bench.py --phase cot               # chain-of-thought sample
    nice -n 10 .venv/bin/python bench/icl_bench.py --phase report            # rewrite tables from checkpoints

Every invocation uses ``--threads`` torch threads (default 1) and stops after ``--budget-s`` seconds; rerun the
table phase until every cell has ``--test-rows`` rows (the report says how many each has).

Table phase: zero-shot, one-shot, few-shot (negative-only, positive-only, mixed) with smollm2-135m, each without
and with LoRA tuning, each without and with content-free calibration (in the two-label case contextual calibration
is a shift of the raw label log-odds, so one scoring pass serves both). Test rows: a fixed seeded subsample
(``--seed``) of the published test rows, scored round-robin in chunks so that every configuration advances evenly;
raw scores are checkpointed under ``<cache>/bench/icl/<template>`` and the tables in
bench/results/icl_table.{md,csv,json} say how many rows each cell has. Accuracy is reported both at the model's own
decision (argmax over the label words: the paper's protocol) and at a threshold chosen on validation rows.
LoRA: one adapter (rank 8) tuned with trl's SFTTrainer (completion-only loss) on prompt -> label completions from
the train part, each tuning prompt with its own 0..``--train-shots`` random demonstrations, then used (merged into
the weights) under every prompt of the table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmad.detectors.icl.config import ICLConfig  # noqa: E402
from llmad.detectors.icl.detector import ICLDetector  # noqa: E402
from llmad.io import atomic_write_text, provenance, write_json  # noqa: E402
from llmad.metrics.classification import choose_threshold, classification_report  # noqa: E402
from llmad.models.packages import cache_dir  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PUBLISHED = {"GPT2 (paper)": (0.66, 0.72), "Mistral-7B (paper)": (0.68, 0.78), "Llama2-7B (paper)": (0.65, 0.76)}
CONFIGS = [  # name, shots, select
    ("zero-shot", 0, "balanced"),
    ("one-shot", 1, "random"),
    ("few-shot negative", 4, "negative"),
    ("few-shot positive", 4, "positive"),
    ("few-shot mixed", 4, "balanced"),
]


def machine(args) -> dict:
    """Commit-independent facts of this invocation: threads, cores, load average."""
    import torch

    return {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "load_average_1m_5m_15m": [round(x, 2) for x in os.getloadavg()], "time_utc":
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def state_dir(args) -> Path:
    d = cache_dir() / "bench" / "icl" / args.template
    d.mkdir(parents=True, exist_ok=True)
    return d


def log_invocation(args, phase: str, extra: dict | None = None, folder: Path | None = None) -> None:
    """Append this invocation's machine facts to ``folder`` (default: the state dir; the report summarises them)."""
    with open((folder or state_dir(args)) / "invocations.jsonl", "a") as f:
        f.write(json.dumps({"phase": phase, **machine(args), **(extra or {})}) + "\n")


def slug(s: str) -> str:
    return s.replace(" ", "-")


def load_split(args):
    from llmad.data.flowbench import load_jobs
    from llmad.data.splits import make_split

    jobs = load_jobs("flowbench:1000genome")
    split = make_split(jobs, kind="paper")
    return (split, *sample_rows(args, split))


def sample_rows(args, split) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The seeded test and validation samples (``--test-rows``, ``--val-rows``) of a split."""
    test = split.test.sample(n=min(args.test_rows, len(split.test)), random_state=args.seed).reset_index(drop=True)
    val = split.validation.sample(n=min(args.val_rows, len(split.validation)),
                                  random_state=args.seed).reset_index(drop=True)
    return test, val


def base_cfg(args) -> ICLConfig:
    return ICLConfig(model="smollm2-135m", batch_size=args.batch_size, calibrate="content-free", seed=0,
                     template=args.template)


def tune_round(args, split) -> None:
    """One tuning round (< 10 min): round 0 creates the adapter, round r > 0 continues it on new examples."""
    from peft import PeftModel

    from llmad.models.causal_lm import load_causal_lm

    adir = state_dir(args) / args.adapter
    exists = (adir / "detector.json").is_file()
    if exists == (args.tune_round == 0):
        print(f"adapter {args.adapter}: round {args.tune_round} {'already done' if exists else 'needs round 0'}")
        return
    cfg = replace(base_cfg(args), shots=0, select="random", calibrate="none", lora_r=8,
                  train_examples=args.train_examples, train_batch_size=4, learning_rate=args.lr,
                  train_shots=args.train_shots, train_demos="resample", train_steps=args.train_steps,
                  train_budget_s=args.train_budget_s, lora_layers=args.lora_layers or None, seed=args.tune_round)
    lm = None
    if exists:
        lm = load_causal_lm("smollm2-135m")
        lm.model = PeftModel.from_pretrained(lm.model, str(adir / "adapter"), is_trainable=True)
    t = time.perf_counter()
    det = ICLDetector(config=cfg)
    det.fit(split.train, None, lm=lm)
    det.save(adir)
    rnd = {**det.tuning_, "round": args.tune_round, "seed": args.tune_round, "seconds": time.perf_counter() - t,
           **machine(args)}
    prev = json.loads((adir / "tuning.json").read_text()) if exists else {"rounds": []}
    rounds = prev.get("rounds", [prev]) + [rnd]
    tuning = {"adapter": args.adapter, "lora_r": cfg.lora_r, "lora_alpha": 2 * cfg.lora_r,
              "lora_layers": det.tuning_["lora_layers"], "learning_rate": cfg.learning_rate,
              "batch_size": cfg.train_batch_size, "select": cfg.select, "template": cfg.template,
              "train_shots": cfg.train_shots, "train_demos": cfg.train_demos,
              "data": "paper-split train part of 1000genome", "rounds": rounds,
              "steps": sum(r["steps"] for r in rounds), "examples_seen": sum(r["examples_seen"] for r in rounds),
              "seconds": sum(r["seconds"] for r in rounds), "train_loss_last_round": rnd["train_loss"],
              "prompt_tokens_mean": float(np.mean([r["prompt_tokens"]["mean"] for r in rounds])),
              "torch_threads": rnd["torch_threads"]}
    write_json(adir / "tuning.json", tuning)
    print(f"tuned LoRA round {args.tune_round}: steps {rnd['steps']}, seen {rnd['examples_seen']}, "
          f"loss {rnd['train_loss']:.3f}; total seen {tuning['examples_seen']}", flush=True)


def tuned_lm(args, split, adapter: str):
    """The base model with a saved LoRA adapter (``--phase tune``), merged for scoring."""
    from peft import PeftModel

    from llmad.models.causal_lm import load_causal_lm

    adir = state_dir(args) / adapter
    lm = load_causal_lm("smollm2-135m")
    # Merging the fp32 adapter is exact and removes the adapter's per-layer overhead from every forward pass.
    lm.model = PeftModel.from_pretrained(lm.model, str(adir / "adapter")).merge_and_unload().eval()
    return lm


def fit_cell(name, shots, select, tuned, args, split, lm):
    """Fit (demonstrations + calibration) once per cell; keep its state and validation raw scores."""
    d = state_dir(args) / f"{slug(name)}{'-' + tuned if tuned else ''}"
    if (d / "detector.json").is_file():
        det = ICLDetector.load(d, lm=lm)
        return det, d
    cfg = replace(base_cfg(args), shots=shots, select=select)
    det = ICLDetector(config=cfg)
    det.fit(split.train, None, lm=lm)
    det.save(d)
    return det, d


def tune_phase(args) -> None:
    """Tune the shared LoRA adapter (its own invocation: tuning is not interruptible)."""
    split, _, _ = load_split(args)
    log_invocation(args, "tune")
    tune_round(args, split)


def table_phase(args) -> None:
    t0 = time.perf_counter()
    split, test, val = load_split(args)
    log_invocation(args, "table")
    from llmad.models.causal_lm import load_causal_lm

    cells = [(n, k, s, tuned) for tuned in ("", args.adapter) for (n, k, s) in CONFIGS]
    if args.cells == "base":
        cells = [c for c in cells if not c[3]]
    elif args.cells == "lora":
        cells = [c for c in cells if c[3]]
    if args.settings:
        wanted = set(args.settings.split(","))
        cells = [c for c in cells if slug(c[0]) in wanted]
    lms = {"": None, args.adapter: None}
    dets = {}
    while time.perf_counter() - t0 < args.budget_s:
        progressed = False
        for (n, k, s, tuned) in cells:
            if time.perf_counter() - t0 > args.budget_s:
                break
            if tuned and not (state_dir(args) / tuned / "detector.json").is_file():
                continue  # tuned cells wait for `--phase tune`
            if lms[tuned] is None:
                lms[tuned] = tuned_lm(args, split, tuned) if tuned else load_causal_lm("smollm2-135m")
            key = (n, tuned)
            if key not in dets:
                dets[key] = fit_cell(n, k, s, tuned, args, split, lms[tuned])
            det, d = dets[key]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if not (d / "val.csv").is_file():
                    vd = det.score_details(val)
                    atomic_write_text(d / "val.csv", pd.DataFrame({"label": val["label"], "raw_logit": vd["raw_logit"]})
                                      .to_csv(index=False))
                done = pd.read_csv(d / "test.csv") if (d / "test.csv").is_file() else None
                start = 0 if done is None else len(done)
                if start >= len(test):
                    continue
                chunk = test.iloc[start:start + args.chunk]
                t = time.perf_counter()
                td = det.score_details(chunk)
                el = time.perf_counter() - t
            part = pd.DataFrame({"row": np.arange(start, start + len(chunk)), "job_id": chunk["job_id"].astype(str),
                                 "label": chunk["label"].to_numpy(), "raw_logit": td["raw_logit"].to_numpy(),
                                 "label_mass": td["label_mass"].to_numpy(), "seconds": el / len(chunk)})
            new = part if done is None else pd.concat([done, part], ignore_index=True)
            atomic_write_text(d / "test.csv", new.to_csv(index=False))
            progressed = True
            print(f"{n}{' +' + tuned if tuned else ''}: {len(new)}/{len(test)} rows ({len(chunk) / el:.2f} prompts/s)",
                  flush=True)
        if not progressed:
            break
    report(args)


def _invocations(args, phase: str) -> list[dict]:
    f = state_dir(args) / "invocations.jsonl"
    if not f.is_file():
        return []
    return [r for r in map(json.loads, f.read_text().splitlines()) if r["phase"] == phase]


def report(args) -> None:
    rows = []
    for tuned in [""] + args.adapters.split(","):
        for (n, k, s) in CONFIGS:
            d = state_dir(args) / f"{slug(n)}{'-' + tuned if tuned else ''}"
            if not (d / "test.csv").is_file():
                continue
            st = json.loads((d / "detector.json").read_text())
            shift = st["calibration"]["log_prior_ratio"]
            te = pd.read_csv(d / "test.csv")
            va = pd.read_csv(d / "val.csv")
            for cal in (False, True):
                s_te = te["raw_logit"].to_numpy() - (shift if cal else 0.0)
                s_va = va["raw_logit"].to_numpy() - (shift if cal else 0.0)
                thr = choose_threshold(va["label"].to_numpy(), s_va, objective="accuracy")
                y = te["label"].to_numpy()
                rep_arg = classification_report(y, scores=s_te, threshold=0.0)
                rep_val = classification_report(y, scores=s_te, threshold=thr)
                gap = st["calibration"]["gap"]["empty"]
                rows.append({"setting": n, "shots": k, "select": s, "lora": tuned, "calibration": cal,
                             "test_rows": int(len(te)), "accuracy_argmax": rep_arg["accuracy"],
                             "f1_argmax": rep_arg["f1"], "predicted_abnormal_argmax": float(np.mean(s_te >= 0)),
                             "accuracy_val_threshold": rep_val["accuracy"], "f1_val_threshold": rep_val["f1"],
                             "roc_auc": rep_val["roc_auc"], "mean_label_mass": float(te["label_mass"].mean()),
                             "prompts_per_s": float(1.0 / te["seconds"].mean()),
                             "gap_empty": gap["abnormal_minus_normal_after" if cal else
                                              "abnormal_minus_normal_before"],
                             "gap_empty_before": gap["abnormal_minus_normal_before"],
                             "gap_empty_after": gap["abnormal_minus_normal_after"],
                             "log_prior_ratio": shift})
    if not rows:
        print("no results yet")
        return
    df = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "icl_table.csv", df.to_csv(index=False))
    tuning = {a: json.loads((state_dir(args) / a / "tuning.json").read_text())
              for a in args.adapters.split(",") if (state_dir(args) / a / "tuning.json").is_file()}
    inv = _invocations(args, "table")
    loads = [r["load_average_1m_5m_15m"][0] for r in inv]
    split, test, val = load_split(args)
    full_ab = float(split.test["label"].mean())
    facts = {"data": "flowbench:1000genome, paper split (published LLM_AD test rows)",
             "test_subsample": {"seed": args.seed, "rows": int(len(test)), "positives": int(test["label"].sum())},
             "validation_subsample": {"seed": args.seed, "rows": int(len(val)), "positives": int(val["label"].sum())},
             "template": args.template, "batch_size": args.batch_size, "model": "smollm2-135m (fp32, CPU)",
             "torch_threads": sorted({r["torch_threads"] for r in inv}), "invocations": len(inv),
             "load_average_1m_range": [min(loads), max(loads)] if loads else None}
    meta = {**facts, "published_accuracy_no_ft_lora_ft": PUBLISHED, "tuning": tuning, "rows": rows,
            "provenance": provenance()}
    write_json(RESULTS / "icl_table.json", meta)
    tt = test["label"]
    lines = ["# ICL on 1000genome (paper split), smollm2-135m", "",
             f"Test rows: {len(test)} drawn with seed {args.seed} from the {4809} published test rows "
             f"({int(tt.sum())} abnormal, majority-class accuracy {max(tt.mean(), 1 - tt.mean()):.3f}); the `n` "
             f"column says how many each cell has scored. Validation threshold from {len(val)} validation rows "
             f"(seed {args.seed}, accuracy objective). Job template `{args.template}`; prompts: task description, "
             "demonstrations, the query, chat template, cue `Answer:`; score = log P(Abnormal) - log P(Normal) over "
             "all tokenizations. Calibration = content-free (contextual calibration: empty job + all-N/A job); with "
             "two labels it shifts the log-odds, so it changes the argmax columns only. fp32 on CPU, "
             f"{facts['torch_threads']} torch thread(s), batch {args.batch_size}, {len(inv)} table-phase invocations "
             "(each < 10 min, resuming; the last ones found nothing left), "
             f"1-minute load average {facts['load_average_1m_range']} (2 cores shared with other jobs).", "",
             "| setting | LoRA | calibration | n | acc (argmax) | F1 (argmax) | pred. abnormal (argmax) | "
             "acc (val thr) | F1 (val thr) | ROC-AUC | P(ab)-P(no) on empty job | label mass | prompts/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['lora'] or 'no'} | "
                     f"{'content-free' if r['calibration'] else 'none'} | {r['test_rows']} | "
                     f"{r['accuracy_argmax']:.3f} | {r['f1_argmax']:.3f} | {r['predicted_abnormal_argmax']:.2f} | "
                     f"{r['accuracy_val_threshold']:.3f} | {r['f1_val_threshold']:.3f} | {r['roc_auc']:.3f} | "
                     f"{r['gap_empty']:+.3f} | {r['mean_label_mass']:.2f} | {r['prompts_per_s']:.2f} |")
    for k, (a, b) in PUBLISHED.items():
        lines.append(f"| {k}, few-shot | no | none | (full test) | {a:.2f} | | | | | | | | |")
        lines.append(f"| {k}, few-shot | yes | none | (full test) | {b:.2f} | | | | | | | | |")
    lines += ["", "Published rows: LLM_AD (Jin et al., SC'24) ICL accuracy on the full 1000genome test file, "
              "no fine-tuning / LoRA fine-tuning; negative-only and positive-only few-shot 0.54-0.73 there. That "
              f"file is {full_ab:.1%} abnormal: always answering normal scores {1 - full_ab:.3f} on it.", ""]
    for name, tu in tuning.items():
        rounds = tu.get("rounds", [tu])
        lines += [f"LoRA adapter `{name}` (shared by its rows): rank {tu['lora_r']}, alpha {tu.get('lora_alpha')}, "
                  f"layers {tu.get('lora_layers') or 'all'}, trl SFTTrainer completion-only loss on prompt -> label "
                  f"completions from the paper-split train part, balanced, each prompt with its own "
                  f"0..{tu['train_shots']} random demonstrations ({tu['train_demos']}); {len(rounds)} round(s) of "
                  f"< 10 min, each on {rounds[0]['examples']} new examples drawn with the round's seed, stopped by a "
                  f"time budget: {sum(r['steps'] for r in rounds)} steps of batch {tu.get('batch_size', 4)} = "
                  f"{sum(r['examples_seen'] for r in rounds)} examples seen, prompt tokens mean "
                  f"{np.mean([r['prompt_tokens']['mean'] for r in rounds]):.0f}, lr {tu.get('learning_rate')} "
                  f"(constant), train loss per round {[round(r['train_loss'], 3) for r in rounds]}, "
                  f"{sum(r['seconds'] for r in rounds) / 60:.1f} min in all on 1 thread. Scoring uses the adapter "
                  "merged into the weights.", ""]
    atomic_write_text(RESULTS / "icl_table.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def speed_phase(args) -> None:
    """Prefix cache vs naive prompting, interleaved batch by batch so both see the same machine load."""
    from llmad.models.causal_lm import load_causal_lm

    t0 = time.perf_counter()
    split, test, _ = load_split(args)
    sub = test.iloc[:args.speed_rows]
    before = machine(args)
    lm = load_causal_lm("smollm2-135m")
    results = []
    for template in args.speed_templates.split(","):
        cfg = replace(base_cfg(args), shots=4, select="balanced", calibrate="none", template=template)
        det = ICLDetector(config=cfg)
        det.fit(split.train, None, lm=lm)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            det.score_details(sub.iloc[:2], use_cache=True)  # warm-up: the prefix KV is computed once, here
            groups, _ = det.prepare(det.render(sub))
            res = {True: [], False: []}
            secs = {True: 0.0, False: 0.0}
            for s in range(0, len(sub), args.batch_size):
                chunk = sub.iloc[s:s + args.batch_size]
                for use in (True, False):
                    t = time.perf_counter()
                    res[use].append(det.score_details(chunk, use_cache=use)["raw_logit"].to_numpy())
                    secs[use] += time.perf_counter() - t
                if time.perf_counter() - t0 > args.budget_s:
                    break
        a, b = np.concatenate(res[True]), np.concatenate(res[False])
        y = sub["label"].to_numpy()[:len(a)]
        q_tokens = [len(q) for g in groups for q in g.seqs]
        results.append({"template": template, "rows": int(len(a)), "shots": 4, "select": "balanced",
                        "batch_size": args.batch_size, "prefix_tokens": len(groups[0].prefix_ids),
                        "query_tokens_mean": float(np.mean(q_tokens)),
                        "label_variants": det.info()["label_variants"],
                        "cached_prompts_per_s": len(a) / secs[True], "naive_prompts_per_s": len(b) / secs[False],
                        "cached_seconds": secs[True], "naive_seconds": secs[False],
                        "speedup": (len(a) / secs[True]) / (len(b) / secs[False]),
                        "max_abs_score_diff": float(np.max(np.abs(a - b))),
                        "accuracy_argmax_cached": float(np.mean((a >= 0) == y)),
                        "accuracy_argmax_naive": float(np.mean((b >= 0) == y))})
        if time.perf_counter() - t0 > args.budget_s:
            break
    out = {"model": "smollm2-135m (fp32, CPU)", "data": "1000genome paper-split test rows",
           "rows_seed": args.seed, "machine_before": before, "machine_after": machine(args), "results": results,
           "note": "2 CPU cores shared with other jobs; every batch is scored by both paths back to back",
           "provenance": provenance()}
    write_json(RESULTS / "icl_speed.json", out)
    md = ["# Prefix KV cache vs naive prompting (smollm2-135m, 4 shots balanced, fp32 CPU)", "",
          f"Same run, same rows (the first rows of the seed-{args.seed} subsample of the paper-split 1000genome "
          f"test rows), every batch of {args.batch_size} scored by both paths back to back. "
          f"{before['torch_threads']} torch thread(s); 1-minute load average {before['load_average_1m_5m_15m'][0]} "
          f"before, {out['machine_after']['load_average_1m_5m_15m'][0]} after (2 cores shared with other jobs). "
          "Naive = the whole prompt (task, demonstrations, query) re-encoded per job, batched the same way; "
          "prefix cache = task + demonstrations encoded once, their KV cache reused for every batch; both score "
          "every label tokenization (the two-token `Ab`+`normal` inline in the same pass).", "",
          "| job template | path | rows | prefix tokens | query tokens (mean) | prompts/s | accuracy (argmax) | "
          "speed-up | max abs score diff |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        md.append(f"| {r['template']} | prefix cache | {r['rows']} | {r['prefix_tokens']} | "
                  f"{r['query_tokens_mean']:.0f} | {r['cached_prompts_per_s']:.2f} | "
                  f"{r['accuracy_argmax_cached']:.3f} | {r['speedup']:.1f}x | {r['max_abs_score_diff']:.1e} |")
        md.append(f"| {r['template']} | naive | {r['rows']} | {r['prefix_tokens']} | {r['query_tokens_mean']:.0f} "
                  f"| {r['naive_prompts_per_s']:.2f} | {r['accuracy_argmax_naive']:.3f} | 1.0x | |")
    atomic_write_text(RESULTS / "icl_speed.md", "\n".join(md) + "\n")
    print("\n".join(md))


def cot_phase(args) -> None:
    """Chain-of-thought on a sample of the untuned model (4 balanced demonstrations): bench/results/icl_cot.*."""
    split, test, _ = load_split(args)
    cfg = replace(base_cfg(args), shots=4, select="balanced", calibrate="none", mode="cot",
                  cot_max_new_tokens=args.cot_tokens)
    det = ICLDetector(config=cfg)
    det.fit(split.train, None)
    cot_run(args, det, split, test.iloc[:args.cot_rows], "icl_cot", "untuned")


def cot_run(args, det: ICLDetector, split, sub: pd.DataFrame, name: str, model_note: str) -> dict:
    """Rationales saved per job (resumable), the answer rates (written by the model / forced by scoring the label
    words after an appended "Answer:"), answer accuracy, and score mode on the same rows and demonstrations:
    bench/results/<name>.{md,json} and <name>_explanations.jsonl."""
    from sklearn.metrics import roc_auc_score

    t0 = time.perf_counter()
    cfg = det.config
    before = machine(args)
    out_f = RESULTS / f"{name}_explanations.jsonl"
    done = [json.loads(x) for x in out_f.read_text().splitlines()] if out_f.is_file() and args.resume else []
    out_rows = list(done)
    for i in range(len(done), len(sub)):
        if time.perf_counter() - t0 > args.budget_s:
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            d = det.score_details(sub.iloc[i:i + 1])
        out_rows.append({"row": i, "job_id": str(sub["job_id"].iloc[i]), "label": int(sub["label"].iloc[i]),
                         "anomaly_type": str(sub["anomaly_type"].iloc[i]), "parsed": int(d["parsed"].iloc[0]),
                         "answer": d["answer"].iloc[0], "answer_source": d["answer_source"].iloc[0],
                         "p_abnormal": float(d["p_abnormal"].iloc[0]),
                         "seconds": time.perf_counter() - t, "reasoning": d["rationale"].iloc[0]})
        atomic_write_text(out_f, "".join(json.dumps(r) + "\n" for r in out_rows))
    parsed = np.array([r["parsed"] for r in out_rows])
    y = np.array([r["label"] for r in out_rows])
    src = np.array([r.get("answer_source", "") for r in out_rows])
    p_ab = np.array([r.get("p_abnormal", np.nan) for r in out_rows], dtype=float)
    ok = parsed >= 0
    # Score mode (label-word log-probabilities, argmax) on the same rows and demonstrations: what CoT adds.
    score_det = ICLDetector(config=replace(cfg, mode="score")).fit(split.train, None, lm=det.lm_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = score_det.score(sub.iloc[:len(out_rows)])
    both = 0 < y.sum() < len(y)
    summary = {"rows": len(out_rows), "target_rows": len(sub), "seed": args.seed, "shots": cfg.shots,
               "select": cfg.select, "template": cfg.template, "model": model_note, "parse_rate": float(ok.mean()),
               "parsed": int(ok.sum()), "explicit_answer_rate": float(np.mean(src == "generated")),
               "forced_answer_rate": float(np.mean(src == "forced")),
               "accuracy_on_parsed": float((parsed[ok] == y[ok]).mean()) if ok.any() else None,
               "accuracy_unparsed_as_normal": float((np.where(ok, parsed, 0) == y).mean()),
               "predicted_abnormal_on_parsed": float((parsed[ok] == 1).mean()) if ok.any() else None,
               "answer_roc_auc": float(roc_auc_score(y, np.nan_to_num(p_ab, nan=0.5))) if both else None,
               "score_mode_accuracy": float(((s >= 0).astype(int) == y).mean()),
               "score_mode_roc_auc": float(roc_auc_score(y, s)) if both else None,
               "repetition_penalty": cfg.repetition_penalty, "no_repeat_ngram": cfg.no_repeat_ngram,
               "abnormal_rows": int(y.sum()), "max_new_tokens": cfg.cot_max_new_tokens,
               "seconds_per_job": float(np.mean([r["seconds"] for r in out_rows])),
               "machine": before, "explanations": f"bench/results/{name}_explanations.jsonl",
               "provenance": provenance()}
    write_json(RESULTS / f"{name}.json", summary)

    def fmt(x):
        return "n/a" if x is None else f"{x:.3f}"

    md = [f"# Chain-of-thought ICL (smollm2-135m, {model_note}, {cfg.shots} shots {cfg.select}, greedy)", "",
          f"{summary['rows']} test rows (the first of the seed-{args.seed} subsample of the paper-split 1000genome "
          f"test rows; {summary['abnormal_rows']} abnormal), job template `{cfg.template}`, at most "
          f"{cfg.cot_max_new_tokens} new tokens, prefix KV cache reused. Demonstrations show `Reasoning: <the two "
          "values furthest above the normal median>` then `Answer: <label>`. Decoding: no "
          f"{cfg.no_repeat_ngram}-gram twice and repetition penalty {cfg.repetition_penalty:g} over the generated "
          "tokens; it stops at the model's own `Answer: <label>` or where it starts a new example; a rationale "
          "without an answer gets `Answer:` appended and the two label words scored there (forced).", "",
          "| rows | answered | written by the model | forced | accuracy (CoT answer) | ROC-AUC (P(abnormal) at "
          "the answer) | accuracy (score mode, same rows) | ROC-AUC (score mode) | s/job |",
          "|---|---|---|---|---|---|---|---|---|",
          f"| {summary['rows']} | {summary['parse_rate']:.2f} | {summary['explicit_answer_rate']:.2f} | "
          f"{summary['forced_answer_rate']:.2f} | {fmt(summary['accuracy_on_parsed'])} | "
          f"{fmt(summary['answer_roc_auc'])} | {summary['score_mode_accuracy']:.3f} | "
          f"{fmt(summary['score_mode_roc_auc'])} | {summary['seconds_per_job']:.1f} |", "",
          f"Every rationale: bench/results/{name}_explanations.jsonl. The first five:", ""]
    for r in out_rows[:5]:
        md.append(f"- job {r['job_id']} (label {r['label']}, answer {r.get('answer', '')} "
                  f"({r.get('answer_source', '')})): {r['reasoning'][:400].replace(chr(10), ' ')}")
    atomic_write_text(RESULTS / f"{name}.md", "\n".join(md) + "\n")
    print("\n".join(md))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", default="table", choices=["table", "tune", "speed", "cot", "report"])
    ap.add_argument("--budget-s", type=float, default=540)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--seed", type=int, default=0, help="test/validation subsample seed")
    ap.add_argument("--template", default="compact", help="job template of every prompt")
    ap.add_argument("--test-rows", type=int, default=1000)
    ap.add_argument("--val-rows", type=int, default=100)
    ap.add_argument("--cells", default="all", choices=["all", "base", "lora"])
    ap.add_argument("--settings", default="", help="only these settings, e.g. zero-shot,few-shot-mixed")
    ap.add_argument("--chunk", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--train-examples", type=int, default=200)
    ap.add_argument("--train-shots", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--train-budget-s", type=float, default=500, help="tuning stops after this (steps recorded)")
    ap.add_argument("--adapter", default="lora-l8", help="LoRA adapter name (tune phase; table --cells lora)")
    ap.add_argument("--adapters", default="lora-l8", help="adapters whose rows the report lists (comma-separated)")
    ap.add_argument("--lora-layers", type=int, default=8, help="LoRA on the last N layers only (0: all)")
    ap.add_argument("--tune-round", type=int, default=0, help="0 creates the adapter, r > 0 continues it")
    ap.add_argument("--speed-rows", type=int, default=64)
    ap.add_argument("--speed-templates", default="compact,paper")
    ap.add_argument("--cot-rows", type=int, default=40)
    ap.add_argument("--cot-tokens", type=int, default=120)
    ap.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                    help="cot: continue the saved explanations")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    phases = {"table": table_phase, "tune": tune_phase, "speed": speed_phase, "cot": cot_phase, "report": report}
    phases[args.phase](args)


if __name__ == "__main__":
    main()
