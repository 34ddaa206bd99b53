"""Settings: where the store, the catalog and the Dask scheduler are.

Values come from, in increasing priority: built-in defaults, an optional TOML file
(``TESS_CONFIG`` or the ``path`` argument, keys as lower-case names without the
``TESS_`` prefix, e.g. ``store = "s3://tess"``), and ``TESS_*`` environment
variables. Secrets (S3 key/secret, API key) are only ever read from the file or the
environment; nothing here holds one.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path

_FIELDS = {
    "store": "TESS_STORE",
    "s3_endpoint": "TESS_S3_ENDPOINT",
    "s3_key": "TESS_S3_KEY",
    "s3_secret": "TESS_S3_SECRET",
    "mongo_url": "TESS_MONGO_URL",
    "scheduler": "TESS_SCHEDULER",
    "api_key": "TESS_API_KEY",
}

DEFAULT_STORE = "./tess-data"


class SettingsError(ValueError):
    """A settings file that is missing, unreadable or names unknown settings."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where things live. Empty ``mongo_url``/``scheduler`` mean the embedded defaults:
    a catalog server started locally, a local Dask cluster."""

    store: str = DEFAULT_STORE
    s3_endpoint: str | None = None
    s3_key: str | None = dataclasses.field(default=None, repr=False)
    s3_secret: str | None = dataclasses.field(default=None, repr=False)
    mongo_url: str | None = None
    scheduler: str | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, environ=None) -> "Settings":
        environ = os.environ if environ is None else environ
        values: dict[str, str] = {}
        path = path or environ.get("TESS_CONFIG")
        if path:
            values.update(_read_file(Path(path)))
        for name, var in _FIELDS.items():
            if environ.get(var):
                values[name] = environ[var]
        return cls(**values)

    def replace(self, **changes) -> "Settings":
        """A copy with the given fields changed; ``None`` values are ignored so CLI
        options that were not given keep the loaded setting."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def storage_options(self) -> dict:
        """fsspec options for the store URL (S3 endpoint and credentials)."""
        if not self.store.startswith(("s3://", "s3a://")):
            return {}
        options: dict = {}
        if self.s3_key or self.s3_secret:
            options.update(key=self.s3_key, secret=self.s3_secret)
        if self.s3_endpoint:
            options["client_kwargs"] = {"endpoint_url": self.s3_endpoint}
        return options


def _read_file(path: Path) -> dict[str, str]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(f"{path}: settings file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not a valid TOML settings file: {exc}") from None
    unknown = set(data) - set(_FIELDS)
    if unknown:
        raise SettingsError(f"{path}: unknown settings {sorted(unknown)}; known: {sorted(_FIELDS)}")
    return {k: str(v) for k, v in data.items()}
