"""Market shocks pushed through the feasibility simulation: baseline beside scenario.

A scenario (:class:`Scenario`, read from YAML by :func:`load_scenario`) lists shocks applied in
order, each limited by ``where`` to some deals, cells or customers:

- ``win_rate`` (``factor``): multiplies the in-period win probability of matching open deals
  (capped at 1); ``where`` may name the deal's ``stage`` or ``stage_from`` (that stage and the
  later ones; ``stage_from: late`` is the later half of the stages open deals are in);
- ``slip_days`` (``days``): pushes matching open deals' expected close date out; the win model
  is asked again with the new dates, and a deal pushed past the period end counts 0 (as every
  deal expected after the period does);
- ``deal_size`` (``factor``): multiplies matching open deals' amounts;
- ``run_rate`` (``factor``): multiplies the revenue not yet in the pipeline of matching cells
  (a rep with its team, region and any extra level such as ``segment``);
- ``churn`` (``factor``): multiplies matching customers' churn probabilities; the extra
  expected loss (a leaver loses on average half the rest of the period) comes off their
  account manager's run rate;
- ``lose``: matching customers buy nothing more: their open deals count 0 and their share of
  last year's revenue comes off their cells' run rate.

Everything is built once (:func:`models.feasibility.inputs.build_inputs`), the shocks change a
copy of the cell inputs (:func:`shock_inputs`) and both are simulated by
:func:`models.feasibility.simulation.simulate` with the same seed and one random stream per
deal: with no shock the scenario is the baseline exactly, and a shock on some deals moves only
the nodes those deals belong to (:func:`run_scenario`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from engine.io import Tables
from engine.periods import period_bounds
from engine.schemas import (
    AMOUNT,
    CHANNEL,
    CLOSE_DATE,
    CUSTOMER_ID,
    DS,
    KEY,
    LEVEL,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    PERIOD,
    PRODUCT,
    REGION,
    REP,
    SEGMENT,
    STAGE,
    TEAM,
)
from features.deals import period_features
from features.funnel import F_AGE, F_DAYS_TO_CLOSE, F_OVERDUE, F_STAGE, stage_order
from features.hierarchy import (
    UNASSIGNED,
    attribute_revenue,
    customer_column,
    customer_nodes,
    opportunity_nodes,
)
from models.churn import CHURN_PROBABILITY
from models.feasibility.inputs import CHURN_HORIZON_DAYS, build_inputs
from models.feasibility.run_rate import RestOfPeriod, day_number
from models.feasibility.simulation import (
    CLOSED_TO_DATE,
    EXPECTED,
    GAP,
    MUST_HIT,
    P10,
    P50,
    P90,
    P_ATTAIN,
    STRETCH,
    TARGET,
    CellInputs,
    Simulation,
    simulate,
    summarise,
)
from models.win import WIN_PROBABILITY

__all__ = [
    "COMPARED_COLUMNS",
    "EXPECTED_DELTA",
    "KINDS",
    "LATE",
    "P_ATTAIN_DELTA",
    "Scenario",
    "ScenarioError",
    "ScenarioRun",
    "Shock",
    "compare",
    "library",
    "load_scenario",
    "parse_scenario",
    "run_scenario",
    "scenario_levels",
    "shock_inputs",
]

Kind = Literal["win_rate", "slip_days", "deal_size", "run_rate", "churn", "lose"]
KINDS: tuple[str, ...] = ("win_rate", "slip_days", "deal_size", "run_rate", "churn", "lose")
STAGE_FROM = "stage_from"
LATE = "late"  # stage_from: late = the later half of the stages open deals are in
_DEAL_KINDS = frozenset({"win_rate", "slip_days", "deal_size"})
_CELL_KEYS = (REGION, TEAM, REP, PRODUCT, SEGMENT, CHANNEL)
# Levels a run_rate shock may need as cells (the hierarchy levels always are).
_EXTRA_CELL_KEYS = (PRODUCT, SEGMENT, CHANNEL)

COMPARED_COLUMNS = (TARGET, CLOSED_TO_DATE, P_ATTAIN, EXPECTED, P10, P50, P90, GAP, MUST_HIT,
                    STRETCH)
EXPECTED_DELTA = "expected_delta"
P_ATTAIN_DELTA = "p_attain_delta"
BASELINE, SCENARIO = "_baseline", "_scenario"
_LIBRARY_PACKAGE = "models.feasibility.scenarios"


class ScenarioError(ValueError):
    """A scenario that cannot be read or applied, in plain words (``file: field: why``)."""


# === the file =================================================================================


def _values(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    out = []
    for item in items:
        out.append(str(int(item)) if isinstance(item, float) and item.is_integer()
                   else str(item))
    return tuple(out)


# Bounds of a scenario, in files and in the service alike, small enough that any scenario the
# schema allows is a request body of a few tens of KiB (the service refuses larger ones): at
# most MAX_SHOCKS shocks, each limited by at most MAX_CONDITIONS conditions of at most MAX_NAMES
# names of at most MAX_NAME_LENGTH characters (no control characters).
MAX_SHOCKS = 6
MAX_CONDITIONS = 3
MAX_NAMES = 8
MAX_NAME_LENGTH = 40
MAX_TITLE_LENGTH = 100
MAX_DESCRIPTION_LENGTH = 500
NAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"  # tabs and line breaks allowed

Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH,
                                        pattern=NAME_PATTERN)] | int | float
Names = Name | Annotated[list[Name], Field(min_length=1, max_length=MAX_NAMES)]


def _no_null(schema: dict[str, Any]) -> None:
    """A condition is given or left out, never null: the documented schema says so."""
    schema["anyOf"] = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    schema.pop("default", None)


_Absent: Any = Field(default=None, json_schema_extra=_no_null)


class _Where(BaseModel):
    """Conditions that must all hold; a value or a list of values each."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False,
                              json_schema_extra={"maxProperties": MAX_CONDITIONS})

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            unknown = sorted(str(k) for k in value if k not in cls.model_fields)
            if unknown:
                raise ValueError(f"unknown where key {', '.join(unknown)}; expected one of "
                                 f"{', '.join(cls.model_fields)}")
            empty = sorted(str(k) for k, v in value.items() if v is None)
            if empty:
                raise ValueError(f"{', '.join(empty)}: no value (give one, or leave the key "
                                 "out)")
            if len(value) > MAX_CONDITIONS:
                raise ValueError(f"{len(value)} conditions; a where takes at most "
                                 f"{MAX_CONDITIONS} (split the shock in two)")
        return value


class CustomerWhere(_Where):
    """Which customers: by id, segment, or their account manager's rep, team or region."""

    customer_id: Names | None = _Absent
    segment: Names | None = _Absent
    region: Names | None = _Absent
    team: Names | None = _Absent
    rep: Names | None = _Absent


class CellWhere(_Where):
    """Which cells: a hierarchy node, or a product, segment or channel."""

    region: Names | None = _Absent
    team: Names | None = _Absent
    rep: Names | None = _Absent
    product: Names | None = _Absent
    segment: Names | None = _Absent
    channel: Names | None = _Absent


class DealWhere(CellWhere):
    """Which open deals: their owner's node, product, segment, channel, customer or stage
    (``stage_from``: that stage and the later ones; ``late``: the later half of the open
    deals' stages)."""

    customer_id: Names | None = _Absent
    stage: Names | None = _Absent
    stage_from: Name | None = _Absent


class _Shock(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @property
    def conditions(self) -> dict[str, tuple[str, ...]]:
        """``where`` with every value as a tuple of names."""
        where: BaseModel = getattr(self, "where")  # noqa: B009 (every shock has one)
        return {k: _values(v) for k, v in where.model_dump(exclude_none=True).items()}

    @property
    def size(self) -> float:
        """The factor, or the days of a slip (0 for lose)."""
        return float(getattr(self, "factor", None) or getattr(self, "days", None) or 0.0)

    def describe(self) -> str:
        kind = str(getattr(self, "kind"))  # noqa: B009
        what = (f"slip {int(self.size):+d} days" if kind == "slip_days"
                else kind if kind == "lose" else f"{kind} x{self.size:g}")
        where = ", ".join(f"{k}={'|'.join(v)}" for k, v in self.conditions.items())
        return f"{what} where {where}" if where else f"{what} everywhere"


Factor = Annotated[float, Field(ge=0, le=100, description="multiplier, 0 to 100")]


class WinRateShock(_Shock):
    """Multiplies the in-period win probability of matching open deals (capped at 1)."""

    kind: Literal["win_rate"]
    factor: Factor
    where: DealWhere = Field(default_factory=DealWhere)


class SlipShock(_Shock):
    """Pushes matching open deals' expected close date by ``days``."""

    kind: Literal["slip_days"]
    days: int = Field(ge=-3650, le=3650)
    where: DealWhere = Field(default_factory=DealWhere)


class DealSizeShock(_Shock):
    """Multiplies matching open deals' amounts."""

    kind: Literal["deal_size"]
    factor: Factor
    where: DealWhere = Field(default_factory=DealWhere)


class RunRateShock(_Shock):
    """Multiplies the revenue not yet in the pipeline of matching cells."""

    kind: Literal["run_rate"]
    factor: Factor
    where: CellWhere = Field(default_factory=CellWhere)


class ChurnShock(_Shock):
    """Multiplies matching customers' churn probabilities."""

    kind: Literal["churn"]
    factor: Factor
    where: CustomerWhere = Field(default_factory=CustomerWhere)


class LoseShock(_Shock):
    """Matching customers buy nothing more."""

    kind: Literal["lose"]
    where: CustomerWhere = Field(json_schema_extra={"minProperties": 1})

    @field_validator("where")
    @classmethod
    def _some(cls, value: CustomerWhere) -> CustomerWhere:
        if not value.model_dump(exclude_none=True):
            raise ValueError("a lose shock needs where (e.g. {customer_id: [C001, C002]})")
        return value


Shock = Annotated[WinRateShock | SlipShock | DealSizeShock | RunRateShock | ChurnShock
                  | LoseShock, Field(discriminator="kind")]


class Scenario(BaseModel):
    """A named list of shocks, applied in order."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_TITLE_LENGTH, pattern=NAME_PATTERN)
    description: str = Field(default="", max_length=MAX_DESCRIPTION_LENGTH, pattern=TEXT_PATTERN)
    shocks: list[Shock] = Field(default_factory=list, max_length=MAX_SHOCKS)


_UNION_MEMBERS = frozenset({"constrained-str", "str", "int", "float"})


def _is_member(part: Any) -> bool:
    return isinstance(part, str) and (part in _UNION_MEMBERS or part.startswith("list["))


def _field(loc: Sequence[Any]) -> str:
    """``shocks[0].factor`` from pydantic's location (the kind a union tried, and the member
    types a value was tried as, are left out)."""
    out = ""
    for i, part in enumerate(loc):
        if (part in KINDS and i > 0 and isinstance(loc[i - 1], int)) or _is_member(part):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top)"


def parse_scenario(raw: Any, source: str = "scenario") -> Scenario:
    """A scenario from its parsed YAML/JSON; :class:`ScenarioError` lists every problem as
    ``source: field: why``."""
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"{source}: expected a mapping with name and shocks, "
                            f"not {type(raw).__name__}")
    try:
        return Scenario.model_validate(dict(raw))
    except ValidationError as exc:
        lines = []
        for problem in exc.errors():
            given = problem.get("input")
            shown = f" ({given!r})" if isinstance(given, str | int | float) else ""
            message = str(problem["msg"]).removeprefix("Value error, ")
            where = _field(problem["loc"])
            if problem["type"] in ("union_tag_invalid", "union_tag_not_found"):
                where, message = f"{where}.kind", f"expected one of {', '.join(KINDS)}"
            elif any(_is_member(part) for part in problem["loc"]):
                names = (f"(a name: 1 to {MAX_NAME_LENGTH} characters, no control "
                         "characters)")
                message = (f"expected a name or a number {names}" if where.endswith(STAGE_FROM)
                           else "expected a name, a number or a non-empty list of them (at "
                                f"most {MAX_NAMES}) {names}")
            line = f"{source}: {where}: {message}{shown}"
            if line not in lines:
                lines.append(line)
        raise ScenarioError("\n".join(lines)) from None


def library() -> dict[str, Scenario]:
    """The ready scenarios shipped with quotacast, by name (the file name without .yaml)."""
    out = {}
    for entry in sorted(resources.files(_LIBRARY_PACKAGE).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            name = entry.name.removesuffix(".yaml")
            out[name] = parse_scenario(yaml.safe_load(entry.read_text(encoding="utf-8")),
                                       f"library scenario {name}")
    return out


def load_scenario(reference: str | Path) -> Scenario:
    """A library scenario by name (``budget-freeze``) or a YAML/JSON file."""
    text = str(reference)
    ready = library()
    if text in ready:
        return ready[text]
    path = Path(text)
    if not path.is_file():
        raise ScenarioError(f"{text}: no such scenario file, and not a library scenario "
                            f"(library: {', '.join(ready)})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{text}: not readable YAML ({str(exc).splitlines()[0]})") from None
    return parse_scenario(raw, text)


def scenario_levels(scenario: Scenario) -> list[str]:
    """Extra levels the cells must carry for the run-rate shocks' ``where``."""
    return sorted({key for shock in scenario.shocks if shock.kind == "run_rate"
                   for key in shock.conditions if key in _EXTRA_CELL_KEYS})


# === matching =================================================================================


def _text(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), UNASSIGNED).astype(str)


def _deal_attributes(tables: Tables, deals: pd.DataFrame) -> pd.DataFrame:
    """Per open deal: region, team, rep, product, segment, channel, customer_id, stage."""
    out = pd.DataFrame(index=deals.index)
    if deals.empty:
        return out.assign(**{k: pd.Series(dtype=object) for k in (*_CELL_KEYS, CUSTOMER_ID,
                                                                     STAGE)})
    nodes = opportunity_nodes(tables).drop_duplicates(OPPORTUNITY_ID).set_index(OPPORTUNITY_ID)
    for level in (REGION, TEAM, REP):
        out[level] = _text(deals[OPPORTUNITY_ID].map(nodes[level]))
    customers = deals.get(CUSTOMER_ID, pd.Series(np.nan, index=deals.index, dtype=object))
    out[CUSTOMER_ID] = _text(customers)
    for column in (PRODUCT, SEGMENT, CHANNEL):
        own = deals[column] if column in deals.columns else pd.Series(np.nan, deals.index)
        out[column] = _text(own.where(own.notna(), customer_column(tables, column, customers)))
    stage = deals[F_STAGE] if F_STAGE in deals.columns else deals.get(STAGE)
    out[STAGE] = _text(stage if stage is not None else pd.Series(np.nan, deals.index))
    return out


def _customer_attributes(tables: Tables) -> pd.DataFrame:
    """Per customer: customer_id, region, team, rep (its account manager's) and segment."""
    nodes = customer_nodes(tables).drop_duplicates(CUSTOMER_ID)
    out = pd.DataFrame({CUSTOMER_ID: _text(nodes[CUSTOMER_ID])}, index=nodes.index)
    for level in (REGION, TEAM, REP):
        out[level] = _text(nodes[level])
    out[SEGMENT] = _text(customer_column(tables, SEGMENT, nodes[CUSTOMER_ID]))
    return out.reset_index(drop=True)


def _late_stages(order: list[str], open_stages: Sequence[str]) -> list[str]:
    present = [s for s in order if s in set(open_stages)]
    return present[len(present) // 2:]


def _stage_set(value: str, order: list[str], open_stages: Sequence[str]) -> set[str]:
    if value in order:
        return set(order[order.index(value):])
    if value == LATE:
        return set(_late_stages(order, open_stages))
    raise ScenarioError(f"stage_from: unknown stage {value!r}; the data's stages in funnel order "
                        f"are {', '.join(order) or '(none)'} (or `late`)")


def _matches(attributes: pd.DataFrame, where: Mapping[str, tuple[str, ...]],
             stages: tuple[list[str], Sequence[str]] | None = None) -> np.ndarray:
    """Rows of ``attributes`` that every ``where`` condition holds for."""
    mask = np.ones(len(attributes), dtype=bool)
    for key, values in where.items():
        if key == STAGE_FROM:
            order, open_stages = stages if stages is not None else ([], [])
            wanted = _stage_set(values[0], order, open_stages)
            mask &= attributes[STAGE].isin(wanted).to_numpy()
        elif key == STAGE and stages is not None:
            unknown = [v for v in values if v not in stages[0]]
            if unknown and stages[0]:
                raise ScenarioError(f"stage: unknown stage {', '.join(unknown)}; the data's "
                                    f"stages are {', '.join(stages[0])}")
            mask &= attributes[STAGE].isin(values).to_numpy()
        elif key == CUSTOMER_ID and key in attributes.columns:
            mask &= attributes[key].isin(values).to_numpy()
        elif key in attributes.columns:  # names: any case (SMB matches smb)
            wanted_names = {v.casefold() for v in values}
            mask &= attributes[key].str.casefold().isin(wanted_names).to_numpy()
        else:
            mask &= False
    return mask


def _unmatched(attributes: pd.DataFrame, where: Mapping[str, tuple[str, ...]]) -> str:
    """``; nothing matches (segment: the data has a, b, c)``: what a where that matched nothing
    could have named."""
    hints = []
    for key in where:
        if key in attributes.columns and key not in (CUSTOMER_ID, STAGE_FROM):
            known = sorted(set(attributes[key]) - {UNASSIGNED})
            shown = ", ".join(known[:8]) + (f" and {len(known) - 8} more" if len(known) > 8
                                            else "")
            hints.append(f"{key}: the data has {shown or 'none'}")
    return "; nothing matches" + (f" ({'; '.join(hints)})" if hints else "")


# === applying the shocks ======================================================================


def _slipped_p(win_model: Any, deals: pd.DataFrame, days: np.ndarray, baseline_p: np.ndarray,
               start: pd.Timestamp, end: pd.Timestamp, as_of: pd.Timestamp) -> np.ndarray:
    """In-period win probabilities once the deals' expected closes moved by ``days``."""
    moved = days != 0
    if not moved.any():
        return baseline_p
    close = deals[CLOSE_DATE] + pd.to_timedelta(days, unit="D")
    frame = deals.assign(**{
        CLOSE_DATE: close,
        F_OVERDUE: (close < as_of).astype(float).where(close.notna()),
        F_DAYS_TO_CLOSE: (close - as_of) / pd.Timedelta(days=1),
    })
    frame = frame.assign(**period_features(frame, start, end, as_of))
    predicted = win_model.predict_frame(frame)[WIN_PROBABILITY].to_numpy(dtype=float)
    predicted = np.where((close >= end).to_numpy(), 0.0, np.clip(predicted, 0.0, 1.0))
    return np.where(moved, predicted, baseline_p)


def _cell_attributes(inputs: CellInputs) -> pd.DataFrame:
    return inputs.cells.astype(str)


def _cell_of_events(inputs: CellInputs, events: pd.DataFrame) -> np.ndarray:
    columns = list(inputs.cells.columns)
    keys = pd.DataFrame({c: _text(events[c]) if c in events.columns
                         else pd.Series(UNASSIGNED, index=events.index) for c in columns})
    index = pd.MultiIndex.from_frame(inputs.cells[columns].astype(str))
    return index.get_indexer(pd.MultiIndex.from_frame(keys))


def _recent_events(tables: Tables, inputs: CellInputs, as_of: pd.Timestamp) -> pd.DataFrame:
    extra = [c for c in inputs.cells.columns if c not in (REP, TEAM, REGION)]
    events = attribute_revenue(tables, as_of=as_of, columns=extra)
    return events[events[DS] >= as_of - pd.Timedelta(days=365)]


def _base_churn(tables: Tables, scores: pd.DataFrame | None, customers: pd.Index,
                as_of: pd.Timestamp, horizon_days: int) -> tuple[pd.Series, str]:
    """Each customer's churn probability over ``horizon_days``: the scores, else the share of
    the customers who bought in the horizon before last that did not buy in the last one."""
    if scores is not None and len(scores):
        p = scores.assign(**{CUSTOMER_ID: _text(scores[CUSTOMER_ID])}).drop_duplicates(
            CUSTOMER_ID).set_index(CUSTOMER_ID)[CHURN_PROBABILITY].astype(float).clip(0, 1)
        p = p.reindex(customers)
        return p.fillna(float(p.mean()) if p.notna().any() else 0.0), "the churn scores"
    events = attribute_revenue(tables, as_of=as_of, columns=[])
    horizon = pd.Timedelta(days=horizon_days)
    before = set(_text(events.loc[(events[DS] >= as_of - 2 * horizon)
                                  & (events[DS] < as_of - horizon), CUSTOMER_ID]))
    last = set(_text(events.loc[events[DS] >= as_of - horizon, CUSTOMER_ID]))
    rate = len(before - last) / len(before) if before else 0.0
    return (pd.Series(rate, index=customers),
            f"no churn scores, so the observed {horizon_days}-day churn rate ({rate:.0%})")


@dataclass
class _Context:
    tables: Tables
    inputs: CellInputs
    deals: pd.DataFrame
    win_model: Any
    as_of: pd.Timestamp
    start: pd.Timestamp
    end: pd.Timestamp
    churn: pd.DataFrame | None
    churn_horizon_days: int
    notes: list[str] = field(default_factory=list)
    _cache: dict[str, Any] = field(default_factory=dict)

    def deal_attributes(self) -> pd.DataFrame:
        if "deals" not in self._cache:
            self._cache["deals"] = _deal_attributes(self.tables, self.deals)
        return self._cache["deals"]

    def customers(self) -> pd.DataFrame:
        if "customers" not in self._cache:
            self._cache["customers"] = _customer_attributes(self.tables)
        return self._cache["customers"]

    def stages(self) -> tuple[list[str], list[str]]:
        """Stages in funnel order and the stages open deals are in.

        Without stage changes to infer the order from (no ``stage_history``), the open deals'
        stages are ordered by their average age: deals further down the funnel are older."""
        if "stages" not in self._cache:
            order = (stage_order(self.tables, self.as_of) if self.tables.has(OPPORTUNITIES)
                     else [])
            stages = self.deal_attributes()[STAGE]
            open_stages = sorted(set(stages) - {UNASSIGNED})
            if not order and open_stages:
                age = (self.deals[F_AGE] if F_AGE in self.deals.columns
                       else pd.Series(0.0, index=self.deals.index))
                mean_age = age.groupby(stages.to_numpy()).mean()
                order = sorted(open_stages, key=lambda s: (float(mean_age.get(s, 0.0)), s))
                self.notes.append("stages: the data has no stage changes to order stages by; "
                                  "the open deals' stages are ordered by their average age: "
                                  + " < ".join(order))
            self._cache["stages"] = (order, open_stages)
        return self._cache["stages"]

    def recent(self) -> pd.DataFrame:
        if "recent" not in self._cache:
            self._cache["recent"] = _recent_events(self.tables, self.inputs, self.as_of)
        return self._cache["recent"]


def _money(value: float) -> str:
    return f"{value:,.0f}"


def shock_inputs(tables: Tables, period: str, as_of: pd.Timestamp | str, scenario: Scenario,
                 inputs: CellInputs, deals: pd.DataFrame | None, win_model: Any, *,
                 churn: pd.DataFrame | None = None,
                 churn_horizon_days: int = CHURN_HORIZON_DAYS) -> tuple[CellInputs, list[str]]:
    """The cell inputs under the scenario's shocks, and a note per shock on what it touched.

    Args:
        tables, period, as_of: as given to :func:`build_inputs`.
        scenario: the shocks.
        inputs: the baseline cell inputs.
        deals: the open-deal frame the win model was asked about while building ``inputs``
            (same rows, same order as ``inputs.deal_p``).
        win_model: the win model (asked again for slipped deals).
        churn: the churn scores the baseline used, if any.
        churn_horizon_days: their horizon.

    Raises:
        ScenarioError: a stage the data does not have.
    """
    as_of = pd.Timestamp(as_of)
    start, end = period_bounds(period)
    deals = deals if deals is not None else pd.DataFrame(index=pd.RangeIndex(0))
    if len(deals) != len(inputs.deal_p):
        raise AssertionError("the recorded deals do not match the cell inputs")
    deals = deals.reset_index(drop=True)
    ctx = _Context(tables, inputs, deals, win_model, as_of, start, end, churn,
                   churn_horizon_days)
    p = inputs.deal_p.astype(float).copy()
    amount = inputs.deal_amount.astype(float).copy()
    share = inputs.share_cell.astype(float).copy()
    churn_rep = inputs.churn_rep.astype(float).copy()
    factor = np.ones(len(p))
    lost = np.zeros(len(p), dtype=bool)
    slip = np.zeros(len(p))
    notes: list[str] = []
    window = RestOfPeriod(day_number(as_of), day_number(start), day_number(end))
    for number, shock in enumerate(scenario.shocks, start=1):
        label = f"shock {number} ({shock.describe()})"
        if shock.kind in _DEAL_KINDS:
            if not len(p):
                why = ("the data has no opportunities" if not tables.has(OPPORTUNITIES)
                       else f"no deal is open at {as_of.date()}")
                notes.append(f"{label}: no open deal to change ({why}); nothing changes")
                continue
            match = _matches(ctx.deal_attributes(), shock.conditions, ctx.stages())
            counted = match & (inputs.deal_p > 0)
            if not match.any():
                notes.append(f"{label}: 0 open deals"
                             + _unmatched(ctx.deal_attributes(), shock.conditions))
                continue
            if shock.kind == "win_rate":
                factor[match] *= shock.size
                notes.append(f"{label}: {match.sum():,} open deals, {counted.sum():,} of them "
                             f"counted in {period} (expected wins "
                             f"{_money(float((inputs.deal_p * amount)[counted].sum()))})")
            elif shock.kind == "deal_size":
                amount[match] *= shock.size
                notes.append(f"{label}: {match.sum():,} open deals")
            else:
                slip[match] += shock.size
                dated = match & deals[CLOSE_DATE].notna().to_numpy()
                undated = int(match.sum() - dated.sum())
                notes.append(f"{label}: {dated.sum():,} open deals moved"
                             + (f"; {undated:,} have no expected close date and do not move"
                                if undated else ""))
        elif shock.kind == "run_rate":
            cells = _matches(_cell_attributes(inputs), shock.conditions)
            if not cells.any():
                notes.append(f"{label}: 0 cells" + _unmatched(_cell_attributes(inputs),
                                                               shock.conditions))
                continue
            share[cells] *= shock.size
            reps = len(set(inputs.rep_of_cell[cells]))
            notes.append(f"{label}: {cells.sum():,} cells of {reps:,} reps"
                         + ("" if window.length > 0 else
                            f"; nothing is left of {period} to run at that rate"))
        elif shock.kind == "churn":
            notes.append(_churn_shock(ctx, shock, churn_rep, window.length, label))
        else:  # lose
            customers = ctx.customers()
            conditions = shock.conditions
            gone = set(customers.loc[_matches(customers, conditions), CUSTOMER_ID])
            if set(conditions) == {CUSTOMER_ID}:  # also customers known only by their deals
                gone |= set(conditions[CUSTOMER_ID])
            if len(p):
                deal_lost = ctx.deal_attributes()[CUSTOMER_ID].isin(gone).to_numpy()
                lost |= deal_lost
            else:
                deal_lost = np.zeros(0, dtype=bool)
            recent = ctx.recent()
            cell = _cell_of_events(inputs, recent)
            positive = np.maximum(recent[AMOUNT].to_numpy(dtype=float), 0.0)
            ok = cell >= 0
            total = np.bincount(cell[ok], positive[ok], len(share))
            mine = ok & _text(recent[CUSTOMER_ID]).isin(gone).to_numpy()
            theirs = np.bincount(cell[mine], positive[mine], len(share))
            fraction = np.where(total > 0, theirs / np.where(total > 0, total, 1.0), 0.0)
            share *= 1.0 - fraction
            notes.append(f"{label}: {len(gone & set(customers[CUSTOMER_ID])):,} customers "
                         f"({_money(float(theirs.sum()))} of last year's revenue), "
                         f"{deal_lost.sum():,} open deals"
                         + (_unmatched(customers, conditions) if not gone else ""))
    p = np.minimum(_slipped_p(win_model, deals, slip, p, start, end, as_of) * factor, 1.0)
    p = np.where(lost, 0.0, p)
    notes[:0] = ctx.notes
    shocked = replace(inputs, deal_p=p, deal_amount=amount, share_cell=share,
                      churn_rep=churn_rep, notes=list(inputs.notes))
    return shocked, notes


def _churn_shock(ctx: _Context, shock: Shock, churn_rep: np.ndarray, window_days: int,
                 label: str) -> str:
    """Apply one churn shock to ``churn_rep`` (in place); the note saying what it did."""
    if window_days <= 0:
        return f"{label}: nothing is left of the period to lose"
    customers = ctx.customers()
    chosen = customers[_matches(customers, shock.conditions)]
    if chosen.empty:
        return f"{label}: 0 customers" + _unmatched(customers, shock.conditions)
    recent = ctx.recent()
    unlinked = recent[recent[OPPORTUNITY_ID].isna()]
    revenue = (unlinked.groupby(_text(unlinked[CUSTOMER_ID]))[AMOUNT].sum()
               * window_days / 365.0)
    revenue = revenue[revenue.index.isin(set(chosen[CUSTOMER_ID])) & (revenue > 0)]
    if revenue.empty:
        return f"{label}: no matching customer with run-rate revenue; nothing changes"
    base, source = _base_churn(ctx.tables, ctx.churn, revenue.index, ctx.as_of,
                               ctx.churn_horizon_days)
    shocked = (base * shock.size).clip(0.0, 1.0)
    exponent = window_days / ctx.churn_horizon_days
    loss = ((1 - (1 - shocked) ** exponent) - (1 - (1 - base) ** exponent)) * revenue / 2.0
    owner = chosen.drop_duplicates(CUSTOMER_ID).set_index(CUSTOMER_ID)[REP]
    codes = pd.Index(ctx.inputs.reps.astype(str)).get_indexer(
        pd.Index(loss.index.to_series().map(owner).fillna(UNASSIGNED)))
    ok = codes >= 0
    churn_rep -= np.bincount(codes[ok], loss.to_numpy()[ok], len(churn_rep))
    return (f"{label}: {len(revenue):,} customers with run-rate revenue, from {source}; "
            f"expected run rate {-loss.sum():+,.0f}")


# === the run ==================================================================================


@dataclass
class ScenarioRun:
    """A scenario beside its baseline, from the same inputs and the same seed.

    Attributes:
        frame: :func:`compare` of the two feasibility frames.
        baseline, scenario: the feasibility frames.
        simulations: the baseline's and the scenario's draws.
        notes: how the baseline was made, then what each shock touched.
    """

    frame: pd.DataFrame
    baseline: pd.DataFrame
    scenario: pd.DataFrame
    simulations: tuple[Simulation, Simulation]
    notes: list[str]


def run_scenario(tables: Tables, period: str, as_of: pd.Timestamp | str, scenario: Scenario,
                 win_model: Any, *, churn: pd.DataFrame | None = None, draws: int = 10_000,
                 seed: int = 42, levels: Sequence[str] | None = None, all_nodes: bool = True,
                 churn_horizon_days: int = CHURN_HORIZON_DAYS,
                 threads: int | None = None) -> ScenarioRun:
    """``scenario`` pushed through the feasibility simulation of ``period`` as of ``as_of``.

    The inputs are built once (:func:`build_inputs`), shocked (:func:`shock_inputs`) and both
    simulated with ``seed`` and one random stream per deal; every deal is drawn exactly.

    Raises:
        ScenarioError: the scenario names a stage the data does not have.
        ValueError: the period or ``as_of`` cannot be simulated (from the engine).
    """
    as_of = pd.Timestamp(as_of)
    wanted = sorted({*(levels or []), *scenario_levels(scenario)})
    inputs = build_inputs(tables, period, as_of, win_model, churn=churn, levels=wanted,
                          churn_horizon_days=churn_horizon_days)
    shocked, notes = shock_inputs(tables, period, as_of, scenario, inputs, inputs.deal_frame,
                                  win_model, churn=churn, churn_horizon_days=churn_horizon_days)
    targets = tables.targets()
    simulations = tuple(simulate(i, draws=draws, seed=seed, threads=threads,
                                 per_deal_streams=True) for i in (inputs, shocked))
    baseline, shocked_frame = (summarise(s, targets, period, as_of, all_nodes=all_nodes)
                               for s in simulations)
    return ScenarioRun(compare(baseline, shocked_frame), baseline, shocked_frame,
                       (simulations[0], simulations[1]),
                       [*baseline.attrs.get("notes", []), *notes])


def compare(baseline: pd.DataFrame, scenario: pd.DataFrame) -> pd.DataFrame:
    """Per node: each feasibility column as ``<col>_baseline`` and ``<col>_scenario``, then
    ``expected_delta`` and ``p_attain_delta`` (scenario minus baseline)."""
    keys = [PERIOD, LEVEL, KEY]
    left = baseline[[*keys, *COMPARED_COLUMNS]]
    right = scenario[[*keys, *COMPARED_COLUMNS]]
    merged = left.merge(right, on=keys, how="outer", suffixes=(BASELINE, SCENARIO), sort=False)
    columns = [*keys, *(f"{c}{s}" for c in COMPARED_COLUMNS for s in (BASELINE, SCENARIO))]
    out = merged[columns].copy()
    out[EXPECTED_DELTA] = out[f"{EXPECTED}{SCENARIO}"] - out[f"{EXPECTED}{BASELINE}"]
    out[P_ATTAIN_DELTA] = out[f"{P_ATTAIN}{SCENARIO}"] - out[f"{P_ATTAIN}{BASELINE}"]
    return out.reset_index(drop=True)


def is_close(a: float, b: float) -> bool:
    """Equal within float noise (used by summaries that say "unchanged")."""
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-6)

