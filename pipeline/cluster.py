"""Where Dask work runs: a local cluster (default), or an existing scheduler."""

from __future__ import annotations

import contextlib
import functools
import os
import time

import dask
from distributed import Client, LocalCluster, as_completed, get_worker

from pipeline.config import Settings

# Kernels are serial numba code and Dask supplies the parallelism: one thread per
# kernel keeps numba's threading layer out of concurrent tasks (DESIGN §5).
WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# distributed starts workers with glibc's MALLOC_TRIM_THRESHOLD_ at 64 KiB so memory
# goes back to the OS at once. Setting it also switches off glibc's adaptive mmap
# threshold, so every buffer ≥ 128 KiB (each 2 MB zarr chunk, each codec buffer) is
# a fresh mmap and fresh page faults: a zarr write of 8 full frames cost 0.6-1.0 s of
# system time in a worker vs 0.1 s with these values. Chunk-sized buffers stay on
# the heap and are reused; memory above 64 MiB of free heap still goes back.
MALLOC_TRIM_THRESHOLD = str(64 << 20)
MALLOC_MMAP_THRESHOLD = str(32 << 20)


def local(n_workers: int | None = None, threads_per_worker: int = 1,
          memory_limit: str | None = None, dashboard_address: str | None = ":0",
          processes: bool = True) -> Client:
    """A LocalCluster on this machine (one single-threaded worker per core by default)."""
    os.environ.update({k: os.environ.get(k, v) for k, v in WORKER_ENV.items()})
    n_workers = n_workers or os.cpu_count() or 1
    kwargs = {"memory_limit": memory_limit} if memory_limit else {}
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_":
                          MALLOC_TRIM_THRESHOLD,
                          "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_":
                          MALLOC_MMAP_THRESHOLD}):
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                               processes=processes, dashboard_address=dashboard_address, **kwargs)
    return Client(cluster)


def connect(address: str) -> Client:
    """A client of an existing scheduler (``tcp://host:8786``)."""
    return Client(address)


def kubernetes(name: str | None = None, image: str | None = None, n_workers: int | None = None,
               resources: dict | None = None, env=None, namespace: str | None = None,
               spec: dict | None = None, **spec_options) -> Client:
    """A client of a Dask cluster on Kubernetes (dask-kubernetes operator): connects to
    the ``DaskCluster`` ``name`` if it exists (the Helm chart's, by default in its Jupyter),
    else creates it from ``spec`` or from the same spec the chart renders
    (``pipeline.k8s_spec.cluster_spec``; ``spec_options`` go there). ``n_workers``
    scales the cluster when given. Defaults come from the chart's Jupyter pod
    (TESS_DASK_CLUSTER, TESS_IMAGE, TESS_K8S_SECRET_NAME, TESS_STORE, TESS_S3_ENDPOINT).
    Raises ``KubernetesUnavailable`` when there is no cluster configuration."""
    from pipeline import k8s_spec

    k8s_spec.require_kube_config()
    if spec is None:
        settings = Settings.load()
        name = name or os.environ.get(k8s_spec.ENV_CLUSTER) or k8s_spec.DEFAULT_CLUSTER_NAME
        image = image or os.environ.get(k8s_spec.ENV_IMAGE)
        if not image:
            raise ValueError(f"kubernetes(): give image=... (or set {k8s_spec.ENV_IMAGE}), "
                             "the tess-pipeline image the workers run")
        spec_options.setdefault("secret", os.environ.get(k8s_spec.ENV_SECRET))
        spec_options.setdefault("store", settings.store if "://" in settings.store else None)
        spec_options.setdefault("s3_endpoint", settings.s3_endpoint)
        spec = k8s_spec.cluster_spec(name, image, 2 if n_workers is None else n_workers,
                                     resources, env, namespace=namespace, **spec_options)
    from dask_kubernetes.operator import KubeCluster

    cluster = KubeCluster(custom_cluster_spec=spec, namespace=namespace, quiet=True)
    if n_workers is not None:
        cluster.scale(n_workers)
    return Client(cluster)


@contextlib.contextmanager
def client_for(settings: Settings, client: Client | None = None, **local_options):
    """The given client, or one for ``settings.scheduler``, or a local cluster that is
    closed again on exit."""
    if client is not None:
        yield client
        return
    own = connect(settings.scheduler) if settings.scheduler else local(**local_options)
    try:
        yield own
    finally:
        cluster = own.cluster if settings.scheduler is None else None
        own.close()
        if cluster is not None:
            cluster.close()


def map_progress(client: Client, fn, items: list, stage: str, progress=None,
                 key=lambda item: item, prefix: str = ""):
    """Run ``fn`` over ``items`` on the cluster and yield (key(item), result) as the
    tasks finish, calling ``progress(stage, done, total)`` along the way. Task keys
    name the stage (``<prefix>-<stage>-<i>-...``) so the dashboard shows what runs."""
    if not items:
        return
    stamp = f"{os.getpid()}-{time.time_ns()}"
    name = f"{prefix}-{stage}" if prefix else stage
    futures = client.map(fn, items, pure=False,
                         key=[f"{name}-{i}-{stamp}" for i in range(len(items))])
    keys = {f.key: key(item) for f, item in zip(futures, items)}
    progress = progress or (lambda stage, done, total: None)
    done = 0
    progress(stage, 0, len(items))
    for future in as_completed(futures):
        result = future.result()
        done += 1
        progress(stage, done, len(items))
        yield keys[future.key], result


# -- progress of tasks inside one big graph ---------------------------------------------------
class Tracked:
    """A task function that announces its completion on an event topic, so the client
    can count finished tasks per stage without holding futures (and with them the
    results) of every task in the graph. Without a topic it is the plain function."""

    def __init__(self, fn, stage: str, topic: str | None = None):
        self.fn, self.stage, self.topic = fn, stage, topic
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        out = self.fn(*args, **kwargs)
        if self.topic:
            try:
                get_worker().log_event(self.topic, {"stage": self.stage})
            except ValueError:              # run outside a worker (tests, the driver)
                pass
        return out

    def __reduce__(self):
        return (Tracked, (self.fn, self.stage, self.topic))


class StageProgress:
    """Counts the ``Tracked`` tasks of a topic finishing, per stage, and calls
    ``callback(stage, done, total)`` on each. ``totals`` is filled while the graph
    is built (``expect``)."""

    def __init__(self, client: Client | None = None, callback=None, topic: str | None = None):
        self.topic = topic or f"tess-progress-{os.getpid()}-{time.time_ns()}"
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.finished_at: dict[str, float] = {}       # time.time() of each stage's last task
        self.reused: dict[str, int] = {}              # parts finished by an earlier run
        self.callback = callback
        self._client = None
        if client is not None:
            self.attach(client)

    def expect(self, stage: str, n: int = 1) -> str:
        self.totals[stage] = self.totals.get(stage, 0) + n
        self.done.setdefault(stage, 0)
        if n and self.done[stage] < self.totals[stage]:
            self.finished_at.pop(stage, None)
        return self.topic

    def reuse(self, stage: str, n: int = 1) -> None:
        """``n`` parts of ``stage`` were finished by an earlier run and are not redone."""
        self.reused[stage] = self.reused.get(stage, 0) + n
        self.expect(stage, 0)
        if self.totals[stage] == 0:                 # nothing of it left to run
            self.finished_at.setdefault(stage, time.time())

    def task(self, fn, stage: str) -> Tracked:
        """``fn`` for one more task of ``stage``."""
        self.expect(stage, 1)
        return Tracked(fn, stage, self.topic)

    def attach(self, client: Client) -> None:
        self._client = client
        client.subscribe_topic(self.topic, self._on_event)

    def detach(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.unsubscribe_topic(self.topic)
            self._client = None

    def _on_event(self, event) -> None:
        _, message = event
        stage = message.get("stage") if isinstance(message, dict) else None
        if stage is None:
            return
        # a task re-run after a worker died reports twice; never count past the total
        self.done[stage] = min(self.done.get(stage, 0) + 1, self.totals.get(stage, 1 << 62))
        if self.done[stage] == self.totals.get(stage):
            self.finished_at.setdefault(stage, time.time())
        if self.callback is not None:
            self.callback(stage, self.done[stage], self.totals.get(stage, 0))

    def finish(self) -> None:
        """Everything finished (the final result is in): mark every stage complete."""
        for stage, total in self.totals.items():
            self.finished_at.setdefault(stage, time.time())
            if self.done.get(stage, 0) != total:
                self.done[stage] = total
                if self.callback is not None:
                    self.callback(stage, total, total)

    def snapshot(self) -> dict:
        return {s: {"done": int(self.done.get(s, 0)), "total": int(t),
                    **({"reused": self.reused[s]} if s in self.reused else {})}
                for s, t in self.totals.items()}
