"""The LM settings of bench/unsupervised.py, chosen on 1000genome *validation* rows (the test part is never read).

Run: OMP_NUM_THREADS=2 .venv/bin/python bench/unsupervised_pilot.py 1000genome 1000 '{"keep_layers": 2}' ...
Each JSON argument is a set of NLLConfig overrides; one line of JSON per setting: validation ROC-AUC of the mean
score (``val_auc``) and of ``aggregate=z`` (``val_auc_z``) from the same fitted model, fit seconds, scoring rows/s
(one field order), the final train loss and each field's own validation ROC-AUC.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from llmad.data import load_split
from llmad.data.splits import subsample
from llmad.detectors.nll.config import NLLConfig
from llmad.detectors.nll.detector import NLLDetector


def main() -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    wf, n_train = sys.argv[1], int(sys.argv[2])
    sp = load_split(f"flowbench:{wf}", split="run", seed=0, context=True)
    tr = subsample(sp.train, n_train, 0)
    va = subsample(sp.validation, 400, 0)
    y = va["label"].to_numpy()
    for spec in sys.argv[3:]:
        kw = json.loads(spec)
        cfg = NLLConfig(**{**dict(permutations=1, threshold="train-quantile:0.95", threshold_rows=64,
                                  progress=False, batch_size=16), **kw})
        t = time.time()
        det = NLLDetector(config=cfg).fit(tr, None)
        fit = time.time() - t
        t = time.time()
        d = det.score_details(va)
        sc = time.time() - t
        cols = [f"nll_{f}" for f in det.fields_]
        mu = np.array([det.baseline_.get(f, 0.0) for f in det.fields_])
        sd = np.array([det.scale_.get(f, 1.0) for f in det.fields_])
        zs = np.nanmean((d[cols].to_numpy(dtype=float) - mu) / sd, axis=1)
        per = {c[4:]: round(roc_auc_score(y, d[c].fillna(d[c].mean())), 3) for c in cols}
        print(json.dumps({"wf": wf, "train_rows": len(tr), **kw, "val_auc": round(roc_auc_score(y, d.score), 4),
                          "val_auc_z": round(roc_auc_score(y, zs), 4), "fit_s": round(fit),
                          "score_rows_s": round(len(va) / sc, 1), "loss": round(det.train_info_["train_loss"], 3),
                          "per_field_auc": per}), flush=True)


if __name__ == "__main__":
    main()
