"""The Redis state store: :mod:`.codec` (the binary state: numpy and the numba loops of
:mod:`._kernels_codec`), :mod:`.scripts` (the Lua scripts and their codes), :mod:`.cluster` (slots,
routing, due sets), :mod:`.layout` (where a device's keys are: device groups on a cluster),
:mod:`.migrate` (the per-device cluster layout of earlier versions to the grouped one) and :mod:`.store`
(the compare-and-set loop). Build it with :func:`proximity.store.RedisStore`."""

from proximity._redis.cluster import slot_tags
from proximity._redis.codec import HEADER, RECORD
from proximity._redis.store import RedisStateStore

__all__ = ["HEADER", "RECORD", "RedisStateStore", "slot_tags"]
