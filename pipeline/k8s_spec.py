"""The Dask cluster of the Helm chart as a ``DaskCluster`` resource (kubernetes.dask.org/v1).

``cluster_spec`` builds, in Python, the same object the chart's
``k8s/tess-pipeline/templates/daskcluster.yaml`` renders (tests/test_deploy_helm.py renders
the chart and compares the two), so a notebook's ``pipeline.cluster.kubernetes(...)`` starts
workers exactly like the chart's: same image, commands, thread limits, settings and
credentials (from the chart's Secret), security context and resources.

Unlike ``dask_kubernetes.operator.make_cluster_spec`` this uses the ``dask scheduler`` /
``dask worker`` commands (the image has no ``dask-scheduler`` script), one thread per
worker by default, separate scheduler and worker resources, and credentials only as
references to a Secret (a DaskCluster object is readable by anyone who may list them).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from pipeline.cluster import WORKER_ENV

SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
WORKER_DASHBOARD_PORT = 8788
# the image's user (docker/Dockerfile): uid/gid 1000, owner of the numba cache
RUN_AS = 1000

DEFAULT_WORKER_RESOURCES = {"requests": {"cpu": "1", "memory": "4Gi"},
                            "limits": {"cpu": "1", "memory": "4Gi"}}
DEFAULT_SCHEDULER_RESOURCES = {"requests": {"cpu": "250m", "memory": "1Gi"},
                               "limits": {"cpu": "1", "memory": "2Gi"}}

# keys of the chart's credentials Secret that pipeline processes read
SECRET_KEYS = {"TESS_S3_KEY": "s3-access-key", "TESS_S3_SECRET": "s3-secret-key",
               "TESS_MONGO_URL": "mongo-url"}

# what the chart sets in its Jupyter pod, so kubernetes() there needs no arguments
ENV_IMAGE, ENV_SECRET, ENV_CLUSTER = "TESS_IMAGE", "TESS_K8S_SECRET_NAME", "TESS_DASK_CLUSTER"
DEFAULT_CLUSTER_NAME = "tess-dask"

_SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class KubernetesUnavailable(RuntimeError):
    """No Kubernetes API to talk to: not in a pod and no kubeconfig."""


def env_list(env) -> list[dict]:
    """Kubernetes ``env`` entries from a dict (name → value) or a list of entries."""
    if env is None:
        return []
    if isinstance(env, dict):
        return [{"name": str(k), "value": str(v)} for k, v in env.items()]
    entries = [dict(e) for e in env]
    for entry in entries:
        if "name" not in entry:
            raise ValueError(f"env entry {entry!r} has no 'name'")
    return entries


def settings_env(secret: str | None = None, store: str | None = None,
                 s3_endpoint: str | None = None) -> list[dict]:
    """The ``TESS_*`` settings of pipeline processes: the store URL and S3 endpoint as
    values, the S3 credentials and the MongoDB URL (it holds a password) from ``secret``."""
    env = []
    if store:
        env.append({"name": "TESS_STORE", "value": store})
    if s3_endpoint:
        env.append({"name": "TESS_S3_ENDPOINT", "value": s3_endpoint})
    if secret:
        env += [{"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
                for name, key in SECRET_KEYS.items()]
    return env


def thread_env() -> list[dict]:
    """One thread per numba kernel and BLAS call (pipeline.cluster.WORKER_ENV)."""
    return env_list(WORKER_ENV)


def pod_security_context() -> dict:
    return {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}}


def container_security_context() -> dict:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def cluster_spec(name: str, image: str, n_workers: int = 2, resources: dict | None = None,
                 env=None, *, namespace: str | None = None, secret: str | None = None,
                 store: str | None = None, s3_endpoint: str | None = None,
                 threads_per_worker: int = 1, scheduler_resources: dict | None = None,
                 scheduler_env=None, image_pull_policy: str = "IfNotPresent",
                 image_pull_secrets: list[str] | None = None,
                 service_type: str = "ClusterIP", idle_timeout: int = 0,
                 labels: dict | None = None) -> dict:
    """A ``DaskCluster`` resource: ``n_workers`` workers of ``image`` with ``resources``
    (requests/limits) each, ``threads_per_worker`` threads, the thread limits, the
    pipeline settings (``store``, ``s3_endpoint``, credentials from ``secret``) and the
    extra ``env`` (dict or list of Kubernetes env entries)."""
    from dask_kubernetes.operator.validation import validate_cluster_name

    validate_cluster_name(name)
    if not image:
        raise ValueError("cluster_spec: an image is required (e.g. the chart's "
                         "image.repository:image.tag)")
    if int(n_workers) < 0 or int(threads_per_worker) < 1:
        raise ValueError(f"cluster_spec: n_workers must be >= 0 and threads_per_worker >= 1, "
                         f"got {n_workers} and {threads_per_worker}")
    _check_resources(resources, "resources")
    _check_resources(scheduler_resources, "scheduler_resources")
    settings = settings_env(secret, store, s3_endpoint)

    def pod(container: dict) -> dict:
        spec = {"securityContext": pod_security_context(), "containers": [container]}
        if image_pull_secrets:
            spec["imagePullSecrets"] = [{"name": s} for s in image_pull_secrets]
        return spec

    worker = {
        "name": "worker",
        "image": image,
        "imagePullPolicy": image_pull_policy,
        # the operator sets DASK_WORKER_NAME and DASK_SCHEDULER_ADDRESS in worker pods
        "args": ["dask", "worker", "--name", "$(DASK_WORKER_NAME)",
                 "--nthreads", str(int(threads_per_worker)),
                 "--dashboard", "--dashboard-address", str(WORKER_DASHBOARD_PORT)],
        "env": thread_env() + settings + env_list(env),
        "resources": copy.deepcopy(resources or DEFAULT_WORKER_RESOURCES),
        "ports": [{"name": "http-dashboard", "containerPort": WORKER_DASHBOARD_PORT,
                   "protocol": "TCP"}],
        "securityContext": container_security_context(),
    }
    health = {"httpGet": {"port": "http-dashboard", "path": "/health"}}
    scheduler = {
        "name": "scheduler",
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "args": ["dask", "scheduler", "--host", "0.0.0.0", "--port", str(SCHEDULER_PORT),
                 "--dashboard-address", f":{DASHBOARD_PORT}"],
        "env": env_list(scheduler_env),
        "resources": copy.deepcopy(scheduler_resources or DEFAULT_SCHEDULER_RESOURCES),
        "ports": [{"name": "tcp-comm", "containerPort": SCHEDULER_PORT, "protocol": "TCP"},
                  {"name": "http-dashboard", "containerPort": DASHBOARD_PORT, "protocol": "TCP"}],
        "readinessProbe": {**health, "initialDelaySeconds": 5, "periodSeconds": 5},
        "livenessProbe": {**health, "initialDelaySeconds": 15, "periodSeconds": 20},
        "securityContext": container_security_context(),
    }
    metadata: dict = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    if labels:
        metadata["labels"] = dict(labels)
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskCluster",
        "metadata": metadata,
        "spec": {
            "idleTimeout": int(idle_timeout),
            "worker": {"replicas": int(n_workers), "spec": pod(worker)},
            "scheduler": {
                "spec": pod(scheduler),
                "service": {
                    "type": service_type,
                    "selector": {"dask.org/cluster-name": name,
                                 "dask.org/component": "scheduler"},
                    "ports": [{"name": "tcp-comm", "protocol": "TCP", "port": SCHEDULER_PORT,
                               "targetPort": "tcp-comm"},
                              {"name": "http-dashboard", "protocol": "TCP",
                               "port": DASHBOARD_PORT, "targetPort": "http-dashboard"}],
                },
            },
        },
    }


def _check_resources(resources: dict | None, what: str) -> None:
    if resources is None:
        return
    unknown = set(resources) - {"requests", "limits"}
    if not isinstance(resources, dict) or unknown:
        raise ValueError(f"{what} must be a dict with 'requests' and/or 'limits', "
                         f"got keys {sorted(unknown)}")


def kube_config_source(environ=None) -> str | None:
    """Where a Kubernetes client would find its credentials: "in-cluster", a kubeconfig
    path, or None when there is none (the checks kr8s and kubectl make)."""
    environ = os.environ if environ is None else environ
    if environ.get("KUBERNETES_SERVICE_HOST") and _SERVICE_ACCOUNT_TOKEN.exists():
        return "in-cluster"
    if environ.get("KUBECONFIG"):
        paths = [p for p in environ["KUBECONFIG"].split(os.pathsep) if p]
    else:
        home = environ.get("HOME") or os.path.expanduser("~")
        paths = [os.path.join(home, ".kube", "config")]
    for path in paths:
        if os.path.isfile(os.path.expanduser(path)):
            return path
    return None


def require_kube_config(environ=None) -> str:
    source = kube_config_source(environ)
    if source is None:
        environ = os.environ if environ is None else environ
        where = environ.get("KUBECONFIG") or "~/.kube/config"
        raise KubernetesUnavailable(
            "no Kubernetes cluster to use: not running in a pod (KUBERNETES_SERVICE_HOST "
            f"unset) and no kubeconfig at {where}. Run this in the Helm chart's Jupyter, "
            "or set KUBECONFIG to a cluster where the dask-kubernetes operator is "
            "installed (README: Kubernetes). Without Kubernetes use "
            "pipeline.cluster.local() or pipeline.cluster.connect('tcp://host:8786').")
    return source
