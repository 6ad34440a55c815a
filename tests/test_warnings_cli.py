"""``quotacast warnings ...`` end to end on a temporary SQLite database.

The sub-app is mounted in a tiny typer app whose root callback sets the settings, as
``service/cli/app.py`` does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from engine.config import Settings
from service.cli import warnings as warnings_cli
from service.cli.warnings import warnings_app

REPO = Path(__file__).resolve().parents[1]
CONTRACT_COLUMNS = ["rule", "labels", "state", "severity", "value", "threshold", "since",
                    "message"]

RULES = """
receivers:
  - name: log
    file_configs: [{path: "%(sink)s"}]
route: {receiver: log, group_by: [alertname]}
groups:
  - name: plan
    rules:
      - alert: PaceBehindPlan
        metric: pace_against_plan
        scope: [region, rep]
        op: "<"
        threshold: 0.9
        for: 0
        annotations: {summary: "{{ node }} at {{ value | humanizePercentage }} of plan"}
      - alert: OverdueHigh
        metric: overdue_receivables_ratio
        scope: customer
        op: ">"
        threshold: 0.5
        for: 7d
      - alert: StalledShort
        metric: stalled_deals
        scope: team
        op: ">"
        threshold: 3
"""


def _write(directory: Path, name: str, header: str, *rows: str) -> None:
    (directory / f"{name}.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """North is behind plan (150 of 200 expected by mid-quarter), South ahead."""
    folder = tmp_path / "data"
    folder.mkdir()
    _write(folder, "org", "rep,team,region", "Ana,N1,North", "Cy,S1,South")
    _write(folder, "customers", "customer_id,account_manager", "C1,Ana", "C3,Cy")
    _write(folder, "orders", "customer_id,order_date,amount", "C1,2026-10-05,150",
           "C3,2026-11-01,300", "C3,2026-11-15,1")
    _write(folder, "targets", "period,level,key,amount", "2026Q4,region,North,400",
           "2026Q4,region,South,200", "2026Q4,rep,Ana,400", "2026Q4,rep,Cy,200")
    _write(folder, "receivables", "invoice_id,customer_id,issued_at,due_date,amount,paid_at",
           "I1,C1,2026-10-01,2026-10-31,100,", "I2,C3,2026-10-01,2026-12-31,100,")
    return folder


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    """Run the sub-app with a temporary database; returns ``run(*args) -> Result``. The test
    data is QUOTACAST_DATA's (the default workspace), as for an installation of one source."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'alerts.db'}",
                        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                        data=str(tmp_path / "data"))
    app = typer.Typer()

    @app.callback()
    def _root(ctx: typer.Context) -> None:
        ctx.obj = settings

    app.add_typer(warnings_app, name="warnings")
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(app, ["warnings", *args], catch_exceptions=False)

    return run


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES % {"sink": tmp_path / "sent.jsonl"}, encoding="utf-8")
    return path


def _json(output: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(output.strip().splitlines()[-1])
    return records


def test_evaluate_updates_state_notifies_and_prints_contract_columns(
        cli: Any, data: Path, rules: Path, tmp_path: Path) -> None:
    result = cli("evaluate", "--data", str(data), "--rules", str(rules), "--as-of",
                 "2026-11-16", "--json")
    assert result.exit_code == 0, result.output
    records = _json(result.stdout)
    assert list(records[0])[:8] == CONTRACT_COLUMNS
    firing = {(r["rule"], r["labels"], r["state"]) for r in records}
    assert firing == {
        ("PaceBehindPlan", '{region="North", scope="region"}', "firing"),
        ("PaceBehindPlan", '{region="North", rep="Ana", scope="rep", team="N1"}', "firing"),
        ("OverdueHigh", '{customer_id="C1", region="North", rep="Ana", scope="customer", '
                        'team="N1"}', "pending"),
    }
    north = next(r for r in records if r["labels"] == '{region="North", scope="region"}')
    assert north["value"] == pytest.approx(0.75) and north["threshold"] == 0.9
    assert north["since"] == "2026-11-16"
    assert north["message"].startswith("region North at 75% of plan: revenue to date 150")
    assert "skipped 1 rule(s) whose metric is not available yet: StalledShort" in result.stderr
    sent = (tmp_path / "sent.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(sent) == 1 and json.loads(sent[0])["status"] == "firing"


def test_evaluate_prints_a_summary_not_the_rows(cli: Any, data: Path, rules: Path) -> None:
    result = cli("evaluate", "--data", str(data), "--rules", str(rules), "--as-of",
                 "2026-11-16", "--no-deliver")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    # Rep Ana's pace alert sits below region North's: inhibited by hierarchy, not listed.
    assert ("alerts at 2026-11-16: 2 firing (1 notified, 1 muted by silences or inhibition), "
            "1 pending, 0 resolved") in lines
    counts = next(i for i, line in enumerate(lines) if "per rule" in line)
    table = "\n".join(lines[counts:counts + 8])
    assert "PaceBehindPlan" in table and "OverdueHigh" in table
    header = next(line for line in lines[counts:] if "rule" in line and "severity" in line)
    assert header.split("┃")[1:6] == [" rule           ", " severity ", " firing ", " muted ",
                                      " pending "]
    firing = lines.index("firing, worst first (1 of 1):")
    assert lines[firing + 1].startswith(
        "  warning  PaceBehindPlan [region North] since 2026-11-16: region North at 75% of "
        "plan: revenue to date 150 is 75% of plan")
    assert "Ana" not in "\n".join(lines[firing:])  # muted alerts are counted, not listed
    assert result.stdout == ""  # rows only with --out or --json


def test_list_summarises_the_selected_alerts(cli: Any, data: Path, rules: Path) -> None:
    cli("evaluate", "--data", str(data), "--rules", str(rules), "--as-of", "2026-11-16",
        "--no-deliver")
    listed = cli("list", "--state", "pending")
    assert listed.exit_code == 0
    assert "1 alert(s): 0 firing (0 notified, 0 muted by silences or inhibition), 1 pending, " \
           "0 resolved" in listed.stderr
    assert "firing, worst first" not in listed.stderr
    everything = cli("list", "--json")
    assert "firing, worst first (1 of 1):" in everything.stderr
    assert len(_json(everything.stdout)) == 3


def test_evaluate_twice_is_idempotent_and_earlier_is_refused(
        cli: Any, data: Path, rules: Path, tmp_path: Path) -> None:
    args = ["evaluate", "--data", str(data), "--rules", str(rules), "--json"]
    first = cli(*args, "--as-of", "2026-11-16")
    again = cli(*args, "--as-of", "2026-11-16")
    assert again.exit_code == 0
    assert "already evaluated at 2026-11-16" in again.stderr
    assert _json(again.stdout) == _json(first.stdout)
    assert len((tmp_path / "sent.jsonl").read_text().splitlines()) == 1
    earlier = cli(*args, "--as-of", "2026-11-10")
    assert earlier.exit_code == 2
    assert "earlier than the last evaluation" in earlier.stderr


def test_evaluate_out_file_and_list_history(cli: Any, data: Path, rules: Path,
                                            tmp_path: Path) -> None:
    out = tmp_path / "alerts.csv"
    result = cli("evaluate", "--data", str(data), "--rules", str(rules), "--as-of",
                 "2026-11-16", "--out", str(out), "--no-deliver")
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(out).columns)[:8] == CONTRACT_COLUMNS
    assert not (tmp_path / "sent.jsonl").exists()  # queued, not sent
    listed = cli("list", "--state", "pending", "--json")
    assert [r["rule"] for r in _json(listed.stdout)] == ["OverdueHigh"]
    assert cli("list", "--state", "bogus").exit_code == 2
    history = _json(cli("history", "--json").stdout)
    assert {h["to_state"] for h in history} == {"firing", "pending"}
    delivered = cli("deliver")
    assert delivered.exit_code == 0 and "1 delivered" in delivered.stderr
    assert (tmp_path / "sent.jsonl").exists()


def test_silence_add_list_expire(cli: Any, data: Path, rules: Path, tmp_path: Path) -> None:
    added = cli("silence", "add", "--matcher", "alertname=PaceBehindPlan", "-m",
                'region=~"N.*"', "--starts", "2026-11-01", "--ends", "2026-12-01",
                "--author", "ana", "--comment", "reorg in North")
    assert added.exit_code == 0, added.output
    silence_id = added.stdout.split()[-1]
    listed = _json(cli("silence", "list", "--json").stdout)
    assert listed[0]["id"] == silence_id and listed[0]["created_by"] == "ana"
    assert listed[0]["matchers"] == 'alertname="PaceBehindPlan", region=~"N.*"'
    evaluated = _json(cli("evaluate", "--data", str(data), "--rules", str(rules), "--as-of",
                          "2026-11-16", "--json").stdout)
    pace = [r for r in evaluated if r["rule"] == "PaceBehindPlan"]
    assert pace and all(r["silenced"] and r["state"] == "firing" for r in pace)
    assert not (tmp_path / "sent.jsonl").exists()  # silenced: nothing told
    assert cli("silence", "expire", silence_id).exit_code == 0
    assert cli("silence", "expire", silence_id).exit_code == 1
    assert _json(cli("silence", "list", "--json").stdout) == []
    bad = cli("silence", "add", "-m", "nonsense", "--starts", "2026-11-01", "--ends",
              "2026-12-01", "--author", "a", "--comment", "c")
    assert bad.exit_code == 2


def test_bad_rule_file_lists_every_problem_and_exits_2(cli: Any, data: Path,
                                                       tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "groups:\n- name: g\n  rules:\n"
        "  - {alert: A, metric: nope, scope: region, op: '<', threshold: 1}\n"
        "  - {alert: B, metric: pipeline_coverage, scope: customer, op: '<', threshold: 1}\n"
        "  - {alert: C, metric: pace_against_plan, scope: region, op: '=>', for: soon}\n",
        encoding="utf-8")
    result = cli("evaluate", "--data", str(data), "--rules", str(bad))
    assert result.exit_code == 2
    for piece in ("rule 'A'", "metric: unknown metric 'nope'", "rule 'B'",
                  "scope: customer not available", "rule 'C'", "op:", "for:",
                  "threshold: missing"):
        assert piece in result.stderr, piece
    assert cli("check", str(bad)).exit_code == 2
    assert cli("check", str(REPO / "rules" / "default.yaml")).exit_code == 0


def test_rule_unit_tests_command(cli: Any, tmp_path: Path) -> None:
    result = cli("test", str(REPO / "rules" / "tests" / "default_test.yaml"))
    assert result.exit_code == 0, result.output
    assert "SUCCESS" in result.stdout and " 0 failed" in result.stdout
    broken = tmp_path / "broken_test.yaml"
    broken.write_text(
        f"rule_files: [{REPO / 'rules' / 'default.yaml'}]\ntests:\n- name: wrong\n"
        "  input_series:\n  - series: 'stalled_deals{scope=\"rep\", rep=\"Ana\"}'\n"
        "    values: '5x20'\n  alert_rule_test:\n  - eval_time: 14d\n"
        "    alertname: StalledDeals\n", encoding="utf-8")
    failed = cli("test", str(broken))
    assert failed.exit_code == 1
    assert "FAILED" in failed.stdout and '+{"annotations": {}, "labels"' in failed.stdout
    assert "0 passed, 1 failed" in failed.stdout


def test_metrics_command_lists_the_catalogue(cli: Any) -> None:
    records = _json(cli("metrics", "--json").stdout)
    assert {"pace_against_plan", "pipeline_coverage", "forecast_gap"} <= {
        r["metric"] for r in records}


def test_evaluate_since_replays_dates_so_for_can_elapse(cli: Any, data: Path,
                                                         rules: Path) -> None:
    result = cli("evaluate", "--data", str(data), "--rules", str(rules), "--as-of",
                 "2026-11-16", "--since", "2026-11-01", "--every", "1w", "--no-deliver",
                 "--json")
    assert result.exit_code == 0, result.output
    evaluated = [line.split(":")[0] for line in result.stderr.splitlines()
                 if line.startswith("evaluated ")]
    assert evaluated == [f"evaluated 2 rule(s) at 2026-11-{d}" for d in ("02", "09", "16")]
    # C1's invoice, due on 10-31, is overdue from 11-02 on: pending then, firing a week later.
    states = {r["rule"]: r["state"] for r in _json(result.stdout)}
    assert states["OverdueHigh"] == "firing"
    assert result.stderr.count("skipped 1 rule(s)") == 1  # said once, not per date
    for bad in (["--since", "2026-12-01"], ["--since", "2026-11-01", "--every", "0"],
                ["--since", "2026-11-01", "--every", "soon"], ["--give-up-after", "soon"],
                ["--give-up-after", "0"]):
        refused = cli("evaluate", "--data", str(data), "--rules", str(rules), "--as-of",
                      "2026-11-16", *bad)
        assert refused.exit_code == 2, bad


def test_default_rules_come_with_the_package_outside_the_repository(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rules import default_rules_path

    repo_pack = Path(__file__).resolve().parents[1] / "rules" / "default.yaml"
    monkeypatch.chdir(tmp_path)  # no rules/ here: the packaged pack is used
    packaged = default_rules_path()
    assert packaged.is_absolute() and packaged.read_bytes() == repo_pack.read_bytes()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "default.yaml").write_text("groups: []\n")
    assert default_rules_path() == Path("rules") / "default.yaml"  # a local pack wins


def test_default_as_of_is_the_day_after_the_last_row_so_that_row_counts(
        cli: Any, data: Path, rules: Path) -> None:
    # Ana's order on the data's last day (11-15) brings North to plan (200 of ~200 expected).
    with (data / "orders.csv").open("a", encoding="utf-8") as orders:
        orders.write("C1,2026-11-15,50\n")
    north = '{region="North", scope="region"}'
    on_last_day = cli("evaluate", "--data", str(data), "--rules", str(rules), "--as-of",
                      "2026-11-15", "--no-deliver", "--json")
    assert on_last_day.exit_code == 0, on_last_day.output
    assert ("PaceBehindPlan", north, "firing") in {
        (r["rule"], r["labels"], r["state"]) for r in _json(on_last_day.stdout)}
    by_default = cli("evaluate", "--data", str(data), "--rules", str(rules), "--no-deliver",
                     "--json")
    assert by_default.exit_code == 0, by_default.output
    assert "evaluated 2 rule(s) at 2026-11-16" in by_default.stderr
    states = {(r["rule"], r["labels"]): r["state"] for r in _json(by_default.stdout)}
    assert states[("PaceBehindPlan", north)] == "resolved"


# --- delivery that is not lost, replays that resume ---------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    """A webhook answering 503 while ``down`` is set, and recording what it accepted."""

    down = True
    accepted: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = 503 if type(self).down else 200
        if status == 200:
            type(self).accepted.append(body)
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"down": True, "accepted": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", handler
    server.shutdown()
    server.server_close()


def test_undelivered_notifications_fail_the_run_loudly_until_deliver_gets_them_out(
        cli: Any, data: Path, rules: Path, hook: tuple[str, type[_Hook]]) -> None:
    url, handler = hook
    evaluated = cli("evaluate", "--data", str(data), "--rules", str(rules), "--as-of",
                    "2026-11-16", "--webhook", url, "--deliver-wait", "0")
    assert evaluated.exit_code == 1, evaluated.output
    assert "NOT DELIVERED: 1 notification(s): 1 waiting for a retry" in evaluated.stderr
    assert "up to 3d" in evaluated.stderr
    still_down = cli("deliver", "--deliver-wait", "0")
    assert still_down.exit_code == 1 and "NOT DELIVERED" in still_down.stderr
    handler.down = False
    cron = cli("deliver", "--scheduled", "--deliver-wait", "0")  # its retry is minutes away
    assert cron.exit_code == 1 and handler.accepted == []
    back = cli("deliver", "--deliver-wait", "0")
    assert back.exit_code == 0, back.output
    assert "1 delivered" in back.stderr and "NOT DELIVERED" not in back.stderr
    assert len(handler.accepted) == 1
    again = cli("deliver")
    assert again.exit_code == 0 and "nothing to deliver" in again.stderr
    assert len(handler.accepted) == 1  # delivered once, never again


def test_a_crashed_replay_resumes_when_rerun(cli: Any, data: Path, rules: Path,
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["evaluate", "--data", str(data), "--rules", str(rules), "--as-of", "2026-11-16",
            "--since", "2026-11-01", "--every", "1w", "--json"]

    class Crash(BaseException):
        """The process dying after two of the three dates were committed."""

    real = warnings_cli.evaluate

    def crashing(*a: Any, **k: Any) -> Any:
        if a[3] == date(2026, 11, 16):
            raise Crash
        return real(*a, **k)

    with monkeypatch.context() as patched:
        patched.setattr(warnings_cli, "evaluate", crashing)
        with pytest.raises(Crash):
            cli(*args)
    assert not (tmp_path / "sent.jsonl").exists()  # queued before the crash, not sent
    rerun = cli(*args)
    assert rerun.exit_code == 0, rerun.output
    assert "replay: 2 date(s) already evaluated were left as they are" in rerun.stderr
    assert "evaluated 2 rule(s) at 2026-11-16" in rerun.stderr
    states = {r["rule"]: r["state"] for r in _json(rerun.stdout)}
    assert states["OverdueHigh"] == "firing"
    sent = (tmp_path / "sent.jsonl").read_text().splitlines()
    assert len(sent) >= 1 and cli("deliver").stderr.strip() == "nothing to deliver"
    # The very same command once more: every date already done, nothing sent twice.
    third = cli(*args)
    assert third.exit_code == 0 and "already evaluated at 2026-11-16" in third.stderr
    assert (tmp_path / "sent.jsonl").read_text().splitlines() == sent


def test_a_silence_regex_re2_refuses_is_a_usage_error_and_nothing_is_stored(cli: Any) -> None:
    for bad in ('rep=~"(a)\\\\1"', 'rep=~"(?!Ana).*"', 'rep=~"x{2000}"'):
        refused = cli("silence", "add", "-m", bad, "--starts", "2026-11-01", "--ends",
                      "2026-12-01", "--author", "ana", "--comment", "why")
        assert refused.exit_code == 2, bad
        assert "bad regular expression" in refused.stderr and "Traceback" not in refused.output
    import contextlib

    from engine.db import DatabaseMissingError

    # Nothing stored: no silence, or not even a database (a read does not create one).
    with contextlib.suppress(DatabaseMissingError):
        assert "0 silence(s)" in cli("silence", "list", "--all").stderr
    slow_before = cli("silence", "add", "-m", 'rep=~"(.|.)*Z"', "--starts", "2026-11-01",
                      "--ends", "2026-12-01", "--author", "ana", "--comment", "linear now")
    assert slow_before.exit_code == 0
