"""docker-compose.yml validated by the real Compose v2 binary (``config -q`` with
.env.example as the env file), with negative controls proving the check fails on a
missing credential and on an invalid file, and the stack's shape checked on the model
Compose resolves: healthchecks, depends_on conditions, named volumes, scalable workers,
credentials only from the env file."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from pipeline.config import Settings
from test_deploy_support import (CHART, COMPOSE_FILE, ENV_EXAMPLE, REPO, compose,
                                 compose_model, jupyter_auth_options)

SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|S3_KEY|ROOT_USER|MONGO_USER)$")
PIPELINE_SERVICES = {"scheduler", "worker", "api", "gui", "jupyter"}


@pytest.fixture(scope="module")
def model() -> dict:
    return compose_model()


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def test_compose_config_is_valid_with_the_example_env_file():
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_check_fails_without_credentials(tmp_path):
    """Negative control: an env file missing one credential stops Compose, naming it."""
    partial = tmp_path / "partial.env"
    partial.write_text("\n".join(line for line in ENV_EXAMPLE.read_text().splitlines()
                                 if not line.startswith("TESS_MONGO_PASSWORD=")))
    result = compose("config", "-q", env_file=partial)
    assert result.returncode != 0
    assert "TESS_MONGO_PASSWORD" in result.stderr
    empty = tmp_path / "empty.env"
    empty.write_text("")
    assert compose("config", "-q", env_file=empty).returncode != 0


def test_compose_check_fails_on_an_invalid_file(tmp_path):
    """Negative control: a file Compose must reject (unknown depends_on condition, a
    dependency on a service that does not exist)."""
    text = COMPOSE_FILE.read_text()
    for broken in (text.replace("condition: service_healthy", "condition: service_happy", 1),
                   text.replace("      scheduler:\n        condition: service_healthy",
                                "      schedulr:\n        condition: service_healthy", 1)):
        assert broken != text
        path = tmp_path / "docker-compose.yml"
        path.write_text(broken)
        result = compose("config", "-q", compose_file=path)
        assert result.returncode != 0, "Compose accepted a broken file"


def test_credentials_only_from_the_env_file():
    raw = COMPOSE_FILE.read_text()
    references = re.findall(r"\$\{([A-Z0-9_]+)(:?[?-]?)([^}]*)\}", raw)
    example = env_example()
    for name, operator, _ in references:
        if SECRET_NAME.search(name):
            assert operator in ("", ":?"), f"${{{name}{operator}...}}: a credential has no default"
            assert (name, ":?") in {(n, o) for n, o, _ in references}, \
                f"{name} must be required somewhere (${{{name}:?message}})"
            assert name in example, f"{name} is used by docker-compose.yml but not in .env.example"
    used = {name for name, _, _ in references}
    assert set(example) <= used, f"unused in docker-compose.yml: {set(example) - used}"
    # no literal credential anywhere: every secret-like environment value is interpolated
    document = yaml.safe_load(raw)
    for name, service in document["services"].items():
        environment = service.get("environment") or {}
        for key, value in environment.items():
            if SECRET_NAME.search(key) or key.endswith("_URL") and "mongodb://" in str(value):
                assert "${" in str(value), f"{name}: {key} has a literal value"
    assert not re.search(r"minioadmin|changeme|password123", raw, re.I)


def test_env_example_holds_placeholders_the_stack_refuses(model, tmp_path):
    example = env_example()
    assert example and all(v.startswith("CHANGE-ME") for v in example.values()), example
    # the minio-init guard (the first lines of its script) as the container runs it
    script = model["services"]["minio-init"]["command"][0].replace("$$", "$")
    guard = script.split("esac", 1)[0] + "esac\necho passed\n"
    run = lambda credentials: subprocess.run(["sh", "-ec", guard], capture_output=True, text=True,
                                             env={"CREDENTIALS": credentials, "PATH": "/usr/bin:/bin"})
    refused = run(model["services"]["minio-init"]["environment"]["CREDENTIALS"])
    assert refused.returncode == 1 and "CHANGE-ME" in refused.stderr
    accepted = run("a1 b2 c3")
    assert accepted.returncode == 0 and "passed" in accepted.stdout


def test_stack_services_healthchecks_and_startup_order(model):
    services = model["services"]
    assert {"minio", "minio-init", "mongo"} | PIPELINE_SERVICES <= set(services)
    for name, service in services.items():
        image = service["image"]
        if name not in PIPELINE_SERVICES:
            assert re.search(r":(RELEASE\.[\dT-]+Z|\d+\.\d+\.\d+)$", image), f"{name}: unpinned {image}"
        if name != "minio-init":
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, condition in service.get("depends_on", {}).items():
            wanted = ("service_completed_successfully" if dependency == "minio-init"
                      else "service_healthy")
            assert condition["condition"] == wanted, (name, dependency, condition)
            if wanted == "service_healthy":
                assert services[dependency].get("healthcheck"), dependency
    for name in PIPELINE_SERVICES - {"scheduler"}:
        assert services[name].get("depends_on"), f"{name} starts before what it needs"
    assert services["mongo"]["image"].startswith("mongo:")      # the official image


def test_named_volumes_and_published_ports(model):
    declared = set(model.get("volumes", {}))
    mounts = {(name, v["source"]): v["target"] for name, s in model["services"].items()
              for v in s.get("volumes", []) if v["type"] == "volume"}
    assert {("minio", "minio-data"), ("mongo", "mongo-data"), ("jupyter", "jupyter-work")} <= set(mounts)
    assert {source for _, source in mounts} <= declared
    ports = {(name, int(p["published"])): p.get("host_ip") for name, s in model["services"].items()
             for p in s.get("ports", [])}
    for expected in [("scheduler", 8786), ("scheduler", 8787), ("api", 8000), ("gui", 8080),
                     ("jupyter", 8888)]:
        assert expected in ports, f"{expected} not published"
    # the scheduler runs any code sent to it: nothing is published beyond this machine
    assert set(ports.values()) == {"127.0.0.1"}, ports


def test_workers_scale(model):
    worker = model["services"]["worker"]
    assert worker["deploy"]["replicas"] == 2
    # `--scale worker=N` needs no fixed name or host port on the worker
    assert "container_name" not in worker and not worker.get("ports")
    assert worker["command"][:2] == ["dask", "worker"] and "tcp://scheduler:8786" in worker["command"]
    assert worker["deploy"]["resources"]["limits"]["cpus"] == 1.0


def test_pipeline_settings_in_the_stack(model):
    """What the pipeline processes read with Settings.load from their environment."""
    example = env_example()
    for name in ("worker", "api", "jupyter"):
        env = model["services"][name]["environment"]
        settings = Settings.load(environ=env)
        assert settings.store == "s3://tess" and settings.s3_endpoint == "http://minio:9000"
        assert settings.storage_options == {"key": example["TESS_S3_KEY"],
                                            "secret": example["TESS_S3_SECRET"],
                                            "client_kwargs": {"endpoint_url": "http://minio:9000"}}
        assert settings.mongo_url == (f"mongodb://{example['TESS_MONGO_USER']}:"
                                      f"{example['TESS_MONGO_PASSWORD']}@mongo:27017/tess?authSource=admin")
        assert settings.scheduler == "tcp://scheduler:8786"
    assert model["services"]["api"]["environment"]["TESS_API_KEY"] == example["TESS_API_KEY"]
    assert model["services"]["jupyter"]["environment"]["JUPYTER_TOKEN"] == example["JUPYTER_TOKEN"]
    # the bucket the store names is the one the init job creates
    assert "mb --ignore-existing tess/tess" in model["services"]["minio-init"]["command"][0]


def test_jupyter_token_cannot_be_switched_off_on_the_command_line(model):
    """Jupyter gives a shell on the stack (every credential is in its environment): its
    login token comes from JUPYTER_TOKEN in .env, and no argument of the service's
    command overrides it (an empty --IdentityProvider.token= would drop the login)."""
    jupyter = model["services"]["jupyter"]
    argv = list(jupyter.get("entrypoint") or []) + list(jupyter["command"])
    assert argv[:2] == ["jupyter", "lab"], argv
    assert not jupyter_auth_options(argv), f"the jupyter command sets its own login: {argv}"
    assert jupyter["environment"]["JUPYTER_TOKEN"] == env_example()["JUPYTER_TOKEN"]
    # the check sees both spellings of such an option (negative control)
    for switch in (["--IdentityProvider.token="], ["--ServerApp.token", ""],
                   ["--NotebookApp.password=x"], ["--no-auth"]):
        assert jupyter_auth_options(argv + switch) == switch[:1], switch


def test_mongo_user_script_is_the_one_the_chart_ships():
    script = REPO / "docker" / "mongo-init.js"
    assert script.is_symlink() and script.resolve() == (CHART / "files" / "mongo-init.js").resolve()
