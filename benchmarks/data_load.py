"""How long loading train.csv takes: first parse vs a load from the content-hash cache.

    python benchmarks/data_load.py data/fashion/train.csv

Prints one line per load, side by side in one run, with the machine it ran on.
"""
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from ensemble.data.tables import read_train_csv


def main(path: str) -> None:
    csv_path = Path(path)
    print(f"file {csv_path} ({csv_path.stat().st_size / 1e6:.1f} MB), {os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as cache:
        for label in ("first load (parse + validate + write cache)", "second load (hash + cache)",
                      "third load (hash + cache)"):
            started = time.perf_counter()
            table = read_train_csv(csv_path, Path(cache))
            print(f"{label:45} {time.perf_counter() - started:6.2f} s  ({len(table)} rows)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/train.csv")
