"""A rule's evaluation looks only at the rows that can matter, and gives the same alerts.

On the small demo company (customers, deals and their rollups), every rule of the default file
whose metric needs no model is evaluated over eight weekly as_of dates, at its own threshold and
at its metric's median (about half the rows breach), carrying the alerts forward; the alerts,
states, messages, order and transitions equal those of the row-by-row evaluation.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

import engine.alerting.state as state
from engine.alerting.rules import RuleFile, load_rules
from engine.alerting.state import apply_rule
from engine.io import Tables, load_tables, write_data_dir
from engine.periods import data_end
from engine.synthetic import generate
from features.metrics import MetricContext, Providers
from features.metrics.alerting import METRIC_CATALOGUE, metric_source


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Tables:
    folder = Path(tmp_path_factory.mktemp("small")) / "data"
    write_data_dir(generate("small", seed=5), folder)
    return load_tables(folder)


def _variants(rules: RuleFile, frame: pd.DataFrame, index: int) -> list:
    group, rule = rules.rules[index]
    values = frame.loc[frame["scope"].isin(rule.scope), "value"].dropna()
    found = [(group, rule)]
    if not values.empty:
        found.append((group, rule.model_copy(update={"threshold": float(values.median())})))
    return found


def test_only_rows_that_matter_same_alerts(tables: Tables,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    rules = load_rules("rules/default.yaml", catalogue=METRIC_CATALOGUE)
    end = data_end(tables).date()
    prior: dict[tuple[int, int], dict] = {}
    customer_alerts = looked_at_fewer = 0
    for week in range(8, 0, -1):
        as_of = end - timedelta(days=7 * week)
        source = metric_source(MetricContext(tables, Providers()))
        for i, (_, rule) in enumerate(rules.rules):
            try:
                frame = source.frame(rule.metric, pd.Timestamp(as_of), rule.params)
            except source.unavailable:
                continue
            for v, (group, variant) in enumerate(_variants(rules, frame, i)):
                before = prior.get((i, v), {})
                fast = apply_rule(group, variant, frame, before, as_of, METRIC_CATALOGUE)
                with monkeypatch.context() as patched:
                    patched.setattr(state, "_worth_a_look", lambda rows, *_: rows)
                    slow = apply_rule(group, variant, frame, before, as_of, METRIC_CATALOGUE)
                assert fast == slow
                prior[(i, v)] = {a.fingerprint: a for a in fast[0]}
                scoped = frame[frame["scope"].isin(variant.scope)]
                kept = state._worth_a_look(scoped, variant, group, before, METRIC_CATALOGUE)
                looked_at_fewer += len(kept) < len(scoped)
                customer_alerts += sum(a.labels.get("scope") in ("customer", "opportunity")
                                       for a in fast[0])
    assert customer_alerts >= 50 and looked_at_fewer >= 50
