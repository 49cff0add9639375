"""Every Python block of the README runs as written and prints what the README says it prints.

A block's expected output is (1) the ``# ...`` comment lines right after an expression
statement: the ``repr`` of its value, as in an interactive session, and (2) the plain
(```` ``` ```` or ```` ```text ````) block right after the Python block: what it prints.
Each block runs on its own (fresh names), from the checkout's root. Blocks that talk to
Redis run against the tests' Redis (its URL in place of ``redis://127.0.0.1:6379/0``, the
test's key prefix in front of the block's own, in the code and in the expected output),
twice: a snippet a reader runs again must print the same.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_REDIS = "redis://127.0.0.1:6379/0"


@dataclass
class Block:
    line: int  # README line of the block's first code line
    code: str
    printed: str | None  # the output block after it, if any

    @property
    def needs_redis(self) -> bool:
        return "redis://" in self.code

    @property
    def cluster(self) -> bool:
        return "cluster=True" in self.code


def python_blocks() -> list[Block]:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```python":
            i += 1
            continue
        end = lines.index("```", i + 1)
        code = "\n".join(lines[i + 1 : end]) + "\n"
        j = end + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        printed = None
        if j < len(lines) and lines[j].strip() in ("```", "```text"):
            out_end = lines.index("```", j + 1)
            printed = "\n".join(lines[j + 1 : out_end]) + "\n"
            end = out_end
        blocks.append(Block(i + 2, code, printed))
        i = end + 1
    return blocks


def run_block(block: Block, replace: dict[str, str] | None = None) -> None:
    """Run the block statement by statement; check each ``# result`` comment and the printed output."""
    code = block.code
    for old, new in (replace or {}).items():
        code = code.replace(old, new)
    src = code.splitlines()
    tree = ast.parse(code)
    names: dict[str, Any] = {"__name__": "__readme__"}
    out = io.StringIO()
    where = f"README.md:{block.line}"
    stmts = tree.body
    for k, stmt in enumerate(stmts):
        # the comment lines between this statement and the next are its expected result
        nxt = stmts[k + 1].lineno - 1 if k + 1 < len(stmts) else len(src)
        between = [s.strip() for s in src[stmt.end_lineno : nxt] if s.strip()]
        expected = [s[2:] if s.startswith("# ") else s[1:] for s in between if s.startswith("#")]
        line = block.line + stmt.lineno - 1
        with contextlib.redirect_stdout(out):
            if expected:
                assert isinstance(stmt, ast.Expr), f"README.md:{line}: a result comment after a statement"
                expr = ast.Expression(stmt.value)
                value = eval(compile(expr, f"{where}", "eval"), names)
            else:
                exec(compile(ast.Module([stmt], []), f"{where}", "exec"), names)
        if expected:
            want = " ".join(expected)
            for old, new in (replace or {}).items():
                want = want.replace(old, new)
            assert repr(value) == want, f"README.md:{line}: {ast.unparse(stmt)}"
    want = block.printed or ""
    for old, new in (replace or {}).items():
        want = want.replace(old, new)
    assert out.getvalue() == want, f"{where}: what the block prints"


BLOCKS = python_blocks()


def test_the_readme_has_python_blocks_with_results() -> None:
    assert len(BLOCKS) >= 5
    assert sum(b.printed is not None for b in BLOCKS) >= 3
    assert any(re.search(r"^# ", b.code, re.M) for b in BLOCKS)


@pytest.mark.parametrize("block", [b for b in BLOCKS if not b.needs_redis], ids=lambda b: f"line{b.line}")
def test_block_runs_as_written(block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    run_block(block)


def _redis_replacements(block: Block, url: str, prefix: str) -> dict[str, str]:
    found = re.findall(r'prefix="([^"]+)"', block.code)
    assert found, f"README.md:{block.line}: a Redis block names its key prefix"
    return {README_REDIS: url, **{f'prefix="{p}"': f'prefix="{prefix}-{p}"' for p in set(found)},
            **{f"{p}:": f"{prefix}-{p}:" for p in set(found)}}


@pytest.mark.redis
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.needs_redis], ids=lambda b: f"line{b.line}")
def test_redis_block_runs_as_written_twice(block: Block, redis_url: str, redis_prefix: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    replace = _redis_replacements(block, redis_url, redis_prefix)
    run_block(block, replace)
    run_block(block, replace)  # its state lives on in Redis (7 days by default): a second run is the same


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.cluster], ids=lambda b: f"line{b.line}")
def test_cluster_block_runs_on_a_real_cluster(block: Block, redis_cluster_url: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """"Give it the URL of any cluster node": the same snippet on a real 3-master cluster."""
    monkeypatch.chdir(ROOT)
    replace = _redis_replacements(block, redis_cluster_url, "pxtest-readme")
    run_block(block, replace)
    run_block(block, replace)
