"""Redis Cluster hash slots of many keys at once (:func:`proxbase.redis_route.key_slots`) and the pipelined
reply parser (:func:`proxbase.resp.read_replies`), re-exported for the state store.
"""

from __future__ import annotations

from proxbase.redis_route import key_slots
from proxbase.resp import read_replies

__all__ = ["key_slots", "read_replies"]
