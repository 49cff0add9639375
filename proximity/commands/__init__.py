"""Command groups of the ``proximity`` CLI, one module each (see :mod:`proximity.cli`)."""
