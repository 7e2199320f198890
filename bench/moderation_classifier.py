"""How well the local moderation classifier pre-sorts refusals, on real moderators' decisions.

Usage: python bench/moderation_classifier.py [--data /work/shared/data/polis] [--folds 5] [--out FILE]

Data: the Polis conversations of compdemocracy/openData (CC BY 4.0), read in place: each comment
was accepted (moderated = 1) or moderated out (-1) by the conversation's own moderators. For each
conversation with at least 30 of each, a stratified k-fold cross-validation compares, on the same
folds, consultations/classifier.py's pipeline (TF-IDF char 2-5-grams + logistic regression) with
a baseline measured in the same run: logistic regression on surface features (length, words,
URL, digits, capitals, punctuation). Prints ROC AUC, precision and recall at 0.5, training time
and prediction throughput, as a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import precision_score, recall_score, roc_auc_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from consultations.classifier import ACCEPT, build_pipeline, guesses  # noqa: E402

MIN_PER_CLASS = 30
URL = re.compile(r"https?://|www\.", re.I)


def load(path: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    with path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row.get("moderated") not in ("1", "-1"):
                continue
            texts.append(row["comment-body"])
            labels.append(ACCEPT if row["moderated"] == "1" else "other")
    return texts, labels


def surface(texts: list[str]) -> np.ndarray:
    rows = []
    for t in texts:
        letters = [c for c in t if c.isalpha()]
        rows.append(
            [
                np.log1p(len(t)),
                np.log1p(len(t.split())),
                1.0 if URL.search(t) else 0.0,
                sum(c.isdigit() for c in t) / max(1, len(t)),
                sum(c.isupper() for c in letters) / max(1, len(letters)),
                sum(c in "!?" for c in t) / max(1, len(t)),
                t.count("?") > 0,
            ]
        )
    return np.asarray(rows, dtype=float)


def run(texts, labels, folds: int, seed: int = 0) -> dict:
    y = np.array([label != ACCEPT for label in labels])
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    ours = {"auc": [], "precision": [], "recall": [], "train_s": [], "predict_per_s": []}
    base = {"auc": [], "precision": [], "recall": []}
    x_surface = surface(texts)
    for train, test in splitter.split(np.zeros(len(y)), y):
        t0 = time.perf_counter()
        pipeline = build_pipeline().fit([texts[i] for i in train], [labels[i] for i in train])
        ours["train_s"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        scores = np.array(
            [g.refuse_probability for g in guesses(pipeline, [texts[i] for i in test])]
        )
        ours["predict_per_s"].append(len(test) / (time.perf_counter() - t0))
        for name, value in score(y[test], scores).items():
            ours[name].append(value)
        baseline = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced"))
        baseline.fit(x_surface[train], y[train])
        for name, value in score(y[test], baseline.predict_proba(x_surface[test])[:, 1]).items():
            base[name].append(value)
    return {
        "n": len(y),
        "refused": int(y.sum()),
        "ours": {k: float(np.mean(v)) for k, v in ours.items()},
        "base": {k: float(np.mean(v)) for k, v in base.items()},
    }


def score(truth, scores) -> dict:
    return {
        "auc": roc_auc_score(truth, scores),
        "precision": precision_score(truth, scores >= 0.5, zero_division=0),
        "recall": recall_score(truth, scores >= 0.5, zero_division=0),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/polis")
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    lines = [
        f"Stratified {args.folds}-fold cross-validation per conversation (seed 0), same folds for both.",
        "",
        "| conversation | decisions | refused | AUC ours | AUC baseline | precision ours | recall ours "
        "| precision baseline | recall baseline | train (s) | predictions/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    aucs, base_aucs = [], []
    for path in sorted(Path(args.data).glob("*/comments.csv")):
        texts, labels = load(path)
        refused = sum(1 for label in labels if label != ACCEPT)
        if min(refused, len(labels) - refused) < MIN_PER_CLASS:
            continue
        r = run(texts, labels, args.folds)
        o, b = r["ours"], r["base"]
        aucs.append(o["auc"])
        base_aucs.append(b["auc"])
        lines.append(
            f"| {path.parent.name} | {r['n']} | {r['refused']} | {o['auc']:.3f} | {b['auc']:.3f} "
            f"| {o['precision']:.2f} | {o['recall']:.2f} | {b['precision']:.2f} | {b['recall']:.2f} "
            f"| {o['train_s']:.2f} | {o['predict_per_s']:.0f} |"
        )
    lines += [
        "",
        f"Mean AUC over {len(aucs)} conversations: ours {np.mean(aucs):.3f}, "
        f"surface-feature baseline {np.mean(base_aucs):.3f} (0.5 = chance).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
