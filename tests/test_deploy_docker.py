"""The image (docker/Dockerfile), checked without a Docker engine: parsed and inspected
(pinned bases, non-root user, no secrets, worker thread limits, a lean build context),
its Python install steps replayed in a fresh virtualenv, and every command that
docker-compose.yml, the Helm chart and the Dockerfile run found in that environment
with the options they pass."""

from __future__ import annotations

import functools
import http.server
import re
import subprocess
import sys
import threading

import pytest
import yaml

from pipeline import cluster
from test_deploy_support import (CHART, DOCKERFILE, REPO, VENV_BIN, compose_model, context_files,
                                 dockerignore_rules, env_pairs, image_venv, install_steps,
                                 is_ignored, jupyter_auth_options, load_values, parse_dockerfile,
                                 render_chart, chart_commands, JUPYTER_AUTH_OPTION,
                                 PRODUCTION_VALUES)

__all__ = ["image_venv"]  # the session fixture, imported for pytest

INSTRUCTIONS = parse_dockerfile()
FINAL = max(i.stage for i in INSTRUCTIONS)


def final(keyword: str):
    return [i for i in INSTRUCTIONS if i.stage == FINAL and i.keyword == keyword]


def image_env() -> dict[str, str]:
    env = {}
    for i in final("ENV"):
        env.update(env_pairs(i.args))
    return env


def image_args() -> dict[str, str]:
    args = {}
    for i in final("ARG"):
        name, _, default = i.args.partition("=")
        args[name] = default.strip('"')
    return args


# -- static checks -------------------------------------------------------------------------
def test_base_images_are_pinned_to_exact_versions():
    froms = [i.args.split()[0] for i in INSTRUCTIONS if i.keyword == "FROM"]
    assert froms, "no FROM in docker/Dockerfile"
    for ref in froms:
        pinned = "@sha256:" in ref or re.search(r":v?\d+\.\d+\.\d+[\w.-]*$", ref)
        assert pinned, f"{ref}: base images must be pinned to an exact version or digest"
    base = froms[-1]
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim(-\w+)?", base.split("@")[0]), base
    # the uv copied into the image is the uv the project locks and installs with
    uv_stage = [ref for ref in froms if "astral-sh/uv" in ref]
    assert uv_stage, "the image should take uv from the pinned ghcr.io/astral-sh/uv stage"
    version = subprocess.run([str(VENV_BIN / "uv"), "--version"], capture_output=True,
                             text=True, check=True).stdout.split()[1]
    assert uv_stage[0].endswith(f":{version}"), (uv_stage[0], version)


def test_runs_as_a_non_root_user():
    users = final("USER")
    assert users, "the image must switch to a non-root USER"
    user = users[-1].args.strip()
    assert user not in ("root", "0") and not user.startswith("0:"), user
    created = " ".join(i.args for i in final("RUN"))
    uid = re.search(rf"useradd\b[^&]*--uid (\d+)[^&]*\b{user}\b", created)
    assert uid, f"user {user} is not created with a fixed uid (useradd --uid N ... {user})"
    # the chart's and the DaskCluster's securityContext run as the same uid
    from pipeline.k8s_spec import RUN_AS

    assert int(uid.group(1)) == RUN_AS
    last_user_line = users[-1].line
    for i in final("CMD") + final("ENTRYPOINT"):
        assert i.line > last_user_line


SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|CREDENTIAL)", re.I)


def test_no_secrets_in_the_image():
    for i in final("ENV") + final("ARG"):
        names = env_pairs(i.args) if i.keyword == "ENV" else {i.args.partition("=")[0]: ""}
        for name in names:
            assert not SECRET_NAME.search(name), f"line {i.line}: {name} looks like a secret"
    text = DOCKERFILE.read_text()
    assert not re.search(r"(minioadmin|password\s*=|secret\s*=)", text, re.I)
    rules = dockerignore_rules()
    for name in (".env", "docker/.env", ".env.local", "tess-data/x", ".venv/bin/python",
                 ".git/config", "tests/conftest.py"):
        assert is_ignored(name, rules), f"{name} would be sent to the Docker build context"
    assert ".env" not in context_files(rules)


JUPYTER_CONFIG = re.compile(r"jupyter_\w*config|\.jupyter\b|etc/jupyter\b|JUPYTER_CONFIG", re.I)


def test_image_does_not_switch_off_the_jupyter_token():
    """The token comes from JUPYTER_TOKEN at run time (compose .env, the chart's Secret).
    A Jupyter config baked into the image (``c.IdentityProvider.token = ""`` in a
    jupyter_server_config, a config directory set by ENV) would override it in every
    deployment, silently: nothing of the kind in the Dockerfile, in any form."""
    text = DOCKERFILE.read_text()
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue                # comments describe, they configure nothing
        assert not JUPYTER_AUTH_OPTION.search(line), f"line {number} sets Jupyter's login: {line}"
        assert not JUPYTER_CONFIG.search(line), f"line {number} writes or points at a Jupyter config: {line}"
    for i in final("COPY"):         # nothing copied into a directory Jupyter reads config from
        *_, dest = i.args.split()
        assert not JUPYTER_CONFIG.search(dest), f"line {i.line}: COPY into {dest}"
    assert not [name for name in image_env() if name.startswith("JUPYTER")], image_env()
    for i in final("ENTRYPOINT") + final("CMD"):
        assert not jupyter_auth_options(i.exec_form() or i.args.split()), f"line {i.line}: {i.args}"
    # nor does the build context carry a config file a later COPY could pick up
    assert not [f for f in context_files(dockerignore_rules()) if JUPYTER_CONFIG.search(f)]


def test_copy_sources_exist_and_survive_dockerignore():
    rules = dockerignore_rules()
    sent = context_files(rules)
    for i in final("COPY"):
        if "from" in i.flags:
            continue
        *sources, _ = i.args.split()
        for source in sources:
            path = REPO / source
            assert path.exists(), f"line {i.line}: COPY {source}: no such file"
            if path.is_dir():
                inside = [f for f in sent if f.startswith(source.rstrip("/") + "/")]
                assert inside, f"line {i.line}: COPY {source}: .dockerignore drops all of it"
            else:
                assert source in sent, f"line {i.line}: COPY {source}: excluded by .dockerignore"
    # the context is the package, the lock and the few docker/ files: nothing stale or large
    assert all(f.split("/")[0] in {"pipeline", "kernels", "notebooks", "docker", "pyproject.toml",
                                   "constraints.txt", "README.md"} for f in sent), sent
    assert not [f for f in sent if "__pycache__" in f or f.endswith(".pyc")]


def test_worker_thread_limits_and_numba_cache():
    env, args = image_env(), image_args()
    for name, value in cluster.WORKER_ENV.items():
        assert env.get(name) == value, f"ENV {name} should be {value} (pipeline.cluster.WORKER_ENV)"
    assert env["NUMBA_CACHE_DIR"].startswith("/")
    # a fixed CPU target makes the cache warmed at build valid on every node
    assert env["NUMBA_CPU_NAME"] == "${NUMBA_CPU_NAME}" and args["NUMBA_CPU_NAME"] == "generic"
    assert env["NUMBA_CPU_FEATURES"] == "${NUMBA_CPU_FEATURES}" and args["NUMBA_CPU_FEATURES"] == ""
    runs = final("RUN")
    owner = [i for i in runs if env["NUMBA_CACHE_DIR"] in i.args or "$NUMBA_CACHE_DIR" in i.args]
    assert owner and "-o tess" in owner[0].args, "the numba cache must belong to the image's user"
    warm = [i for i in runs if "tess-pipeline run" in i.args]
    assert warm, "the numba cache is warmed by running the pipeline at build time"
    assert warm[0].line > final("USER")[-1].line, "warm the cache as the user that reads it"


def test_dask_config_matches_local_clusters():
    import dask.config

    config = dask.config.collect(paths=[str(REPO / "docker")], env={})
    environ = config["distributed"]["nanny"]["pre-spawn-environ"]
    assert environ["MALLOC_TRIM_THRESHOLD_"] == cluster.MALLOC_TRIM_THRESHOLD
    assert environ["MALLOC_MMAP_THRESHOLD_"] == cluster.MALLOC_MMAP_THRESHOLD
    copied = [i for i in final("COPY") if i.args.startswith("docker/dask.yaml")]
    assert copied and copied[0].args.split()[-1].startswith("/etc/dask/")


def test_apt_steps_stay_slim_and_entrypoint_reaps_children():
    for i in final("RUN"):
        if "apt-get install" in i.args:
            assert "--no-install-recommends" in i.args
            assert "rm -rf /var/lib/apt/lists" in i.args
    entry = final("ENTRYPOINT")[-1].exec_form()
    assert entry[0].endswith("tini") and entry[1] == "--"


def test_dependencies_come_from_the_lock():
    steps = install_steps(INSTRUCTIONS)
    installs = [s for s in steps if "uv pip install" in s.args]
    assert installs, "no uv pip install step"
    with_deps = [s for s in installs if "--no-deps" not in s.args]
    assert with_deps and all("-c constraints.txt" in s.args for s in with_deps)
    extras = re.findall(r"--extra (\w+)", " ".join(s.args for s in with_deps))
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get(
        "optional-dependencies", {})
    for extra in extras:
        assert extra in declared, f"the Dockerfile installs extra [{extra}], pyproject.toml has none"


# -- the install steps, replayed -----------------------------------------------------------
def test_replayed_install_matches_the_lock(image_venv):
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, _, version = line.strip().partition("==")
            pins[_norm(name)] = version.split(";")[0].strip()
    frozen = subprocess.run([str(VENV_BIN / "uv"), "pip", "freeze", "--python",
                             str(image_venv.python)], capture_output=True, text=True, check=True)
    installed = {}
    for line in frozen.stdout.splitlines():
        if "==" in line:
            name, _, version = line.partition("==")
            installed[_norm(name)] = version
        elif " @ " in line:                     # the package itself, built from the source
            installed[_norm(line.partition(" @ ")[0])] = line.partition(" @ ")[2]
    assert installed.get("tess-pipeline"), "the package itself is not installed"
    off_lock = {n: (v, pins.get(n)) for n, v in installed.items()
                if n != "tess-pipeline" and pins.get(n) != v}
    assert not off_lock, f"installed versions not pinned by constraints.txt: {off_lock}"
    assert len(installed) > 100


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_replayed_install_provides_the_service_entry_points(image_venv):
    """importlib.metadata inside the fresh venv: the console scripts the services run."""
    code = ("import importlib.metadata as m, json; "
            "print(json.dumps({e.name: e.value for e in m.entry_points(group='console_scripts')}));"
            "print(json.dumps(sorted(e.name for e in m.entry_points(group='dask_cli'))))")
    result = image_venv.run(str(image_venv.python), "-c", code)
    assert result.returncode == 0, result.stderr
    scripts_line, dask_line = result.stdout.strip().splitlines()[-2:]
    scripts, dask_cli = yaml.safe_load(scripts_line), yaml.safe_load(dask_line)
    assert scripts["tess-pipeline"] == "pipeline.cli:main"
    for name in ("dask", "jupyter", "jupyter-lab"):
        assert name in scripts, f"console script {name} missing"
        assert (image_venv.bin / name).is_file()
    assert {"scheduler", "worker"} <= set(dask_cli)


def service_commands() -> dict[str, list[str]]:
    """Every command run in the tess-pipeline image: compose services, the chart's
    containers (default and production values), the Dockerfile's CMD and RUN steps that
    call the package's commands, and the compose healthchecks."""
    commands = {}
    model = compose_model()
    for name, service in model["services"].items():
        if not service.get("image", "").startswith("tess-pipeline"):
            continue
        commands[f"compose/{name}"] = service["command"]
        test = service.get("healthcheck", {}).get("test", [])
        if test and test[0] == "CMD":
            commands[f"compose/{name}/healthcheck"] = test[1:]
    for label, values in (("default", None), ("production", load_values(PRODUCTION_VALUES))):
        objects, _ = render_chart(values)
        repository = (values or load_values(CHART / "values.yaml"))["image"]["repository"]
        for where, argv in chart_commands(objects, repository).items():
            commands[f"chart[{label}]/{where}"] = argv
    commands["Dockerfile/CMD"] = final("CMD")[-1].exec_form()
    for i in final("RUN"):
        for part in re.split(r"\s*&&\s*", i.args):
            if part.startswith("tess-pipeline "):
                commands[f"Dockerfile/RUN line {i.line}"] = part.split()
    return commands


# programs the image provides outside the venv (COPY'd by the Dockerfile)
def image_extras() -> dict[str, str]:
    extras = {}
    for i in final("COPY"):
        parts = i.args.split()
        if parts[-1].startswith("/usr/local/bin/") and "from" not in i.flags:
            extras[parts[-1].rsplit("/", 1)[1]] = parts[0]
    return extras


def _help(image_venv, program: str, sub: str | None) -> subprocess.CompletedProcess:
    help_flag = "--help-all" if program == "jupyter" else "--help"
    return image_venv.run(*[str(image_venv.bin / program)] + ([sub] if sub else []) + [help_flag])


@pytest.mark.slow   # ~10 s idle, ~30 s on a loaded 2-core machine: cold imports in a fresh venv
def test_every_service_command_exists_in_the_image(image_venv):
    """Each command's program is installed in the replayed environment, its subcommand
    answers --help, and every --option it passes appears in that help."""
    from concurrent.futures import ThreadPoolExecutor

    commands = service_commands()
    expected_sources = {"compose/scheduler", "compose/worker", "compose/api", "compose/gui",
                        "compose/jupyter"}
    assert expected_sources <= set(commands), sorted(commands)
    extras = image_extras()
    problems = []
    keys = set()
    for where, argv in sorted(commands.items()):
        program = argv[0]
        if program in extras:
            continue
        if not (image_venv.bin / program).is_file():
            problems.append(f"{where}: {program} is not installed in the image")
            continue
        keys.add((program, argv[1] if len(argv) > 1 and not argv[1].startswith("-") else None))
    # each --help is a Python start-up that compiles the modules it imports (the fresh
    # venv has no bytecode yet): one command per program first, then the rest, warm
    first = {program: (program, sub) for program, sub in sorted(keys, key=str)}
    helps = {}
    for wave in (set(first.values()), keys - set(first.values())):
        with ThreadPoolExecutor(4) as pool:
            helps.update(zip(wave, pool.map(lambda key: _help(image_venv, *key), wave)))
    for where, argv in sorted(commands.items()):
        program = argv[0]
        if program in extras:
            result = image_venv.run(str(image_venv.python), str(REPO / extras[program]), "--help")
            if result.returncode != 0:
                problems.append(f"{where}: {program} --help failed: {result.stderr[-300:]}")
            continue
        sub = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else None
        result = helps.get((program, sub))
        if result is None:
            continue
        if result.returncode != 0:
            problems.append(f"{where}: `{program} {sub or ''} --help` failed: "
                            f"{(result.stderr or result.stdout)[-400:]}")
            continue
        for option in argv[2 if sub else 1:]:
            if option.startswith("--"):
                flag = option.split("=", 1)[0]
                if not re.search(re.escape(flag) + r"(?![\w-])", result.stdout):
                    problems.append(f"{where}: `{program} {sub or ''}` has no option {flag}")
    assert not problems, "\n".join(problems)


# -- the health check the compose services use ---------------------------------------------
class _Status(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if self.path == "/ok" else 503
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_healthcheck_script_reports_http_status():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    check = functools.partial(subprocess.run, capture_output=True, text=True, timeout=30)
    script = [sys.executable, str(REPO / "docker" / "healthcheck.py"), "--timeout", "5"]
    try:
        assert check(script + [f"{base}/ok"]).returncode == 0
        degraded = check(script + [f"{base}/ok", f"{base}/health"])
        assert degraded.returncode == 1 and "HTTP 503" in degraded.stderr
    finally:
        server.shutdown()
        server.server_close()
    refused = check(script + [base + "/ok"])
    assert refused.returncode == 1 and "unhealthy" in refused.stderr
