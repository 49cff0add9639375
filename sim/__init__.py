"""Simulation harness: a synthetic city that measures detection quality, offers and throughput.

``proximity sim run`` builds a city (:mod:`sim.world`), lets devices live a day
in it (:mod:`sim.mobility`), turns their true tracks into what phones report
(:mod:`sim.sensors`), runs the real engine on it (:mod:`sim.runner`) and scores
the events against the ground truth (:mod:`sim.metrics`), with a report
(:mod:`sim.report`). It uses only the project's public API.
"""

from sim.errors import SimError
from sim.metrics import EventColumns, Truth, score
from sim.mobility import Episodes, Population, Segments, Visits, passes, simulate_population
from sim.scenario import DEFAULT_SCENARIO, Scenario, load_scenario
from sim.sensors import Pings, Sightings, ble_sightings, gps_pings
from sim.world import LocalFrame, World, build_world

__all__ = [
    "DEFAULT_SCENARIO",
    "Episodes",
    "EventColumns",
    "LocalFrame",
    "Pings",
    "Population",
    "Scenario",
    "Segments",
    "Sightings",
    "SimError",
    "Truth",
    "Visits",
    "World",
    "ble_sightings",
    "build_world",
    "gps_pings",
    "load_scenario",
    "passes",
    "score",
    "simulate_population",
]
