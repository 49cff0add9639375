"""Long commands show progress on stderr when it is not a terminal (``cmd 2>&1 | tee log``)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import proximity.progress as progress_mod
from proximity.cli import main
from proximity.progress import Progress

ROOT = Path(__file__).resolve().parents[2]
EX = ROOT / "proximity" / "examples"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_a_line_every_few_seconds_and_one_at_the_end() -> None:
    out = io.StringIO()
    bar = Progress("sim default", 4, out, every_s=0.0)
    for k in range(1, 5):
        bar.update(k, f"{k} slices")
    bar.close("4 slices")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split(" (")[0] for line in lines] == [
        "sim default: 25%, 1 slices", "sim default: 50%, 2 slices", "sim default: 75%, 3 slices",
        "sim default: 100%, 4 slices", "sim default: done, 4 slices"]


def test_a_short_run_off_a_terminal_stays_quiet() -> None:
    out = io.StringIO()
    bar = Progress("backtest", 1.0, out, every_s=60.0)
    bar.update(0.5)
    bar.update(1.0)
    bar.close("done")
    assert out.getvalue() == ""


def test_on_a_terminal_a_bar_redrawn_in_place() -> None:
    out = _Tty()
    bar = Progress("sim", 2, out)
    bar.update(1)
    bar.update(2)
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("100% \n")


def test_backtest_logs_progress_lines(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(progress_mod, "EVERY_S", 0.0)
    argv = ["campaigns", "backtest", str(EX / "campaigns.yaml"), "--fences", str(EX / "fences.geojson"),
            "--pings", str(EX / "pings.csv")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("backtest pings.csv: ")]
    assert len(lines) > 10 and "100%" in lines[-2] and lines[-1].startswith("backtest pings.csv: done, 2,776 rows")
    assert main([*argv, "--no-progress"]) == 0
    assert "backtest pings.csv" not in capsys.readouterr().err


def test_sim_run_logs_progress_lines_off_a_terminal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(progress_mod, "EVERY_S", 0.0)
    code = main(["sim", "run", "--devices", "10", "--hours", "1", "--out", str(tmp_path), "--no-plots"])
    assert code == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "default: simulating 10 devices over 1 h" in err
    assert any(line.startswith("default: 100%") for line in err.splitlines())
    assert any(line.startswith("default: done") for line in err.splitlines())
