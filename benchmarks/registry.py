"""Cost of ``Stores.registry.load()`` (called for every profile build): unchanged and
right after a change, on SQLite and (with ``AFHUB_TEST_POSTGRES_URL``) PostgreSQL.

The registry is the profile benchmark's: 200 resources, each allowed to 10 of 1,000
groups. Unchanged, ``load`` is one query of the revision number; after a change it reads
and parses every entry again. Run: ``.venv/bin/python benchmarks/registry.py``
(``--samples N``, ``--no-write``).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afhub.stores.facade import Stores
from benchmarks.profiles import group_tree, registry_data
from benchmarks.report import summary, write_section
from tests.support.databases import postgres_database, postgres_server_url


def timed(fn, samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def measure(url: str, document: dict, samples: int) -> dict[str, dict[str, float]]:
    stores = Stores.open(url)
    try:
        registry = stores.registry
        registry.apply(document, source="file")
        registry.load()
        unchanged = timed(registry.load, samples * 10)
        revision = timed(registry.revision, samples * 10)
        entry = dict(document["resources"][0])

        def after_a_change():
            entry["node_count"] = entry.get("node_count", 1) % 50 + 1
            registry.add_resource(entry, source="file", replace=True)
            t = time.perf_counter()
            registry.load()
            return (time.perf_counter() - t) * 1000

        changed = [after_a_change() for _ in range(samples)]
        return {
            "load, unchanged": summary(unchanged),
            "revision() alone": summary(revision),
            "load right after a change (re-read and parse)": summary(changed),
        }
    finally:
        stores.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    rng = random.Random(4)
    document = registry_data(group_tree(1000, rng), 200, rng)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        results["SQLite"] = measure(f"sqlite:///{folder}/afhub.sqlite", document, args.samples)
    server = postgres_server_url()
    if server:
        with postgres_database(server) as url:
            results["PostgreSQL"] = measure(url, document, args.samples)
    rows = [
        f"| {backend} | {what} | {s['median']:.3f} | {s['p95']:.3f} | {s['max']:.3f} |"
        for backend, measured in results.items()
        for what, s in measured.items()
    ]
    body = (
        "## Registry load (per profile build)\n\n"
        "`benchmarks/registry.py`: `Stores.registry.load()` with the profile benchmark's "
        f"200-resource registry; {args.samples * 10} calls unchanged, {args.samples} right "
        "after a change.\n\n"
        "| database | what | p50 (ms) | p95 (ms) | max (ms) |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nLoad average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
        "cores (the machine is shared).\n"
    )
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('registry-load', body)}")


if __name__ == "__main__":
    main()
