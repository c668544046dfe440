"""Seed 002's baseline loops vs `ensemble baselines`, side by side on the same data in one run.

    ensemble data idx /usr/share/datasets/fashion-mnist --out data/fashion/
    python benchmarks/baselines_sweep.py --data data/fashion [--n-jobs -1]

Both sides see the same stratified 90/10 split of train.csv (seed 0), the same 0..1 pixel scaling and the
same number of workers. The seed's loops: a KNeighborsClassifier fitted and scored for each k in 1..19
then refitted at the best k; a RandomForestClassifier fitted from scratch for 100..500 trees then refitted
at the best size. Ours: one k=19 neighbour search; one warm-started forest. The script checks that both
pick the same hyperparameter and predict the same validation labels, then prints wall times and ratios.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import sklearn
from sklearn.ensemble import RandomForestClassifier
from sklearn.neighbors import KNeighborsClassifier

from ensemble.blend.baselines import FOREST_SIZES, KNN_KS, flat_pixels, forest_sweep, knn_sweep
from ensemble.data.split import stratified_split
from ensemble.data.tables import read_test_csv, read_train_csv


def seed_knn_loop(x_train, y_train, x_val, y_val, n_jobs):
    scores = {}
    for k in KNN_KS:
        scores[k] = KNeighborsClassifier(n_neighbors=k, n_jobs=n_jobs).fit(x_train, y_train).score(x_val, y_val)
    best = sorted(scores.items(), key=lambda item: item[1], reverse=True)[0][0]
    final = KNeighborsClassifier(n_neighbors=best, n_jobs=n_jobs).fit(x_train, y_train)
    return best, scores, final.predict(x_val)


def seed_forest_loop(x_train, y_train, x_val, y_val, n_jobs):
    best_score, best_size, scores = 0.0, None, {}
    for size in FOREST_SIZES:
        forest = RandomForestClassifier(n_estimators=size, random_state=0, n_jobs=n_jobs).fit(x_train, y_train)
        scores[size] = forest.score(x_val, y_val)
        if scores[size] > best_score:
            best_score, best_size = scores[size], size
    final = RandomForestClassifier(n_estimators=best_size, random_state=0, n_jobs=n_jobs).fit(x_train, y_train)
    return best_size, scores, final.predict(x_val)


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/fashion"))
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument("--only", default="knn,forest")
    args = parser.parse_args()

    train = read_train_csv(args.data / "train.csv")
    test = read_test_csv(args.data / "test.csv")
    train_index, val_index = stratified_split(train.labels, 0.1, seed=0)
    x = flat_pixels(train.images)
    x_train, y_train, x_val, y_val = x[train_index], train.labels[train_index], x[val_index], train.labels[val_index]
    n_classes = int(train.labels.max()) + 1  # labels 0..K-1 in the IDX data this compares on
    x_test = flat_pixels(test.images)
    print(f"data {args.data}: {len(x_train)} train / {len(x_val)} validation / {len(x_test)} test rows; "
          f"{os.cpu_count()} cores, n_jobs={args.n_jobs}, {platform.machine()}, python "
          f"{platform.python_version()}, scikit-learn {sklearn.__version__}")

    rows = []
    if "knn" in args.only:
        (seed_k, seed_scores, seed_pred), seed_s = timed(seed_knn_loop, x_train, y_train, x_val, y_val, args.n_jobs)
        ours, ours_s = timed(knn_sweep, x_train, y_train, x_val, y_val, x_test, n_classes=n_classes,
                             n_jobs=args.n_jobs)
        same = ours.choice["k"] == seed_k and np.array_equal(np.argmax(ours.val_probs, axis=1), seed_pred)
        rows.append(("knn k=1..19", seed_s, ours.fit_seconds, ours.predict_seconds, same,
                     f"k={seed_k} acc {seed_scores[seed_k]:.4f}"))
    if "forest" in args.only:
        (seed_n, seed_scores, seed_pred), seed_s = timed(seed_forest_loop, x_train, y_train, x_val, y_val,
                                                          args.n_jobs)
        ours, ours_s = timed(forest_sweep, x_train, y_train, x_val, y_val, x_test, n_classes=n_classes,
                             n_jobs=args.n_jobs)
        same = ours.choice["n_estimators"] == seed_n and np.array_equal(np.argmax(ours.val_probs, axis=1), seed_pred)
        rows.append(("forest 100..500 trees", seed_s, ours.fit_seconds, ours.predict_seconds, same,
                     f"n={seed_n} acc {seed_scores[seed_n]:.4f}"))

    print(f"{'sweep':24}{'seed loop s':>12}{'ours s':>9}{'ratio':>8}{'  same choice+val preds':>24}"
          f"{'  (ours: test preds s)':>22}  chosen")
    for name, seed_s, ours_s, test_s, same, chosen in rows:
        print(f"{name:24}{seed_s:12.1f}{ours_s:9.1f}{seed_s / ours_s:7.1f}x{str(same):>24}{test_s:22.1f}  {chosen}")


if __name__ == "__main__":
    main()
