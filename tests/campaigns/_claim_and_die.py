"""A delivery worker that claims offers from the Redis outbox and is then killed before it acks.

Usage: python _claim_and_die.py REDIS_URL PREFIX COUNT
"""

from __future__ import annotations

import sys
import time

from campaigns import RedisOutbox


def main() -> int:
    url, prefix, count = sys.argv[1:4]
    box = RedisOutbox(url, prefix)
    claimed = box.claim("doomed-worker", int(count))
    print(" ".join(e.offer.offer_id for e in claimed), flush=True)
    time.sleep(120)  # "delivering": the test kills this process here
    return 0


if __name__ == "__main__":
    sys.exit(main())
