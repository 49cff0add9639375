"""Expiring keys off a heap (campaigns.expiry) against a plain map: a key comes out once, when the latest
expiry it was given has passed, and an expiry is never shortened."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from campaigns.expiry import extend, pop_expired

STEPS = st.lists(st.tuples(st.sampled_from("abcde"), st.sampled_from([0.0, 1.0, 2.5, 10.0]) | st.floats(0, 100),
                           st.sampled_from([0.0, 1.0, 2.5]) | st.floats(0, 10)), max_size=60)


@given(steps=STEPS, inclusive=st.booleans())
def test_keys_come_out_once_when_their_latest_expiry_has_passed(steps: list[tuple[str, float, float]],
                                                                 inclusive: bool) -> None:
    heap: list[tuple[float, str]] = []
    current: dict[str, float] = {}
    oracle: dict[str, float] = {}
    now = 0.0
    for key, expiry, advance in steps:
        extend(heap, current, key, now + expiry)
        oracle[key] = max(oracle.get(key, float("-inf")), now + expiry)
        now += advance
        due = sorted(k for k, at in oracle.items() if (at <= now if inclusive else at < now))
        assert sorted(pop_expired(heap, current, now, inclusive=inclusive)) == due
        for k in due:
            del oracle[k]
        assert current == oracle
