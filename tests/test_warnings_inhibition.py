"""Inhibition indexed by the labels that must be equal gives the pairwise answer, fast."""

from __future__ import annotations

import random
import time

from engine.alerting.mute import Inhibitor, mutes_pairwise
from engine.alerting.rules import InhibitRule
from engine.alerting.state import fingerprint
from engine.alerting.store import FIRING, PENDING, AlertInstance
from features.metrics.alerting import METRIC_CATALOGUE

SCOPES = dict(METRIC_CATALOGUE.scope_labels)
RULES = [
    InhibitRule(source_matchers=['severity="critical"'], target_matchers=['severity="warning"'],
                equal=["region"]),
    InhibitRule(source_matchers=['alertname=~"R[01]"'], target_matchers=['scope="rep"'],
                equal=["region", "team", "concern"]),
    InhibitRule(source_matchers=['scope="product"'], equal=[]),  # any target, no equal labels
]


def random_alert(rng: random.Random, n_regions: int, states: tuple[str, ...] = (FIRING, PENDING)
                 ) -> AlertInstance:
    scope = rng.choice(list(SCOPES))
    rule = f"R{rng.randrange(4)}"
    region = f"G{rng.randrange(n_regions)}"
    team = f"{region}T{rng.randrange(3)}"
    rep = f"{team}P{rng.randrange(3)}"
    values = {"region": region, "team": team, "rep": rep,
              "customer_id": f"C{rng.randrange(50)}", "opportunity_id": f"O{rng.randrange(50)}",
              "product": f"X{rng.randrange(3)}"}
    labels = {"alertname": rule, "scope": scope,
              "severity": rng.choice(["info", "warning", "critical", "odd"]),
              **{k: values[k] for k in SCOPES[scope]}}
    concern = rng.choice(["", "plan", "churn", None])
    if concern is not None:
        labels["concern"] = concern
    return AlertInstance(rule, fingerprint(labels), labels, state=rng.choice(states))


def test_indexed_inhibition_matches_the_pairwise_reference() -> None:
    rng = random.Random(19)
    checked = muted = 0
    for case in range(60):
        alerts = [random_alert(rng, n_regions=2) for _ in range(rng.randrange(1, 40))]
        sources = [*alerts, *[random_alert(rng, 2) for _ in range(rng.randrange(0, 20))]]
        rules = rng.sample(RULES, rng.randrange(len(RULES) + 1))
        inhibitor = Inhibitor(sources, rules, by_hierarchy=case % 3 != 0,
                              catalogue=METRIC_CATALOGUE)
        for alert in alerts:
            expected = mutes_pairwise(inhibitor, alert)
            assert inhibitor.mutes(alert) == expected, (alert.labels, rules)
            checked += 1
            muted += bool(expected)
    assert checked > 1000 and 0.1 * checked < muted < 0.9 * checked  # both outcomes exercised


def test_inhibition_of_20000_alerts_by_200_sources_is_fast() -> None:
    rng = random.Random(7)
    targets = [random_alert(rng, n_regions=40) for _ in range(20_000)]
    sources = [random_alert(rng, n_regions=40, states=(FIRING,)) for _ in range(200)]
    inhibitor = Inhibitor(sources, RULES[:2], by_hierarchy=True, catalogue=METRIC_CATALOGUE)
    started = time.process_time()
    answers = [inhibitor.mutes(a) for a in targets]
    seconds = time.process_time() - started
    assert seconds < 1.0, seconds
    assert 1000 < sum(map(bool, answers)) < 19_000
    for alert, answer in list(zip(targets, answers, strict=True))[:500]:
        assert answer == mutes_pairwise(inhibitor, alert)
