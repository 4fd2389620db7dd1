"""The import sink: generated Arrow batches -> Parquet -> resumable upload to the local GCS.

For each row count (``--rows``, default 1 M and 5 M) a fresh child process writes that many
generated rows of mixed types (ints, floats, strings, NUMERIC decimals, UTC timestamps, dates,
booleans, string lists, with NULLs) through ``maestro.adapters.parquet_sink.write_parquet`` into
fake-gcs-server, and reports:

- rows/s, and MB/s of Arrow data in and of Parquet bytes uploaded;
- peak RSS growth: the process's peak RSS (``ru_maxrss``) minus its RSS just before the write
  (after imports, the client and one warm-up batch). The target: the same (±10 %) for 1 M and
  5 M rows, and at most 300 MB — memory must not grow with the row count.
- beside it, the generator alone (the same batches drained, nothing written), as the baseline.

Each figure is the median of three child processes (``--repeat``).

Then zstd against snappy on 1 M rows (speed and file size), which is why the sink uses zstd.

    .venv/bin/python -m bench.bench_import_sink [--rows 1000000 5000000] [--batch-rows 65536]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bench.common import row

BUCKET = "bench-import-sink"
SCHEMA = pa.schema([
    ("id", pa.int64()), ("account", pa.int32()), ("amount", pa.decimal128(38, 9)),
    ("ratio", pa.float64()), ("name", pa.string()), ("created", pa.timestamp("us", tz="UTC")),
    ("day", pa.date32()), ("active", pa.bool_()), ("tags", pa.list_(pa.string())),
])  # fmt: skip


def make_batch(start: int, rows: int, rng: np.random.Generator) -> pa.RecordBatch:
    ids = np.arange(start, start + rows, dtype=np.int64)
    nulls = rng.random(rows) < 0.05
    # NUMERIC(38, 9) built from its int128 unscaled values (low word, sign word): cents / 100.
    unscaled = rng.integers(-10**11, 10**11, rows) * 10**7
    words128 = np.stack([unscaled, unscaled >> 63], axis=1)
    decimals = pa.Array.from_buffers(pa.decimal128(38, 9), rows, [None, pa.py_buffer(words128.tobytes())])
    words = pc.cast(pa.array(rng.integers(0, 10**9, rows)), pa.string())
    tag_counts = rng.integers(0, 4, rows)
    offsets = np.concatenate([[0], np.cumsum(tag_counts)]).astype(np.int32)
    tag_values = pc.cast(pa.array(rng.integers(0, 50, int(offsets[-1]))), pa.string())
    columns = [
        pa.array(ids),
        pa.array(rng.integers(0, 100_000, rows, dtype=np.int32)),
        pc.if_else(pa.array(nulls), pa.scalar(None, pa.decimal128(38, 9)), decimals),
        pa.array(rng.standard_normal(rows), mask=nulls),
        pc.binary_join_element_wise("customer-", words, ""),
        pa.array(1_700_000_000_000_000 + ids * 1_000_003, pa.timestamp("us", tz="UTC")),
        pa.array((19_000 + ids % 3_000).astype(np.int32), pa.date32()),
        pa.array(rng.random(rows) < 0.5),
        pa.ListArray.from_arrays(pa.array(offsets), tag_values),
    ]
    return pa.record_batch(columns, schema=SCHEMA).cast(SCHEMA)


async def generate(rows: int, batch_rows: int, counter: list[int]) -> AsyncIterator[pa.RecordBatch]:
    rng = np.random.default_rng(7)
    for start in range(0, rows, batch_rows):
        batch = make_batch(start, min(batch_rows, rows - start), rng)
        counter[0] += batch.nbytes
        yield batch


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def child(args: argparse.Namespace) -> None:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from maestro.adapters.parquet_sink import ParquetSettings, write_parquet

    client = storage.Client(
        project="maestro-local", credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=args.endpoint),
    )  # fmt: skip
    make_batch(0, args.batch_rows, np.random.default_rng(1))  # warm-up: allocator pools, imports
    settings = ParquetSettings(compression=args.compression, row_group_bytes=args.row_group_mb * 1024 * 1024)
    counter = [0]
    baseline = rss_bytes()
    started = time.perf_counter()
    if args.generate_only:
        async for _ in generate(args.rows, args.batch_rows, counter):
            pass
        size = rows = 0
    else:
        uri = f"gs://{BUCKET}/bench/{uuid.uuid4().hex}.parquet"
        uploaded = await write_parquet(client, uri, SCHEMA, generate(args.rows, args.batch_rows, counter), settings)
        size, rows = uploaded.size, uploaded.rows
        client.bucket(BUCKET).blob(uri.split("/", 3)[3]).delete()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "arrow_bytes": counter[0], "parquet_bytes": size, "rows": rows,
                      "rss_growth": peak - baseline, "baseline_rss": baseline}))  # fmt: skip


def measure(endpoint: str, rows: int, batch_rows: int, compression: str = "zstd", generate_only: bool = False,
            repeat: int = 3) -> dict:
    """The median of ``repeat`` fresh child processes, by time and by RSS growth apart (both vary
    with what else the machine runs: thread scheduling decides how full the second row group
    is when the peak is reached)."""
    runs = [_measure_once(endpoint, rows, batch_rows, compression, generate_only) for _ in range(repeat)]
    middle = dict(sorted(runs, key=lambda m: m["seconds"])[len(runs) // 2])
    middle["rss_growth"] = sorted(m["rss_growth"] for m in runs)[len(runs) // 2]
    return middle


def _measure_once(endpoint: str, rows: int, batch_rows: int, compression: str, generate_only: bool) -> dict:
    argv = [sys.executable, "-m", "bench.bench_import_sink", "--child", "--endpoint", endpoint,
            "--rows", str(rows), "--batch-rows", str(batch_rows), "--compression", compression]  # fmt: skip
    if generate_only:
        argv.append("--generate-only")
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the measuring child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(label: str, rows: int, m: dict, base: dict | None = None) -> None:
    mb = 1024 * 1024
    extra = f"baseline (generator alone) {rows / base['seconds']:,.0f} rows/s" if base else ""
    row(f"{label}: rows/s", rows / m["seconds"], "rows/s", extra)
    row(f"{label}: Arrow MB/s in, Parquet MB/s out", m["arrow_bytes"] / mb / m["seconds"], "MB/s",
        f"{m['parquet_bytes'] / mb / m['seconds']:,.1f} MB/s out; file {m['parquet_bytes'] / mb:,.0f} MB")
    row(f"{label}: peak RSS growth", m["rss_growth"] / mb, "MB", f"(RSS before {m['baseline_rss'] / mb:,.0f} MB)")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--batch-rows", type=int, default=65_536)
    parser.add_argument("--compression", default="zstd")
    parser.add_argument("--row-group-mb", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--endpoint", default="")
    args = parser.parse_args()
    if args.child:
        args.rows = args.rows[0]
        await child(args)
        return
    from maestro.adapters.google import ensure_bucket
    from maestro.adapters.localstack import start_local_stack, storage_client

    logging.basicConfig(level=logging.WARNING)
    print("import sink benchmark (Arrow -> Parquet -> resumable upload to fake-gcs-server)")
    with tempfile.TemporaryDirectory(prefix="maestro-bench-sink-") as tmp:
        async with await start_local_stack(Path(tmp), adopt=False) as stack:
            ensure_bucket(storage_client(stack), BUCKET)
            growth = []
            for rows in args.rows:
                base = measure(stack.gcs_endpoint, rows, args.batch_rows, generate_only=True, repeat=1)
                m = measure(stack.gcs_endpoint, rows, args.batch_rows, args.compression, repeat=args.repeat)
                assert m["rows"] == rows
                report(f"{rows:,} rows, {args.compression}", rows, m, base)
                growth.append(m["rss_growth"])
            if len(growth) > 1:
                spread = max(growth) / min(growth) - 1
                ok = spread <= 0.10 and max(growth) <= 300 * 1024 * 1024
                print(f"  peak RSS growth spread {spread:.1%} across row counts "
                      f"(target <= 10 %, <= 300 MB): {'OK' if ok else 'OVER TARGET'}")  # fmt: skip
            rows = min(args.rows)
            print(f"compression on {rows:,} rows (same data):")
            for compression in ("zstd", "snappy"):
                m = measure(stack.gcs_endpoint, rows, args.batch_rows, compression, repeat=args.repeat)
                report(compression, rows, m)


if __name__ == "__main__":
    asyncio.run(main())
