"""Property-based tests of the whole API from its OpenAPI document (schemathesis).

Every operation gets generated valid and invalid requests (fixed seed, a bounded number of
examples; ``QUOTACAST_SCHEMATHESIS_EXAMPLES`` raises it for a long run) with an admin key, under
schemathesis's default checks and nothing configured away: every response must be documented
(status code, headers, body schema, content type), no request may cause a 500, and a
schema-valid request is never refused as invalid (400 or 422). What the schema cannot state is
designed out of the API instead: a silence is a start and a number of days, matchers keep to a
grammar the schema's pattern states exactly, and a well-formed request the data cannot answer
(an as_of or period outside it, an owner nobody has, a frequency not served) is a 404.

The schema is loaded eagerly from ``app.openapi()`` (no start-up needed to build it), because
schemathesis's fixture-based lazy loading (``schemathesis.pytest.from_fixture``) breaks on
pytest 9.2 (it sets ``request.node._nodeid``, which pytest renamed). Schemathesis starts the
app's lifespan itself at the first call, once the fixture below has written the data and the
registry the settings point at.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi
from test_service_support import (
    company_frames,
    fresh_registry,
    quiet_options,
    quiet_registry,
    register_stubs,
    settings_for,
)

from service.http.app import create_app
from service.http.keys import KeyStore

SEED = 20261115
MAX_EXAMPLES = 8

_ROOT = Path(tempfile.mkdtemp(prefix="quotacast-schemathesis-"))
_SETTINGS = settings_for(_ROOT, _ROOT / "data", f"sqlite:///{_ROOT / 'mlflow.db'}")
app = create_app(_SETTINGS, quiet_options(draws=500))
CONFIG: dict[str, Any] = {
    "seed": SEED,
    "generation": {"max-examples": int(os.environ.get("QUOTACAST_SCHEMATHESIS_EXAMPLES",
                                                      MAX_EXAMPLES))},
}
schema = schemathesis.openapi.from_dict(app.openapi(),
                                        config=SchemathesisConfig.from_dict(CONFIG))
schema.app = app


@pytest.fixture(scope="module")
def admin_key() -> Iterator[str]:
    """The data, the registry with stub champions, and an admin key, before the first call."""
    from engine.io import load_tables, write_data_dir

    data = write_data_dir(company_frames(), _ROOT / "data")
    uri = fresh_registry(_ROOT)
    register_stubs(uri, load_tables(str(data)))
    keys = KeyStore(_SETTINGS.database_url)
    try:
        key = keys.create("admin")[1]
    finally:
        keys.close()
    with pytest.MonkeyPatch.context() as patch:
        quiet_registry(patch)
        yield key
        asgi.shutdown_lifespans()  # closes the app's stores before the files go
    shutil.rmtree(_ROOT, ignore_errors=True)


@schema.parametrize()
def test_api_conforms_to_its_openapi_document(case: Any, admin_key: str) -> None:
    case.call_and_validate(headers={"X-API-Key": admin_key})
