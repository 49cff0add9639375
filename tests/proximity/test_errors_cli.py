"""Errors render the same way for the CLI and HTTP, and the CLI never shows a traceback."""

from proximity.errors import ValidationError, as_json, describe


def test_describe_gives_file_line_col() -> None:
    exc = ValidationError("unknown key 'trigerr'", source="c.yaml", line=3, col=5, field="trigerr")
    assert describe(exc) == "c.yaml:3:5: unknown key 'trigerr'"
    assert str(exc) == "c.yaml:3:5: unknown key 'trigerr'"


def test_describe_names_row_and_field_without_line() -> None:
    exc = ValidationError("latitude out of range", source="<body>", field="lat", row=4)
    assert describe(exc) == "<body>: latitude out of range (row 4, field 'lat')"
    assert as_json(exc) == {"error": "latitude out of range", "field": "lat", "row": 4}


def test_describe_plain_value_error() -> None:
    assert describe(ValueError("bad")) == "bad"


def test_describe_os_error_names_the_file_not_the_errno(tmp_path) -> None:
    missing = tmp_path / "nope.geojson"
    try:
        missing.open()
    except OSError as exc:
        assert describe(exc) == f"{missing}: No such file or directory"


def test_cli_missing_file_is_exit_2_naming_it(tmp_path, capsys) -> None:
    from proximity.cli import main

    missing = tmp_path / "nope.geojson"
    assert main(["fences", "match", str(missing), str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err


def test_cli_into_a_closed_pipe_stops_quietly() -> None:
    import subprocess
    import sys

    hexes = " ".join(["0201061aff4c000215f7826da64fa24e988024bc5b71e0893e00640001c5"])
    proc = subprocess.Popen([sys.executable, "-m", "proximity", "beacons", "parse", hexes],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away before the command writes
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0
    assert "Broken pipe" not in err and "Traceback" not in err
