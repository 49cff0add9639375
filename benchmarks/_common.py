"""What every benchmark part shares: the machine's description, tables, JSON results, timing."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(os.environ.get("PROXIMITY_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))


def machine() -> dict[str, Any]:
    """The facts that make a figure comparable: cores, CPU model, Python, numpy."""
    import numpy

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "numpy": numpy.__version__,
        "platform": platform.platform(terse=True),
    }


def describe_machine() -> str:
    m = machine()
    return f"{m['cores']} cores ({m['cpu'] or 'unknown CPU'}), {m['python']}, numpy {m['numpy']}, {m['platform']}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for k, r in enumerate(cells):
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """The same table as GitHub markdown (for the README's performance section)."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_results(part: str, data: dict[str, Any]) -> Path:
    """Write ``results/<part>.json`` with the machine's description and a timestamp; return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{part}.json"
    doc = {"part": part, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(), **data}
    path.write_text(json.dumps(doc, indent=2, default=_default) + "\n")
    return path


def read_results(part: str, folder: Path | None = None) -> dict[str, Any] | None:
    """The JSON a part last wrote (in ``folder``, default the results folder), or ``None``."""
    path = (folder or RESULTS) / f"{part}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def best_of(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """The fastest of ``repeat`` runs (seconds) and the last result: the least disturbed by a noisy neighbour."""
    best, out = float("inf"), None
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def percentile_ms(latencies: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1, nearest rank below) of ``latencies`` in seconds, in milliseconds; nan if none."""
    lat = sorted(latencies)
    return 1000 * lat[min(len(lat) - 1, int(len(lat) * q))] if lat else float("nan")


def failure(status: int, answer: bytes) -> str:
    """How a load generator counts an answer that is not 200: its status and the start of its body."""
    return f"{status} {answer[:120].decode(errors='replace')}"


def add_counts(*counts: dict[str, int]) -> dict[str, int]:
    """Counts by kind (such as :func:`failure`'s) summed over phases or generators."""
    out: dict[str, int] = {}
    for c in counts:
        for k, n in c.items():
            out[k] = out.get(k, 0) + n
    return out


def _default(o: Any) -> Any:
    try:
        import numpy

        if isinstance(o, numpy.generic):
            return o.item()
        if isinstance(o, numpy.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def redis_cpu_seconds(url: str | None) -> float | None:
    """The Redis server's own CPU seconds so far (``INFO cpu``: ``used_cpu_sys + used_cpu_user``), summed
    over every master of a cluster; ``None`` without a URL or when it cannot be read. The server's figure
    counts every client: run benchmarks on a Redis of their own for a clean one."""
    if not url:
        return None
    from redis.cluster import RedisCluster

    import proximity._redis.cluster as C

    try:
        client = C.connect(url, True)
    except Exception:  # a benchmark reports what it could not measure
        return None
    try:
        nodes = ([client.get_redis_connection(n) for n in client.get_primaries()]
                 if isinstance(client, RedisCluster) else [client])
        total = 0.0
        for node in nodes:
            info = node.info("cpu")
            total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        return total
    except Exception:
        return None
    finally:
        C.close(client)
