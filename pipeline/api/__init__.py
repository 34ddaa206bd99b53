"""The HTTP API (FastAPI): ``create_app(settings, client=None)`` and ``serve(...)``.

See ``pipeline.api.app`` for the endpoints; OpenAPI docs at ``/docs`` once running.
"""

from pipeline.api.app import create_app
from pipeline.api.server import ServerThread, serve

__all__ = ["ServerThread", "create_app", "serve"]
