"""A node with nothing in the period (no revenue dated in it, no open deal, no run rate) says
so on its board page instead of showing a fan and a table of zeros without a word."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_service_support import (
    company_frames,
    fresh_registry,
    quiet_options,
    quiet_registry,
    settings_for,
)

from engine.io import write_data_dir
from service.http.app import create_app
from service.http.dashboard import BoardNode, empty_node_notice

NEW_REP = "Zoe Newcomer"  # in the org chart, with no customer, order or deal yet


def _node(closed: float = 0.0, expected: float = 0.0, p90: float = 0.0) -> BoardNode:
    return BoardNode(level="rep", key=NEW_REP, target=None, closed=closed, expected=expected,
                     p_attain=None, p10=0.0, p50=0.0, p90=p90, must_hit=0.0, stretch=0.0,
                     deals=0.0)


def test_only_a_node_with_nothing_gets_the_notice() -> None:
    now = pd.Timestamp("2026-11-16")
    assert empty_node_notice(_node(), "2026Q4", now) == (
        f"rep {NEW_REP} has no revenue dated in 2026Q4 before 2026-11-16, no open deal "
        "expected to close in it and no run rate to carry into it, so every number of its "
        "outlook is 0.")
    assert "closed nothing in 2026Q3" in (empty_node_notice(_node(), "2026Q3", now) or "")
    for busy in (_node(closed=1.0), _node(expected=5.0), _node(p90=9.0)):
        assert empty_node_notice(busy, "2026Q4", now) is None


def test_the_board_page_of_a_new_rep_says_why_it_is_empty(tmp_path: Path) -> None:
    frames = dict(company_frames())
    org = frames["org"]
    newcomer = org.iloc[[0]].assign(rep=NEW_REP)
    frames["org"] = pd.concat([org, newcomer], ignore_index=True)
    data = write_data_dir(frames, tmp_path / "data")
    uri = fresh_registry(tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        quiet_registry(patch)
        app = create_app(settings_for(tmp_path, data, uri), quiet_options(draws=500))
        with TestClient(app) as client:
            key = app.state.quotacast.keys.create("planner")[1]
            pages = {period: client.get("/board", headers={"X-API-Key": key}, params={
                "level": "rep", "node": NEW_REP, "period": period}) for period in
                ("2026Q4", "2026Q3")}
            busy = client.get("/board", headers={"X-API-Key": key},
                              params={"level": "rep", "node": str(org["rep"].iloc[0])})
    assert all(page.status_code == 200 for page in pages.values())
    assert (f'id="node-notice" role="status">rep {NEW_REP} has no revenue dated in 2026Q4 '
            "before 2026-11-16") in pages["2026Q4"].text
    assert f"rep {NEW_REP} closed nothing in 2026Q3" in pages["2026Q3"].text
    assert busy.status_code == 200 and 'id="node-notice"' not in busy.text
