"""Storing and fetching a 10 MB adapter: object storage against a local copy.

Usage::

    .venv/bin/python benchmarks/artifact_store.py [--mb 10] [--repeat 5]

Starts SeaweedFS (``core.testing.seaweedfs``, the S3 server the tests use)
on loopback with its data under a temporary folder, builds an adapter-shaped
folder (``adapter_config.json`` and ``--mb`` MB of random
``adapter_model.safetensors``) and times, median of ``--repeat`` runs:

- S3 store: ``stage`` (pack into a deterministic tar, SHA-256, upload; the
  payload differs each run, so every upload is a new object), then ``path``
  on a second store with an empty cache (download, verify, unpack), then
  ``path`` again (a cache hit);
- local: ``shutil.copytree`` of the folder (what a second machine pays to
  copy it off a shared disk), and ``LocalStore.commit`` (a rename, what the
  default store does).

Loopback hides the network: on a real cluster the upload and download add
the transfer time of the link, and the packing and hashing here are the
store's own share.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.testing.seaweedfs import SeaweedFS, seaweedfs_start  # noqa: E402
from ml.artifacts import ArtifactCache, LocalStore, S3Store  # noqa: E402


def _adapter(folder: Path, size: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}')
    (folder / "adapter_model.safetensors").write_bytes(os.urandom(size))
    return folder


LABELS = (
    "S3 store: stage (pack + SHA-256 + upload)",
    "S3 store: fetch into an empty cache (download + verify + unpack)",
    "S3 store: fetch again (cache hit)",
    "local: copytree to another folder",
    "local: LocalStore.commit (rename)",
)


def _one_run(server: SeaweedFS, base: Path, size: int) -> list[float]:
    def store(name: str) -> S3Store:
        return S3Store(
            bucket=server.bucket,
            client=server.client(),
            root=base / name / "root",
            cache=ArtifactCache(base / name / "cache", max_bytes=1 << 34),
        )

    writer, reader = store("writer"), store("reader")
    folder = _adapter(base / "adapter", size)
    clock = time.perf_counter
    t0 = clock()
    key = writer.stage(folder, name="adapters/bench")
    t1 = clock()
    reader.path(key)
    t2 = clock()
    reader.path(key)
    t3 = clock()
    shutil.copytree(folder, base / "copy")
    t4 = clock()
    LocalStore(base / "local").commit(folder, "adapters/bench")
    t5 = clock()
    shutil.rmtree(base)
    return [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    size = int(args.mb * 1024 * 1024)
    work = Path(tempfile.mkdtemp(prefix="arbiter-bench-store-"))
    started = time.perf_counter()
    server = seaweedfs_start(work / "seaweedfs")
    boot = time.perf_counter() - started
    runs = []
    try:
        for run in range(args.repeat):
            runs.append(_one_run(server, work / f"run-{run}", size))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"artifact store, {args.mb:g} MB adapter, median of {args.repeat} "
        f"(SeaweedFS on loopback, started in {boot:.1f} s)"
    )
    width = max(len(label) for label in LABELS)
    for i, label in enumerate(LABELS):
        median = statistics.median(run[i] for run in runs)
        rate = args.mb / median if median else float("inf")
        print(f"  {label:<{width}}  {median * 1000:8.1f} ms  {rate:8.0f} MB/s")


if __name__ == "__main__":
    main()
