"""The service edge: the HTTP service around the engine (``proximity serve``).

One concern per module: :mod:`.app` (the application, its routes, running a
worker), :mod:`.codec` (body limits, gzip, JSON), :mod:`.errors` and
:mod:`.middleware` (one error answer; metrics, keys, rate limits),
:mod:`.idempotency`, :mod:`.feed` (the live feed), :mod:`.host` (the engine host),
:mod:`.loops` (advance and delivery), :mod:`.render` (a result rendered once),
:mod:`.ingest`, :mod:`.admin` and :mod:`.ops` (the routes), :mod:`.backends`
(every memory-or-Redis adapter, built once), :mod:`.worker` (one worker's state),
and :mod:`.auth`, :mod:`.reload`, :mod:`.metrics`, :mod:`.openapi`, :mod:`.config`.
"""

from proximity.service.app import bind_socket, create_app, make_runner, routes, serve_forever
from proximity.service.auth import ApiKey, KeyRing
from proximity.service.backends import Backends
from proximity.service.config import ServiceConfig, load_config
from proximity.service.errors import ApiError
from proximity.service.host import EngineHost
from proximity.service.metrics import ServiceMetrics
from proximity.service.worker import Service, service_of

__all__ = [
    "ApiError",
    "ApiKey",
    "Backends",
    "EngineHost",
    "KeyRing",
    "Service",
    "ServiceConfig",
    "ServiceMetrics",
    "bind_socket",
    "create_app",
    "load_config",
    "make_runner",
    "routes",
    "serve_forever",
    "service_of",
]
