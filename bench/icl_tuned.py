"""Tuned ICL on 1000genome (paper and run split): nearest-neighbour demonstrations, a LoRA adapter tuned on
thousands of prompt -> label examples, the shots curve untuned and tuned, beside kNN/rf (paper split) or rf/hgb-context
and MiniLM SFT (run split) on the same rows (#20 items 1, 2, 5).

    nice -n 10 .venv/bin/python bench/icl_tuned.py --phase pilot          # settings on validation rows only
    nice -n 10 .venv/bin/python bench/icl_tuned.py --phase tune --rounds 4   # LoRA rounds (resumable)
    nice -n 10 .venv/bin/python bench/icl_tuned.py --phase table --budget-s 540   # scores more rows, resumes
    nice -n 10 .venv/bin/python bench/icl_tuned.py --phase tune-cot --train-shots 2   # knn -> knn-cot (rationales)
    nice -n 10 .venv/bin/python bench/icl_tuned.py --phase cot            # bench/results/icl_cot_tuned.*
    nice -n 10 .venv/bin/python bench/icl_tuned.py --phase decoding       # the loop guard, on validation rows
    nice -n 10 .venv/bin/python bench/icl_tuned.py --phase report         # bench/results/icl_tuned.{md,json}
    # the run split (1,000 jobs per part, as recipes/sft_all_workflows.yaml): its own adapter and cells, one table
    nice -n 10 .venv/bin/python bench/icl_tuned.py --split run --phase tune --rounds 4
    nice -n 10 .venv/bin/python bench/icl_tuned.py --split run --phase table --shots 4 --budget-s 3000

Protocol. Test rows: a seeded sample of the published LLM_AD test rows (the same sample as icl_bench.py); the
shots curve (0, 1, 2, 4, 8 nearest demonstrations) scores the first ``--curve-rows`` of them in every cell, the
``--main`` cells go on to all ``--test-rows``. Thresholds: the accuracy-best threshold on ``--val-rows`` validation
rows (never test); the argmax column is the paper's protocol. Settings (demonstration selection, statistics in the
task text) are chosen on validation rows in the pilot phase.

Run split (``--split run``): 1000genome split by workflow run at ``--run-limit`` jobs per part (seed 0: the rows
of recipes/sft_all_workflows.yaml, bench/results/sft.md section 5), peer/host context features computed on the whole
table. Beside the LM: rf and hgb on plain and context features and MiniLM SFT (llmad's default SFT config), all on the
same train part and rows.

Tuning (adapter ``knn``): LoRA on the last ``--lora-layers`` decoder layers with trl's SFTTrainer, completion-only
loss, balanced prompt -> label examples from the train part, each prompt with its own k in 0..``--train-shots``
nearest train rows (itself excluded): the prompts the curve scores. Rounds of ``--round-s`` seconds, each on new
examples drawn with the round's seed; the adapter is saved after every round, so tuning resumes.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd

from icl_bench import RESULTS, load_split, log_invocation, machine, sample_rows, state_dir  # noqa: E402 (bench/ is sys.path[0])

from llmad.detectors.icl.config import ICLConfig  # noqa: E402
from llmad.detectors.icl.detector import ICLDetector  # noqa: E402
from llmad.io import atomic_write_text, provenance, write_json  # noqa: E402
from llmad.metrics.classification import choose_threshold, classification_report  # noqa: E402

SHOTS = (0, 1, 2, 4, 8)
PUBLISHED = {"GPT-2 (paper)": (0.66, 0.72), "Mistral-7B (paper)": (0.68, 0.78)}


def out_dir(args, split: str | None = None):
    split = split or args.split
    d = state_dir(args).parent / (f"tuned-{args.template}" + ("" if split == "paper" else f"-{split}"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def load(args):
    """(split, test sample, validation sample): the paper split's published rows, or the run split at
    ``--run-limit`` jobs per part with context features."""
    if args.split == "paper":
        return load_split(args)
    from llmad.data import load_split as load_data

    split = load_data("flowbench:1000genome", split="run", limit=args.run_limit, context=True)
    return (split, *sample_rows(args, split))


def cfg_for(args, shots: int, select: str = "nearest", stats: bool = False) -> ICLConfig:
    return ICLConfig(model="smollm2-135m", shots=shots, select=select, order="fixed", stats=stats,
                     template=args.template, calibrate="none", batch_size=args.batch_size, seed=0)


def pilot_phase(args) -> None:
    """Demonstration choice on validation rows only: 4 shots nearest vs balanced vs balanced + class stats."""
    from sklearn.metrics import roc_auc_score

    from llmad.models.causal_lm import load_causal_lm

    split, _, _ = load(args)
    val = split.validation.sample(n=args.pilot_rows, random_state=args.seed + 1).reset_index(drop=True)
    lm = load_causal_lm("smollm2-135m")
    rows = []
    for name, select, stats in (("nearest", "nearest", False), ("balanced", "balanced", False),
                                ("balanced + stats", "balanced", True)):
        det = ICLDetector(config=cfg_for(args, 4, select, stats)).fit(split.train, None, lm=lm)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = det.score_details(val)["raw_logit"].to_numpy()
        rows.append({"demonstrations": name, "shots": 4, "val_rows": len(val),
                     "roc_auc": float(roc_auc_score(val["label"], s)), "seconds": time.perf_counter() - t})
        print(rows[-1], flush=True)
    write_json(out_dir(args) / "pilot.json", {"rows": rows, **machine(args)})


def tune_phase(args, adapter: str = "knn", start_from: str | None = None, mode: str = "score") -> None:
    """LoRA rounds on nearest-demonstration prompts; each round continues the saved adapter on new examples (the
    first round continues ``start_from`` when given)."""
    from peft import PeftModel

    from llmad.models.causal_lm import load_causal_lm

    split, _, _ = load(args)
    adir = out_dir(args) / adapter
    for _ in range(args.rounds):
        prev = json.loads((adir / "tuning.json").read_text()) if (adir / "tuning.json").is_file() else None
        rnd_no = len(prev["rounds"]) if prev else 0
        lm = None
        src = adir if prev else (out_dir(args) / start_from if start_from else None)
        if src is not None:
            lm = load_causal_lm("smollm2-135m")
            lm.model = PeftModel.from_pretrained(lm.model, str(src / "adapter"), is_trainable=True)
        cfg = replace(cfg_for(args, 0), lora_r=args.lora_r, train_examples=args.round_examples,
                      train_batch_size=args.train_batch, learning_rate=args.lr, train_shots=args.train_shots,
                      train_demos="resample", train_budget_s=args.round_s, lora_layers=args.lora_layers or None,
                      seed=rnd_no + (100 if mode == "cot" else 0), mode=mode)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            det = ICLDetector(config=cfg).fit(split.train, None, lm=lm)
        det.save(adir)
        rnd = {**det.tuning_, "round": rnd_no, "seconds": time.perf_counter() - t, **machine(args)}
        rounds = (prev["rounds"] if prev else []) + [rnd]
        write_json(adir / "tuning.json", {
            "adapter": adapter, "mode": mode, "start_from": start_from, "lora_r": args.lora_r,
            "lora_alpha": 2 * args.lora_r, "lora_layers": rnd["lora_layers"],
            "learning_rate": args.lr, "batch_size": args.train_batch, "select": "nearest", "template": args.template,
            "train_shots": args.train_shots, "train_demos": "resample",
            "data": f"{args.split}-split train part of 1000genome", "rounds": rounds,
            "steps": sum(r["steps"] for r in rounds), "examples_seen": sum(r["examples_seen"] for r in rounds),
            "seconds": sum(r["seconds"] for r in rounds)})
        print(f"round {rnd_no}: {rnd['steps']} steps, {rnd['examples_seen']} seen, loss {rnd['train_loss']:.3f}, "
              f"{rnd['seconds']:.0f} s", flush=True)


def tuned_lm(args, adapter: str = "knn"):
    from peft import PeftModel

    from llmad.models.causal_lm import load_causal_lm

    lm = load_causal_lm("smollm2-135m")
    lm.model = PeftModel.from_pretrained(lm.model, str(out_dir(args) / adapter / "adapter")).merge_and_unload().eval()
    return lm


def cot_phase(args) -> None:
    """CoT with the cot-tuned adapter (``--phase tune-cot``) on the first ``--cot-rows`` test rows, 2 nearest
    demonstrations with rationales: bench/results/icl_cot_tuned.*, beside score mode on the same rows."""
    from icl_bench import cot_run

    split, test, _ = load(args)
    cfg = replace(cfg_for(args, args.cot_shots), mode="cot", cot_max_new_tokens=args.cot_tokens,
                  repetition_penalty=args.cot_penalty, no_repeat_ngram=args.cot_ngram)
    det = ICLDetector(config=cfg).fit(split.train, None, lm=tuned_lm(args, "knn-cot"))
    cot_run(args, det, split, test.iloc[:args.cot_rows], args.cot_name, "LoRA knn-cot")


DECODINGS = {"4-gram ban, penalty 1.2": (4, 1.2), "8-gram ban, no penalty": (8, 1.0)}


def decoding_phase(args) -> None:
    """The CoT loop guard chosen on validation rows only (the ICLConfig default follows it): each guard's answer
    rates, untuned and with the cot-tuned adapter, ``--cot-shots`` nearest demonstrations with rationales:
    bench/results/icl_cot_decoding.{md,json}."""
    t0 = time.perf_counter()
    split, _, _ = load(args)
    val = split.validation.sample(n=args.decoding_rows, random_state=args.seed + 2).reset_index(drop=True)
    d = out_dir(args) / "decoding"
    d.mkdir(exist_ok=True)
    for model in ("untuned", "knn-cot"):
        lm = None
        for name, (ngram, penalty) in DECODINGS.items():
            f = d / f"{model}-{ngram}-{penalty:g}.json"
            if f.is_file() or time.perf_counter() - t0 > args.budget_s:
                continue
            if lm is None:
                from llmad.models.causal_lm import load_causal_lm

                lm = tuned_lm(args, "knn-cot") if model != "untuned" else load_causal_lm("smollm2-135m")
            cfg = replace(cfg_for(args, args.cot_shots), mode="cot", cot_max_new_tokens=args.cot_tokens,
                          repetition_penalty=penalty, no_repeat_ngram=ngram)
            det = ICLDetector(config=cfg).fit(split.train, None, lm=lm)
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                det_rows = det.score_details(val)
            src, y = det_rows["answer_source"].to_numpy(), val["label"].to_numpy()
            rate = float(np.mean(src == "generated"))
            write_json(f, {"model": model, "decoding": name, "no_repeat_ngram": ngram, "repetition_penalty": penalty,
                           "rows": len(val), "explicit_answer_rate": rate,
                           "forced_answer_rate": float(np.mean(src == "forced")),
                           "accuracy": float(np.mean(det_rows["parsed"].to_numpy() == y)),
                           "seconds_per_job": (time.perf_counter() - t) / len(val), **machine(args),
                           "rationales": det_rows["rationale"].astype(str).tolist()})
            print(rate, model, name, flush=True)
    recs = [json.loads(f.read_text()) for f in sorted(d.glob("*.json"))]
    write_json(RESULTS / "icl_cot_decoding.json", {
        "data": f"1000genome {args.split} split, {len(val)} validation rows (seed {args.seed + 2}), never test",
        "shots": args.cot_shots, "max_new_tokens": args.cot_tokens,
        "records": [{k: v for k, v in r.items() if k != "rationales"} for r in recs], "provenance": provenance()})
    df = pd.DataFrame([{k: r[k] for k in ("model", "decoding", "rows", "explicit_answer_rate", "forced_answer_rate",
                                          "accuracy", "seconds_per_job")} for r in recs])
    md = ["# CoT decoding: the loop guard, chosen on validation rows", "",
          f"Written by `bench/icl_tuned.py --phase decoding`. smollm2-135m, {args.cot_shots} nearest demonstrations "
          f"with rationales, at most {args.cot_tokens} new tokens, greedy, {len(val)} validation rows of 1000genome "
          f"({args.split} split; never test rows). `explicit_answer_rate`: the model wrote `Answer: <label>`; "
          "`forced`: a rationale without one got `Answer:` appended and the label words scored. `knn-cot`: the "
          "adapter of `--phase tune-cot`. The ICLConfig default (`no_repeat_ngram`, `repetition_penalty`) is the "
          "guard with the higher explicit rate over both models.", "", df.to_markdown(index=False, floatfmt=".3f"), ""]
    atomic_write_text(RESULTS / "icl_cot_decoding.md", "\n".join(md) + "\n")
    print("\n".join(md))


def cells(args) -> list[tuple[int, str, int]]:
    """(shots, lora, target rows), main cells last so that the curve fills first."""
    main = {int(k) for k in args.main.split(",") if k}
    shots = [int(k) for k in args.shots.split(",") if k]
    return [(k, lora, args.test_rows if k in main else args.curve_rows) for lora in ("", "knn") for k in shots]


def table_phase(args) -> None:
    """Score every cell a chunk at a time (round-robin), checkpointing raw scores; stops after --budget-s."""
    from llmad.models.causal_lm import load_causal_lm

    t0 = time.perf_counter()
    split, test, val = load(args)
    log_invocation(args, "table", folder=out_dir(args))
    lms: dict[str, object] = {}
    progressed = True
    while progressed and time.perf_counter() - t0 < args.budget_s:
        progressed = False
        for k, lora, target in cells(args):
            if time.perf_counter() - t0 > args.budget_s:
                break
            if lora and not (out_dir(args) / "knn" / "tuning.json").is_file():
                continue
            d = out_dir(args) / f"shots{k}{'-' + lora if lora else ''}"
            d.mkdir(exist_ok=True)
            done = pd.read_csv(d / "test.csv") if (d / "test.csv").is_file() else None
            start = 0 if done is None else len(done)
            if start >= target and (d / "val.csv").is_file():
                continue
            if lora not in lms:
                lms[lora] = tuned_lm(args) if lora else load_causal_lm("smollm2-135m")
            det = ICLDetector(config=cfg_for(args, k)).fit(split.train, None, lm=lms[lora])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if not (d / "val.csv").is_file():
                    vs = det.score_details(val)["raw_logit"].to_numpy()
                    atomic_write_text(d / "val.csv", pd.DataFrame({"label": val["label"], "raw_logit": vs})
                                      .to_csv(index=False))
                if start >= target:
                    continue
                chunk = test.iloc[start:min(target, start + args.chunk)]
                t = time.perf_counter()
                s = det.score_details(chunk)["raw_logit"].to_numpy()
                el = time.perf_counter() - t
            part = pd.DataFrame({"row": np.arange(start, start + len(chunk)), "job_id": chunk["job_id"].astype(str),
                                 "label": chunk["label"].to_numpy(), "raw_logit": s, "seconds": el / len(chunk)})
            new = part if done is None else pd.concat([done, part], ignore_index=True)
            atomic_write_text(d / "test.csv", new.to_csv(index=False))
            progressed = True
            print(f"shots {k}{' +' + lora if lora else ''}: {len(new)}/{target} ({len(chunk) / el:.2f} prompts/s)",
                  flush=True)
    report(args)


def baselines(args, test: pd.DataFrame, val: pd.DataFrame, split) -> list[dict]:
    """Non-LM rows on the same train part, test rows and validation threshold: kNN-8 (the demonstrations' feature
    space) and rf on those features (paper split); rf/hgb on plain and context features and MiniLM SFT (run split)."""
    scores = run_baseline_scores(args, test, val, split) if args.split == "run" else \
        paper_baseline_scores(test, val, split, ICLDetector(config=cfg_for(args, 0)).features)
    y_te, y_va = test["label"].to_numpy(), val["label"].to_numpy()
    return [record(args, name, None, "", y_te[:rows], s_te[:rows], y_va, s_va, 0.5)
            for name, (s_va, s_te) in scores.items() for rows in sorted({args.curve_rows, args.test_rows})]


def paper_baseline_scores(test: pd.DataFrame, val: pd.DataFrame, split, feats: list[str]) -> dict:
    """{name: (validation scores, test scores)} of kNN-8 and rf in the demonstrations' feature space."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier

    from llmad.detectors.icl.demos import feature_matrix

    x_tr = feature_matrix(split.train, feats)
    mu, sd = x_tr.mean(axis=0), x_tr.std(axis=0) + 1e-6
    scores = {}
    for name, est in (("knn-8 (demonstration space)", KNeighborsClassifier(8)),
                      ("rf (same features)", RandomForestClassifier(300, n_jobs=2, random_state=0))):
        est.fit((x_tr - mu) / sd, split.train["label"].to_numpy())
        scores[name] = tuple(est.predict_proba((feature_matrix(part, feats) - mu) / sd)[:, 1] for part in (val, test))
    return scores


def run_baseline_scores(args, test: pd.DataFrame, val: pd.DataFrame, split) -> dict:
    """{name: (validation scores, test scores)} of rf/hgb (plain, context) and MiniLM SFT (default config; its
    scores cached: a fit takes minutes here)."""
    import tempfile

    from llmad.detectors.baselines import BaselineDetector
    from llmad.detectors.sft.config import SFTConfig
    from llmad.detectors.sft.detector import SFTDetector

    scores = {}
    for method, feats in (("rf", "plain"), ("rf", "context"), ("hgb", "context")):
        det = BaselineDetector(method=method, features=feats, seed=0).fit(split.train)
        scores[f"{method}-{feats}"] = (det.score(val), det.score(test))
    cache = out_dir(args) / "sft-minilm.json"
    if not cache.is_file():
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            det = SFTDetector(config=SFTConfig(progress=False)).fit(split.train, split.validation, output_dir=tmp)
            write_json(cache, {"config": "llmad SFT defaults (MiniLM, compact template)", "val": det.score(val).tolist(),
                               "test": det.score(test).tolist(), "fit_s": time.perf_counter() - t, **machine(args)})
    sft = json.loads(cache.read_text())
    scores["MiniLM SFT (default recipe)"] = (np.asarray(sft["val"]), np.asarray(sft["test"]))
    return scores


def record(args, setting: str, shots, lora: str, y, s_te, y_va, s_va, argmax_at: float) -> dict:
    thr = choose_threshold(y_va, s_va, objective="accuracy")
    rep = classification_report(y, scores=s_te, threshold=thr)
    arg = classification_report(y, scores=s_te, threshold=argmax_at)
    return {"workflow": "1000genome", "split": args.split, "setting": setting, "shots": shots, "lora": lora or "no",
            "rows": int(len(y)), "accuracy": rep["accuracy"], "f1": rep["f1"], "roc_auc": rep["roc_auc"],
            "accuracy_argmax": arg["accuracy"], "f1_argmax": arg["f1"],
            "predicted_abnormal_argmax": float(np.mean(np.asarray(s_te) >= argmax_at))}


def report(args) -> None:
    """This split's records and facts (``<state>/report.json``), then the table of every split measured."""
    split, test, val = load(args)
    recs = []
    for k, lora, target in cells(args):
        d = out_dir(args) / f"shots{k}{'-' + lora if lora else ''}"
        if not (d / "test.csv").is_file() or not (d / "val.csv").is_file():
            continue
        te, va = pd.read_csv(d / "test.csv"), pd.read_csv(d / "val.csv")
        for rows in sorted({args.curve_rows, target}):
            if len(te) < rows:
                continue
            sub = te.iloc[:rows]
            r = record(args, f"{k}-shot nearest" if k else "zero-shot", k, lora, sub["label"].to_numpy(),
                       sub["raw_logit"].to_numpy(), va["label"].to_numpy(), va["raw_logit"].to_numpy(), 0.0)
            r["prompts_per_s"] = float(1.0 / sub["seconds"].mean())
            recs.append(r)
    if not recs:
        print("no results yet")
        return
    recs += baselines(args, test, val, split)

    def state(name):
        return json.loads((out_dir(args) / name).read_text()) if (out_dir(args) / name).is_file() else None

    inv = [json.loads(x) for x in (out_dir(args) / "invocations.jsonl").read_text().splitlines()] \
        if (out_dir(args) / "invocations.jsonl").is_file() else []
    loads = [r["load_average_1m_5m_15m"][0] for r in inv]
    main = [r for r in recs if r["lora"] == "knn" and r["rows"] >= 1000]
    best = max(main, key=lambda r: r["roc_auc"], default=None)
    goal = None if best is None or args.split != "paper" else {
        "setting": best["setting"], "rows": best["rows"], "accuracy": best["accuracy"],
        "roc_auc": best["roc_auc"], "accuracy_goal_0_72": best["accuracy"] >= 0.72,
        "roc_auc_goal_0_80": best["roc_auc"] >= 0.80, "stretch_0_78": best["accuracy"] >= 0.78}
    tt = test["label"]
    data = ("flowbench:1000genome, paper split (published LLM_AD test rows)" if args.split == "paper" else
            f"flowbench:1000genome, run split, {args.run_limit} jobs per part (seed 0), context features")
    write_json(out_dir(args) / "report.json", {
        "split": args.split, "data": data, "model": "smollm2-135m fp32 CPU",
        "test_sample": {"seed": args.seed, "rows": int(len(test)), "positives": int(tt.sum())},
        "validation_rows": int(len(val)), "template": args.template, "pilot": state("pilot.json"),
        "tuning": state("knn/tuning.json"), "goal": goal,
        "load_average_1m_range": [min(loads), max(loads)] if loads else None, "records": recs})
    write_table(args)


def split_lines(meta: dict) -> list[str]:
    """The markdown section of one split."""
    df = pd.DataFrame(meta["records"])
    df["shots"] = df["shots"].astype("Int64")  # the baselines have none
    tt, goal, tuning, pilot = meta["test_sample"], meta["goal"], meta["tuning"], meta["pilot"]
    rows = ("the published test rows" if meta["split"] == "paper" else
            "the run split's test part, the rows of bench/results/sft.md section 5")
    lines = [f"## {meta['split']} split", "",
             f"{meta['data']}. Test rows: the first `rows` of {tt['rows']} drawn with seed {tt['seed']} from {rows} "
             f"({tt['positives']} abnormal; majority-class accuracy {1 - tt['positives'] / tt['rows']:.3f}). "
             f"`accuracy`/`f1`: at the accuracy-best threshold on {meta['validation_rows']} validation rows; "
             "`*_argmax`: the model's own answer (the paper's protocol). Template "
             f"`{meta['template']}`, demonstrations: the k nearest train rows (log1p features, standardised), nearest "
             f"last. fp32 on 2 CPU cores (no AMX here), 1-minute load {meta['load_average_1m_range']}.", "",
             df.to_markdown(index=False, floatfmt=".3f"), ""]
    if goal:
        lines += [f"**Goal** (LoRA few-shot, >= 1,000 rows): {goal['setting']}: accuracy {goal['accuracy']:.3f} "
                  f"(>= 0.72: {'met' if goal['accuracy_goal_0_72'] else 'not met'}), ROC-AUC {goal['roc_auc']:.3f} "
                  f"(>= 0.80: {'met' if goal['roc_auc_goal_0_80'] else 'not met'}); stretch 0.78: "
                  f"{'met' if goal['stretch_0_78'] else 'not met'}.", "",
                  "Published (LLM_AD, full test file, few-shot, untuned / LoRA): " +
                  "; ".join(f"{k} {a:.2f} / {b:.2f}" for k, (a, b) in PUBLISHED.items()), ""]
    if tuning:
        rs = tuning["rounds"]
        lines += [f"Adapter `knn` ({tuning['data']}): LoRA rank {tuning['lora_r']} on layers "
                  f"{tuning['lora_layers']}, lr {tuning['learning_rate']} (constant), batch {tuning['batch_size']}, "
                  f"{len(rs)} round(s), {tuning['steps']} steps = {tuning['examples_seen']} balanced examples seen "
                  f"(k in 0..{tuning['train_shots']} nearest demonstrations each, prompt tokens mean "
                  f"{np.mean([r['prompt_tokens']['mean'] for r in rs]):.0f}), train loss per round "
                  f"{[round(r['train_loss'], 3) for r in rs]}, {tuning['seconds'] / 60:.1f} min on "
                  f"{rs[-1]['torch_threads']} torch threads.", ""]
    if pilot:
        lines += ["Pilot (validation rows only, untuned, 4 shots): " + "; ".join(
            f"{r['demonstrations']} ROC-AUC {r['roc_auc']:.3f}" for r in pilot["rows"]) +
            f" ({pilot['rows'][0]['val_rows']} rows).", ""]
    return lines


def write_table(args) -> None:
    """bench/results/icl_tuned.{md,json} from every split's report.json (paper first)."""
    metas = [json.loads((out_dir(args, s) / "report.json").read_text()) for s in ("paper", "run")
             if (out_dir(args, s) / "report.json").is_file()]
    top = next((m for m in metas if m["split"] == "paper"), metas[0])
    write_json(RESULTS / "icl_tuned.json", {
        **{k: v for k, v in top.items() if k != "records"},
        "splits": {m["split"]: {k: v for k, v in m.items() if k != "records"} for m in metas},
        "records": [r for m in metas for r in m["records"]], "provenance": provenance()})
    lines = ["# Tuned ICL: smollm2-135m with nearest-neighbour demonstrations, 1000genome", "",
             "Written by `bench/icl_tuned.py` (its docstring: protocol). One section per split; every LM row has "
             "non-LM rows on the same train part, test rows and validation threshold beside it.", ""]
    for m in metas:
        lines += split_lines(m)
    atomic_write_text(RESULTS / "icl_tuned.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", default="table", choices=["pilot", "tune", "tune-cot", "table", "cot", "decoding",
                                                                   "report"])
    ap.add_argument("--cot-rows", type=int, default=100)
    ap.add_argument("--cot-shots", type=int, default=2)
    ap.add_argument("--decoding-rows", type=int, default=40, help="validation rows of --phase decoding")
    ap.add_argument("--cot-tokens", type=int, default=80)
    ap.add_argument("--cot-penalty", type=float, default=ICLConfig().repetition_penalty,
                    help="repetition penalty over generated tokens")
    ap.add_argument("--cot-ngram", type=int, default=ICLConfig().no_repeat_ngram,
                    help="no n-gram of this many tokens twice (0: off)")
    ap.add_argument("--cot-name", default="icl_cot_tuned", help="bench/results/<name>.{md,json}")
    ap.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--budget-s", type=float, default=540)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--template", default="compact")
    ap.add_argument("--test-rows", type=int, default=1000)
    ap.add_argument("--curve-rows", type=int, default=300)
    ap.add_argument("--val-rows", type=int, default=200)
    ap.add_argument("--pilot-rows", type=int, default=150)
    ap.add_argument("--split", default="paper", choices=["paper", "run"])
    ap.add_argument("--run-limit", type=int, default=1000, help="run split: jobs per part")
    ap.add_argument("--shots", default=",".join(map(str, SHOTS)), help="shot counts of the table (comma-separated)")
    ap.add_argument("--main", default="4", help="shot counts scored on all --test-rows (comma-separated)")
    ap.add_argument("--chunk", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--round-s", type=float, default=480)
    ap.add_argument("--round-examples", type=int, default=600)
    ap.add_argument("--train-shots", type=int, default=4)
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-layers", type=int, default=8, help="LoRA on the last N layers (0: all)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.phase == "tune-cot":  # continues the knn adapter on rationale + answer completions
        tune_phase(args, "knn-cot", start_from="knn", mode="cot")
        return
    {"pilot": pilot_phase, "tune": tune_phase, "table": table_phase, "cot": cot_phase,
     "decoding": decoding_phase, "report": report}[args.phase](args)


if __name__ == "__main__":
    main()
