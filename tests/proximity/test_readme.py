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
