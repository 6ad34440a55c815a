"""The README's examples, run the way a user runs them, so the README stays true.

Every ``quotacast ...`` line of the README's fenced ``bash`` blocks is run in order, in-process
(``typer.testing.CliRunner``), in a fresh working directory that starts as the README does:
``quotacast demo --size small`` (the README's ``make demo`` on the small company), with MLflow
and the alert store on SQLite files in that directory and a copy of the repository's
``rules/``. Names the small company does not have (the README's example account manager, for
one) are swapped for real ones looked up in the generated data; ``../shared/data`` is the
datasets folder beside the repository (CI has it); a server (``quotacast serve``) is only asked
for ``--help`` with the README's options. Each command must exit 0 and every ``--out`` must
appear with the documented columns.

The "When the data is wrong" example lines are reproduced one by one and must be printed
exactly as shown; every command named in the README's command table must answer ``--help``.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.alerting.rules import NO_VALUE
from service.cli.app import app

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHARED_DATA = REPO.parent / "shared" / "data"
README_TEXT = README.read_text(encoding="utf-8")

runner = CliRunner()

# Lines of the bash blocks that are not quotacast commands, and why they are not run here.
NOT_RUN = (
    ("make ", "sets up .venv and runs the demo or the suite (this test runs inside it)"),
    ("bash .ci/run", "the whole CI run"),
    ("source ", "shell set-up"),
    ("mlflow ui", "a long-running server"),
)

# quotacast commands that would not return (servers): run with --help appended instead, which
# still checks that every option the README gives them exists (tests/test_service_* serve).
LONG_RUNNING = ("serve",)

# Output columns promised by CONTRACTS.md section 3 (the README documents the same).
CONTRACT_COLUMNS = {
    "score churn": ["customer_id", "account_manager", "churn_probability", "revenue_at_risk",
                    "reasons"],
    "forecast": ["level", "key", "ds", "yhat", "yhat_p10", "yhat_p50", "yhat_p90"],
    "feasibility": ["period", "level", "key", "target", "closed_to_date", "p_attain",
                    "expected", "p10", "p50", "p90", "gap", "must_hit", "stretch"],
    "recalibrate": ["period", "level", "key", "target", "recalibrated_target",
                    "p_attain_before", "p_attain_after"],
    "plan": ["period", "level", "key", "amount", "tier", "p_attain"],
    "scenario": [f"{column}_{side}" for side in ("baseline", "scenario")
                 for column in ("target", "closed_to_date", "p_attain", "expected", "p10", "p50",
                                "p90", "gap", "must_hit", "stretch")],
    "review": ["level", "key", "target", "actual", "attainment"],
    "funnel": ["level", "key", "stage", "conversion", "trailing_conversion", "median_days",
               "open_deals"],
}


# --- reading the README ---------------------------------------------------------------------


def fenced_blocks(text: str, language: str) -> list[str]:
    """The bodies of the fenced code blocks opened with ```language (``""`` for bare ones)."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def section(text: str, heading: str) -> str:
    """The text under a markdown heading, up to the next heading of any level."""
    start = text.index(f"{heading}\n")
    rest = text[start + len(heading) + 1:]
    following = re.search(r"^#{1,6} ", rest, flags=re.M)
    return rest[: following.start()] if following else rest


def bash_lines(text: str) -> list[str]:
    """Every command line of the ``bash`` blocks, continuation lines joined."""
    lines: list[str] = []
    for block in fenced_blocks(text, "bash"):
        lines += [line.strip() for line in block.replace("\\\n", " ").splitlines()
                  if line.strip()]
    return lines


def readme_commands(text: str = README_TEXT) -> list[list[str]]:
    """The ``quotacast`` commands of the bash blocks in order, as argument lists."""
    return [shlex.split(line, comments=True)[1:] for line in bash_lines(text)
            if line.startswith("quotacast ")]


def documented_feasibility_columns(text: str = README_TEXT) -> list[str]:
    """The column names of the planners' table (``| `expected`, `p10` | meaning |``)."""
    planners = section(text, "## For planners: is the target achievable?")
    names: list[str] = []
    for cell in re.findall(r"^\| (`[^|]+`) \|", planners, flags=re.M):
        names += re.findall(r"`([a-z0-9_]+)`", cell)
    return names


def table_commands(text: str = README_TEXT) -> list[list[str]]:
    """The sub-commands named in the README's command table (``quotacast train churn ...``)."""
    found: list[list[str]] = []
    for row in re.findall(r"^\| (.+?) \| [^|]+ \|$", section(text, "## Commands"), flags=re.M):
        items = re.findall(r"`([^`]+)`", row)
        if not items or not items[0].startswith("quotacast "):
            continue
        first = re.match(r"((?:[a-z][a-z-]* ?)+)", items[0].removeprefix("quotacast ")).group(1)
        words = first.split()
        found.append(words)
        for extra in items[1:]:  # `history`, `silence add/list/expire` under `warnings list`
            head, _, alternatives = extra.partition(" ")
            for name in alternatives.split("/") if alternatives else [""]:
                found.append([*words[:-1], head, *([name] if name else [])])
    return found


def wrong_data_examples(text: str = README_TEXT) -> list[str]:
    """The example lines of "When the data is wrong"."""
    return fenced_blocks(section(text, "### When the data is wrong"), "")[0].splitlines()


# --- running them -----------------------------------------------------------------------------


@dataclass
class Ran:
    """One README command as it was run."""

    args: list[str]
    exit_code: int
    stderr: str
    exception: BaseException | None = None
    swapped: dict[str, str] = field(default_factory=dict)


class Company:
    """The names of the small demo company, to stand in for the README's example names."""

    def __init__(self, data: Path):
        customers = pd.read_csv(data / "customers.csv")
        by_size = customers["account_manager"].value_counts()
        self.managers = set(by_size.index)
        self.busiest_manager = sorted(by_size[by_size == by_size.max()].index)[0]
        org = pd.read_csv(data / "org.csv")
        self.regions = sorted(org["region"].unique())
        self.periods = set(pd.read_csv(data / "targets.csv", dtype={"period": str})["period"])
        self.last_quarter = max(p for p in self.periods if "Q" in p)


def adapt(words: list[str], company: Company) -> tuple[list[str], dict[str, str]]:
    """The README's command with names the small company lacks swapped for ones it has."""
    args, swapped = [], {}
    for i, word in enumerate(words):
        option = words[i - 1] if i else ""
        new = word
        if word.startswith("../shared/data/"):
            new = str(SHARED_DATA / word.removeprefix("../shared/data/"))
        elif word.startswith("tests/fixtures/"):  # the repository's own example exports
            new = str(REPO / word)
        elif option == "--owner" and word not in company.managers:
            new = company.busiest_manager
        elif option == "--period" and word not in company.periods:
            new = company.last_quarter
        elif (option == "--matcher" and word.startswith("region=")
              and word.removeprefix("region=") not in company.regions):
            new = f"region={company.regions[0]}"
        if new != word:
            swapped[word] = new
        args.append(new)
    return args, swapped


def invoke(args: list[str]) -> tuple[int, str, BaseException | None]:
    """Run ``quotacast ARGS`` in-process: exit code, stderr, and an unexpected exception."""
    result = runner.invoke(app, args)
    exception = None if isinstance(result.exception, SystemExit | None) else result.exception
    return result.exit_code, result.stderr, exception


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A working directory as after ``make demo`` (small company), used by every command."""
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "rules", root / "rules")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("QUOTACAST_MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("QUOTACAST_DATABASE_URL", f"sqlite:///{root / 'quotacast.db'}")
        for name in ("QUOTACAST_DATA", "QUOTACAST_WARNINGS_WEBHOOK_URL",
                     "QUOTACAST_WARNINGS_NOTIFY_FILE"):
            mp.delenv(name, raising=False)
        code, stderr, exception = invoke(["demo", "--size", "small"])
        assert exception is None and code == 0, stderr[-3000:]
        yield root


@pytest.fixture(scope="module")
def ran(workdir: Path, shared_data: Path) -> list[Ran]:
    """Every README command, run once, in the README's order (the imports read shared_data)."""
    company = Company(workdir / "demo-data")
    results = []
    for words in readme_commands():
        args, swapped = adapt(words, company)
        if args[0] in LONG_RUNNING:
            args = [*args, "--help"]
        code, stderr, exception = invoke(args)
        results.append(Ran(args, code, stderr, exception, swapped))
    return results


COMMANDS = readme_commands()


def _id(words: list[str]) -> str:
    return " ".join(words)[:70]


def test_the_readme_has_examples_and_only_known_other_lines() -> None:
    assert len(COMMANDS) >= 15
    others = [line for line in bash_lines(README_TEXT) if not line.startswith("quotacast ")]
    unknown = [line for line in others if not line.startswith(tuple(p for p, _ in NOT_RUN))]
    assert unknown == [], "a bash line this test neither runs nor knows to skip"


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("index", range(len(COMMANDS)), ids=[_id(c) for c in COMMANDS])
def test_readme_command_succeeds(ran: list[Ran], index: int) -> None:
    run = ran[index]
    said = f"quotacast {shlex.join(run.args)} (names swapped: {run.swapped or 'none'})"
    assert run.exception is None, f"{said} raised {run.exception!r}\n{run.stderr[-3000:]}"
    assert run.exit_code == 0, f"{said} exited {run.exit_code}\n{run.stderr[-3000:]}"


def _kind(run: Ran) -> str:
    return " ".join(run.args[:2]) if run.args[0] in ("score", "train") else run.args[0]


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("index", [i for i, c in enumerate(COMMANDS) if "--out" in c],
                         ids=[_id(c) for c in COMMANDS if "--out" in c])
def test_readme_outputs_appear_with_the_documented_columns(ran: list[Ran], workdir: Path,
                                                          index: int) -> None:
    run = ran[index]
    out = workdir / run.args[run.args.index("--out") + 1]
    assert out.exists(), f"{run.args} wrote no {out.name}"
    kind = _kind(run)
    if kind == "import":
        check = invoke(["validate", "--data", str(out)])
        assert check[0] == 0, f"the imported {out.name} does not validate:\n{check[1][-3000:]}"
        return
    frame = pd.read_csv(out)
    assert len(frame) > 0
    expected = CONTRACT_COLUMNS[kind]
    if kind == "feasibility":
        expected = [*expected, *documented_feasibility_columns()]
    missing = [c for c in expected if c not in frame.columns]
    assert missing == [], f"{out.name} lacks documented columns"
    if "--owner" in run.args:
        owner = run.args[run.args.index("--owner") + 1]
        assert set(frame["account_manager"]) == {owner}
    if "--level" in run.args:
        assert set(frame["level"]) == {run.args[run.args.index("--level") + 1]}


@pytest.mark.slow
def test_alert_messages_say_the_numbers(workdir: Path) -> None:
    # "Each alert's message says which numbers made it fire": no template name left unfilled.
    alerts = pd.read_csv(workdir / "demo-output" / "alerts.csv")
    assert len(alerts) > 0
    unfilled = alerts.loc[alerts["message"].str.contains(NO_VALUE, regex=False), "rule"]
    assert unfilled.empty, f"rules whose message has {NO_VALUE}: {sorted(set(unfilled))}"


def test_readme_feasibility_table_lists_the_extra_column() -> None:
    # The parser above must find the table, or the column check would check nothing new.
    columns = documented_feasibility_columns()
    assert "pipeline_needed_for_p80" in columns and "must_hit" in columns


def test_readme_rule_example_is_a_valid_rule_file(tmp_path: Path) -> None:
    examples = fenced_blocks(section(README_TEXT, "## Early warnings"), "yaml")
    assert len(examples) == 1
    path = tmp_path / "example.yaml"
    path.write_text(examples[0], encoding="utf-8")
    code, stderr, exception = invoke(["warnings", "check", str(path)])
    assert exception is None and code == 0, stderr


@pytest.mark.parametrize("words", table_commands(), ids=_id)
def test_every_command_of_the_table_answers_help(words: list[str]) -> None:
    code, stderr, exception = invoke([*words, "--help"])
    assert exception is None and code == 0, f"quotacast {' '.join(words)} --help: {stderr}"


def test_the_command_table_is_parsed() -> None:
    names = [" ".join(w) for w in table_commands()]
    assert {"demo", "train churn", "score churn", "warnings list", "warnings silence expire",
            "warnings metrics"} <= set(names)


# --- "When the data is wrong" ---------------------------------------------------------------


def _write_wrong_data(folder: Path) -> None:
    """Data that has exactly the problems of the README's first three example lines."""
    folder.mkdir()
    (folder / "orders.csv").write_text(
        "customer_id,order_date,amount\nc1,2023-03-30,10\nc9,31/03/2023,5\n")
    (folder / "customers.csv").write_text("customer_id\nc1\n")
    (folder / "opportunities.csv").write_text(
        "opportunity_id,owner,created_at,close_date,stage,status,amount\n"
        "o1,ann,2023-01-01,2023-02-01,proposal,pending,100\n")


def _write_latin1_customers(folder: Path) -> None:
    """A customers file that is not UTF-8 (its first byte is a Latin-1 é)."""
    folder.mkdir()
    (folder / "orders.csv").write_text("customer_id,order_date,amount\nc1,2023-03-30,10\n")
    (folder / "customers.csv").write_bytes("érégion,customer_id\nx,c1\n".encode("latin-1"))


def test_wrong_data_examples_are_printed_exactly(tmp_path: Path) -> None:
    examples = wrong_data_examples()
    assert len(examples) == 4
    printed: list[str] = []
    for name, write in (("cells", _write_wrong_data), ("encoding", _write_latin1_customers)):
        write(tmp_path / name)
        out = tmp_path / f"{name}-summary.csv"
        code, stderr, exception = invoke(["validate", "--data", str(tmp_path / name),
                                             "--out", str(out)])
        assert exception is None and code == 2, stderr
        assert not out.exists(), "a failed validation wrote its output"
        printed += stderr.splitlines()
    missing = [line for line in examples if line not in printed]
    assert missing == [], f"the validator printed:\n{chr(10).join(printed)}"


def test_wrong_data_lines_have_the_documented_form() -> None:
    form = re.compile(r"^(?P<table>[a-z_]+):(?P<line>\d+): (?P<column>[a-z_-]+): .+ \(.*\)$")
    for line in wrong_data_examples():
        assert form.match(line), line
