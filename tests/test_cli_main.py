"""The console script's last line of defence: no Python traceback ever reaches a user."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BOOM = """
import sys
import service.cli.app as cli

@cli.app.command("boom")
def boom() -> None:
    raise KeyError("model")

sys.argv = ["quotacast", *sys.argv[1:]]
cli.main()
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BOOM, *args], capture_output=True, text=True,
                          timeout=120)


def test_an_unexpected_error_is_one_plain_line_and_exit_1() -> None:
    done = _run("boom")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    assert "quotacast could not finish (KeyError: 'model')" in done.stderr
    report = Path(done.stderr.rsplit("Details for a bug report: ", 1)[1].split()[0])
    try:
        assert "Traceback" in report.read_text() and "KeyError" in report.read_text()
    finally:
        report.unlink()


def test_usage_errors_keep_exit_2_and_help_exits_0() -> None:
    assert _run("forecast", "--freq", "X").returncode == 2
    assert _run("--help").returncode == 0
