"""The README's Quickstart has exactly two commands, and CI runs the second one verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ") and line.strip()]


def test_quickstart_has_exactly_two_commands() -> None:
    cmds = quickstart_commands()
    assert len(cmds) == 2, cmds
    assert cmds[0].startswith("python -m pip install . && proximity ")
    assert cmds[1].startswith("python -m pip install -e '.[test]' && python -m pytest")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^" + re.escape(quickstart_commands()[1]) + r"$", ci, re.M)
    assert "PROXIMITY_REQUIRE_REDIS=1" in ci


def test_ci_runs_both_quickstart_commands_in_order_then_the_command_from_outside() -> None:
    """Both set-up commands in one venv, as a new user runs them, then `proximity` away from the checkout
    (numba caches once left in site-packages shadowed the editable install: every command failed)."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    first, second = (re.search(r"^" + re.escape(c) + r"$", ci, re.M) for c in quickstart_commands())
    assert first and second and first.start() < second.start()
    outside = re.search(r"^\(cd /tmp && proximity --version && proximity ", ci[second.end():], re.M)
    assert outside, "after both commands, CI runs `proximity` from outside the checkout"


def test_quickstart_example_files_exist() -> None:
    for token in quickstart_commands()[0].split():
        if token.startswith("proximity/examples/"):
            assert (ROOT / token).is_file(), token


def test_quickstart_main_job_runs(capsys, monkeypatch) -> None:
    """The first command's `proximity ...` part, run from the checkout's root, succeeds and prints the table."""
    import shlex

    from proximity.cli import main

    monkeypatch.chdir(ROOT)
    argv = shlex.split(quickstart_commands()[0].split("&&", 1)[1])
    assert argv[0] == "proximity"
    assert main(argv[1:]) == 0
    out = capsys.readouterr().out
    assert "campaign" in out.splitlines()[0] and "offers" in out


def test_version(capsys) -> None:
    import tomllib

    import pytest

    from proximity import __version__
    from proximity.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"proximity {__version__} (")
    assert str(ROOT / "proximity") in out and "kernel cache" in out
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["version"] == __version__
