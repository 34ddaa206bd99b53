"""DaskCluster and DaskAutoscaler objects validated against the CRD schemas that ship
inside the installed dask-kubernetes (its python:// references resolved here, fields the
CRD does not define rejected), negative controls, and the Deployments and Service the
operator itself would make from the chart's DaskCluster validated by kubernetes-validate."""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from test_deploy_support import (PRODUCTION_VALUES, by_kind, is_dask_kind, kubernetes_validate,
                                 load_values, render_chart)

PRODUCTION = load_values(PRODUCTION_VALUES)


@pytest.fixture(scope="module", params=["default", "production"])
def rendered(request):
    values = copy.deepcopy(PRODUCTION) if request.param == "production" else None
    objects, _ = render_chart(values)
    return request.param, objects


def _strict(schema):
    """Reject fields the CRD does not define (the API server would prune them silently),
    like kubernetes-validate --strict does for built-in kinds."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(v) for v in schema]
    return schema


@cache
def crd_validator(kind: str):
    """A jsonschema validator for a dask-kubernetes CRD. Its schema refers to
    python://dask_kubernetes/.../templates.yaml (in the wheel) and to
    python://k8s_crd_resolver/schemata/k8s-1.21.1.json#/definitions/io.k8s.api.core.v1.PodSpec
    (k8s-crd-resolver, not installed): those resolve here to the wheel's file and to the
    strict PodSpec/ServiceSpec schemas kubernetes-validate ships for the newest Kubernetes."""
    import dask_kubernetes
    import jsonschema
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    resources = Path(dask_kubernetes.__file__).parent / "operator" / "customresources"
    crd = yaml.safe_load((resources / f"{kind.lower()}.yaml").read_text())
    assert crd["spec"]["names"]["kind"] == kind
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    k8s = (Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
           / f"v{latest_version()}-local-strict")
    load = lambda name: json.loads((k8s / name).read_text())
    templates = _strict(yaml.safe_load((resources / "templates.yaml").read_text()))
    k8s_schemata = {"definitions": {"io.k8s.api.core.v1.PodSpec": load("podspec-v1.json"),
                                    "io.k8s.api.core.v1.ServiceSpec": load("servicespec-v1.json")}}
    documents = {
        "python://dask_kubernetes/operator/customresources/templates.yaml": templates,
        "python://k8s_crd_resolver/schemata/k8s-1.21.1.json": k8s_schemata,
        "https://kubernetes.io/api/_definitions.json": load("_definitions.json"),
    }
    registry = Registry().with_resources(
        (uri, DRAFT202012.create_resource(doc)) for uri, doc in documents.items())
    unresolved = set(re.findall(r"python://[^#'\"]+", json.dumps(schema) + json.dumps(templates)))
    assert unresolved <= set(documents), f"unknown CRD references: {unresolved - set(documents)}"
    schema = _strict(schema)
    return jsonschema.Draft202012Validator(schema, registry=registry)


@cache
def object_meta_validator():
    import jsonschema
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    path = (Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
            / f"v{latest_version()}-local-strict" / "objectmeta-meta-v1.json")
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    defs = json.loads((path.parent / "_definitions.json").read_text())
    registry = Registry().with_resource("https://kubernetes.io/api/_definitions.json",
                                        DRAFT202012.create_resource(defs))
    return jsonschema.Draft202012Validator(json.loads(path.read_text()), registry=registry)


def dask_errors(obj: dict) -> list[str]:
    """Problems of a Dask resource: the CRD schema for the body (the API server checks
    apiVersion, kind and metadata itself: here its ObjectMeta schema)."""
    if obj.get("apiVersion") != "kubernetes.dask.org/v1":
        return [f"apiVersion {obj.get('apiVersion')!r} is not kubernetes.dask.org/v1"]
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in crd_validator(obj["kind"]).iter_errors(body)]
    errors += [f"metadata.{'.'.join(map(str, e.absolute_path))}: {e.message}"
               for e in object_meta_validator().iter_errors(obj["metadata"])]
    return errors


def test_dask_objects_validate_against_the_operator_crds(rendered):
    label, objects = rendered
    dask_objects = [o for o in objects if is_dask_kind(o)]
    assert {o["kind"] for o in dask_objects} == ({"DaskCluster", "DaskAutoscaler"}
                                                 if label == "production" else {"DaskCluster"})
    for obj in dask_objects:
        assert obj["apiVersion"] == "kubernetes.dask.org/v1"
        assert not dask_errors(obj), dask_errors(obj)
    from dask_kubernetes.operator.validation import validate_cluster_name

    cluster = by_kind(objects, "DaskCluster")["tess-tess-pipeline-dask"]
    validate_cluster_name(cluster["metadata"]["name"])
    for autoscaler in by_kind(objects, "DaskAutoscaler").values():
        assert autoscaler["spec"]["cluster"] == cluster["metadata"]["name"]


@pytest.mark.parametrize("breakage", ["missing service", "replicas type", "unknown field",
                                      "container typo", "autoscaler minimum"])
def test_crd_validation_catches_broken_dask_objects(breakage):
    """Negative controls for the CRD validation."""
    objects, _ = render_chart(copy.deepcopy(PRODUCTION))
    obj = copy.deepcopy(by_kind(objects, "DaskCluster")["tess-tess-pipeline-dask"])
    if breakage == "missing service":
        del obj["spec"]["scheduler"]["service"]
    elif breakage == "replicas type":
        obj["spec"]["worker"]["replicas"] = "two"
    elif breakage == "unknown field":
        obj["spec"]["worker"]["replica"] = 3
    elif breakage == "container typo":
        obj["spec"]["worker"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    else:
        obj = copy.deepcopy(by_kind(objects, "DaskAutoscaler")["tess-tess-pipeline-dask"])
        del obj["spec"]["minimum"]
    assert dask_errors(obj), f"{breakage}: accepted"


def test_operator_made_objects_validate(tmp_path):
    """The Deployments and Service the dask-kubernetes operator creates from the chart's
    DaskCluster (its own builder functions) pass kubernetes-validate --strict too."""
    from dask_kubernetes.operator.controller.controller import (build_scheduler_deployment_spec,
                                                                build_scheduler_service_spec,
                                                                build_worker_deployment_spec)

    objects, _ = render_chart(copy.deepcopy(PRODUCTION))
    cluster = by_kind(objects, "DaskCluster")["tess-tess-pipeline-dask"]
    name, spec = cluster["metadata"]["name"], cluster["spec"]
    made = [build_scheduler_deployment_spec(name, spec["scheduler"]["spec"], {}, {}),
            build_scheduler_service_spec(name, spec["scheduler"]["service"], {}, {}),
            build_worker_deployment_spec("default", "astro", name, "abc123",
                                         spec["worker"]["spec"], {}, {})]
    result = kubernetes_validate(made, tmp_path / "operator.yaml")
    assert result.returncode == 0 and "WARN" not in result.stdout, result.stdout
    worker_env = {e["name"] for e in made[2]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"DASK_WORKER_NAME", "DASK_SCHEDULER_ADDRESS", "NUMBA_NUM_THREADS"} <= worker_env
