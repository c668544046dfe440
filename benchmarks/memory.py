"""Peak memory of reading a big train.csv: what `ensemble train` holds while it parses the data.

Builds a train.csv of about --gigabytes GB from Fashion-MNIST (Debian's dataset-fashion-mnist, repeated until
the size is reached) and its test.csv, then measures, each in a fresh process, the peak resident set size:

  imports        importing ensemble's data and job modules (the floor every case starts from)
  full parse     read_train_csv of the whole file, no cache (a job's first run)
  from cache     the same file again, through the parsed-array cache (every later run and member)
  limit 600      what `ensemble train --limit-train 600` reads: jobs.read_job_data(limit_train=600)

    python benchmarks/memory.py --gigabytes 1 --out /tmp/ensemble-memory
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")

CASES = {
    "imports": "import ensemble.data.tables, ensemble.job.record",
    "full parse": "from ensemble.data.tables import read_train_csv\n"
                  "table = read_train_csv(DATA / 'train.csv')\nrows = len(table)",
    "from cache": "from ensemble.data.tables import read_train_csv\n"
                  "read_train_csv(DATA / 'train.csv', CACHE)\n"  # fills the cache (not measured: a fresh process below)
                  "",
    "limit 600": "from ensemble.data.folder import read_job_data\nfrom ensemble.store.workspace import Workspace\n"
                 "train, test = read_job_data(Workspace(HOME), DATA, limit_train=600)\nrows = len(train)",
}
MEASURE = """
import resource, sys, time, json
from pathlib import Path
DATA, CACHE, HOME = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
rows = None
started = time.perf_counter()
{body}
seconds = time.perf_counter() - started
print(json.dumps({{"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds,
                  "rows": rows}}))
"""


def write_big_csv(out: Path, gigabytes: float) -> tuple[Path, int]:
    sys.path.insert(0, str(ROOT))
    from ensemble.data.sources import format_digit_csv, load_idx_folder

    images, labels = load_idx_folder(FASHION)
    chunk = format_digit_csv(images[:10000], labels[:10000]).encode()
    header, body = chunk.split(b"\n", 1)
    target = int(gigabytes * 1e9)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "train.csv"
    rows = 0
    with path.open("wb") as handle:
        handle.write(header + b"\n")
        written = len(header) + 1
        while written < target:
            handle.write(body)
            written += len(body)
            rows += 10000
    test = format_digit_csv(images[60000:61000], None)
    (out / "test.csv").write_text(test)
    return path, rows


def measure(name: str, body: str, data: Path, cache: Path, home: Path) -> dict:
    code = MEASURE.format(body=body)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code, str(data), str(cache), str(home)], capture_output=True,
                            text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{name}: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/ensemble-memory"))
    args = parser.parse_args()
    data = args.out / "data"
    path = data / "train.csv"
    if not path.is_file() or abs(path.stat().st_size - args.gigabytes * 1e9) > 0.05e9:
        path, rows = write_big_csv(data, args.gigabytes)
    size_mb = path.stat().st_size / 2**20
    cache, home = args.out / "cache", args.out / "home"
    for folder in (cache, home):
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    print(f"# {path}: {size_mb:.0f} MiB; machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}")
    print(f"{'case':12} {'peak RSS MiB':>13} {'x file':>7} {'seconds':>8} {'rows':>9}")
    results = {}
    for name, body in CASES.items():
        if name == "from cache":
            measure("fill cache", body, data, cache, home)
            body = "from ensemble.data.tables import read_train_csv\ntable = read_train_csv(DATA / 'train.csv', CACHE)\n" \
                   "rows = len(table)"
        results[name] = measure(name, body, data, cache, home)
        r = results[name]
        print(f"{name:12} {r['peak_rss_mb']:13.0f} {r['peak_rss_mb'] / size_mb:7.2f} {r['seconds']:8.1f} "
              f"{r['rows'] if r['rows'] is not None else '':>9}", flush=True)
    parsed_mb = (results["full parse"]["rows"] or 0) * 785 / 2**20
    print(f"# parsed arrays (uint8 images + labels): {parsed_mb:.0f} MiB")


if __name__ == "__main__":
    main()
