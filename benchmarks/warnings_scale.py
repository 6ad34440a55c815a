"""Warning evaluation at scale: the rule evaluation and inhibition, row by row against vectorised.

Issue 19 ("one machine, bounded memory"): customer- and deal-level rules built one dict, one
label set and one SHA-256 fingerprint per metric row, and inhibition compared every alert with
every firing alert. Now a rule looks only at the rows that breach or belong to a prior alert
(``engine.alerting.state._worth_a_look``) and the firing sources are indexed by the labels that
must be equal (``engine.alerting.mute.Inhibitor``). This measures both against the previous
behaviour, kept as references in the same run (``_worth_a_look`` bypassed, inhibition through
``mutes_pairwise``):

1. ``warnings evaluate`` as the CLI runs it (``engine.alerting.evaluate.evaluate``, the default
   rules, a fresh SQLite alert store per mode) on a generated company per size, at four weekly
   as_of dates; the metrics that need a trained model are skipped (no champion here), those
   computed from the data (pace, pipeline, complaints, receivables, stalled deals...) run. The
   metric frames are computed once (timed apart) and both modes evaluate the same ones; time is
   the CPU seconds of the rest (rules, muting, store) over three evaluations, peak the largest
   Python allocation (tracemalloc) during a fourth.
   ``--median`` also evaluates each rule at its metric's median (half the rows breach).
2. Inhibition alone: N target alerts against M firing sources (hierarchy and two inhibit
   rules), indexed against pairwise, the answers checked equal.

Run from the repository root (one benchmark at a time on a shared machine)::

    nice .venv/bin/python benchmarks/warnings_scale.py [--sizes small medium] [--median]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine.alerting.mute as mute_module
import engine.alerting.state as state_module
from engine.alerting.catalogue import MetricSource
from engine.alerting.evaluate import evaluate
from engine.alerting.rules import InhibitRule, RuleFile, load_rules
from engine.alerting.state import fingerprint
from engine.alerting.store import FIRING, PENDING, AlertInstance, AlertStore
from engine.io import Tables, load_tables, write_data_dir
from engine.periods import data_end
from engine.synthetic import SIZES, generate
from features.metrics import MetricContext, Providers
from features.metrics.alerting import METRIC_CATALOGUE, metric_source
from features.metrics.base import MetricUnavailable

MODES = ("row by row", "vectorised")


@contextmanager
def reference(mode: str) -> Iterator[None]:
    """The previous behaviour for ``row by row``: every row sampled, inhibition pairwise."""
    if mode == "vectorised":
        yield
        return
    look, mutes = state_module._worth_a_look, mute_module.Inhibitor.mutes
    state_module._worth_a_look = lambda rows, *_: rows
    mute_module.Inhibitor.mutes = mute_module.mutes_pairwise  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        state_module._worth_a_look = look
        mute_module.Inhibitor.mutes = mutes  # type: ignore[method-assign]


def at_medians(rules: RuleFile, tables: Tables, as_of: date) -> RuleFile:
    """Each rule at its metric's median at ``as_of``: about half its rows breach."""
    source = metric_source(MetricContext(tables, Providers()))
    groups = []
    for group in rules.groups:
        changed = []
        for rule in group.rules:
            try:
                frame = source.frame(rule.metric, pd.Timestamp(as_of), rule.params)
            except source.unavailable:
                changed.append(rule)
                continue
            values = frame.loc[frame["scope"].isin(rule.scope), "value"].dropna()
            changed.append(rule if values.empty else rule.model_copy(
                update={"threshold": float(values.median())}))
        groups.append(group.model_copy(update={"rules": changed}))
    return rules.model_copy(update={"groups": groups})


def frames_once(rules: RuleFile, tables: Tables, days: list[date]
                ) -> tuple[dict[tuple[Any, ...], pd.DataFrame | Exception], float]:
    """Every rule's metric frame at every day, computed once (both modes read the same ones)."""
    found: dict[tuple[Any, ...], pd.DataFrame | Exception] = {}
    started = time.process_time()
    for as_of in days:
        source = metric_source(MetricContext(tables, Providers()))
        for _, rule in rules.rules:
            try:
                found[(rule.alert, as_of)] = source.frame(rule.metric, pd.Timestamp(as_of),
                                                          rule.params)
            except source.unavailable as exc:
                found[(rule.alert, as_of)] = exc
    return found, time.process_time() - started


def cached_source(rules: RuleFile, frames: dict[tuple[Any, ...], pd.DataFrame | Exception],
                  as_of: date) -> MetricSource:
    by_metric = {(rule.metric, repr(sorted(rule.params.items()))): rule.alert
                 for _, rule in rules.rules}

    def frame(metric: str, at: pd.Timestamp, params: Any) -> pd.DataFrame:
        found = frames[(by_metric[(metric, repr(sorted(params.items())))], as_of)]
        if isinstance(found, Exception):
            raise found
        return found

    return MetricSource(METRIC_CATALOGUE, frame, MetricUnavailable)


def run_evaluations(rules: RuleFile, frames: dict[tuple[Any, ...], pd.DataFrame | Exception],
                    store: AlertStore, days: list[date]) -> dict[str, Any]:
    """``evaluate`` at each day on the precomputed frames: rules, muting and the store."""
    transitions = 0
    started = time.process_time()
    for as_of in days:
        transitions += len(evaluate(rules, cached_source(rules, frames, as_of), store,
                                    as_of).transitions)
    return {"rest": time.process_time() - started, "alerts": len(store.alerts()),
            "transitions": transitions}


def peak_mib(rules: RuleFile, frames: dict[tuple[Any, ...], pd.DataFrame | Exception],
             store: AlertStore, as_of: date) -> float:
    tracemalloc.start()
    try:
        evaluate(rules, cached_source(rules, frames, as_of), store, as_of)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def company(size: str, folder: Path, seed: int) -> Tables:
    """``small``/``medium``/``large``, or a number of customers (the ``large`` company's shape)."""
    if Path(size).is_dir():
        return load_tables(Path(size))
    spec = SIZES[size] if size in SIZES else replace(SIZES["large"], name=f"{size}-customers",
                                                       customers=int(size))
    write_data_dir(generate(spec, seed=seed), folder)
    return load_tables(folder)


def bench_company(size: str, seed: int, median: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        tables = company(size, Path(tmp) / "data", seed)
        end = data_end(tables).date()
        days = [end - timedelta(days=7 * k) for k in (4, 3, 2, 1)]
        rules = load_rules("rules/default.yaml", catalogue=METRIC_CATALOGUE)
        if median:
            rules = at_medians(rules, tables, days[0])
        print(f"\n{size} company ({tables['customers'].shape[0]:,} customers, generated and read "
              f"in {time.perf_counter() - started:.0f} s), rules at "
              f"{'their metric medians' if median else 'rules/default.yaml'}, "
              f"as_of {days[0]}..{days[-1]}, weekly")
        frames, metric_seconds = frames_once(rules, tables, days)
        print(f"  metric frames (computed once, read by both modes): {metric_seconds:.1f} s CPU")
        results = {}
        for mode in MODES:
            store = AlertStore(f"sqlite:///{tmp}/{mode.replace(' ', '-')}.db")
            with reference(mode):
                found = run_evaluations(rules, frames, store, days[:3])
                found["peak"] = peak_mib(rules, frames, store, days[3])
            found["states"] = sorted((a.rule, a.fingerprint, a.state, a.message)
                                     for a in store.alerts())
            results[mode] = found
            print(f"  {mode:<11} rules+muting+store {found['rest']:7.2f} s CPU for 3 "
                  "evaluations; peak "
                  f"{found['peak']:7.1f} MiB in a 4th; {found['alerts']} alerts, "
                  f"{found['transitions']} transitions")
        old, new = (results[m] for m in MODES)
        same = old["states"] == new["states"]
        print(f"  ratio row by row / vectorised: rules+muting+store "
              f"{old['rest'] / max(new['rest'], 1e-9):.1f}x, peak "
              f"{old['peak'] / max(new['peak'], 1e-9):.2f}x; same alerts, states and messages: "
              f"{same}")


def _alert(rng: random.Random, regions: int, state: str) -> AlertInstance:
    scopes = dict(METRIC_CATALOGUE.scope_labels)
    scope = rng.choice(["region", "team", "rep", "customer", "opportunity"])
    region = f"G{rng.randrange(regions)}"
    team = f"{region}T{rng.randrange(4)}"
    values = {"region": region, "team": team, "rep": f"{team}P{rng.randrange(8)}",
              "customer_id": f"C{rng.randrange(10**6)}",
              "opportunity_id": f"O{rng.randrange(10**6)}"}
    labels = {"alertname": f"R{rng.randrange(6)}", "scope": scope,
              "severity": rng.choice(["info", "warning", "critical"]),
              "concern": rng.choice(["plan", "churn", "receivables"]),
              **{k: values[k] for k in scopes[scope]}}
    return AlertInstance(labels["alertname"], fingerprint(labels), labels, state=state)


def bench_inhibition(targets: int, sources: int, seed: int) -> None:
    rng = random.Random(seed)
    rules = [InhibitRule.model_validate(
                 {"source_matchers": ['severity="critical"'],
                  "target_matchers": ['severity="warning"'], "equal": ["region", "concern"]}),
             InhibitRule.model_validate(
                 {"source_matchers": ['alertname=~"R[01]"'], "target_matchers": ['scope="rep"'],
                  "equal": ["region", "team"]})]
    alerts = [_alert(rng, 40, rng.choice([FIRING, PENDING])) for _ in range(targets)]
    firing = [_alert(rng, 40, FIRING) for _ in range(sources)]
    inhibitor = mute_module.Inhibitor(firing, rules, True, METRIC_CATALOGUE)
    timings = {}
    for mode, mutes in (("pairwise", lambda a: mute_module.mutes_pairwise(inhibitor, a)),
                        ("indexed", inhibitor.mutes)):
        started = time.process_time()
        answers = [mutes(a) for a in alerts]
        timings[mode] = (time.process_time() - started, answers)
    (old, first), (new, second) = timings.values()
    print(f"\ninhibition: {targets:,} alerts x {sources:,} firing sources: pairwise {old:.2f} s, "
          f"indexed {new:.3f} s CPU ({old / max(new, 1e-9):.0f}x); "
          f"{sum(map(bool, second)):,} muted; same answers: {first == second}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "medium"],
                        help="small, medium, large, a number of customers (large's shape) "
                             "or an imported data directory")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--median", action="store_true",
                        help="rules at their metric's median (half the rows breach)")
    parser.add_argument("--targets", type=int, default=20_000)
    parser.add_argument("--sources", type=int, default=200)
    args = parser.parse_args()
    bench_inhibition(args.targets, args.sources, args.seed)
    for size in args.sizes:
        bench_company(size, args.seed, args.median)


if __name__ == "__main__":
    main()
