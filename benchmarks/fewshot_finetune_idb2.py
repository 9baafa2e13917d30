"""Real run: all_idb2_small split 50/50 (stratified, by sha256) into a fine-tuning part and an evaluation part;
few-shot (2-way, 1/5/10/20 shots, 300 episodes, seed 0) on the evaluation part with frozen and fine-tuned
tf_efficientnet_lite0 pooled features at 128 px (3 epochs, AdamW 3e-4, batch 32; ~5 min per objective on 2 busy
CPU cores).

    python benchmarks/fewshot_finetune_idb2.py prototypical,crossentropy [OUT_DIR] [DATA_DIR]
"""
import os
import sys
import time

import pandas as pd

from deepfeat.data.images import sha256_file
from deepfeat.data.sources import open_source
from deepfeat.fewshot.evaluate import few_shot_evaluate
from deepfeat.reporting.fewshot_report import write_fewshot_report
from deepfeat.extraction.api import extract_features
from deepfeat.finetuning.run import finetune
from deepfeat.finetuning.splits import split_train_val

O = sys.argv[2] if len(sys.argv) > 2 else "fewshot-finetune-idb2"
DATA = sys.argv[3] if len(sys.argv) > 3 else "../shared/data/all_idb2_small"
os.makedirs(O, exist_ok=True)
src = open_source(DATA)
sha = [sha256_file(p) for p in src.paths]
ft, ev = split_train_val(src.labels, fraction=0.5, seed=0, sha256=sha)
pd.DataFrame({"path": [src.paths[i] for i in ft], "label": [src.labels[i] for i in ft]}).to_csv(f"{O}/ft.csv", index=False)
pd.DataFrame({"path": [src.paths[i] for i in ev], "label": [src.labels[i] for i in ev]}).to_csv(f"{O}/ev.csv", index=False)
print("fine-tune part", len(ft), "evaluation part", len(ev), "shared sha256", len({sha[i] for i in ft} & {sha[i] for i in ev}), flush=True)
objectives = sys.argv[1].split(",")
weights = {"frozen": "imagenet"}
for obj in objectives:
    t = time.time()
    r = finetune(f"{O}/ft.csv", model="tf_efficientnet_lite0", weights="imagenet", out=f"{O}/{obj}.pt",
                 objective=obj, epochs=3, batch_size=32, image_size=128, optimizer="adamw", lr=3e-4,
                 val_fraction=0.2, workers=0, progress=False, schedule="constant")
    print(obj, f"{time.time() - t:.0f} s", r.curves.to_string(), flush=True)
    weights[obj] = f"{O}/{obj}.pt"
tables = []
for name, w in weights.items():
    fs = extract_features(f"{O}/ev.csv", model="tf_efficientnet_lite0", weights=w, layer="pooled",
                          image_size=128, cache=False, progress=False)
    fs.save(f"{O}/ev_{name}.features")
    res = few_shot_evaluate(fs, ways=[2], shots=[1, 5, 10, 20], queries=15, episodes=300,
                            classifiers=["prototype", "logreg", "svm"], baseline="none", seed=0)
    write_fewshot_report(res, f"{O}/fewshot_{name}")
    t = res.table.assign(features=name)
    tables.append(t)
    print(name, res.honesty_lines(), flush=True)
    print(res.display().to_string(), flush=True)
all_t = pd.concat(tables)
all_t.to_csv(f"{O}/compare.csv", index=False)
all_t["acc"] = [f"{100*m:.1f} ± {100*c:.1f}" for m, c in zip(all_t.accuracy_mean, all_t.ci95)]
print(all_t.pivot_table(index=["shots", "method"], columns="features", values="acc", aggfunc="first").to_string())
