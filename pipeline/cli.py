"""The ``tess-pipeline`` command."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path

from pipeline.config import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    # a SIGTERM (kill, docker stop) unwinds like Ctrl-C, so the embedded catalog server
    # and the local cluster are stopped instead of being left running
    with contextlib.suppress(ValueError):          # not the main thread: leave it be
        signal.signal(signal.SIGTERM, _terminate)
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except SettingsError as exc:
        print(f"tess-pipeline: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _terminate(signum, frame):
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tess-pipeline", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (else TESS_CONFIG)")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("simulate", help="write simulated calibrated FFIs with a truth file")
    p.add_argument("outdir")
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--size", type=int, default=2048, help="science region is SIZE x SIZE px")
    p.add_argument("--camera", type=int, default=1, choices=range(1, 5))
    p.add_argument("--ccd", type=int, default=1, choices=range(1, 5))
    p.add_argument("--sector", type=int, default=14)
    p.add_argument("--cadence", type=float, default=1800.0, help="seconds")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_simulate)

    p = sub.add_parser("ingest", help="ingest FITS files (or folders of them) into the store")
    p.add_argument("paths", nargs="+")
    _service_options(p)
    p.set_defaults(func=_ingest)

    p = sub.add_parser("background", help="sky background, corner glow, pixel flags and sum "
                                          "image of a cube")
    _cube_options(p)
    p.add_argument("--exclude", help="TOML or JSON file of manual-exclude regions (see "
                                     "pipeline.camera.ManualExclude); default none")
    _service_options(p)
    p.set_defaults(func=_background)

    p = sub.add_parser("apertures", help="K2P2 star apertures on a cube's sum image")
    _cube_options(p)
    p.add_argument("--catalog", help="star catalog: CSV/FITS with id, ra, dec, tmag, or "
                                     "'catalog' for the catalog's stars collection")
    p.add_argument("--tile", type=int, default=512, help="tile size in pixels")
    _service_options(p)
    p.set_defaults(func=_apertures)

    p = sub.add_parser("lightcurves", help="light curves and power spectra of a cube's apertures")
    _cube_options(p)
    _service_options(p)
    p.set_defaults(func=_lightcurves)

    p = sub.add_parser("export", help="write the light curves as FITS files (lightkurve-readable) "
                                      "into DIR and the store's curated zone")
    p.add_argument("outdir", metavar="DIR")
    p.add_argument("--format", default="fits", choices=["fits"])
    p.add_argument("--sector", type=int)
    p.add_argument("--camera", type=int, choices=range(1, 5))
    p.add_argument("--ccd", type=int, choices=range(1, 5))
    p.add_argument("--store", help="store URL (else TESS_STORE, default ./tess-data)")
    p.add_argument("--mongo", help="MongoDB URL (else TESS_MONGO_URL, default embedded)")
    p.set_defaults(func=_export)

    p = sub.add_parser("run", help="the whole run (ingest, background, apertures, light "
                                   "curves) as one Dask graph, with progress")
    p.add_argument("inputs", nargs="*", help="FITS files, folders of them or URLs")
    p.add_argument("--cube", action="append", default=[],
                   help="an ingested cube to (re)process; repeatable")
    p.add_argument("--catalog", help="star catalog (CSV/FITS with id, ra, dec, tmag, or "
                                     "'catalog' for the stars collection)")
    p.add_argument("--targets-only", action="store_true",
                   help="light curves only for apertures holding a --catalog star")
    p.add_argument("--tile", type=int, default=512, help="aperture tile size (px)")
    p.add_argument("--force", action="store_true",
                   help="redo work an earlier run finished from the same inputs")
    _service_options(p)
    p.set_defaults(func=_run)

    p = sub.add_parser("resume", help="run a failed, cancelled or lost job again; what it "
                                      "finished is reused")
    p.add_argument("job", help="the job id (printed by `run`, listed by the API's /jobs)")
    p.add_argument("--catalog", help="the star catalog again, if the job was given a table")
    _service_options(p)
    p.set_defaults(func=_resume)

    p = sub.add_parser("api", help="serve the HTTP API (FastAPI; docs at /docs)")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other machines")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--store", help="store URL (else TESS_STORE, default ./tess-data)")
    p.add_argument("--mongo", help="MongoDB URL (else TESS_MONGO_URL, default embedded)")
    p.add_argument("--scheduler", help="Dask scheduler for jobs (else TESS_SCHEDULER, "
                                       "default a local cluster)")
    p.set_defaults(func=_api)

    p = sub.add_parser("gui", help="serve the GUI (Streamlit) on the API at TESS_API_URL")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--api-url", help="the API (else TESS_API_URL, default http://127.0.0.1:8000)")
    p.set_defaults(func=_gui)

    p = sub.add_parser("demo", help="simulate a small sector and run the pipeline on it "
                                    "with the embedded defaults")
    p.add_argument("--workdir", default="tess-demo", help="where the simulated FFIs go")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--size", type=int, default=256)
    _service_options(p)
    p.set_defaults(func=_demo)
    return parser


def _service_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="store URL (else TESS_STORE, default ./tess-data)")
    p.add_argument("--mongo", help="MongoDB URL (else TESS_MONGO_URL, default embedded)")
    p.add_argument("--scheduler", help="Dask scheduler address (else TESS_SCHEDULER, "
                                       "default a local cluster)")
    p.add_argument("--workers", type=int, help="local cluster workers (default: one per core)")


def _cube_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sector", type=int)
    p.add_argument("--camera", type=int, choices=range(1, 5))
    p.add_argument("--ccd", type=int, choices=range(1, 5))
    p.add_argument("--cube", help="a cube id instead (e.g. a cut-out's, as ingest printed it)")


def _cube_id(args) -> str:
    if args.cube:
        return args.cube
    if None in (args.sector, args.camera, args.ccd):
        raise SettingsError("give --sector, --camera and --ccd (or --cube)")
    return f"s{args.sector:04d}-{args.camera}-{args.ccd}"


def _settings(args) -> Settings:
    return Settings.load(args.config).replace(store=getattr(args, "store", None),
                                              mongo_url=getattr(args, "mongo", None),
                                              scheduler=getattr(args, "scheduler", None))


@contextlib.contextmanager
def _services(args):
    from pipeline import catalog as catalog_mod
    from pipeline.cluster import client_for
    from pipeline.store import Store

    settings = _settings(args)
    store = Store.from_settings(settings)
    with catalog_mod.connect(settings) as catalog, \
            client_for(settings, n_workers=getattr(args, "workers", None)) as client:
        print(f"store:     {store.url_of('')}\ncatalog:   {catalog.url}"
              f"{' (embedded)' if catalog.server else ''}\n"
              f"dashboard: {client.dashboard_link}", flush=True)
        yield store, catalog, client


def _progress_bar():
    from tqdm import tqdm

    bars: dict = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"{stage:>7}", unit="task",
                                     file=sys.stderr, leave=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def _simulate(args) -> int:
    from pipeline.simulate import simulate
    from tqdm import tqdm

    with tqdm(total=args.frames, desc="simulate", unit="frame", file=sys.stderr) as bar:
        sim = simulate(args.outdir, frames=args.frames, size=args.size, camera=args.camera,
                       ccd=args.ccd, sector=args.sector, cadence=args.cadence, seed=args.seed,
                       progress=lambda done, total: bar.update(done - bar.n))
    print(f"wrote {len(sim.paths)} frames to {args.outdir}; truth in {sim.truth_path}")
    return 0


def _ingest(args) -> int:
    from pipeline.stages.ingest import ingest

    with _services(args) as (store, catalog, client):
        report = ingest(args.paths, store, catalog, client, progress=_progress_bar())
    _print_report(report)
    return 1 if report.files and report.count("rejected") == len(report.files) else 0


def _background(args) -> int:
    from pipeline.camera import load_excludes
    from pipeline.stages.background import run_background

    exclude = load_excludes(args.exclude) if args.exclude else None
    with _services(args) as (store, _, client):
        report = run_background(store, _cube_id(args), client, progress=_progress_bar(),
                                exclude=exclude)
    print(report)
    return 0


def _apertures(args) -> int:
    from pipeline.stages.apertures import run_apertures

    with _services(args) as (store, catalog, client):
        report = run_apertures(store, catalog, _cube_id(args), client, tile=args.tile,
                               stars=args.catalog, progress=_progress_bar())
    print(report)
    return 0


def _lightcurves(args) -> int:
    from pipeline.stages.lightcurves import run_lightcurves

    with _services(args) as (store, catalog, client):
        report = run_lightcurves(store, catalog, _cube_id(args), client, progress=_progress_bar())
    print(report)
    return 0


def _export(args) -> int:
    from pipeline import catalog as catalog_mod
    from pipeline.lightcurves import export_fits
    from pipeline.store import Store

    settings = _settings(args)
    store = Store.from_settings(settings)
    with catalog_mod.connect(settings) as catalog:
        paths = export_fits(catalog, store, args.outdir, sector=args.sector, camera=args.camera,
                            ccd=args.ccd)
    print(f"wrote {len(paths)} light curves to {args.outdir}/ and "
          f"{store.url_of('curated/lightcurves')}")
    return 0 if paths else 1


def _print_report(report) -> None:
    print(report)
    for cube_id, n in report.cubes.items():
        print(f"  cube {cube_id}: {n} cadences")
    for f in report.rejected:
        print(f"  REJECTED {f.error}")


def _run(args) -> int:
    if not args.inputs and not args.cube:
        raise SettingsError("give input files/folders or --cube IDs")
    if args.targets_only and not args.catalog:
        raise SettingsError("--targets-only needs a star catalog (--catalog FILE)")
    with _services(args) as (store, catalog, client):
        from pipeline.graph import submit

        job = _follow(submit(args.inputs, client=client, store=store, catalog=catalog,
                             cubes=args.cube, stars=args.catalog, tile=args.tile,
                             targets_only=args.targets_only, force=args.force))
    return 0 if job.status() == "done" else 1


def _resume(args) -> int:
    from pipeline.graph import resume

    with _services(args) as (store, catalog, client):
        job = resume(args.job, client=client, store=None if args.store is None else store,
                     catalog=catalog, stars=args.catalog)
        print(f"resuming:  {args.job}", flush=True)
        job = _follow(job)
    return 0 if job.status() == "done" else 1


def _follow(job):
    """Draw a progress bar per stage of a submitted job until it ends."""
    print(f"job:       {job.id}", flush=True)
    update = _progress_bar()
    try:
        while job.wait(0.5) in ("queued", "running"):
            for stage, p in job.progress().items():
                if p["total"]:
                    update(stage, p["done"], p["total"])
    except KeyboardInterrupt:
        job.cancel()
        job.wait(30)
        raise
    for stage, p in job.progress().items():
        if p["total"]:
            update(stage, p["done"], p["total"])
    if job.status() == "done":
        report = job.result()
        if report.ingest is not None:
            _print_report(report.ingest)
        for run in report.cubes.values():
            print(run.background)
            print(run.apertures)
            print(run.lightcurves)
        print(report)
    else:
        print(f"job {job.id} {job.status()}: {job.error}", file=sys.stderr)
    return job


def _api(args) -> int:
    from pipeline.api import serve

    serve(_settings(args), host=args.host, port=args.port)
    return 0


def _gui(args) -> int:
    from pipeline.gui import run

    return run(api_url=args.api_url, port=args.port, host=args.host)


def _demo(args) -> int:
    from pipeline.simulate import load_truth, simulate

    workdir = Path(args.workdir)
    frames = sorted(workdir.glob("*_ffic.fits"))
    if len(frames) != args.frames or not (workdir / "truth.fits").exists():
        # a different or partial earlier simulation: make a fresh, deterministic one
        print(f"simulating {args.frames} frames of {args.size}x{args.size} px into {workdir}/ ...",
              flush=True)
        for old in frames:
            old.unlink()
        simulate(workdir, frames=args.frames, size=args.size, camera=1, ccd=1, sector=14,
                 cadence=1800.0, seed=42)
    with _services(args) as (store, catalog, client):
        frames = [str(p) for p in sorted(workdir.glob("*_ffic.fits"))]
        from pipeline.graph import submit

        job = _follow(submit(frames, client=client, store=store, catalog=catalog))
        if job.status() != "done":
            return 1
        report = job.result()
        counts = {name: catalog.db[name].count_documents({})
                  for name in ("frames", "apertures", "lightcurves")}
        print(_demo_summary(catalog, report, load_truth(workdir / "truth.fits")))
    print("\nresults:")
    for cube_id in report.cubes:
        print(f"  cube:    {store.url_of(f'staging/{cube_id}.zarr')}  (flux, background, "
              f"pixel_flags, sumimage)")
    print(f"  raw:     {store.url_of('raw')}")
    print("  catalog: " + ", ".join(f"{n} {name}" for name, n in counts.items())
          + f" (database tess at {'the embedded server' if not _settings(args).mongo_url else 'TESS_MONGO_URL'};"
          f" job {report.job_id} in collection jobs)")
    print("  next:    tess-pipeline export DIR   (lightkurve-readable FITS light curves)\n"
          "           tess-pipeline api / tess-pipeline gui   (browse it)")
    return 0 if not report.ingest.rejected else 1


def _demo_summary(catalog, report, truth) -> str:
    """What the demo measured against the simulation's truth."""
    from pipeline.lightcurves import load_apertures, load_lightcurve
    from pipeline.lightcurves.validation import compare_with_truth, summarise

    lines = ["", "demo summary (against the simulation's truth):"]
    for cube_id, run in report.cubes.items():
        apertures = load_apertures(catalog, run.apertures.sector, run.apertures.camera,
                                   run.apertures.ccd, cube_id)
        curves = {a.label: load_lightcurve(catalog, run.apertures.sector, run.apertures.camera,
                                           run.apertures.ccd, a.label) for a in apertures}
        s = summarise(compare_with_truth(truth, apertures, curves))
        lines += [
            f"  {cube_id}: {len(apertures)} apertures, {run.lightcurves.written} light curves, "
            f"{len(truth.stars)} simulated stars",
            f"  precision (1-h rms / expected noise, {s['precision_n']} quiet isolated stars "
            f"Tmag 8-13): median {s['precision_median']:.2f}, "
            f"{100 * s['precision_within_1.2']:.0f}% within 1.2x",
            f"  frequencies: {s['signal_freqs_recovered']} of {s['signal_freqs']} injected "
            f"(amplitude SNR > 10) recovered within 1/T; pulsators with all recovered: "
            f"{100 * s['signal_recovered']:.0f}% of {s['signal_stars']}",
            f"  transits: {s['transits_n']} measured, {100 * s['transits_within_10pct']:.0f}% "
            f"of depths within 10%" if s["transits_n"] else "  transits: none deep enough to measure",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
