"""The integration suite: the pipeline against a real S3 server (Ceph RADOS Gateway,
started by ``scripts/s3-server.sh``) and the nx-27017 catalog server.

Run it with ``pytest tests/integration`` (``make test-integration``). A plain
``pytest`` does not collect it (``pytest_ignore_collect`` below): only a run that names
this folder (or a file in it) does, so the default suite never starts Ceph.

Without the Debian packages (ceph-mon, ceph-osd, radosgw) the tests are skipped with
the command that installs them — unless ``TESS_INTEGRATION=1``, as in CI, where a
missing package is a failure: the suite must not pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCRIPT = HERE.parents[1] / "scripts" / "s3-server.sh"
PACKAGES = {"ceph-mon": "ceph-mon", "ceph-osd": "ceph-osd", "radosgw": "radosgw",
            "radosgw-admin": "radosgw", "ceph": "ceph-common"}
INSTALL = "apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw"
START_TIMEOUT_S = 240


def pytest_ignore_collect(collection_path, config):
    """Collect this folder only when the command line names it (or something in it)."""
    for arg in config.args:
        target = Path(str(arg).split("::", 1)[0]).resolve()
        if target == HERE or HERE in target.parents:
            return None
    return True


def required() -> bool:
    return os.environ.get("TESS_INTEGRATION", "").strip().lower() not in ("", "0", "false", "no")


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    key: str
    secret: str
    directory: Path

    def settings(self, bucket: str, prefix: str = "pipeline"):
        from pipeline.config import Settings
        return Settings(store=f"s3://{bucket}/{prefix}", s3_endpoint=self.endpoint,
                        s3_key=self.key, s3_secret=self.secret)


@pytest.fixture(scope="session")
def rgw(tmp_path_factory):
    """A Ceph RADOS Gateway for the session: http://127.0.0.1:<free port>."""
    missing = sorted({pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None})
    if missing:
        message = (f"the real S3 server needs the Debian packages {', '.join(missing)} "
                   f"(install: {INSTALL})")
        if required():
            pytest.fail(f"TESS_INTEGRATION is set but {message}", pytrace=False)
        pytest.skip(f"{message}; set TESS_INTEGRATION=1 to make this a failure")
    from pipeline.catalog.server import free_port

    directory = tmp_path_factory.mktemp("rgw")
    port = free_port()
    env = {**os.environ, "S3_SERVER_MON_PORT": str(free_port()),
           "S3_SERVER_KEY": f"it-{uuid.uuid4().hex[:12]}",
           "S3_SERVER_SECRET": uuid.uuid4().hex}
    try:
        done = subprocess.run(["bash", str(SCRIPT), "start", str(directory), str(port)], env=env,
                              capture_output=True, text=True, timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        subprocess.run(["bash", str(SCRIPT), "stop", str(directory)], env=env, timeout=60)
        pytest.fail(f"s3-server.sh start did not finish in {START_TIMEOUT_S} s: {exc.stderr}",
                    pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"s3-server.sh start failed ({done.returncode}):\n{done.stdout}\n{done.stderr}",
                    pytrace=False)
    values = dict(line.split("=", 1) for line in (directory / "env").read_text().split())
    server = S3Server(values["TESS_S3_ENDPOINT"], values["TESS_S3_KEY"], values["TESS_S3_SECRET"],
                      directory)
    yield server
    subprocess.run(["bash", str(SCRIPT), "stop", str(directory)], env={**env, "KEEP": "0"},
                   timeout=120, check=False)


@pytest.fixture
def bucket(rgw):
    """A fresh bucket on the gateway; returns its name."""
    import s3fs

    name = f"tess-it-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(**rgw.settings(name).storage_options)
    fs.mkdir(name)
    yield name
    s3fs.S3FileSystem.clear_instance_cache()
