"""Compile plumbing for the package's numba kernels: the project's, from :mod:`geofence._jit`
(where compiled code is cached, what is compiled, the line on stderr when a first compile is slow)."""

from geofence._jit import CACHE_ENV, Kernel, cache_dir, njit

__all__ = ["CACHE_ENV", "Kernel", "cache_dir", "njit"]
