"""Seeded generator of a realistic demo company, any size.

The story, simulated week by week for every customer at once (vectorised over customers):

- Every customer has a hidden *health*. It wanders around a baseline, drops for a while after an
  incident, and drops for good when a decline sets in (a competitor, a budget cut) until a rare
  recovery.
- Health drives what the data shows: low health stretches the gaps between orders (each customer
  has its own repurchase cycle), shrinks order amounts, and raises complaints and tickets; it
  also makes invoices late and deals harder to win.
- The weekly churn hazard is a logistic function of those *observable* signals (recent
  complaints, days since the last order relative to the customer's own cycle, the fall in
  spend, being a new customer) plus a per-customer frailty, so some churners leave silently.
  After churning a customer places no more orders and has no more interactions.

Opportunities run through the stages with regressions, slip past their expected close date and
turn into orders when won; targets are set ex ante from last year's revenue. A warm-up year is
simulated before the data starts so that the first year has a previous year to plan from and
customers enter the data in a settled state. Everything is dated on or before ``end`` except the
forward-looking dates: expected close dates of open deals and due dates of invoices.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CHANNEL,
    CLOSE_DATE,
    COMPANY_KEY,
    CREATED_AT,
    CUSTOMER_ID,
    CUSTOMERS,
    DUE_DATE,
    ENTERED_AT,
    INTERACTIONS,
    INVOICE_ID,
    ISSUED_AT,
    KEY,
    KIND,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_REP,
    LEVEL_TEAM,
    MANAGER,
    OCCURRED_AT,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDER_ID,
    ORDERS,
    ORG,
    OWNER,
    PAID_AT,
    PERIOD,
    PRODUCT,
    RECEIVABLES,
    REGION,
    REP,
    SEGMENT,
    SEVERITY,
    STAGE,
    STAGE_HISTORY,
    STATUS,
    STATUS_LOST,
    STATUS_OPEN,
    STATUS_WON,
    TARGETS,
    TEAM,
)

__all__ = ["DEFAULT_END", "SIZES", "SizeSpec", "generate", "generate_blocks", "generate_with_truth"]

DEFAULT_END = date(2026, 11, 15)

# Extra opportunities column (beyond the contract): the expected close date when the deal was
# created, so that slippage can be learnt. Truth columns are only ever in the truth frame.
ORIGINAL_CLOSE_DATE = "original_close_date"
TRUTH_CHURNED = "churned"
TRUTH_CHURN_DATE = "churn_date"
TRUTH_CAUSE = "cause"
TRUTH_SIGNALS = "signals_before_churn"
TRUTH_DECLINE_DATE = "decline_date"
TRUTH_INCIDENTS = "incidents"
TRUTH_CYCLE = "cycle_days"
TRUTH_LATE_PAYER = "late_payer"
CAUSES = ("silent", "complaints", "stretching_gaps", "spend_decline", "new_customer")
TRUTH_LOGITS = tuple(f"logit_{c}" for c in CAUSES)


@dataclass(frozen=True)
class SizeSpec:
    """How big a company to simulate.

    Attributes:
        name: label of the size.
        customers: customers simulated (a few that churn in the warm-up year are not emitted).
        years: calendar years of data, the last one being the year of ``end``.
        regions: number of regions.
        teams_per_region: inclusive range of teams per region.
        reps_per_team: inclusive range of reps per team.
    """

    name: str
    customers: int
    years: int = 3
    regions: int = 4
    teams_per_region: tuple[int, int] = (2, 3)
    reps_per_team: tuple[int, int] = (3, 6)


SIZES: dict[str, SizeSpec] = {
    "small": SizeSpec("small", 600, 3, 2, (2, 2), (3, 4)),
    "medium": SizeSpec("medium", 4_000, 3, 4, (2, 3), (3, 6)),
    "large": SizeSpec("large", 210_000, 4, 6, (3, 4), (6, 10)),
}

# --- vocabularies ------------------------------------------------------------------------------
SEGMENTS = ("enterprise", "mid-market", "smb")
PRODUCTS = ("Platform", "Analytics", "Integrations", "Services", "Support")
CHANNELS = ("direct", "partner", "online")
STAGES = ("prospecting", "qualification", "proposal", "negotiation", "closed")
KINDS = ("complaint", "ticket", "visit", "call", "email", "meeting")
REGION_NAMES = ("North", "South", "East", "West", "Central", "Coastal", "Alpine", "Metro")
FIRST_NAMES = (
    "Anna", "Ben", "Clara", "David", "Elena", "Felix", "Grace", "Hugo", "Ines", "Jonas", "Kara",
    "Leon", "Maria", "Nils", "Olivia", "Paul", "Quinn", "Rosa", "Samir", "Tara", "Uma", "Victor",
    "Wanda", "Xavier", "Yara", "Zoe", "Aaron", "Bianca", "Carlos", "Dana", "Emil", "Fatima",
)
LAST_NAMES = (
    "Adler", "Berg", "Costa", "Dumont", "Eriksen", "Fischer", "Garcia", "Hansen", "Ito", "Jansen",
    "Kowalski", "Lopez", "Meyer", "Novak", "Okafor", "Petrov", "Quint", "Rossi", "Schmidt",
    "Tanaka", "Umar", "Vogel", "Weber", "Xu", "Young", "Zimmer", "Brandt", "Keller",
)

# --- segment parameters (rows: enterprise, mid-market, smb) ------------------------------------
_SEGMENT_SHARE = np.array([0.10, 0.30, 0.60])
_CYCLE_DAYS = np.array([6.0, 12.0, 25.0])  # median days between two orders
_ORDER_AMOUNT = np.array([8_000.0, 2_000.0, 400.0])  # median order amount
_DEAL_RATE = np.array([4.0, 1.5, 0.3])  # opportunities per customer and year
_DEAL_AMOUNT = np.array([120_000.0, 30_000.0, 6_000.0])
_DEAL_SEGMENT_LOGIT = np.array([-0.3, 0.0, 0.3])  # big buyers decide less often in our favour
_STAGE_DAYS = np.array([[21, 28, 35, 28], [10, 14, 18, 14], [4, 6, 8, 6]], dtype=float)
_PRODUCT_MIX = np.array(
    [[0.30, 0.25, 0.20, 0.15, 0.10], [0.35, 0.20, 0.15, 0.15, 0.15], [0.50, 0.15, 0.05, 0.10, 0.20]]
)
_CHANNEL_MIX = np.array([[0.85, 0.15, 0.0], [0.55, 0.30, 0.15], [0.15, 0.25, 0.60]])
_TERMS = np.array([30, 45, 60])
_TERMS_MIX = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.9, 0.1, 0.0]])
# Weekly interaction rates of a healthy customer: complaint, ticket, visit, call, email, meeting.
_INTERACTION_RATE = np.array(
    [
        [0.012, 0.050, 0.030, 0.100, 0.200, 0.050],
        [0.006, 0.020, 0.010, 0.040, 0.080, 0.015],
        [0.003, 0.008, 0.002, 0.015, 0.030, 0.003],
    ]
)

# --- calendar ----------------------------------------------------------------------------------
# Relative order rate by month: Q4 budget flush, summer dip, quarter-end pushes.
_MONTH_RATE = np.array([0.90, 0.92, 1.05, 0.97, 1.00, 1.03, 0.85, 0.80, 1.02, 1.08, 1.15, 1.20])
# Day-of-week weights (Mon..Sun) for interactions; orders move off weekends separately.
_WEEKDAY_WEIGHTS = np.array([0.20, 0.20, 0.20, 0.20, 0.17, 0.02, 0.01])
_WEEKEND_SHIFT = 0.9  # share of weekend orders booked on a workday instead
_PRICE_GROWTH = 0.03  # yearly price inflation on order amounts
_ARRIVAL_GROWTH = 0.10  # yearly growth of the rate at which new customers arrive
_INITIAL_SHARE = 0.45  # customers already on the books when the warm-up year starts
_INITIAL_DECLINING = 0.10  # of those, the share already in a decline (about the steady state)

# --- health and churn --------------------------------------------------------------------------
_HEALTHY = 0.6  # typical health; risk = _HEALTHY - health
_HEALTH_PULL = 0.08  # weekly mean reversion towards the (possibly declined) baseline
_HEALTH_NOISE = 0.12
_P_DECLINE = 0.0035  # per week (~17% of customers a year start a lasting decline)
_P_RECOVER = 0.01  # per week, for a declined customer
_P_INCIDENT = 0.004  # per week (~19% a year): temporary drop with a complaint burst
_GAP_SLOPE = 0.45  # gaps stretch by exp(slope * risk)
_SPEND_SLOPE = 0.35  # amounts shrink by exp(-slope * risk)
_COMPLAINT_SLOPE = 0.9
_COMPLAINT_DECAY = float(np.exp(-7 / 60))  # the observable complaint memory (~2 months)
_NEW_CUSTOMER_DAYS = 180
# Weekly churn logit = base + frailty + complaints + gaps + spend + new customer.
_HAZARD_BASE = -7.0
_HAZARD_COMPLAINTS = 1.3  # per log(1 + recent complaints)
_HAZARD_GAPS = 1.8  # per log(days since last order / own cycle), when above 1
_HAZARD_SPEND = 2.0  # per unit fall of the log spend (moving average)
_HAZARD_NEW = 0.7
_SIGNAL_MIN_LOGIT = 0.5  # a cause is named only when it adds at least this to the logit

# --- deals -------------------------------------------------------------------------------------
_STAGE_LOGIT = np.array([1.3, 0.9, 1.0, 0.7])  # advance from each open stage
_P_REGRESS = 0.08  # at proposal or negotiation, fall back one stage
_MAX_DEAL_STEPS = 14
_OWNER_IS_MANAGER = 0.9
_P_QUARTER_PULL = 0.35  # won deals early in a quarter that sales pulls into the previous one
_P_STALE = 0.05  # open, overdue deals whose close date nobody updated
_DEAL_LEAD_DAYS = 180  # deals of existing customers may start before the warm-up year

# --- targets and receivables -------------------------------------------------------------------
_GROWTH_GOAL = 1.06
_GOAL_NOISE = 0.15
_LATE_SHARE = 0.18
_BAD_DEBT = 0.35  # share of a churner's last invoices that are never paid


# === calendar ==================================================================================


@dataclass(frozen=True)
class _Calendar:
    """Days counted from ``origin`` (a Monday), so ``day % 7`` is the weekday."""

    origin: np.datetime64
    first_year: int
    data_start: int
    end: int

    @property
    def n_weeks(self) -> int:
        return self.end // 7 + 1

    def dates(self, days: np.ndarray) -> np.ndarray:
        """Days as ``datetime64[ns]`` dates."""
        return (self.origin + days.astype("timedelta64[D]")).astype("datetime64[ns]")

    def months(self, days: np.ndarray) -> np.ndarray:
        """Months since January of the warm-up year."""
        month = (self.origin + days.astype("timedelta64[D]")).astype("datetime64[M]")
        return month.astype(np.int64) - _month_number(self.first_year - 1, 1)



def _month_number(year: int, month: int) -> int:
    return (year - 1970) * 12 + month - 1


def _calendar(spec: SizeSpec, end: date) -> _Calendar:
    """Data from January of the first year; the warm-up year before; day 0 a Monday."""
    first_year = end.year - spec.years + 1
    warm_up = date(first_year - 1, 1, 1)
    origin = warm_up - timedelta(days=warm_up.weekday())
    return _Calendar(
        origin=np.datetime64(origin, "D"),
        first_year=first_year,
        data_start=(date(first_year, 1, 1) - origin).days,
        end=(end - origin).days,
    )


def _to_friday(days: np.ndarray) -> np.ndarray:
    """Weekend days to the Friday before; keeps the order of events (CRM updates, closes)."""
    days = np.asarray(days, dtype=np.int64)
    return days - np.maximum(days % 7 - 4, 0)


def _off_weekend(days: np.ndarray, rng: np.random.Generator, share: float = 1.0) -> np.ndarray:
    """Move a ``share`` of weekend days to a random workday of the same week (never later)."""
    days = np.asarray(days, dtype=np.int64)
    weekday = days % 7
    move = (weekday >= 5) & (rng.random(days.size) < share)
    return np.where(move, days - weekday + rng.integers(0, 5, days.size), days)


def _week_rates(cal: _Calendar) -> np.ndarray:
    """Seasonal order rate of each simulated week (month of its middle day)."""
    months = cal.months(np.arange(cal.n_weeks) * 7 + 3) % 12
    return _MONTH_RATE[months]


# === organisation ==============================================================================


@dataclass(frozen=True)
class _Org:
    frame: pd.DataFrame
    names: np.ndarray  # rep names (object)
    team: np.ndarray  # team index of each rep
    region: np.ndarray  # region index of each rep
    team_names: np.ndarray
    region_names: np.ndarray
    skill: np.ndarray  # win-rate logit of each rep
    care: np.ndarray  # account care: health bonus of the rep's customers
    optimism: np.ndarray  # planned / realistic deal duration
    pace: np.ndarray  # deal speed factor


def _people(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct human-looking names."""
    combos = len(FIRST_NAMES) * len(LAST_NAMES)
    picks = rng.permutation(max(combos, n))[:n]
    first = np.array(FIRST_NAMES, dtype=object)[picks % len(FIRST_NAMES)]
    last = np.array(LAST_NAMES, dtype=object)[(picks // len(FIRST_NAMES)) % len(LAST_NAMES)]
    names = first + " " + last
    extra = picks >= combos  # only for huge orgs: disambiguate with a number
    names[extra] = names[extra] + " " + (picks[extra] // combos + 1).astype(str).astype(object)
    return names


def _region_names(n: int) -> list[str]:
    return [REGION_NAMES[i] if i < len(REGION_NAMES) else f"Region {i + 1}" for i in range(n)]


def _org(spec: SizeSpec, rng: np.random.Generator) -> _Org:
    """Regions > teams (with a team lead as manager) > reps, each rep with hidden traits."""
    regions = _region_names(spec.regions)
    team_region: list[int] = []
    rep_team: list[int] = []
    team_names: list[str] = []
    for r, region in enumerate(regions):  # a handful of regions and teams
        for t in range(int(rng.integers(spec.teams_per_region[0], spec.teams_per_region[1] + 1))):
            team_names.append(f"{region} {chr(ord('A') + t)}")
            team_region.append(r)
            size = int(rng.integers(spec.reps_per_team[0], spec.reps_per_team[1] + 1))
            rep_team += [len(team_names) - 1] * size
    team = np.array(rep_team)
    people = _people(len(team) + len(team_names), rng)
    names, leads = people[: len(team)], people[len(team) :]
    region = np.array(team_region)[team]
    frame = pd.DataFrame({
        REP: names,
        TEAM: np.array(team_names, dtype=object)[team],
        REGION: np.array(regions, dtype=object)[region],
        MANAGER: leads[team],
    })
    n = len(team)
    return _Org(
        frame, names, team, region, np.array(team_names, dtype=object),
        np.array(regions, dtype=object), skill=rng.normal(0, 0.35, n),
        care=rng.normal(0, 0.15, n), optimism=rng.uniform(0.55, 0.95, n),
        pace=rng.lognormal(0, 0.2, n),
    )


# === customers =================================================================================


@dataclass(frozen=True)
class _Customers:
    segment: np.ndarray
    region: np.ndarray
    manager: np.ndarray  # rep index
    created: np.ndarray  # day (negative: before the warm-up year)
    cycle: np.ndarray  # own median days between orders
    shape: np.ndarray  # gamma shape of the gaps: regular (high) or erratic (low)
    amount: np.ndarray  # own median order amount
    mu: np.ndarray  # baseline health
    frailty: np.ndarray  # hidden churn propensity
    late: np.ndarray  # systematically late payer
    terms: np.ndarray  # payment terms in days
    channel: np.ndarray  # preferred channel index

    def __len__(self) -> int:
        return len(self.segment)


def _categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row of a (rows, k) probability matrix."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    return (u[:, None] >= cum).sum(axis=1).clip(0, probs.shape[1] - 1)


def _choice_by_group(group: np.ndarray, probs: np.ndarray, rng: np.random.Generator
                     ) -> np.ndarray:
    """One draw per row from ``probs[group]``, without a (rows, k) matrix (10M orders)."""
    out = np.empty(group.size, np.int8)
    for g in range(len(probs)):  # three segments
        rows = np.flatnonzero(group == g)
        out[rows] = rng.choice(probs.shape[1], size=rows.size, p=probs[g])
    return out


def _created_days(n: int, cal: _Calendar, rng: np.random.Generator) -> np.ndarray:
    """Sorted creation days: an initial book spread over ten years, then growing arrivals."""
    n0 = round(n * _INITIAL_SHARE)
    before = -rng.uniform(30, 3650, n0)
    g = _ARRIVAL_GROWTH / 365.0
    u = rng.random(n - n0)
    after = np.log1p(u * np.expm1(g * cal.end)) / g  # inverse CDF of an exp(g t) intensity
    days = _off_weekend(np.floor(np.concatenate([before, after])), rng)
    return np.sort(np.minimum(days, cal.end))


def _managers(region: np.ndarray, org: _Org, rng: np.random.Generator) -> np.ndarray:
    """An account manager in the customer's region; some reps carry bigger books."""
    manager = np.empty(len(region), dtype=np.int64)
    weight = rng.lognormal(0, 0.3, len(org.names))
    for r in range(len(org.region_names)):  # a handful of regions
        reps = np.flatnonzero(org.region == r)
        rows = np.flatnonzero(region == r)
        manager[rows] = rng.choice(reps, size=rows.size, p=weight[reps] / weight[reps].sum())
    return manager


def _customers(spec: SizeSpec, cal: _Calendar, org: _Org, rng: np.random.Generator
               ) -> _Customers:
    """Static traits: segment sets cadence and size, the account manager's care adds health."""
    n = spec.customers
    segment = rng.choice(len(SEGMENTS), size=n, p=_SEGMENT_SHARE)
    region_weight = rng.gamma(8.0, size=len(org.region_names))
    region = rng.choice(len(region_weight), size=n, p=region_weight / region_weight.sum())
    manager = _managers(region, org, rng)
    return _Customers(
        segment=segment,
        region=region,
        manager=manager,
        created=_created_days(n, cal, rng),
        cycle=_CYCLE_DAYS[segment] * rng.lognormal(0, 0.45, n),
        shape=rng.uniform(1.5, 8.0, n),
        amount=_ORDER_AMOUNT[segment] * rng.lognormal(0, 0.6, n),
        mu=_HEALTHY + rng.normal(0, 0.25, n) + org.care[manager],
        frailty=rng.normal(0, 0.5, n),
        late=rng.random(n) < _LATE_SHARE,
        terms=_TERMS[_categorical(_TERMS_MIX[segment], rng)],
        channel=_categorical(_CHANNEL_MIX[segment], rng),
    )


# === weekly simulation =========================================================================


@dataclass
class _Log:
    """Arrays appended week by week, concatenated once at the end."""

    parts: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, **arrays: np.ndarray) -> None:
        for name, values in arrays.items():
            self.parts.setdefault(name, []).append(values)

    def pop(self, name: str, dtype: type) -> np.ndarray:
        """The concatenated column; its chunks are released (the large size is memory-bound)."""
        chunks = self.parts.pop(name, [])
        return np.concatenate(chunks).astype(dtype, copy=False) if chunks else np.empty(0, dtype)


@dataclass
class _State:
    """Per-customer state of the weekly simulation."""

    alive: np.ndarray
    started: np.ndarray
    mu: np.ndarray  # current baseline health (drops with a decline)
    health: np.ndarray
    burst: np.ndarray  # complaint burst after an incident, decaying
    complaints: np.ndarray  # observable: decayed count of recent complaints
    spend: np.ndarray  # observable: moving average of log order amount vs. own median
    next_order: np.ndarray
    last_order: np.ndarray
    churn_day: np.ndarray
    decline_day: np.ndarray
    incidents: np.ndarray
    logits: np.ndarray  # hazard contributions at churn (or at the end for survivors)

    @classmethod
    def start(cls, cust: _Customers) -> _State:
        n = len(cust)

        def nan() -> np.ndarray:
            return np.full(n, np.nan)

        return cls(
            alive=np.zeros(n, bool), started=np.zeros(n, bool), mu=cust.mu.copy(),
            health=nan(), burst=np.zeros(n), complaints=np.zeros(n), spend=np.zeros(n),
            next_order=nan(), last_order=nan(), churn_day=np.full(n, np.inf),
            decline_day=nan(), incidents=np.zeros(n, np.int32),
            logits=np.zeros((n, len(CAUSES))),
        )


@dataclass
class _Simulation:
    state: _State
    orders: _Log
    interactions: _Log
    health: np.ndarray  # (snapshots, customers): health every 4 weeks, float32


def _activate(st: _State, cust: _Customers, d0: int, rng: np.random.Generator) -> None:
    """Customers created by the end of this week start ordering."""
    new = np.flatnonzero(~st.started & (cust.created < d0 + 7))
    if new.size == 0:
        return
    st.started[new] = st.alive[new] = True
    st.health[new] = st.mu[new] + rng.normal(0, 0.3, new.size)
    cycle = cust.cycle[new]
    booked = cust.created[new] < 0  # already a customer: somewhere inside its cycle
    first = np.where(booked, d0 + rng.random(new.size) * cycle,
                     cust.created[new] + rng.random(new.size) * 0.5 * cycle)
    st.next_order[new] = first
    st.last_order[new] = np.where(booked, first - cycle, cust.created[new])
    _decline_in_progress(st, new[booked], rng)


def _decline_in_progress(st: _State, booked: np.ndarray, rng: np.random.Generator) -> None:
    """Start part of the initial book mid-decline, as a book that had been running would be.

    Without this the warm-up year would be unusually healthy and the first year's targets,
    planned from it, too high.
    """
    hit = booked[rng.random(booked.size) < _INITIAL_DECLINING]
    drop = rng.uniform(1.5, 3.0, hit.size)
    st.mu[hit] -= drop
    st.health[hit] -= drop * rng.random(hit.size)
    st.decline_day[hit] = -np.floor(rng.uniform(0, 180, hit.size))


def _step_health(st: _State, cust: _Customers, a: np.ndarray, d0: int,
                 rng: np.random.Generator) -> None:
    """Declines (lasting), recoveries, incidents (temporary) and everyday noise."""
    u = rng.random((a.size, 3))
    decline = a[(u[:, 0] < _P_DECLINE) & (st.mu[a] > cust.mu[a] - 0.5)]
    st.mu[decline] -= rng.uniform(1.5, 3.0, decline.size)
    st.decline_day[decline] = np.fmin(st.decline_day[decline], d0)
    recover = a[(u[:, 1] < _P_RECOVER) & (st.mu[a] < cust.mu[a] - 0.5)]
    st.mu[recover] = cust.mu[recover]
    incident = a[u[:, 2] < _P_INCIDENT]
    size = rng.exponential(1.0, incident.size) + 0.5
    st.health[incident] -= size
    st.burst[incident] += 1.5 * size
    st.incidents[incident] += 1
    h = st.health[a]
    st.health[a] = h + _HEALTH_PULL * (st.mu[a] - h) + rng.normal(0, _HEALTH_NOISE, a.size)


def _interaction_rates(st: _State, cust: _Customers, a: np.ndarray) -> np.ndarray:
    """Weekly rate of each kind: complaints and tickets rise with risk, routine contact fades."""
    risk = _HEALTHY - st.health[a]
    rates = _INTERACTION_RATE[cust.segment[a]].copy()
    rates[:, 0] = rates[:, 0] * np.exp(_COMPLAINT_SLOPE * risk) + 0.6 * st.burst[a]
    rates[:, 1] = rates[:, 1] * np.exp(0.5 * risk) + 0.4 * st.burst[a]
    rates[:, 2:] *= np.exp(-0.25 * np.clip(risk, -1, 3))[:, None]
    return rates


def _severity(kind: np.ndarray, risk: np.ndarray, burst: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """1-4 for complaints and tickets (worse when at risk or after an incident), else empty."""
    noise = rng.normal(0, 0.7, kind.size)
    level = np.where(kind == 0, 1.5 + 0.45 * risk + 0.5 * burst, 1.3 + 0.25 * risk) + noise
    return np.where(kind <= 1, np.clip(np.rint(level), 1, 4), np.nan)


def _emit_interactions(st: _State, cust: _Customers, a: np.ndarray, d0: int,
                       rng: np.random.Generator, log: _Log) -> None:
    """This week's interactions; complaints feed the observable complaint memory."""
    rates = _interaction_rates(st, cust, a)
    total = rng.poisson(rates.sum(axis=1))  # one draw per customer, kinds split below
    rows = np.repeat(np.arange(a.size), total)
    kind = _categorical(rates[rows], rng)
    complaints = np.bincount(rows[kind == 0], minlength=a.size)
    severity = _severity(kind, _HEALTHY - st.health[a][rows], st.burst[a][rows], rng)
    st.complaints[a] = st.complaints[a] * _COMPLAINT_DECAY + complaints
    st.burst[a] *= 0.55
    day = d0 + rng.choice(7, size=rows.size, p=_WEEKDAY_WEIGHTS)
    log.add(cust=a[rows].astype(np.int32), day=day.astype(np.int32), kind=kind.astype(np.int8),
            severity=severity.astype(np.float32))


def _emit_orders(st: _State, cust: _Customers, a: np.ndarray, d0: int, season: float,
                 rng: np.random.Generator, log: _Log) -> None:
    """Every order due this week; the next gap is the own cycle, stretched by risk, jittered."""
    j = a[st.next_order[a] < d0 + 7]
    while j.size:  # a few rounds at most: the fastest cycles are a few days
        risk = _HEALTHY - st.health[j]
        mult = np.exp(-_SPEND_SLOPE * np.maximum(risk, -0.5)) * rng.lognormal(0, 0.45, j.size)
        log.add(cust=j.astype(np.int32), day=st.next_order[j].astype(np.int32),
                health=st.health[j].astype(np.float32), mult=mult.astype(np.float32))
        st.spend[j] = 0.75 * st.spend[j] + 0.25 * np.log(mult)
        st.last_order[j] = st.next_order[j]
        shape = cust.shape[j]
        stretch = np.exp(_GAP_SLOPE * np.maximum(risk, 0.0))
        gap = cust.cycle[j] * stretch / season * rng.gamma(shape) / shape
        st.next_order[j] += np.maximum(gap, 1.0)
        j = j[st.next_order[j] < d0 + 7]


def _hazard_logits(st: _State, cust: _Customers, a: np.ndarray, day: int) -> np.ndarray:
    """Weekly churn logit split by cause (columns as ``CAUSES``)."""
    recency = (day - st.last_order[a]) / cust.cycle[a]
    return np.column_stack([
        _HAZARD_BASE + cust.frailty[a],
        _HAZARD_COMPLAINTS * np.log1p(st.complaints[a]),
        _HAZARD_GAPS * np.log(np.maximum(recency, 1.0)),
        _HAZARD_SPEND * np.maximum(-st.spend[a], 0.0),
        _HAZARD_NEW * (day - cust.created[a] < _NEW_CUSTOMER_DAYS),
    ])


def _step_churn(st: _State, cust: _Customers, a: np.ndarray, d0: int,
                rng: np.random.Generator) -> None:
    """Who leaves this week, and why (the logit contributions are kept for the truth)."""
    logits = _hazard_logits(st, cust, a, d0 + 7)
    churn = rng.random(a.size) < 1.0 / (1.0 + np.exp(-logits.sum(axis=1)))
    c = a[churn]
    st.alive[c] = False
    # After the last order: nothing is ordered on or after the churn day.
    st.churn_day[c] = np.maximum(np.floor(d0 + rng.uniform(0, 7, c.size)),
                                 np.floor(st.last_order[c]) + 1)
    st.logits[c] = logits[churn]


def _simulate(cust: _Customers, cal: _Calendar, rng: np.random.Generator) -> _Simulation:
    """Run the weekly loop (a few hundred weeks, vectorised over customers)."""
    st = _State.start(cust)
    orders, interactions, snapshots = _Log(), _Log(), []
    for week, season in enumerate(_week_rates(cal)):
        d0 = week * 7
        _activate(st, cust, d0, rng)
        a = np.flatnonzero(st.alive)
        _step_health(st, cust, a, d0, rng)
        _emit_interactions(st, cust, a, d0, rng, interactions)
        _emit_orders(st, cust, a, d0, float(season), rng, orders)
        _step_churn(st, cust, a, d0, rng)
        if week % 4 == 0:
            snapshots.append(st.health.astype(np.float32))
    a = np.flatnonzero(st.alive)
    st.logits[a] = _hazard_logits(st, cust, a, cal.end)
    return _Simulation(st, orders, interactions, np.stack(snapshots))


def _health_at(sim: _Simulation, cust: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Health of customers at days (from the 4-weekly snapshots; NaN before they started)."""
    snap = np.clip(np.asarray(day, dtype=np.int64) // 28, 0, len(sim.health) - 1)
    h = sim.health[snap, cust].astype(float)
    return np.where(np.isnan(h), _HEALTHY, h)


# === opportunities =============================================================================


@dataclass
class _Deals:
    cust: np.ndarray
    owner: np.ndarray
    created: np.ndarray
    original_close: np.ndarray
    close: np.ndarray
    won: np.ndarray
    amount: np.ndarray
    product: np.ndarray
    h_deal: np.ndarray  # index into deals of each stage history row
    h_stage: np.ndarray
    h_day: np.ndarray


def _deal_owners(manager: np.ndarray, org: _Org, rng: np.random.Generator) -> np.ndarray:
    """Usually the account manager, otherwise a teammate."""
    owner = manager.copy()
    other = np.flatnonzero(rng.random(manager.size) >= _OWNER_IS_MANAGER)
    for t in range(len(org.team_names)):  # a few dozen teams
        rows = other[org.team[manager[other]] == t]
        owner[rows] = rng.choice(np.flatnonzero(org.team == t), size=rows.size)
    return owner


def _deal_starts(cust: _Customers, sim: _Simulation, cal: _Calendar, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(customer, created day) of every deal: a Poisson process over each customer's life."""
    start = np.maximum(cust.created, -_DEAL_LEAD_DAYS).astype(float)
    stop = np.minimum(sim.state.churn_day, cal.end)
    span = np.maximum(stop - start, 0.0)
    count = rng.poisson(_DEAL_RATE[cust.segment] * span / 365.25)
    who = np.repeat(np.arange(len(cust)), count)
    created = np.floor(start[who] + rng.random(who.size) * span[who])
    return who, _to_friday(created)


def _deal_logit(cust: _Customers, sim: _Simulation, org: _Org, who: np.ndarray,
                owner: np.ndarray, created: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Win propensity: rep skill, segment, customer health, smaller-than-usual deals."""
    seg = cust.segment[who]
    health = _health_at(sim, who, created)
    size = np.log(amount / (_DEAL_AMOUNT[seg] * np.sqrt(cust.amount[who] / _ORDER_AMOUNT[seg])))
    return org.skill[owner] + _DEAL_SEGMENT_LOGIT[seg] + 0.5 * (health - _HEALTHY) - 0.25 * size


def _deal_paths(seg: np.ndarray, logit: np.ndarray, pace: np.ndarray, created: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Walk every deal through the stages at once; returns close day, won, history rows."""
    m = seg.size
    stage = np.zeros(m, np.int64)
    day = created.astype(float)
    done, won = np.zeros(m, bool), np.zeros(m, bool)
    rows = [np.arange(m), stage.copy(), day.copy()]
    hist = [[r] for r in rows]
    for _ in range(_MAX_DEAL_STEPS):  # bounded: each step moves every open deal
        j = np.flatnonzero(~done)
        if j.size == 0:
            break
        s = stage[j]
        dur = _STAGE_DAYS[seg[j], s] * pace[j] * rng.lognormal(0, 0.6, j.size)
        regress = (s >= 2) & (rng.random(j.size) < _P_REGRESS)
        advance = ~regress & (rng.random(j.size) < 1 / (1 + np.exp(-logit[j] - _STAGE_LOGIT[s])))
        lost = ~regress & ~advance
        day[j] += np.where(lost, dur * rng.uniform(0.3, 1.2, j.size), dur)
        closing = advance & (s == 3)
        won[j[closing]] = True
        done[j[closing | lost]] = True
        moved = (advance & (s < 3)) | regress
        stage[j] += np.where(regress, -1, 1) * moved
        for h, values in zip(hist, (j[moved], stage[j[moved]], day[j[moved]]), strict=True):
            h.append(values)
    return day, won, [np.concatenate(h) for h in hist]


def _deals(cust: _Customers, sim: _Simulation, org: _Org, cal: _Calendar,
           rng: np.random.Generator) -> _Deals:
    """Every deal's customer, owner, amount, product, planned close and path."""
    who, created = _deal_starts(cust, sim, cal, rng)
    seg = cust.segment[who]
    owner = _deal_owners(cust.manager[who], org, rng)
    scale = np.sqrt(cust.amount[who] / _ORDER_AMOUNT[seg])  # bigger buyers, bigger deals
    amount = np.maximum(np.round(_DEAL_AMOUNT[seg] * scale * rng.lognormal(0, 0.6, who.size), -2),
                        100.0)
    logit = _deal_logit(cust, sim, org, who, owner, created, amount)
    close, won, (h_deal, h_stage, h_day) = _deal_paths(seg, logit, org.pace[owner], created, rng)
    planned = _STAGE_DAYS[seg].sum(axis=1) * org.optimism[owner] * rng.lognormal(0, 0.25, who.size)
    return _Deals(
        cust=who, owner=owner, created=created,
        original_close=_to_friday(np.floor(created + planned)),
        close=np.floor(close), won=won, amount=amount,
        product=_categorical(_PRODUCT_MIX[seg], rng),
        h_deal=h_deal, h_stage=h_stage, h_day=np.floor(h_day),
    )


def _lose_to_churn(deals: _Deals, churn_day: np.ndarray, rng: np.random.Generator) -> None:
    """A deal still running when its customer leaves is lost a few weeks later."""
    churn = churn_day[deals.cust]
    hit = churn <= deals.close
    deals.won[hit] = False
    deals.close[hit] = np.floor(churn[hit] + rng.uniform(0, 30, int(hit.sum())))


def _quarter_end_before(days: np.ndarray, cal: _Calendar) -> tuple[np.ndarray, np.ndarray]:
    """Days since the start of each day's quarter, and the last day of the quarter before."""
    d = cal.origin + days.astype("timedelta64[D]")
    month = d.astype("datetime64[M]")
    quarter_start = month - (month.astype(np.int64) % 3).astype("timedelta64[M]")
    offset = (d - quarter_start.astype("datetime64[D]")).astype(np.int64)
    last = (quarter_start.astype("datetime64[D]") - 1 - cal.origin).astype(np.int64)
    return offset, last


def _pull_to_quarter_end(deals: _Deals, cal: _Calendar, rng: np.random.Generator) -> None:
    """Sales pulls some wins from a quarter's first days into the previous quarter's end."""
    offset, last = _quarter_end_before(deals.close, cal)
    last_entry = np.full(deals.close.size, -np.inf)
    np.maximum.at(last_entry, deals.h_deal, deals.h_day)
    pull = deals.won & (offset < 10) & (rng.random(deals.close.size) < _P_QUARTER_PULL)
    friday = last - np.maximum(last % 7 - 4, 0)  # last workday of the quarter
    deals.close[pull] = np.maximum(friday[pull], last_entry[pull])


def _finish_deals(deals: _Deals, sim: _Simulation, cal: _Calendar, rng: np.random.Generator
                  ) -> None:
    """Churn losses, quarter-end pulls, workdays; history cut at the close (or the end)."""
    _lose_to_churn(deals, sim.state.churn_day, rng)
    deals.h_day = _to_friday(deals.h_day)
    deals.close = _to_friday(deals.close)
    _pull_to_quarter_end(deals, cal, rng)
    cut = np.minimum(deals.close, cal.end)[deals.h_deal]
    keep = deals.h_day <= cut
    closed = np.flatnonzero(deals.close <= cal.end)
    deals.h_deal = np.concatenate([deals.h_deal[keep], closed])
    deals.h_stage = np.concatenate([deals.h_stage[keep], np.full(closed.size, len(STAGES) - 1)])
    deals.h_day = np.concatenate([deals.h_day[keep], deals.close[closed]])


def _expected_close(deals: _Deals, cal: _Calendar, rng: np.random.Generator) -> np.ndarray:
    """Close date column: actual when closed; for open deals the current, pushed expectation."""
    open_ = deals.close > cal.end
    overdue = open_ & (deals.original_close <= cal.end)
    pushed = overdue & (rng.random(deals.close.size) >= _P_STALE)
    # Reps push an overdue deal to the end of a month within the next quarter or so.
    month_end_day = _pushed_month_end(np.full(deals.close.size, cal.end), cal, rng)
    expected = np.where(pushed, month_end_day, deals.original_close)
    return np.where(open_, expected, deals.close)


# === orders ====================================================================================


@dataclass
class _Orders:
    cust: np.ndarray
    day: np.ndarray
    amount: np.ndarray
    product: np.ndarray
    channel: np.ndarray
    deal: np.ndarray  # deal index, -1 for run-rate orders
    health: np.ndarray

    def take(self, rows: np.ndarray) -> _Orders:
        return _Orders(**{k: v[rows] for k, v in vars(self).items()})


def _price_index(days: np.ndarray) -> np.ndarray:
    return (1.0 + _PRICE_GROWTH) ** (days / 365.25)


def _run_rate_orders(sim: _Simulation, cust: _Customers, rng: np.random.Generator) -> _Orders:
    """Orders of the simulation: amounts, returns, products and channels."""
    who = sim.orders.pop("cust", np.int32)
    day = _off_weekend(sim.orders.pop("day", np.int32), rng, _WEEKEND_SHIFT)
    day = np.maximum(day, cust.created[who]).astype(np.int32)  # shifted, still after creation
    health = sim.orders.pop("health", np.float32)
    amount = cust.amount[who] * sim.orders.pop("mult", np.float32) * _price_index(day)
    # Returns and credit notes, more frequent for unhappy customers.
    returned = rng.random(who.size) < 0.025 * np.exp(0.4 * np.maximum(_HEALTHY - health, 0.0))
    amount[returned] *= -rng.uniform(0.1, 0.9, int(returned.sum()))
    channel = cust.channel[who].astype(np.int8)
    unusual = np.flatnonzero(rng.random(who.size) >= 0.8)
    channel[unusual] = rng.integers(0, len(CHANNELS), unusual.size)
    product = _choice_by_group(cust.segment[who], _PRODUCT_MIX, rng)
    return _Orders(who, day, amount, product, channel, np.full(who.size, -1, np.int32), health)


def _deal_orders(deals: _Deals, sim: _Simulation, cust: _Customers, cal: _Calendar) -> _Orders:
    """One order per won deal, on its close date, for the deal amount."""
    k = np.flatnonzero(deals.won & (deals.close <= cal.end))
    who = deals.cust[k]
    online = cust.channel[who] == CHANNELS.index("online")
    channel = np.where(online, CHANNELS.index("direct"), cust.channel[who])
    health = _health_at(sim, who, deals.close[k])
    return _Orders(who.astype(np.int32), deals.close[k].astype(np.int32), deals.amount[k],
                   deals.product[k].astype(np.int8), channel.astype(np.int8),
                   k.astype(np.int32), health.astype(np.float32))


def _all_orders(run_rate: _Orders, from_deals: _Orders) -> _Orders:
    """Run-rate and deal orders together, by day then customer (the order id order)."""
    merged = _Orders(**{
        k: np.concatenate([getattr(run_rate, k), getattr(from_deals, k)]) for k in vars(run_rate)
    })
    return merged.take(np.lexsort((merged.cust, merged.day)))


# === targets ===================================================================================


def _revenue_by_rep_month(orders: _Orders, deals: _Deals, cust: _Customers, cal: _Calendar,
                          n_reps: int, n_months: int) -> np.ndarray:
    """(reps, months since the warm-up January): deal orders to the owner, others to the AM."""
    owner = np.append(deals.owner, -1)  # index -1 (run-rate orders) lands on the sentinel
    rep = np.where(orders.deal >= 0, owner[orders.deal], cust.manager[orders.cust])
    month = cal.months(orders.day)
    ok = (month >= 0) & (month < n_months)  # the warm-up starts on the Monday before January
    flat = np.bincount(rep[ok] * n_months + month[ok], weights=orders.amount[ok],
                       minlength=n_reps * n_months)
    return flat.reshape(n_reps, n_months)


def _rep_month_targets(previous: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(reps, 12) targets in whole hundreds: last year times a noisy goal, split like last year."""
    annual_prev = previous.sum(axis=1)
    floor = 0.3 * np.median(annual_prev)  # a rep with a thin book still gets a real target
    goal = _GROWTH_GOAL * rng.lognormal(0, _GOAL_NOISE, len(annual_prev))
    annual = np.round(np.maximum(annual_prev, floor) * goal, -2)
    profile = np.maximum(previous.sum(axis=0), 0.0)
    share = np.cumsum(profile) / profile.sum()
    cumulative = np.round(annual[:, None] * share[None, :], -2)
    cumulative[:, -1] = annual
    return np.diff(cumulative, axis=1, prepend=0.0)


def _period_columns(year: int, monthly: np.ndarray) -> dict[str, np.ndarray]:
    """Year, quarter and month targets of one year from (nodes, 12) monthly targets."""
    columns = {str(year): monthly.sum(axis=1)}
    quarters = monthly.reshape(len(monthly), 4, 3).sum(axis=2)
    columns |= {f"{year}Q{q + 1}": quarters[:, q] for q in range(4)}
    columns |= {f"{year}-{m + 1:02d}": monthly[:, m] for m in range(12)}
    return columns


def _targets(revenue: np.ndarray, org: _Org, cal: _Calendar, last_year: int,
             rng: np.random.Generator) -> pd.DataFrame:
    """Bottom-up: rep targets in whole hundreds, so that teams, regions and company add up."""
    frames = []
    for y, year in enumerate(range(cal.first_year, last_year + 1)):  # a few years
        previous = revenue[:, 12 * y : 12 * (y + 1)]
        rep = _rep_month_targets(previous, rng)
        nodes = [
            (LEVEL_REP, org.names, rep),
            (LEVEL_TEAM, org.team_names, _sum_by(rep, org.team, len(org.team_names))),
            (LEVEL_REGION, org.region_names, _sum_by(rep, org.region, len(org.region_names))),
            (LEVEL_COMPANY, np.array([COMPANY_KEY], dtype=object), rep.sum(0, keepdims=True)),
        ]
        for level, keys, monthly in nodes:
            for period, amount in _period_columns(year, monthly).items():
                frames.append(pd.DataFrame({
                    PERIOD: period, LEVEL: level, KEY: keys, AMOUNT: amount,
                }))
    return pd.concat(frames, ignore_index=True)


def _sum_by(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    out = np.zeros((n_groups, values.shape[1]))
    np.add.at(out, group, values)
    return out


# === receivables ===============================================================================


def _receivables(orders: _Orders, cust: _Customers, churn_day: np.ndarray, cal: _Calendar,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Invoices for billed orders; late payers, unhappy customers and churners pay late or never.
    """
    billed = np.flatnonzero((orders.amount > 0) & (orders.channel != CHANNELS.index("online")))
    who, issued = orders.cust[billed], orders.day[billed]
    due = issued + cust.terms[who]
    late = cust.late[who]
    delay = np.where(late, rng.gamma(2.0, 12.0, who.size) + 3, -rng.uniform(0, 12, who.size))
    sometimes = ~late & (rng.random(who.size) < 0.1)
    delay[sometimes] = rng.gamma(1.5, 6.0, int(sometimes.sum()))
    delay += 8.0 * np.maximum(_HEALTHY - orders.health[billed], 0.0)
    paid = np.maximum(_off_weekend(np.floor(due + delay), rng), issued + 1).astype(float)
    bad_debt = (churn_day[who] - issued < 90) & (rng.random(who.size) < _BAD_DEBT)
    paid[(paid > cal.end) | bad_debt] = np.nan
    return {"row": billed, "due": due, "paid": paid}


# === frames ====================================================================================


def _ids(prefix: str, n: int, first: int = 0) -> np.ndarray:
    """``prefix`` + zero-padded first+1..first+n as strings (object array); Arrow is 3x faster
    than pandas."""
    width = max(len(str(first + n)), 6)
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(first + 1, first + n + 1)), pa.string()),
                          width, "0")
    ids = pc.binary_join_element_wise(prefix, digits, "")
    out = np.asarray(ids.to_numpy(zero_copy_only=False), dtype=object)
    del digits, ids
    pa.default_memory_pool().release_unused()  # Arrow's pool would keep the buffers
    return out


def _frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """A frame over the arrays as they are: no copy, no block consolidation."""
    return pd.DataFrame(columns, copy=False)


def _dates(cal: _Calendar, days: np.ndarray) -> np.ndarray:
    """Days as dates; NaN days become NaT."""
    days = np.asarray(days, dtype=float)
    out = cal.dates(np.nan_to_num(days).astype(np.int64))
    out[np.isnan(days)] = np.datetime64("NaT")
    return out


def _customer_frame(cust: _Customers, ids: np.ndarray, keep: np.ndarray, org: _Org,
                    cal: _Calendar) -> pd.DataFrame:
    return _frame({
        CUSTOMER_ID: ids[keep],
        ACCOUNT_MANAGER: org.names[cust.manager[keep]],
        REGION: org.region_names[cust.region[keep]],
        SEGMENT: np.array(SEGMENTS, dtype=object)[cust.segment[keep]],
        CREATED_AT: cal.dates(cust.created[keep]),
    })


def _order_frame(orders: _Orders, cust_ids: np.ndarray, deal_ids: np.ndarray, cal: _Calendar,
                 first: int = 0) -> pd.DataFrame:
    deal = np.full(orders.deal.size, None, dtype=object)
    linked = np.flatnonzero(orders.deal >= 0)
    deal[linked] = deal_ids[orders.deal[linked]]
    return _frame({
        ORDER_ID: _ids("O", len(orders.day), first),
        CUSTOMER_ID: cust_ids[orders.cust],
        ORDER_DATE: cal.dates(orders.day),
        AMOUNT: np.round(orders.amount, 2),
        PRODUCT: np.array(PRODUCTS, dtype=object)[orders.product],
        CHANNEL: np.array(CHANNELS, dtype=object)[orders.channel],
        OPPORTUNITY_ID: deal,
    })


def _opportunity_frame(deals: _Deals, rows: np.ndarray, deal_ids: np.ndarray,
                       cust_ids: np.ndarray, org: _Org, cal: _Calendar,
                       rng: np.random.Generator) -> pd.DataFrame:
    """Opportunities ``rows`` (in id order): last stage entered, status, dates."""
    order = _history_order(deals)
    last = np.append(deals.h_deal[order][1:] != deals.h_deal[order][:-1], True)
    last_stage = np.zeros(deals.close.size, np.int64)
    last_stage[deals.h_deal[order][last]] = deals.h_stage[order][last]
    open_ = deals.close > cal.end
    status = np.where(open_, STATUS_OPEN, np.where(deals.won, STATUS_WON, STATUS_LOST))
    close = _expected_close(deals, cal, rng)
    return _frame({
        OPPORTUNITY_ID: deal_ids[rows],
        OWNER: org.names[deals.owner[rows]],
        CREATED_AT: cal.dates(deals.created[rows]),
        CLOSE_DATE: cal.dates(close[rows]),
        STAGE: np.array(STAGES, dtype=object)[last_stage[rows]],
        STATUS: status[rows].astype(object),
        AMOUNT: deals.amount[rows],
        CUSTOMER_ID: cust_ids[deals.cust[rows]],
        PRODUCT: np.array(PRODUCTS, dtype=object)[deals.product[rows]],
        ORIGINAL_CLOSE_DATE: cal.dates(deals.original_close[rows]),
    })


def _where_object(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` where ``mask``, else ``None``."""
    out = np.full(mask.size, None, dtype=object)
    out[mask] = values[mask]
    return out


def _history_order(deals: _Deals) -> np.ndarray:
    """Stage history rows by deal and day; a close on the day of a stage change comes last."""
    return np.lexsort((deals.h_stage == len(STAGES) - 1, deals.h_day, deals.h_deal))


def _pushed_month_end(day: np.ndarray, cal: _Calendar, rng: np.random.Generator) -> np.ndarray:
    """The end of a month 5 to 80 days after ``day``: where reps push an overdue deal."""
    target = cal.origin + (day + rng.integers(5, 80, day.size)).astype("timedelta64[D]")
    month_end = (target.astype("datetime64[M]") + 1).astype("datetime64[D]") - 1
    return (month_end - cal.origin).astype(np.int64)


def _recorded_close(deals: _Deals, order: np.ndarray, cal: _Calendar,
                    rng: np.random.Generator) -> np.ndarray:
    """The expected close recorded at each stage change (history rows in ``order``).

    The planned close until it has passed; at a change after it, the rep pushes the deal to
    the end of a month ahead (except on stale deals nobody updates); the closing row records
    the actual close.
    """
    deal, day = deals.h_deal[order], deals.h_day[order]
    planned = deals.original_close[deal]
    stale = (rng.random(deals.close.size) < _P_STALE)[deal]
    expected = np.where((day >= planned) & ~stale, _pushed_month_end(day, cal, rng), planned)
    return np.where(deals.h_stage[order] == len(STAGES) - 1, deals.close[deal], expected)


def _history_frame(deals: _Deals, deal_ids: np.ndarray, cal: _Calendar,
                   rng: np.random.Generator) -> pd.DataFrame:
    order = _history_order(deals)
    order = order[pd.notna(deal_ids[deals.h_deal[order]])]
    return _frame({
        OPPORTUNITY_ID: deal_ids[deals.h_deal[order]],
        STAGE: np.array(STAGES, dtype=object)[deals.h_stage[order]],
        ENTERED_AT: cal.dates(deals.h_day[order]),
        CLOSE_DATE: cal.dates(_recorded_close(deals, order, cal, rng)),
    })


def _interaction_frame(sim: _Simulation, created: np.ndarray, cust_ids: np.ndarray,
                       cal: _Calendar) -> pd.DataFrame:
    """Interactions in the data window, within each customer's life (the simulation steps whole
    weeks, so its first and last week overhang)."""
    log = sim.interactions
    who, day = log.pop("cust", np.int32), log.pop("day", np.int32)
    alive = (day >= created[who]) & (day < sim.state.churn_day[who])
    keep = (day >= cal.data_start) & (day <= cal.end) & alive
    rows = np.flatnonzero(keep)
    rows = rows[np.lexsort((who[rows], day[rows]))]
    return _frame({
        CUSTOMER_ID: cust_ids[who[rows]],
        OCCURRED_AT: cal.dates(day[rows]),
        KIND: np.array(KINDS, dtype=object)[log.pop("kind", np.int8)[rows]],
        SEVERITY: log.pop("severity", np.float32)[rows].astype(np.float64),
    })


def _receivable_frame(orders: _Orders, bills: dict[str, np.ndarray], cust_ids: np.ndarray,
                      cal: _Calendar, first: int = 0) -> pd.DataFrame:
    rows = bills["row"]
    return _frame({
        INVOICE_ID: _ids("INV", rows.size, first),
        CUSTOMER_ID: cust_ids[orders.cust[rows]],
        ISSUED_AT: cal.dates(orders.day[rows]),
        DUE_DATE: cal.dates(bills["due"]),
        AMOUNT: np.round(orders.amount[rows], 2),
        PAID_AT: _dates(cal, bills["paid"]),
    })


def _truth_frame(sim: _Simulation, cust: _Customers, ids: np.ndarray, keep: np.ndarray,
                 cal: _Calendar) -> pd.DataFrame:
    st = sim.state
    churned = st.churn_day[keep] <= cal.end
    logits = st.logits[keep]
    signal = logits[:, 1:]
    cause = np.where(signal.max(axis=1) >= _SIGNAL_MIN_LOGIT, signal.argmax(axis=1) + 1, 0)
    frame = pd.DataFrame({
        CUSTOMER_ID: ids[keep],
        SEGMENT: np.array(SEGMENTS, dtype=object)[cust.segment[keep]],
        TRUTH_CHURNED: churned,
        TRUTH_CHURN_DATE: _dates(cal, np.where(churned, st.churn_day[keep], np.nan)),
        TRUTH_CAUSE: _where_object(churned, np.array(CAUSES, dtype=object)[cause]),
        TRUTH_SIGNALS: churned & (cause > 0),
        TRUTH_DECLINE_DATE: _dates(cal, np.where(st.decline_day[keep] <= cal.end,
                                                 st.decline_day[keep], np.nan)),
        TRUTH_INCIDENTS: st.incidents[keep],
        TRUTH_CYCLE: np.round(cust.cycle[keep], 1),
        TRUTH_LATE_PAYER: cust.late[keep],
    })
    for j, name in enumerate(TRUTH_LOGITS):
        frame[name] = np.round(logits[:, j], 3)
    return frame


# === public API ================================================================================


def _spec(size: str | SizeSpec) -> SizeSpec:
    """The spec of a size name (``ValueError`` for an unknown one)."""
    if isinstance(size, SizeSpec):
        return size
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}, expected one of {', '.join(SIZES)}")
    return SIZES[size]


def _rngs(seed: int, n: int) -> list[np.random.Generator]:
    """Independent streams per component, so changing one part leaves the others alone."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def _kept_ids(mask: np.ndarray, prefix: str, first: int = 0) -> np.ndarray:
    """Ids for the kept rows (in index order), ``None`` for the dropped ones."""
    ids = np.full(mask.size, None, dtype=object)
    ids[mask] = _ids(prefix, int(mask.sum()), first)
    return ids


@dataclass(frozen=True)
class _Company:
    """Everything simulated for a set of customers, before it is dressed as tables."""

    cal: _Calendar
    org: _Org
    cust: _Customers
    sim: _Simulation
    deals: _Deals
    orders: _Orders  # from the first day of the data
    revenue: np.ndarray  # (reps, months since the warm-up January), what targets are planned on


@dataclass(frozen=True)
class _Numbering:
    """Ids already given (customers, deals, orders, invoices): the next block continues."""

    customers: int = 0
    deals: int = 0
    orders: int = 0
    invoices: int = 0


def _simulate_customers(spec: SizeSpec, cal: _Calendar, org: _Org, end: date,
                        rngs: list[np.random.Generator]) -> _Company:
    """Customers, weekly simulation, deals, orders and their revenue by rep and month."""
    r_cust, r_sim, r_deal, r_ord = rngs
    cust = _customers(spec, cal, org, r_cust)
    sim = _simulate(cust, cal, r_sim)
    deals = _deals(cust, sim, org, cal, r_deal)
    _finish_deals(deals, sim, cal, r_deal)
    orders = _all_orders(_run_rate_orders(sim, cust, r_ord), _deal_orders(deals, sim, cust, cal))
    orders = orders.take(np.flatnonzero(orders.day <= cal.end))  # the last week runs past it
    n_months = 12 * (end.year - cal.first_year + 2)  # the warm-up year and the data years
    revenue = _revenue_by_rep_month(orders, deals, cust, cal, len(org.names), n_months)
    orders = orders.take(np.flatnonzero(orders.day >= cal.data_start))
    return _Company(cal, org, cust, sim, deals, orders, revenue)


def _deal_ids(c: _Company, kept_customers: np.ndarray, first: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Deals in the data (closed since the data start, or open), numbered by creation."""
    deals = c.deals
    rows = np.flatnonzero((deals.close >= c.cal.data_start) & kept_customers[deals.cust])
    rows = rows[np.argsort(deals.created[rows], kind="stable")]
    ids = np.full(deals.close.size, None, dtype=object)
    ids[rows] = _ids("D", rows.size, first)
    return rows, ids


def _tables(c: _Company, targets: pd.DataFrame | None, rngs: list[np.random.Generator],
            numbering: _Numbering = _Numbering()
            ) -> tuple[dict[str, pd.DataFrame], np.ndarray, _Numbering]:
    """The data directory's tables (the org and ``targets`` unless None), the customer ids by
    simulated customer (None: churned in the warm-up) and the ids given so far."""
    r_bill, r_out = rngs
    kept = c.sim.state.churn_day >= c.cal.data_start  # who churned in the warm-up is gone
    cust_ids = _kept_ids(kept, "C", numbering.customers)
    deal_rows, deal_ids = _deal_ids(c, kept, numbering.deals)
    bills = _receivables(c.orders, c.cust, c.sim.state.churn_day, c.cal, r_bill)
    tables = {
        ORDERS: _order_frame(c.orders, cust_ids, deal_ids, c.cal, numbering.orders),
        CUSTOMERS: _customer_frame(c.cust, cust_ids, kept, c.org, c.cal),
        OPPORTUNITIES: _opportunity_frame(c.deals, deal_rows, deal_ids, cust_ids, c.org, c.cal,
                                            r_out),
        STAGE_HISTORY: _history_frame(c.deals, deal_ids, c.cal, r_out),
        INTERACTIONS: _interaction_frame(c.sim, c.cust.created, cust_ids, c.cal),
    }
    if targets is not None:
        tables |= {ORG: c.org.frame, TARGETS: targets}
    tables[RECEIVABLES] = _receivable_frame(c.orders, bills, cust_ids, c.cal, numbering.invoices)
    given = _Numbering(numbering.customers + int(kept.sum()), numbering.deals + deal_rows.size,
                       numbering.orders + len(c.orders.day),
                       numbering.invoices + bills["row"].size)
    return tables, cust_ids, given


def generate_with_truth(size: str | SizeSpec = "small", seed: int = 42, end: date = DEFAULT_END
                        ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """A demo company and its hidden ground truth.

    Args:
        size: a key of :data:`SIZES` or a :class:`SizeSpec`.
        seed: same seed, identical frames.
        end: last date of the data.

    Returns:
        The tables by name (README, "Your data") and the truth, never written to a data
        directory: one row per customer with ``churned``, ``churn_date``, the main ``cause``,
        ``signals_before_churn``, the start of a decline, incidents, the own cycle, whether a
        late payer, and the churn-logit contributions (at churn, or at the end for the others).
    """
    r_org, r_cust, r_sim, r_deal, r_ord, r_tgt, r_bill, r_out = _rngs(seed, 8)
    spec = _spec(size)
    cal = _calendar(spec, end)
    org = _org(spec, r_org)
    c = _simulate_customers(spec, cal, org, end, [r_cust, r_sim, r_deal, r_ord])
    targets = _targets(c.revenue, org, cal, end.year, r_tgt)
    tables, cust_ids, _ = _tables(c, targets, [r_bill, r_out])
    kept = pd.notna(cust_ids)
    return tables, _truth_frame(c.sim, c.cust, cust_ids, kept, cal)


def generate(size: str | SizeSpec = "small", seed: int = 42, end: date = DEFAULT_END
             ) -> dict[str, pd.DataFrame]:
    """A seeded, deterministic demo company: the tables of a data directory by name.

    Args:
        size: ``small`` (tests), ``medium`` (the demo), ``large`` (benchmarks) or a
            :class:`SizeSpec`.
        seed: same seed, identical frames; another seed, another company.
        end: last date of the data (mid Q4 by default, so a quarter is in progress).
    """
    return generate_with_truth(size, seed, end)[0]


def generate_blocks(size: str | SizeSpec = "small", seed: int = 42, end: date = DEFAULT_END,
                    block: int | None = None) -> Iterator[dict[str, pd.DataFrame]]:
    """The demo company a block of customers at a time, in the memory of one block.

    The calendar, the org and the targets' random stream are the company's; each block of
    ``block`` customers (the last one what is left) is simulated on its own: the first on the
    streams of :func:`generate`, block ``b`` on streams seeded by ``(seed, b)``, so the company
    depends on the seed and the block size, never on the machine. Ids continue from block to
    block. With one block (``block`` None or at least ``size``'s customers) the tables are
    those of :func:`generate`.

    Yields:
        Each block's orders, customers, opportunities, stage_history, interactions and
        receivables, then a last dict with the org and the targets, planned bottom-up from
        every block's revenue.
    """
    spec = _spec(size)
    block = spec.customers if block is None else block
    if block < 1:
        raise ValueError(f"block must be a positive number of customers, got {block}")
    r_org, r_cust, r_sim, r_deal, r_ord, r_tgt, r_bill, r_out = _rngs(seed, 8)
    cal = _calendar(spec, end)
    org = _org(spec, r_org)
    revenue: np.ndarray | None = None
    numbering = _Numbering()
    for b, first in enumerate(range(0, spec.customers, block)):
        streams = ([r_cust, r_sim, r_deal, r_ord, r_bill, r_out] if b == 0 else
                   [np.random.default_rng(s) for s in np.random.SeedSequence([seed, b]).spawn(6)])
        part = replace(spec, customers=min(block, spec.customers - first))
        c = _simulate_customers(part, cal, org, end, streams[:4])
        revenue = c.revenue if revenue is None else revenue + c.revenue
        tables, _, numbering = _tables(c, None, streams[4:], numbering)
        del c
        yield tables
        del tables
    assert revenue is not None  # at least one customer block
    yield {ORG: org.frame, TARGETS: _targets(revenue, org, cal, end.year, r_tgt)}
