"""Property-based tests of the whole API from its OpenAPI document (schemathesis).

Every operation gets generated valid and invalid requests (fixed seed, a bounded number of
examples) with an admin key, under schemathesis's default checks; every response must be
documented (status code, headers, body schema, content type), no request may cause a 500, and
a schema-valid request must not be refused as invalid (422). Two documented exceptions, which
no JSON Schema can state, are configured in :data:`CONFIG`: a request may be answered 400 when
it is well-formed but cannot be answered from this data (an as_of before the first order, an
owner nobody has, a frequency the served forecaster was not trained for), and a silence whose
``ends_at`` is not after its ``starts_at`` is invalid input (422).

The schema is loaded eagerly from ``app.openapi()`` (no start-up needed to build it), because
schemathesis's fixture-based lazy loading (``schemathesis.pytest.from_fixture``) breaks on
pytest 9.2 (it sets ``request.node._nodeid``, which pytest renamed). Schemathesis starts the
app's lifespan itself at the first call, once the fixture below has written the data and the
registry the settings point at.
"""

from __future__ import annotations

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
ACCEPTED = ["2XX", "3XX", 400, 401, 403, 404, 409, 429]
CONFIG: dict[str, Any] = {
    "seed": SEED,
    "generation": {"max-examples": MAX_EXAMPLES},
    "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}},
    "operations": [{
        "include-path": "/v1/silences", "include-method": "POST",
        "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, 422]}},
    }],
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
