"""Small parts of the service on their own: token bucket, metrics text, keys, chart."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.http.charts import feasibility_svg
from service.http.keys import KeyStore, Role, key_id_of
from service.http.metrics import RequestMetrics
from service.http.ratelimit import TokenBucketLimiter
from service.http.schemas import MATCHER_PATTERN, MAX_MATCHER_LENGTH, FeasibilityNode, SilenceIn


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [100.0]
    limiter = TokenBucketLimiter(rate_per_minute=30, burst=3, clock=lambda: now[0])
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("k")
    assert wait == pytest.approx(2.0)  # one token every 2 s
    assert limiter.retry_after(wait) == "2"
    assert limiter.take("other") == 0.0
    now[0] += 2.0
    assert limiter.take("k") == 0.0 and limiter.take("k") > 0
    now[0] += 600.0  # a long pause refills up to the burst, not beyond
    assert [limiter.take("k") == 0.0 for _ in range(4)] == [True, True, True, False]


def test_token_bucket_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucketLimiter(0, 1)
    with pytest.raises(ValueError):
        TokenBucketLimiter(10, 0)


def test_metrics_text_format() -> None:
    metrics = RequestMetrics()
    metrics.observe("GET", "/v1/x", 200, 0.003)
    metrics.observe("GET", "/v1/x", 200, 0.2)
    metrics.observe("GET", '/v1/"odd"', 404, 20.0)
    text = metrics.render()
    assert 'quotacast_http_requests_total{method="GET",route="/v1/x",status="200"} 2' in text
    assert 'route="/v1/\\"odd\\""' in text
    buckets = re.findall(r'route="/v1/x",status="200",le="([^"]+)"} (\d+)', text)
    counts = {le: int(n) for le, n in buckets}
    assert counts["0.005"] == 1 and counts["0.25"] == 2 and counts["+Inf"] == 2
    assert ('quotacast_http_request_duration_seconds_count{method="GET",route="/v1/x",'
            'status="200"} 2') in text
    assert "# TYPE quotacast_http_request_duration_seconds histogram" in text
    line = re.compile(r'^(# (HELP|TYPE) .*|[a-z_]+(\{[^}]*\})? [0-9.e+-]+)$')
    assert all(line.match(row) for row in text.strip().splitlines())


def test_keys_are_random_checked_in_full_and_revocable(tmp_path: Path) -> None:
    store = KeyStore(f"sqlite:///{tmp_path / 'k.db'}")
    try:
        key, token = store.create(Role.ACCOUNT_MANAGER, " Dana Rossi ")
        other, token2 = store.create("admin")
        assert key.owner == "Dana Rossi" and token != token2
        assert re.fullmatch(r"qk_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", token)
        assert key_id_of(token) == key.key_id and key_id_of(key.key_id) == key.key_id
        assert key_id_of("qk_nothing") is None
        tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
        assert store.verify(tampered) is None
        assert store.verify(f" {token} ") == key  # stray whitespace from a copy-paste
        assert store.revoke(key.key_id) and not store.revoke(key.key_id)
        assert store.verify(token) is None and store.verify(token2) == other
        assert [k.key_id for k in store.list_keys()] == [other.key_id]
        assert len(store.list_keys(include_revoked=True)) == 2
    finally:
        store.close()


def _node(level: str, key: str, target: float | None, p: float | None) -> FeasibilityNode:
    return FeasibilityNode(period="2026Q4", level=level, key=key, target=target,
                           closed_to_date=40.0, p_attain=p, expected=90.0, p10=70.0, p50=90.0,
                           p90=110.0, gap=10.0, must_hit=70.0, stretch=95.0)


def test_feasibility_chart_escapes_names_and_draws_the_target_line() -> None:
    svg = feasibility_svg([_node("company", "all", 100.0, 0.4),
                           _node("region", "<script>x</script>", 100.0, 0.9),
                           _node("team", "no target", None, None)], "Q4 & more")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "Q4 &amp; more" in svg
    assert svg.count('class="target-line"') == 1
    assert "no target" not in svg  # nodes without a target are not drawn
    assert "40%" in svg and "90%" in svg


def test_silence_body_checks_the_matcher_shape() -> None:
    ok = SilenceIn(matchers=['region="North"', "rep=~A.*"], starts_at=date(2026, 1, 1),
                   days=31, comment="c")
    assert ok.matchers == ['region="North"', "rep=~A.*"]
    assert ok.ends_at == date(2026, 2, 1)
    with pytest.raises(ValueError, match="not a matcher the API takes"):
        SilenceIn(matchers=["no operator"], starts_at=date(2026, 1, 1), days=31, comment="c")


# What people write in Alertmanager silences, all inside the API's grammar; and what it leaves
# to the CLI (nested groups, ranges of counts, backreferences).
@pytest.mark.parametrize("matcher", [
    'rep=~"A.*"', 'region=~"North|South"', 'team!~"T[0-9]+"', 'alertname=~"(Pace|Forecast).*"',
    "rep=~.*", r"rep=~a\.b", 'rep=~"^[A-Z][a-z]{2,}$"', 'customer_id=~"C0[0-9]{4}"'])
def test_common_regex_matchers_are_in_the_api_grammar(matcher: str) -> None:
    assert SilenceIn(matchers=[matcher], starts_at=date(2026, 1, 1), days=1, comment="c")


@pytest.mark.parametrize("matcher", ['rep=~"((a))"', 'rep=~"a{2,4}"', r'rep=~"(a)\1"',
                                     'rep=~"(unclosed"'])
def test_regexes_outside_the_grammar_are_422_with_words(matcher: str) -> None:
    with pytest.raises(ValueError, match="the CLI takes any RE2 expression"):
        SilenceIn(matchers=[matcher], starts_at=date(2026, 1, 1), days=1, comment="c")


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.from_regex(MATCHER_PATTERN, fullmatch=True)
       .filter(lambda m: len(m) <= MAX_MATCHER_LENGTH))
def test_every_matcher_the_schema_allows_is_accepted(matcher: str) -> None:
    # The OpenAPI pattern is exact: whatever it allows parses and compiles in RE2.
    SilenceIn(matchers=[matcher], starts_at=date(2026, 1, 1), days=1, comment="c")


def test_limiter_memory_is_bounded_by_max_keys() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(rate_per_minute=60, burst=2, clock=lambda: now[0], max_keys=10)
    for i in range(10):
        limiter.take(f"addr{i}")
    limiter.take("busy")
    limiter.take("busy")
    assert len(limiter) <= 10
    now[0] += 5.0  # every bucket refills: all may go
    for i in range(100):
        limiter.take(f"new{i}")
    assert len(limiter) <= 10
    # A spent bucket survives pruning of the refilled ones: its wait is not forgotten.
    limiter = TokenBucketLimiter(rate_per_minute=1, burst=1, clock=lambda: now[0], max_keys=3)
    limiter.take("a")
    limiter.take("b")
    now[0] += 120.0  # a and b are full again
    assert limiter.take("guesser") == 0.0  # now spent
    limiter.take("c")
    limiter.take("d")  # past max_keys: a and b go
    assert limiter.take("guesser") > 0
