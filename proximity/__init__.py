"""Proximity engine: presence (enter, dwell, exit) from GPS pings and BLE sightings, and the service around it."""

__version__ = "0.1.0.dev0"
