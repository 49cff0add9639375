"""The engine's errors: the project's one error contract (:mod:`proxbase.errors`), re-exported whole.

``geofence``, ``beacons``, ``campaigns`` and ``sim`` subclass the same
:class:`ValidationError`, so :func:`describe` renders any of them the same way
for the CLI (``file:line:col: message``) and :func:`as_json` for the HTTP layer
(``{"error": ..., "field": ..., "row": ...}``).
"""

from proxbase.errors import *  # noqa: F403  (the contract is proxbase's; this module only names it here)
from proxbase.errors import __all__ as __all__
