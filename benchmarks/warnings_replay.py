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
   silenced or inhibited), when, then every notified firing alert with its message, and the
   precision of the customer-level alerts against the generator's hidden truth.

A customer is "in trouble" at date ``t`` when its health had started a lasting decline by
``t`` or it churns (stops for good) by ``t + 180`` days; "declining" is the first part alone.
Chance is the same rate among the customers active at ``t`` (an order in the 365 days before).

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

from engine import feasibility as FZ
from engine import schemas as S
from engine import tracking
from engine.io import Tables, load_tables, write_data_dir
from engine.summary import data_end
from engine.warnings.engine import EvaluationReport, evaluate
from engine.warnings.metrics import ForecastFromAttainment, MetricContext, Providers
from engine.warnings.rules import RuleFile, load_rules
from engine.warnings.store import FIRING, AlertStore

REPO = Path(__file__).resolve().parents[1]
TROUBLE_HORIZON = timedelta(days=180)
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
    from engine.pipelines.churn import train_churn
    from engine.pipelines.win import train_win

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
        from engine.pipelines.churn import score_churn

        if as_of not in self.scores:
            self.scores = {as_of: score_churn(tables, as_of=as_of, model=self.churn_model)}
        return self.scores[as_of]

    def attainment(self, tables: Tables, period: str, as_of: pd.Timestamp) -> pd.DataFrame:
        return FZ.feasibility(tables, period, as_of, win_model=self.win_model,
                              churn=self.churn_scores(tables, as_of))

    def providers(self) -> Providers:
        return Providers(churn_scores=self.churn_scores, attainment=self.attainment,
                         period_forecast=ForecastFromAttainment(self.attainment))


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
            reports.append(evaluate(rules, MetricContext(tables, providers), store, day))
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


def in_trouble(truth: pd.DataFrame, customers: pd.Series, when: pd.Series
               ) -> tuple[pd.Series, pd.Series]:
    """Per (customer, date): declining by then; in trouble (declining or churning within
    :data:`TROUBLE_HORIZON`)."""
    t = truth.set_index(S.CUSTOMER_ID).reindex(customers.to_numpy())
    stamp = pd.to_datetime(when.to_numpy())
    declining = (t["decline_date"].to_numpy() <= stamp)
    churning = t["churned"].fillna(False).to_numpy(dtype=bool) & (
        t["churn_date"].to_numpy() <= stamp + TROUBLE_HORIZON)
    return (pd.Series(declining, index=customers.index),
            pd.Series(declining | churning, index=customers.index))


def chance(tables: Tables, truth: pd.DataFrame, dates: list[date]) -> tuple[float, float]:
    """Mean over the dates of the share of active customers declining / in trouble."""
    orders = tables[S.ORDERS]
    declining, trouble = [], []
    for day in dates:
        stamp = pd.Timestamp(day)
        recent = orders[(orders[S.ORDER_DATE] < stamp)
                        & (orders[S.ORDER_DATE] >= stamp - pd.Timedelta(days=ACTIVE_DAYS))]
        active = pd.Series(recent[S.CUSTOMER_ID].unique())
        d, t = in_trouble(truth, active, pd.Series(stamp, index=active.index))
        declining.append(d.mean())
        trouble.append(t.mean())
    return float(pd.Series(declining).mean()), float(pd.Series(trouble).mean())


def precision(found: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Customer-level episodes: how many, and the share declining / in trouble when fired."""
    customers = found[found["scope"] == "customer"]
    if customers.empty:
        return {"alerts": 0, "customers": 0, "declining": float("nan"),
                "in_trouble": float("nan")}
    ids = customers["labels"].map(lambda labels: labels["customer_id"])
    declining, trouble = in_trouble(truth, ids, customers["fired_at"].map(pd.Timestamp))
    return {"alerts": len(customers), "customers": ids.nunique(),
            "declining": float(declining.mean()), "in_trouble": float(trouble.mean())}


# --- the report -----------------------------------------------------------------------------


def per_rule(found: pd.DataFrame, rules: RuleFile) -> pd.DataFrame:
    """Per rule: alerts fired, notified, and the first and last dates they fired."""
    rows = []
    for _, rule in rules.rules:
        mine = found[found["rule"] == rule.alert]
        told = mine[mine["notified"]]
        rows.append({"rule": rule.alert, "severity": rule.severity, "fired": len(mine),
                     "notified": len(told),
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
    print(f"\n{len(found)} alerts fired, {len(told)} notified (the rest silenced or inhibited); "
          f"{len(messages)} notifications queued carrying {carried} alert mentions "
          "(repeats every repeat_interval included)")
    print("\nNotified firing alerts, in order:")
    for row in told.sort_values(["told_at", "rule"], kind="stable").itertuples():
        print(f"- {row.told_at} {row.rule} [{row.node}]: {row.told_message}")
    score = precision(told, truth)
    every = precision(found, truth)
    base_declining, base_trouble = chance(tables, truth, dates)
    print(f"\nCustomer-level alerts against the generator's truth (at the date they fired; "
          f"chance = share among active customers):")
    for name, part in (("notified", score), ("all fired", every)):
        print(f"  {name}: {part['alerts']} alerts on {part['customers']} customers; in trouble "
              f"{part['in_trouble']:.0%} (chance {base_trouble:.0%}), declining "
              f"{part['declining']:.0%} (chance {base_declining:.0%})")
    print("\nWall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weeks", type=int, default=26, help="Weeks replayed before the end.")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the demo company.")
    parser.add_argument("--rules", type=Path, default=REPO / "rules" / "default.yaml")
    args = parser.parse_args(argv)
    rules = load_rules(args.rules)
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
