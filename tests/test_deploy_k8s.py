"""The Helm chart (k8s/tess-pipeline), offline: linted and rendered with helm-python
(Helm's Go SDK) for the default and a production-like values file; every built-in object
validated by the ``kubernetes-validate --strict`` CLI against the chart's oldest supported
and the newest known Kubernetes (the Dask objects: tests/test_deploy_crd.py); resources,
security and credentials checked on every pod; pipeline.k8s_spec.cluster_spec compared
with the rendered DaskCluster; pipeline.cluster.kubernetes without a cluster. Negative
controls show each check fails on a broken input."""

from __future__ import annotations

import copy
import re

import pytest

from pipeline import k8s_spec
from test_deploy_crd import dask_errors
from test_deploy_support import (CHART, PRODUCTION_VALUES, by_kind, is_dask_kind,
                                 jupyter_auth_options, kube_versions, kubernetes_validate,
                                 load_values, pod_specs, render_chart)

PRODUCTION = load_values(PRODUCTION_VALUES)
VALUES = {"default": None, "production": PRODUCTION}


@pytest.fixture(scope="module", params=sorted(VALUES))
def rendered(request):
    objects, notes = render_chart(copy.deepcopy(VALUES[request.param]))
    return request.param, objects, notes


# -- lint and render -----------------------------------------------------------------------
@pytest.mark.parametrize("label", sorted(VALUES))
def test_chart_lints_without_warnings(label):
    import helm_python as helm

    report = helm.lint(str(CHART), copy.deepcopy(VALUES[label]), strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def test_chart_renders_every_component(rendered):
    label, objects, notes = rendered
    kinds = {}
    for o in objects:
        kinds.setdefault(o["kind"], set()).add(o["metadata"]["name"])
    assert {"tess-tess-pipeline-api", "tess-tess-pipeline-gui", "tess-tess-pipeline-jupyter"} \
        <= kinds["Deployment"]
    assert {"tess-tess-pipeline-minio", "tess-tess-pipeline-mongodb"} <= kinds["StatefulSet"]
    for statefulset in by_kind(objects, "StatefulSet").values():
        assert statefulset["spec"]["volumeClaimTemplates"], "StatefulSets keep data on a PVC"
    assert {"tess-tess-pipeline-api", "tess-tess-pipeline-gui", "tess-tess-pipeline-jupyter",
            "tess-tess-pipeline-minio", "tess-tess-pipeline-mongodb"} <= kinds["Service"]
    assert kinds["DaskCluster"] == {"tess-tess-pipeline-dask"}
    assert "tess-tess-pipeline-minio-init" in kinds["Job"]
    if label == "default":
        assert kinds["Secret"] == {"tess-tess-pipeline-credentials"}
        assert "Ingress" not in kinds and "DaskAutoscaler" not in kinds
    else:
        assert "Secret" not in kinds          # credentials.existingSecret
        assert len(kinds["Ingress"]) == 4 and kinds["DaskAutoscaler"] == {"tess-tess-pipeline-dask"}
    for text in ("port-forward", "svc/tess-tess-pipeline-dask-scheduler 8787", "-api 8000",
                 "-gui 8080", "jupyter-token"):
        assert text in notes, f"NOTES.txt lacks {text!r}"


# -- built-in kinds: the kubernetes-validate CLI ---------------------------------------------
def test_builtin_objects_validate_strictly(rendered, tmp_path):
    label, objects, _ = rendered
    builtin = [o for o in objects if not is_dask_kind(o)]
    result = kubernetes_validate(builtin, tmp_path / f"{label}.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARN" not in result.stdout and "ERROR" not in result.stdout, result.stdout
    passed = result.stdout.count(" passed for resource ")
    assert passed == len(builtin) * len(kube_versions()), result.stdout


def test_kubernetes_validate_catches_broken_objects(tmp_path):
    """Negative control: a misspelt field and a wrong type fail the same CLI call."""
    objects, _ = render_chart()
    api = copy.deepcopy(by_kind(objects, "Deployment")["tess-tess-pipeline-api"])
    api["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    result = kubernetes_validate([api], tmp_path / "typo.yaml")
    assert result.returncode == 1 and "resourcez" in result.stdout
    service = copy.deepcopy(by_kind(objects, "Service")["tess-tess-pipeline-api"])
    service["spec"]["ports"][0]["port"] = "eight thousand"
    result = kubernetes_validate([service], tmp_path / "type.yaml")
    assert result.returncode == 1 and "ERROR" in result.stdout


# -- what every object must have -------------------------------------------------------------
def test_every_container_has_requests_and_limits(rendered):
    _, objects, _ = rendered
    for obj in objects:
        for where, spec in pod_specs(obj):
            for container in spec.get("initContainers", []) + spec["containers"]:
                resources = container.get("resources") or {}
                for part in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(resources.get(part, {})), \
                        f"{where}/{container['name']}: no {part}"


def test_pods_run_unprivileged_and_credentials_come_from_the_secret(rendered):
    label, objects, _ = rendered
    secret_name = ("tess-credentials" if label == "production"
                   else "tess-tess-pipeline-credentials")
    secret_like = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|S3_KEY|ROOT_USER|MONGO_USER|MONGO_URL)$")
    secret = by_kind(objects, "Secret").get(secret_name)
    for obj in objects:
        for where, spec in pod_specs(obj):
            assert spec["securityContext"]["runAsNonRoot"] is True, where
            for container in spec["containers"]:
                assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
                assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
                for entry in container.get("env", []):
                    if secret_like.search(entry["name"]):
                        ref = entry.get("valueFrom", {}).get("secretKeyRef")
                        assert ref, f"{where}: {entry['name']} is a literal value"
                        assert ref["name"] == secret_name
                        if secret is not None:
                            assert ref["key"] in secret["data"], f"{where}: no key {ref['key']}"


def test_worker_env_sets_numba_threads(rendered):
    label, objects, _ = rendered
    cluster = by_kind(objects, "DaskCluster")["tess-tess-pipeline-dask"]
    worker = cluster["spec"]["worker"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["NUMBA_NUM_THREADS"] == "1" and env["OMP_NUM_THREADS"] == "1"
    threads = (PRODUCTION if label == "production" else load_values(CHART / "values.yaml"))
    assert worker["args"][worker["args"].index("--nthreads") + 1] == \
        str(threads["worker"]["threads_per_worker"])
    if label == "production":
        assert env["DASK_DISTRIBUTED__WORKER__MEMORY__TARGET"] == "0.7"   # worker.env appended


def test_service_addresses_point_at_rendered_services(rendered):
    _, objects, _ = rendered
    services = set(by_kind(objects, "Service"))
    cluster = by_kind(objects, "DaskCluster")["tess-tess-pipeline-dask"]
    services.add(f"{cluster['metadata']['name']}-scheduler")     # the operator makes it
    for obj in objects:
        for where, spec in pod_specs(obj):
            for container in spec["containers"]:
                for entry in container.get("env", []):
                    match = re.match(r"(?:tcp|https?)://([a-z0-9-]+):(\d+)", entry.get("value", ""))
                    if match and ".example." not in entry["value"]:
                        assert match.group(1) in services, f"{where}: {entry} names no Service"


# -- credentials -------------------------------------------------------------------------------
def test_no_default_passwords_generated_secret():
    defaults = load_values(CHART / "values.yaml")["credentials"]
    assert all(value == "" for value in defaults.values()), "values.yaml must hold no credential"
    first = by_kind(render_chart()[0], "Secret")["tess-tess-pipeline-credentials"]["data"]
    second = by_kind(render_chart()[0], "Secret")["tess-tess-pipeline-credentials"]["data"]
    import base64

    decoded = {k: base64.b64decode(v).decode() for k, v in first.items()}
    assert all(len(v) >= 12 for v in decoded.values()), decoded.keys()
    for key in ("minio-root-password", "s3-secret-key", "mongo-root-password", "mongo-password",
                "api-key", "jupyter-token"):
        assert first[key] != second[key], f"{key} is not generated per install"
    assert decoded["mongo-url"] == (f"mongodb://{decoded['mongo-user']}:{decoded['mongo-password']}"
                                    "@tess-tess-pipeline-mongodb:27017/tess?authSource=admin")
    given = by_kind(render_chart({"credentials": {"apiKey": "k" * 24}})[0], "Secret")
    assert base64.b64decode(given["tess-tess-pipeline-credentials"]["data"]["api-key"]) == b"k" * 24


def test_jupyter_token_comes_from_the_secret_and_no_argument_switches_it_off(rendered):
    """Jupyter gives a shell in the cluster with the pipeline's credentials and a Role
    over DaskClusters: its login token is JUPYTER_TOKEN from the Secret's
    "jupyter-token" (generated per install unless given), and no argument of any
    container overrides it (an empty --IdentityProvider.token= would drop the login)."""
    label, objects, _ = rendered
    secret_name = ("tess-credentials" if label == "production"
                   else "tess-tess-pipeline-credentials")
    for obj in objects:
        for where, spec in pod_specs(obj):
            for container in spec.get("initContainers", []) + spec["containers"]:
                argv = container.get("command", []) + container.get("args", [])
                assert not jupyter_auth_options(argv), \
                    f"{where}/{container['name']} sets Jupyter's login: {argv}"
    deployment = by_kind(objects, "Deployment")["tess-tess-pipeline-jupyter"]
    (jupyter,) = [c for c in deployment["spec"]["template"]["spec"]["containers"]
                  if c["name"] == "jupyter"]
    assert (jupyter.get("command", []) + jupyter["args"])[:2] == ["jupyter", "lab"]
    # exactly one entry: a second one further down the list (jupyter.env) would win
    tokens = [e for e in jupyter["env"] if e["name"] == "JUPYTER_TOKEN"]
    assert len(tokens) == 1, f"JUPYTER_TOKEN entries of the jupyter container: {tokens}"
    assert tokens[0].get("valueFrom", {}).get("secretKeyRef") == \
        {"name": secret_name, "key": "jupyter-token"}, tokens[0]
    secret = by_kind(objects, "Secret").get(secret_name)
    if secret is not None:          # rendered by the chart (default values): non-empty
        import base64

        assert base64.b64decode(secret["data"]["jupyter-token"])


def test_production_ingresses_put_single_sign_on_in_front_of_jupyter_dashboard_and_gui():
    """values-production.yaml exposes Jupyter, the Dask dashboard and the GUI through
    Ingresses: each must ask the SSO proxy first (nginx auth-url / auth-signin), since the
    dashboard and Jupyter run code on the cluster and the GUI has no login of its own."""
    ingresses = by_kind(render_chart(copy.deepcopy(PRODUCTION))[0], "Ingress")
    for service in ("jupyter", "dashboard", "gui"):
        name = f"tess-tess-pipeline-{service}"
        assert name in ingresses, f"no Ingress {name}: {sorted(ingresses)}"
        annotations = ingresses[name]["metadata"].get("annotations") or {}
        assert annotations.get("nginx.ingress.kubernetes.io/auth-url", "").startswith("https://"), \
            f"{name}: no single sign-on (nginx.ingress.kubernetes.io/auth-url): {annotations}"
        assert annotations.get("nginx.ingress.kubernetes.io/auth-signin", "").startswith("https://"), \
            f"{name}: no sign-in page for the SSO proxy: {annotations}"


# -- negative controls on values ---------------------------------------------------------------
@pytest.mark.parametrize("values, message", [
    ({"worker": {"replicas": "many"}}, "/worker/replicas"),
    ({"workers": {"replicas": 3}}, "workers"),
    ({"worker": {"resources": {"requests": {"cpu": "lots"}}}}, "/worker/resources/requests/cpu"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
])
def test_broken_values_fail_lint_and_render(values, message):
    import helm_python as helm

    report = helm.lint(str(CHART), values, strict=True)
    assert report["errors"] and message in " ".join(report["errors"]), report
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render_chart(values)


@pytest.mark.parametrize("values, message", [
    ({"minio": {"enabled": False}}, "store.url is required"),
    ({"mongodb": {"enabled": False}}, "credentials.mongoUrl is required"),
    ({"worker": {"autoscaler": {"enabled": True, "minimum": 5, "maximum": 2}}}, "must not exceed"),
    ({"ingress": {"enabled": True}}, "needs a host"),
])
def test_incomplete_values_fail_with_a_clear_message(values, message):
    import helm_python as helm

    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render_chart(values)


# -- the same cluster spec from Python ----------------------------------------------------------
def builder_arguments(values: dict | None, cluster: dict) -> dict:
    """The arguments of pipeline.k8s_spec.cluster_spec that correspond to the values."""
    defaults = load_values(CHART / "values.yaml")
    merged = _merge(copy.deepcopy(defaults), copy.deepcopy(values or {}))
    image = merged["image"]
    tag = image["tag"] or load_values(CHART / "Chart.yaml")["appVersion"]
    secret = merged["credentials"]["existingSecret"] or "tess-tess-pipeline-credentials"
    return dict(
        name=cluster["metadata"]["name"], namespace="astro",
        image=f"{image['repository']}@{image['digest']}" if image["digest"]
        else f"{image['repository']}:{tag}",
        n_workers=merged["worker"]["replicas"], resources=merged["worker"]["resources"],
        env=merged["worker"]["env"], secret=secret,
        store=merged["store"]["url"] or f"s3://{merged['minio']['bucket']}",
        s3_endpoint=merged["store"]["s3Endpoint"] or "http://tess-tess-pipeline-minio:9000",
        threads_per_worker=merged["worker"]["threads_per_worker"],
        scheduler_resources=merged["scheduler"]["resources"], scheduler_env=merged["scheduler"]["env"],
        image_pull_policy=image["pullPolicy"], image_pull_secrets=merged["imagePullSecrets"],
        service_type=merged["scheduler"]["serviceType"],
        idle_timeout=merged["scheduler"]["idleTimeout"], labels=cluster["metadata"]["labels"])


def _merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        base[key] = (_merge(base[key], value) if isinstance(value, dict)
                     and isinstance(base.get(key), dict) else value)
    return base


def _normalise(obj):
    """Quantities and numbers as Kubernetes compares them (YAML 1 vs "1")."""
    if isinstance(obj, dict):
        return {k: _normalise(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_normalise(v) for v in obj]
    return str(obj) if isinstance(obj, (int, float)) and not isinstance(obj, bool) else obj


def test_python_spec_builder_matches_the_chart(rendered):
    label, objects, _ = rendered
    cluster = by_kind(objects, "DaskCluster")["tess-tess-pipeline-dask"]
    built = k8s_spec.cluster_spec(**builder_arguments(VALUES[label], cluster))
    assert _normalise(built) == _normalise(cluster)
    assert not dask_errors(built)


def test_spec_builder_rejects_bad_arguments():
    with pytest.raises(ValueError, match="image is required"):
        k8s_spec.cluster_spec("tess-dask", "")
    from dask_kubernetes.exceptions import ValidationError

    with pytest.raises(ValidationError) as invalid:
        k8s_spec.cluster_spec("Tess_Dask", "tess-pipeline:0.1.0")
    assert "invalid" in invalid.value.message
    with pytest.raises(ValueError, match="requests"):
        k8s_spec.cluster_spec("tess-dask", "tess-pipeline:0.1.0", resources={"limit": {}})
    spec = k8s_spec.cluster_spec("tess-dask", "tess-pipeline:0.1.0", env={"A": 1})
    worker_env = spec["spec"]["worker"]["spec"]["containers"][0]["env"]
    assert worker_env[-1] == {"name": "A", "value": "1"}
    assert not any("valueFrom" in e for e in worker_env)         # no secret named, none used


def test_kubernetes_mode_without_a_kube_config_raises_a_clear_error(tmp_path, monkeypatch):
    from pipeline import cluster

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(k8s_spec.KubernetesUnavailable,
                       match="no Kubernetes cluster to use.*missing-kubeconfig"):
        cluster.kubernetes(name="tess-dask", image="tess-pipeline:0.1.0", n_workers=2)
    monkeypatch.delenv("KUBECONFIG")
    assert k8s_spec.kube_config_source() is None
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("apiVersion: v1\nkind: Config\n")
    assert k8s_spec.kube_config_source() == str(tmp_path / ".kube" / "config")
