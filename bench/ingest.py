"""Ingest benchmark: full-size simulated FFIs into the local store and moto's S3 server.

Prints frames/s and MB/s of the ingest stage (2 single-threaded Dask workers) against
two baselines measured in the same run on the same files:
  (a) reading the files with astropy alone (science flux + uncertainty to native float32),
  (b) writing the same arrays with zarr alone (same chunks and codecs, same store).
Target: ingest frames/s ≥ 60% of the slower of (a) and (b).

    python bench/ingest.py [--frames 32] [--size 2048] [--targets local,s3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import urllib.request
import time
import uuid
from pathlib import Path

import numpy as np
import zarr
from astropy.io import fits


def read_with_astropy(paths, size):
    out = []
    for p in paths:
        with fits.open(p, memmap=False) as hdul:
            out.append((hdul[1].data[:size, 44:44 + size].astype("f4"),
                        hdul[2].data[:size, 44:44 + size].astype("f4")))
    return out


def write_with_zarr(arrays, store, size):
    from pipeline.store import COMPRESSORS, chunking

    root = zarr.open_group(store, mode="w", zarr_format=3)
    t, r, c = chunking((size, size))
    for name, k in (("flux", 0), ("flux_err", 1)):
        a = root.create_array(name, shape=(len(arrays), size, size), chunks=(t, r, c),
                              dtype="float32", fill_value=np.nan, compressors=COMPRESSORS)
        for start in range(0, len(arrays), t):
            a[start:start + t] = np.stack([x[k] for x in arrays[start:start + t]])


def _wait_for(url, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _worker_cpu(client) -> float:
    """CPU seconds used so far by all worker processes (user + system)."""
    def cpu():
        import psutil
        t = psutil.Process().cpu_times()
        return t.user + t.system
    return sum(client.run(cpu).values())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--targets", default="local,s3")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)

    from pipeline.catalog import Catalog, EmbeddedMongo
    from pipeline.cluster import local
    from pipeline.simulate import simulate
    from pipeline.stages.ingest import ingest
    from pipeline.store import Store

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    t0 = time.perf_counter()
    sim = simulate(work / "ffi", frames=args.frames, size=args.size, camera=1, ccd=1,
                   sector=14, cadence=1800.0, seed=1)
    print(f"simulated {args.frames} frames of {args.size}² in {time.perf_counter() - t0:.1f} s")
    paths = [str(p) for p in sim.paths]
    file_mb = sum(os.path.getsize(p) for p in paths) / 1e6
    array_mb = args.frames * 2 * args.size * args.size * 4 / 1e6

    s3 = None
    if "s3" in args.targets:
        # moto in its own process, as a real S3 server would be: in this process it
        # would share the GIL with the baseline it is measured against.
        import s3fs
        from pipeline.catalog.server import free_port
        port = free_port()
        s3 = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"),
                               "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        endpoint = f"http://127.0.0.1:{port}"
        _wait_for(endpoint)
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        s3_options = {"key": "bench", "secret": "bench", "client_kwargs": {"endpoint_url": endpoint}}
        s3fs.S3FileSystem(**s3_options).mkdir("bench")

    client = local(n_workers=args.workers)
    # a warm cluster, as in a long-running deployment: workers import the stage once
    client.run(lambda: __import__("pipeline.stages.ingest"))
    mongo = EmbeddedMongo("memory")
    rows = []
    try:
        read_with_astropy(paths[:2], args.size)  # warm imports and page cache equally
        t, c = time.perf_counter(), time.process_time()
        arrays = read_with_astropy(paths, args.size)
        t_read = time.perf_counter() - t
        rows.append(("(a) astropy read", t_read, file_mb, time.process_time() - c))
        for target in args.targets.split(","):
            if target == "local":
                zstore = zarr.storage.LocalStore(str(work / "zarr-alone"))
                store = Store(str(work / "store"))
            else:
                prefix = f"bench/{uuid.uuid4().hex[:8]}"
                zstore = zarr.storage.FsspecStore.from_url(f"s3://{prefix}/zarr-alone",
                                                           storage_options=s3_options)
                store = Store(f"s3://{prefix}/store", s3_options)
            t, c = time.perf_counter(), time.process_time()
            write_with_zarr(arrays, zstore, args.size)
            t_zarr = time.perf_counter() - t
            rows.append((f"(b) zarr write [{target}]", t_zarr, array_mb, time.process_time() - c))
            catalog = Catalog(mongo.url, database=f"bench_{uuid.uuid4().hex[:6]}")
            catalog.ensure_indexes()
            t, c, w = time.perf_counter(), time.process_time(), _worker_cpu(client)
            report = ingest(paths, store, catalog, client)
            t_ingest = time.perf_counter() - t
            cpu = time.process_time() - c + _worker_cpu(client) - w
            assert report.count("ingested") == args.frames, report
            rows.append((f"ingest [{target}]", t_ingest, file_mb, cpu))
            phases = ", ".join(f"{k} {v:.2f}" for k, v in report.timings.items())
            print(f"ingest [{target}] phases (s): {phases}", flush=True)
            slower = max(t_read, t_zarr)
            rows.append((f"  ratio ingest/slower-baseline [{target}]", slower / t_ingest, None, None))
    finally:
        client.close()
        mongo.stop()
        if s3:
            s3.terminate()
            s3.wait()

    print(f"\n{args.frames} frames of {args.size}x{args.size}; files {file_mb:.0f} MB, "
          f"arrays {array_mb:.0f} MB; ingest on {args.workers} workers")
    print("(CPU s: this process's threads for the baselines; client + all workers for ingest.\n"
          " The machine is shared, so wall times move with load; CPU seconds much less.)")
    print(f"{'what':44s} {'seconds':>8s} {'frames/s':>9s} {'MB/s':>8s} {'CPU s':>7s} {'CPU ms/frame':>12s}")
    for name, value, mb, cpu in rows:
        if mb is None:
            verdict = "PASS" if value >= 0.6 else "FAIL"
            print(f"{name:44s} {value:8.2f}  (target ≥ 0.60: {verdict})")
        else:
            print(f"{name:44s} {value:8.2f} {args.frames / value:9.2f} {mb / value:8.1f} "
                  f"{cpu:7.2f} {1000 * cpu / args.frames:12.1f}")


if __name__ == "__main__":
    main()
