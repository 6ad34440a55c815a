"""No traceback under environment faults: every command answers a broken setting or file with
one plain message naming it, exit 1 (2 for a setting that is bad input), and a read creates
nothing.

Faults: QUOTACAST_DATABASE_URL with a driver that is not installed, an unknown scheme or a file
that is not a database; QUOTACAST_MLFLOW_TRACKING_URI naming random bytes, a truncated MLflow
database or a misspelt path; ``--out`` to a path that cannot be written or whose parent cannot
be created. Commands run in process through the console script's ``main`` (its handler of
environment faults included), as a user runs them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from service.cli.app import main

CRASH_LINE = "Details for a bug report"
TINY = ("tiny", 150, 2, 1, (1, 1), (2, 2))  # a SizeSpec: fast to generate and to score


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny data directory, a working alert database, and broken files to point settings at."""
    from engine import tracking
    from engine.alerting.store import AlertStore
    from engine.io import write_data_dir
    from engine.synthetic import SizeSpec, generate

    root = tmp_path_factory.mktemp("faults")
    data = root / "data"
    write_data_dir(generate(SizeSpec(*TINY), seed=7), data)
    AlertStore(f"sqlite:///{root / 'alerts.db'}").close()
    rng = np.random.default_rng(15)
    (root / "random.db").write_bytes(rng.bytes(8192))
    # A real MLflow database, cut short as a full disk or an interrupted copy leaves it.
    good = root / "registry" / "mlflow.db"
    good.parent.mkdir()
    previous = tracking.mlflow.get_tracking_uri()
    tracking.configure(f"sqlite:///{good}")
    tracking.MlflowClient().search_registered_models(max_results=1)  # creates the schema
    assert good.exists()
    tracking.configure(previous)
    blob = good.read_bytes()
    (root / "truncated.db").write_bytes(blob[: len(blob) // 3])
    return {"root": root, "data": data, "alerts": root / "alerts.db"}


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def quotacast(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
              world: dict[str, Path], *args: str, **env: str) -> tuple[int, str]:
    """``quotacast ARGS`` with settings ``env``; its exit code and everything it printed."""
    monkeypatch.chdir(world["root"])
    monkeypatch.setenv("QUOTACAST_DATABASE_URL", f"sqlite:///{world['alerts']}")
    monkeypatch.setenv("QUOTACAST_MLFLOW_TRACKING_URI",
                       f"sqlite:///{world['root'] / 'unused' / 'mlflow.db'}")
    monkeypatch.setenv("QUOTACAST_N_JOBS", "1")
    for name, value in env.items():
        monkeypatch.setenv(f"QUOTACAST_{name.upper()}", value)
    monkeypatch.setattr(sys, "argv", ["quotacast", *args])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    printed = capsys.readouterr()
    return code, printed.out + printed.err


def assert_plain(code: int, output: str, codes: tuple[int, ...], naming: str) -> None:
    """Exit ``codes``, one plain message naming ``naming``, no traceback, no crash report."""
    assert code in codes, output
    assert "Traceback" not in output and CRASH_LINE not in output, output
    flat = " ".join(output.replace("│", " ").split())
    assert naming in flat, output
    messages = output.count("error:") + output.count("Invalid value")
    assert messages == 1, output


# --- QUOTACAST_DATABASE_URL -------------------------------------------------------------------

DATABASE_FAULTS = {
    "driver not installed": ("mysql://quotacast:secret@localhost/quotacast", "'mysql'"),
    "unknown scheme": ("foo://somewhere/quotacast", "unknown database scheme"),
    "not a database": ("sqlite:///{root}/random.db", "file is not a database"),
}
DATABASE_COMMANDS = (
    ("keys", "list"),
    ("keys", "add", "--role", "planner"),
    ("warnings", "list"),
    ("warnings", "deliver"),
    ("warnings", "silence", "list"),
    ("warnings", "evaluate", "--data", "{data}"),
    ("serve", "--data", "{data}"),  # told before the server starts, never a failed start-up
)


@pytest.mark.parametrize("fault", DATABASE_FAULTS)
def test_a_broken_database_url_is_one_plain_message(
        fault: str, world: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    url, says = DATABASE_FAULTS[fault]
    url = url.format(root=world["root"])
    monkeypatch.setattr("uvicorn.Server.run", lambda self: pytest.fail("the server started"))
    before = _tree(world["root"])
    for command in DATABASE_COMMANDS:
        args = [a.format(data=world["data"]) for a in command]
        code, output = quotacast(monkeypatch, capsys, world, *args, database_url=url)
        assert_plain(code, output, (1, 2), "QUOTACAST_DATABASE_URL")
        assert says in " ".join(output.replace("│", " ").split()), (command, output)
        assert "secret" not in output, "the password is never shown"
    assert _tree(world["root"]) == before


READ_COMMANDS = (
    ("keys", "list"),
    ("keys", "revoke", "0123abcd"),
    ("warnings", "list"),
    ("warnings", "history"),
    ("warnings", "deliver"),
    ("warnings", "silence", "list"),
    ("warnings", "silence", "expire", "s1"),
)


@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
def test_a_read_never_creates_a_misspelt_database(
        command: tuple[str, ...], world: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    typo = world["root"] / "alerst.db"
    before = _tree(world["root"])
    code, output = quotacast(monkeypatch, capsys, world, *command,
                             database_url=f"sqlite:///{typo}")
    assert_plain(code, output, (1,), "no quotacast database at")
    assert _tree(world["root"]) == before


# --- QUOTACAST_MLFLOW_TRACKING_URI -------------------------------------------------------------

REGISTRY_COMMANDS = (
    ("promote", "churn"),
    ("score", "churn", "--data", "{data}"),
    ("forecast", "--data", "{data}", "--horizon", "1"),
    ("feasibility", "--data", "{data}", "--draws", "200"),
    ("recalibrate", "--data", "{data}", "--draws", "200"),
    ("train", "churn", "--data", "{data}"),
    ("warnings", "evaluate", "--data", "{data}", "--no-deliver"),  # models through providers
)


@pytest.mark.parametrize("broken", ["random.db", "truncated.db"])
def test_a_damaged_registry_is_one_plain_message(
        broken: str, world: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{world['root'] / broken}"
    before = _tree(world["root"])
    for command in REGISTRY_COMMANDS:
        args = [a.format(data=world["data"]) for a in command]
        code, output = quotacast(monkeypatch, capsys, world, *args, mlflow_tracking_uri=uri)
        assert_plain(code, output, (1,), "QUOTACAST_MLFLOW_TRACKING_URI")
        assert broken in output, (command, output)
    assert _tree(world["root"]) == before


READING_COMMANDS = (
    ("score", "churn", "--data", "{data}"),
    ("feasibility", "--data", "{data}", "--draws", "200"),
    ("warnings", "evaluate", "--data", "{data}", "--no-deliver"),
)


def test_a_misspelt_registry_is_said_and_never_created(
        world: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Reading commands report the missing registry and create nothing (no directory, no empty
    registry); promote, which needs one, stops."""
    typo = world["root"] / "typo" / "mlflow.db"
    uri = f"sqlite:///{typo}"
    before = _tree(world["root"])
    code, output = quotacast(monkeypatch, capsys, world, "promote", "churn",
                             mlflow_tracking_uri=uri)
    assert_plain(code, output, (1,), "there is no model registry at")
    assert str(typo) in " ".join(output.split()).replace(" ", "") or "typo" in output
    for command in READING_COMMANDS:
        args = [a.format(data=world["data"]) for a in command]
        code, output = quotacast(monkeypatch, capsys, world, *args, mlflow_tracking_uri=uri)
        assert code == 0, (command, output)
        assert "Traceback" not in output and CRASH_LINE not in output, output
        if command[0] != "warnings":
            assert "no model registry at" in " ".join(output.split()), (command, output)
        assert not typo.parent.exists(), command
    assert {p for p in _tree(world["root"]) - before if p.name != "alerts.db-journal"} == set()


def test_training_creates_a_new_registry_and_says_so(
        world: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from service.usecases import train

    def stop(*args: object, **kwargs: object) -> object:
        raise ValueError("stopped before training")  # only the registry message is under test

    monkeypatch.setattr(train, "train", stop)
    new = tmp_path / "new" / "mlflow.db"
    code, output = quotacast(monkeypatch, capsys, world, "train", "churn", "--data",
                             str(world["data"]), mlflow_tracking_uri=f"sqlite:///{new}")
    assert_plain(code, output, (1,), "stopped before training")
    assert "creating a new one there" in " ".join(output.split()), output


# --- --out ------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["unwritable", "parent is a file"])
def test_an_out_that_cannot_be_written_is_one_plain_message(
        where: str, world: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # /proc refuses new files even to root; a file cannot be a directory.
    out = (Path("/proc/quotacast.csv") if where == "unwritable"
           else world["data"] / "orders.csv" / "new" / "out.csv")
    before = _tree(world["root"])
    for command in (("validate",), ("features",)):
        code, output = quotacast(monkeypatch, capsys, world, *command, "--data",
                                 str(world["data"]), "--out", str(out))
        assert_plain(code, output, (1,), "cannot write --out")
    code, output = quotacast(monkeypatch, capsys, world, "demo", "--data-only", "--size",
                             "small", "--out", str(out.parent))
    assert_plain(code, output, (1,), "cannot write --out")
    assert _tree(world["root"]) == before
