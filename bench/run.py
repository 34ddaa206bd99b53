"""End-to-end benchmark: the whole run (one Dask graph) on simulated full-size frames.

  * wall time per stage (from the job's timings: when each stage's last task ended),
    frames/s, peak resident memory per worker (psutil, sampled every 0.2 s);
  * the same run on 1 and 2 workers (scaling ratio, target >= 1.7x);
  * N and 2N cadences on 2 workers: peak worker memory must stay flat (chunked, not
    whole-cube), and the marginal cost per frame extrapolates a full 30-min
    CCD-sector (1300 frames of 2048x2048; target <= 20 min on this 2-core machine).

As TASOC does, light curves are made for catalog targets: the simulation's stars with
Tmag <= 15 are the star catalog (RA/Dec from the simulated WCS) and only apertures
holding one get a light curve (``--all-apertures``: every aperture, which on the
embedded catalog server makes the light-curve writes dominate).

Every run starts a fresh LocalCluster (one single-threaded worker per core requested),
a fresh store and a fresh catalog database; the simulated frames are made once.

    python bench/run.py [--frames 100] [--size 2048] [--skip-scaling]
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

SECTOR_FRAMES = 1300
STAGES = ("plan", "ingest", "background", "apertures", "lightcurves")


class PeakMemory:
    """Peak RSS of each worker process, sampled from the driver."""

    def __init__(self, client, every: float = 0.2):
        import psutil

        pids = client.run(os.getpid)
        self.procs = {addr: psutil.Process(pid) for addr, pid in pids.items()}
        self.peak = {addr: 0 for addr in self.procs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every,), daemon=True)
        self._thread.start()

    def _sample(self, every):
        while not self._stop.is_set():
            for addr, proc in self.procs.items():
                try:
                    self.peak[addr] = max(self.peak[addr], proc.memory_info().rss)
                except Exception:  # noqa: BLE001 - a worker restarting
                    pass
            self._stop.wait(every)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak.values())


def star_catalog(truth_path: Path, size: int, out: Path, tmag_max: float = 15.0) -> Path:
    """The simulated stars brighter than ``tmag_max`` as a CSV star catalog."""
    import numpy as np
    from astropy.table import Table

    from pipeline.simulate import geometry, load_truth

    truth = load_truth(truth_path)
    stars = truth.stars[np.asarray(truth.stars["tmag"]) <= tmag_max]
    wcs = geometry.wcs(size, 14, 1, 1).slice((slice(0, size), slice(44, 44 + size)))
    ra, dec = wcs.all_pix2world(np.asarray(stars["col"], float), np.asarray(stars["row"], float), 0)
    Table({"id": np.arange(len(stars)) + 1, "ra": ra, "dec": dec,
           "tmag": np.asarray(stars["tmag"], float)}).write(out, format="ascii.csv", overwrite=True)
    return out


def one_run(frames: list[str], workers: int, mongo_url: str, workdir: Path, stars=None) -> dict:
    import pipeline
    from pipeline.catalog import Catalog
    from pipeline.cluster import local
    from pipeline.store import Store

    client = local(n_workers=workers)
    catalog = Catalog(mongo_url, database=f"bench_{uuid.uuid4().hex[:8]}")
    catalog.ensure_indexes()
    root = workdir / f"store-{uuid.uuid4().hex[:6]}"
    try:
        client.run(lambda: __import__("pipeline.graph"))           # imports, not numba: JIT is cached
        store = Store(str(root))
        memory = PeakMemory(client)
        started = time.perf_counter()
        job = pipeline.submit(frames, client=client, store=store, catalog=catalog,
                              stars=None if stars is None else str(stars),
                              targets_only=stars is not None)
        report = job.result()
        wall = time.perf_counter() - started
        peak = memory.stop()
        timings = catalog.jobs.find_one({"_id": job.id})["timings"]
        per_stage, last = {}, 0.0
        for stage in STAGES:
            end = timings.get(stage, last)
            per_stage[stage] = max(0.0, end - last)
            last = max(last, end)
        return {"wall": wall, "stages": per_stage, "peak": peak, "frames": len(frames),
                "apertures": report.n_apertures, "lightcurves": report.n_lightcurves}
    finally:
        shutil.rmtree(root, ignore_errors=True)     # a 2N store is ~8 GB: runs must not pile up
        catalog.client.drop_database(catalog.db.name)
        catalog.client.close()
        cluster = client.cluster
        client.close()
        cluster.close()


def _line(name: str, r: dict) -> str:
    stages = "  ".join(f"{s} {r['stages'][s]:6.1f}" for s in STAGES)
    return (f"{name:<22} {r['wall']:7.1f} s  {r['frames'] / r['wall']:5.2f} frames/s  "
            f"peak/worker {r['peak'] / 2**20:6.0f} MiB  | {stages}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--skip-scaling", action="store_true", help="no 1-worker run")
    parser.add_argument("--all-apertures", action="store_true",
                        help="light curves for every aperture, not only catalog targets")
    args = parser.parse_args(argv)

    from pipeline.catalog import EmbeddedMongo
    from pipeline.simulate import simulate

    n = args.frames
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp, EmbeddedMongo(Path(tmp) / "catalog") as server:
        tmp = Path(tmp)
        t = time.perf_counter()
        simulate(tmp / "frames", frames=2 * n, size=args.size, camera=1, ccd=1, sector=14,
                 cadence=1800.0, seed=7)
        print(f"simulated {2 * n} frames of {args.size}x{args.size} in {time.perf_counter() - t:.0f} s")
        paths = sorted(str(p) for p in (tmp / "frames").glob("*_ffic.fits"))
        first = paths[:n]
        stars = None if args.all_apertures else star_catalog(tmp / "frames" / "truth.fits",
                                                              args.size, tmp / "stars.csv")

        # warm-up: numba's on-disk cache and the OS page cache, so no run pays for them
        one_run(paths[:8], 2, server.url, tmp, stars)
        results = {"2 workers, N": one_run(first, 2, server.url, tmp, stars)}
        if not args.skip_scaling:
            results["1 worker, N"] = one_run(first, 1, server.url, tmp, stars)
        results["2 workers, 2N"] = one_run(paths, 2, server.url, tmp, stars)

    print(f"\nwhole run, {args.size}x{args.size} frames, N = {n}, "
          f"{results['2 workers, N']['apertures']} apertures, "
          f"{results['2 workers, N']['lightcurves']} light curves (stage columns: seconds)")
    for name, r in results.items():
        print(_line(name, r))
    two, double = results["2 workers, N"], results["2 workers, 2N"]
    if "1 worker, N" in results:
        print(f"scaling 1 -> 2 workers: {results['1 worker, N']['wall'] / two['wall']:.2f}x "
              f"(target >= 1.7x)")
        from ceiling import describe, scaling_ceiling

        print(describe(scaling_ceiling()))
    print(f"peak memory per worker, 2N / N cadences: {double['peak'] / two['peak']:.2f} "
          f"({two['peak'] / 2**20:.0f} -> {double['peak'] / 2**20:.0f} MiB; flat = chunked)")
    marginal = (double["wall"] - two["wall"]) / n
    if args.size == 2048:
        sector = two["wall"] + (SECTOR_FRAMES - n) * marginal
        print(f"marginal cost {marginal:.2f} s/frame (2 workers) -> a {SECTOR_FRAMES}-frame "
              f"CCD-sector in {sector / 60:.1f} min (target <= 20 min); at the N-run average "
              f"{two['wall'] / n:.2f} s/frame: {SECTOR_FRAMES * two['wall'] / n / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
