"""Replay: what would the default warning rules have told over the demo's last two quarters?

Issue 7's "done when": on the demo company, evaluating weekly through the last two quarters
produces a small, explainable set of alerts. This replays it from scratch:

1. generates the demo company (``generate_with_truth("medium")``), writes it to a temporary
   data directory and reads it back through the same validation as ``--data``;
2. trains the churn and win models *as of the replay start* into a temporary MLflow registry
   (``engine.tracking.configure``) and promotes them, so no score sees the future;
3. evaluates ``rules/default.yaml`` every 7 days from the start to the data's last date into a
   fresh temporary SQLite alert store (notifications are queued in its outbox, not sent);
4. prints, per rule, how many distinct alerts fired and how many of those were notified (not
   silenced or inhibited), when, then every notified firing alert with its message, the
   precision of the customer-level alerts against the generator's hidden truth, and for the
   quarters that are over: whether the nodes that plan alerts were told about missed their
   targets, and whether the nodes that missed by more than 5% were alerted.

A customer is "declining" at date ``t`` when its health started a lasting decline in the 365
days before ``t`` (the truth keeps the first decline's date, not recoveries), and "in trouble"
when it is declining, has already left for good, or leaves within 180 days. Chance is the same
rate among the customers active at ``t`` (an order in the 365 days before), averaged over the
evaluation dates.

Per evaluation, the churn scores are computed once and shared by the churn metrics and the
feasibility simulation, which runs once for attainment, forecast gap and gap coverage; the
champions are loaded once. Run from the repository root::

    .venv/bin/python benchmarks/warnings_replay.py [--weeks 26] [--rules rules/default.yaml]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import tracking
from engine.alerting.evaluate import EvaluationReport, evaluate
from engine.alerting.rules import RuleFile, load_rules
from engine.alerting.store import FIRING, AlertStore
from engine.io import Tables, load_tables, write_data_dir
from engine.periods import data_end, period_bounds
from engine.schemas import (
    AMOUNT,
    COMPANY_KEY,
    CUSTOMER_ID,
    DS,
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_TEAM,
    ORDER_DATE,
    ORDERS,
    ORG,
    PERIOD,
    REGION,
    TARGETS,
    TEAM,
)
from features.hierarchy import attribute_revenue
from features.metrics import ForecastFromAttainment, MetricContext, Providers
from features.metrics.alerting import METRIC_CATALOGUE, metric_source
from models.feasibility import feasibility

REPO = Path(__file__).resolve().parents[1]
TROUBLE_HORIZON = pd.Timedelta(days=180)
DECLINE_DAYS = pd.Timedelta(days=365)
ACTIVE_DAYS = 365
_NODE_LABELS = ("customer_id", "opportunity_id", "rep", "team", "region")


# --- data and models ------------------------------------------------------------------------


def demo(folder: Path, seed: int) -> tuple[Tables, pd.DataFrame]:
    """The demo company written to ``folder`` and read back, and the generator's truth."""
    from engine.synthetic import generate_with_truth

    frames, truth = generate_with_truth("medium", seed=seed)
    write_data_dir(frames, folder)
    return load_tables(folder), truth


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Training prints MLflow chatter and numpy warnings; the replay's table is what matters."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def train_champions(tables: Tables, start: pd.Timestamp, registry: Path) -> dict[str, Any]:
    """Train and promote churn and win models as of ``start``; the loaded champions by kind."""
    from service.usecases.churn import train_churn
    from service.usecases.win import train_win

    tracking.configure(f"sqlite:///{registry}")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with _quiet():
        train_churn(tables, as_of=start)
        tracking.promote("churn")
        train_win(tables, as_of=start)
        tracking.promote("win")
        return {kind: tracking.load_champion(kind).estimator for kind in ("churn", "win")}


@dataclass
class ChampionProviders:
    """The default providers' work with champions loaded once: churn scores per as_of shared
    by the churn metrics and the feasibility simulation (as ``run_feasibility`` computes
    them: the champion's 180-day scores)."""

    churn_model: Any
    win_model: Any
    scores: dict[pd.Timestamp, pd.DataFrame] = field(default_factory=dict)

    def churn_scores(self, tables: Tables, as_of: pd.Timestamp) -> pd.DataFrame:
        from service.usecases.churn import score_churn

        if as_of not in self.scores:
            self.scores = {as_of: score_churn(tables, as_of=as_of, model=self.churn_model)}
        return self.scores[as_of]

    def attainment(self, tables: Tables, period: str, as_of: pd.Timestamp) -> pd.DataFrame:
        return feasibility(tables, period, as_of, win_model=self.win_model,
                              churn=self.churn_scores(tables, as_of))

    def providers(self) -> Providers:
        attainment = self.attainment
        return Providers(churn_scores=self.churn_scores, attainment=attainment,
                         period_forecast=ForecastFromAttainment(attainment))


# --- the replay -----------------------------------------------------------------------------


def replay_dates(end: date, weeks: int) -> list[date]:
    """Every 7 days from ``weeks`` weeks before ``end`` to ``end``."""
    return [end - timedelta(days=7 * k) for k in range(weeks, -1, -1)]


def run(tables: Tables, rules: RuleFile, providers: Providers, dates: list[date],
        store: AlertStore) -> tuple[list[EvaluationReport], list[float]]:
    """Evaluate the rules at each date (a fresh metric context each time)."""
    reports, seconds = [], []
    for day in dates:
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            reports.append(evaluate(rules, metric_source(MetricContext(tables, providers)),
                                    store, day))
        seconds.append(time.perf_counter() - started)
        report = reports[-1]
        print(f"  {day}: {len(report.transitions)} state changes, {report.notifications} "
              f"notifications queued ({seconds[-1]:.1f} s)", file=sys.stderr)
    return reports, seconds


def node(labels: dict[str, str]) -> str:
    """The alert's node in words: ``customer C000123 (rep Ana)``, ``region North``."""
    scope = labels.get("scope", "")
    if scope == "company":
        return "company"
    own = next((labels[k] for k in _NODE_LABELS if k in labels), "?")
    text = f"{scope} {own}"
    if scope in ("customer", "opportunity") and "rep" in labels:
        text += f" ({labels['rep']})"
    return text


def fired(store: AlertStore) -> pd.DataFrame:
    """Every firing episode: rule, fingerprint, labels, the date it fired and its message."""
    rows = [{"rule": t.rule, "fingerprint": t.fingerprint, "labels": t.labels,
             "fired_at": t.as_of, "message": t.message}
            for t in store.history() if t.to_state == FIRING]
    frame = pd.DataFrame(rows, columns=["rule", "fingerprint", "labels", "fired_at", "message"])
    return frame.sort_values(["fired_at", "rule"], kind="stable").reset_index(drop=True)


def notified(store: AlertStore) -> pd.DataFrame:
    """Firing episodes that a notification carried: first as_of told and its message then."""
    rows = []
    for message in store.outbox():
        for alert in message.payload["alerts"]:
            if alert["status"] == FIRING:
                rows.append({"rule": alert["labels"]["alertname"],
                             "fingerprint": alert["fingerprint"],
                             "fired_at": date.fromisoformat(alert["startsAt"][:10]),
                             "told_at": message.as_of, "told_message": alert["message"]})
    frame = pd.DataFrame(rows, columns=["rule", "fingerprint", "fired_at", "told_at",
                                        "told_message"])
    return frame.sort_values("told_at", kind="stable").drop_duplicates(
        ["rule", "fingerprint", "fired_at"])


def episodes(store: AlertStore) -> pd.DataFrame:
    """Fired episodes with ``notified`` (True when a notification carried them)."""
    told = notified(store)
    frame = fired(store).merge(told, on=["rule", "fingerprint", "fired_at"], how="left")
    frame["notified"] = frame["told_at"].notna()
    frame["node"] = frame["labels"].map(node)
    frame["scope"] = frame["labels"].map(lambda labels: labels.get("scope", ""))
    return frame


# --- truth ----------------------------------------------------------------------------------

TRUTH_COLUMNS = ("declining", "churned_before", "churns_within_180d", "in_trouble")


def truth_at(truth: pd.DataFrame, customers: pd.Series, when: pd.Series) -> pd.DataFrame:
    """Per (customer, date): what the generator knows about the customer then.

    ``declining``: a lasting decline of its health began in the :data:`DECLINE_DAYS` before
    (the truth keeps the first decline's date, not recoveries, so older ones say little);
    ``churned_before``: it had already left for good (it stopped ordering); ``churns_within``:
    it leaves within :data:`TROUBLE_HORIZON`; ``in_trouble``: any of these.
    """
    t = truth.set_index(CUSTOMER_ID).reindex(customers.to_numpy())
    stamp = pd.to_datetime(when.to_numpy())
    began = t["decline_date"].to_numpy()
    declining = (began <= stamp) & (began > stamp - DECLINE_DAYS)
    churned = t["churned"].fillna(False).to_numpy(dtype=bool)
    left = t["churn_date"].to_numpy()
    before = churned & (left <= stamp)
    within = churned & (left > stamp) & (left <= stamp + TROUBLE_HORIZON)
    return pd.DataFrame({"declining": declining, "churned_before": before,
                         "churns_within_180d": within,
                         "in_trouble": declining | before | within}, index=customers.index)


def chance(tables: Tables, truth: pd.DataFrame, dates: list[date]) -> pd.Series:
    """Mean over the dates of each truth rate among active customers (an order in the
    365 days before)."""
    orders = tables[ORDERS]
    rates = []
    for day in dates:
        stamp = pd.Timestamp(day)
        recent = orders[(orders[ORDER_DATE] < stamp)
                        & (orders[ORDER_DATE] >= stamp - pd.Timedelta(days=ACTIVE_DAYS))]
        active = pd.Series(recent[CUSTOMER_ID].unique())
        rates.append(truth_at(truth, active, pd.Series(stamp, index=active.index)).mean())
    return pd.DataFrame(rates).mean()


def precision(found: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Customer-level episodes per rule: count and the share of each truth when fired."""
    customers = found[found["scope"] == "customer"]
    rows = []
    for rule, mine in [*customers.groupby("rule"), ("all customer alerts", customers)]:
        if mine.empty:
            continue
        ids = mine["labels"].map(lambda labels: labels["customer_id"])
        known = truth_at(truth, ids, mine["fired_at"].map(pd.Timestamp))
        rows.append({"rule": rule, "alerts": len(mine), **known.mean().to_dict()})
    return pd.DataFrame(rows, columns=["rule", "alerts", *TRUTH_COLUMNS])


_PERIOD = re.compile(r"\b(\d{4}Q[1-4])\b")


def node_outcomes(found: pd.DataFrame, tables: Tables) -> pd.DataFrame:
    """Plan and pipeline alerts at nodes whose quarter is over: did the node miss its target?"""
    plan = found[found["labels"].map(lambda labels: labels.get("concern") in ("plan", "pipeline"))]
    events = attribute_revenue(tables, columns=[])
    quarter = events[DS].dt.to_period("Q").astype(str)
    targets = tables[TARGETS].set_index([PERIOD, LEVEL, KEY])[AMOUNT]
    last = pd.Timestamp(data_end(tables))
    rows = []
    for rule, labels, where, message in zip(plan["rule"], plan["labels"], plan["node"],
                                            plan["told_message"], strict=True):
        found_period = _PERIOD.search(str(message))
        scope = str(labels.get("scope", ""))
        if found_period is None or scope not in HIERARCHY_LEVELS:
            continue
        period = found_period.group(1)
        if period_bounds(period)[1] > last:
            continue  # not over yet
        key = COMPANY_KEY if scope == LEVEL_COMPANY else str(labels[scope])
        mine = quarter == period
        if scope != LEVEL_COMPANY:
            mine &= events[scope].astype(object) == key
        actual = float(events.loc[mine, AMOUNT].sum())
        target = float(targets.get((period, scope, key), float("nan")))
        rows.append({"rule": rule, "node": where, "period": period, "target": target,
                     "actual": actual, "missed": actual < target})
    return pd.DataFrame(rows, columns=["rule", "node", "period", "target", "actual", "missed"])


def node_recall(found: pd.DataFrame, tables: Tables, dates: list[date],
                miss: float = 0.05) -> pd.DataFrame:
    """Nodes (company, region, team) that missed a quarter over by more than ``miss``, and
    whether a plan or pipeline alert fired about that quarter at the node itself (told or
    muted) or was told at one of its ancestors."""
    plan = found[found["labels"].map(lambda labels: labels.get("concern") in ("plan", "pipeline"))]
    seen: set[tuple[str, str, str, bool]] = set()  # (period, scope, key, told)
    for labels, message, told in zip(plan["labels"], plan["message"], plan["notified"],
                                     strict=True):
        match = _PERIOD.search(str(message))
        scope = str(labels.get("scope", ""))
        if match is not None and scope in HIERARCHY_LEVELS:
            key = COMPANY_KEY if scope == LEVEL_COMPANY else str(labels[scope])
            seen.add((match.group(1), scope, key, bool(told)))
    events = attribute_revenue(tables, columns=[])
    quarter = events[DS].dt.to_period("Q").astype(str)
    last = pd.Timestamp(data_end(tables))
    periods = sorted({f"{d.year}Q{(d.month - 1) // 3 + 1}" for d in dates})
    targets = tables[TARGETS]
    rows = []
    for period in periods:
        if period_bounds(period)[1] > last:
            continue
        mine = events[quarter == period]
        for scope in (LEVEL_COMPANY, LEVEL_REGION, LEVEL_TEAM):
            goals = targets[(targets[PERIOD].astype(str) == period)
                            & (targets[LEVEL] == scope)].set_index(KEY)[AMOUNT]
            actual = (pd.Series({COMPANY_KEY: mine[AMOUNT].sum()}) if scope ==
                      LEVEL_COMPANY else mine.groupby(mine[scope].astype(object))[AMOUNT]
                      .sum())
            for node_key, target in goals.items():
                done = float(actual.get(node_key, 0.0))
                if done >= (1 - miss) * float(target):
                    continue
                own = any((period, scope, str(node_key), t) in seen for t in (True, False))
                rows.append({"period": period, "node": f"{scope} {node_key}",
                             "short": 1 - done / float(target), "alerted": own})
    frame = pd.DataFrame(rows, columns=["period", "node", "short", "alerted"])
    return _with_ancestors(frame, seen, tables)


def _with_ancestors(frame: pd.DataFrame, seen: set[tuple[str, str, str, bool]],
                    tables: Tables) -> pd.DataFrame:
    """Mark nodes whose region or the company had a told alert about the same quarter."""
    org = tables[ORG].drop_duplicates(TEAM).set_index(TEAM)[REGION]
    covered = []
    for period, where, alerted in zip(frame["period"], frame["node"], frame["alerted"],
                                      strict=True):
        scope, _, key = where.partition(" ")
        above = [(LEVEL_COMPANY, COMPANY_KEY)] if scope != LEVEL_COMPANY else []
        if scope == LEVEL_TEAM and key in org.index:
            above.append((LEVEL_REGION, str(org[key])))
        covered.append(alerted or any((period, s, k, True) in seen for s, k in above))
    return frame.assign(covered=covered)


# --- the report -----------------------------------------------------------------------------


def per_rule(found: pd.DataFrame, rules: RuleFile) -> pd.DataFrame:
    """Per rule: distinct alerts (label sets) that fired and that were notified, firing
    episodes notified (an alert that fires again after resolving is a new episode), and the
    first and last dates an episode began."""
    rows = []
    for _, rule in rules.rules:
        mine = found[found["rule"] == rule.alert]
        told = mine[mine["notified"]]
        rows.append({"rule": rule.alert, "severity": rule.severity,
                     "fired": mine["fingerprint"].nunique(),
                     "notified": told["fingerprint"].nunique(), "episodes": len(told),
                     "first": min(mine["fired_at"]).isoformat() if len(mine) else "",
                     "last": max(mine["fired_at"]).isoformat() if len(mine) else "",
                     "scopes": ", ".join(sorted(set(told["scope"]))) if len(told) else ""})
    return pd.DataFrame(rows)


def print_report(found: pd.DataFrame, rules: RuleFile, store: AlertStore, truth: pd.DataFrame,
                 tables: Tables, dates: list[date], timings: dict[str, float]) -> None:
    table = per_rule(found, rules)
    told = found[found["notified"]]
    print(f"\nWarnings replay: {Path(rules.path).name} on the demo company, every 7 days from "
          f"{dates[0]} to {dates[-1]} ({len(dates)} evaluations)\n")
    print(table.to_string(index=False))
    messages = store.outbox()
    carried = sum(len(m.payload["alerts"]) for m in messages)
    print(f"\n{found['fingerprint'].nunique()} distinct alerts fired ({len(found)} episodes); "
          f"{told['fingerprint'].nunique()} were notified ({len(told)} episodes), the rest only "
          f"while silenced or inhibited. {len(messages)} notifications queued, carrying "
          f"{carried} alert mentions (grouped; repeats every repeat_interval included).")
    weeks = told.groupby("told_at").size().reindex(dates, fill_value=0)
    print("Notified episodes per evaluation: " + " ".join(str(n) for n in weeks))
    print("\nNotified firing alerts, in order:")
    for row in told.sort_values(["told_at", "rule"], kind="stable").itertuples():
        print(f"- {row.told_at} {row.rule} [{row.node}]: {row.told_message}")
    base = chance(tables, truth, dates)
    table = precision(told, truth)
    table = pd.concat([table, pd.DataFrame([{"rule": "chance (active customers)", "alerts": "",
                                             **base.to_dict()}])], ignore_index=True)
    print("\nNotified customer-level alerts against the generator's truth, at the date they "
          "fired (share of alerts):")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.0%}"))
    recall = node_recall(found, tables, dates)
    if len(recall):
        print(f"\nNodes (company, region, team) that missed a quarter that is over by more than "
              f"5%: {int(recall['alerted'].sum())} of {len(recall)} had a plan or pipeline alert "
              f"of their own about it, {int(recall['covered'].sum())} had one of their own or a "
              "told one above them")
        print(recall.to_string(index=False, formatters={"short": "{:.0%}".format}))
    outcomes = node_outcomes(told, tables)
    if len(outcomes):
        print(f"\nNotified plan and pipeline alerts about a quarter that is over: "
              f"{int(outcomes['missed'].sum())} of {len(outcomes)} nodes missed that target")
        print(outcomes.to_string(index=False, float_format=lambda x: f"{x:,.0f}"))
    print("\nWall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weeks", type=int, default=26, help="Weeks replayed before the end.")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the demo company.")
    parser.add_argument("--rules", type=Path, default=REPO / "rules" / "default.yaml")
    args = parser.parse_args(argv)
    rules = load_rules(args.rules, catalogue=METRIC_CATALOGUE)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="warnings-replay-") as tmp:
        folder = Path(tmp)
        tables, truth = demo(folder / "demo-data", args.seed)
        dates = replay_dates(data_end(tables).date(), args.weeks)
        timings["demo data"] = time.perf_counter() - started
        print(f"demo company ready; training churn and win models as of {dates[0]}",
              file=sys.stderr)
        mark = time.perf_counter()
        models = train_champions(tables, pd.Timestamp(dates[0]), folder / "mlflow.db")
        timings["training"] = time.perf_counter() - mark
        store = AlertStore(f"sqlite:///{folder / 'alerts.db'}")
        mark = time.perf_counter()
        providers = ChampionProviders(models["churn"], models["win"]).providers()
        _, seconds = run(tables, rules, providers, dates, store)
        timings["replay"] = time.perf_counter() - mark
        timings["per evaluation"] = sum(seconds) / len(seconds)
        found = episodes(store)
        timings["total"] = time.perf_counter() - started
        print_report(found, rules, store, truth, tables, dates, timings)
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
