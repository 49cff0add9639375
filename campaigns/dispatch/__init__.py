"""Delivering offers: one dispatcher per target, one interface, one worker loop.

- :class:`WebhookDispatcher` (``webhook.py``): signed JSON POST with retries;
- :class:`JsonlSink` (``jsonl.py``): one JSON line per offer in a file;
- :class:`Subscribers` (``subscribers.py``): in-process callbacks and queues (the live feed);
- :class:`Fanout` (``base.py``): several dispatchers as one;
- :class:`DeliveryWorker` (``worker.py``): claims offers from an outbox, delivers, acks.
"""

from campaigns.dispatch.base import DeliveryReport, Dispatcher, Fanout
from campaigns.dispatch.jsonl import JsonlSink
from campaigns.dispatch.subscribers import Subscribers
from campaigns.dispatch.webhook import WebhookDispatcher, sign, verify_signature
from campaigns.dispatch.worker import DeliveryWorker

__all__ = [
    "DeliveryReport",
    "DeliveryWorker",
    "Dispatcher",
    "Fanout",
    "JsonlSink",
    "Subscribers",
    "WebhookDispatcher",
    "sign",
    "verify_signature",
]
