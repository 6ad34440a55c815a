"""Datasets -> the tables of a quotacast data directory (``quotacast import KIND SRC``).

The registry: every importable dataset is one :class:`~engine.importers.common.Source` (its
name, a one-line description, the files it reads, the function that converts them), defined in
its own module and listed once in :data:`SOURCES`. ``quotacast import --help`` is written from
it. Known today:

- ``online-retail`` (:mod:`~engine.importers.online_retail`): UCI Online Retail invoice lines.
- ``crm-sales`` (:mod:`~engine.importers.crm_sales`): Maven Analytics CRM pipeline.
- ``superstore`` (:mod:`~engine.importers.superstore`): Tableau Sample Superstore order lines.

Shared reading and cleaning helpers are in :mod:`~engine.importers.common`.
"""

from __future__ import annotations

from pathlib import Path

from engine.importers import crm_sales, hubspot, mapped, online_retail, salesforce, superstore
from engine.importers.common import ImportResult, Source

__all__ = ["KINDS", "SOURCES", "ImportResult", "Source", "import_dataset"]

# In the order the help and the error messages list them.
SOURCES: dict[str, Source] = {source.name: source for source in (
    online_retail.SOURCE,
    crm_sales.SOURCE,
    superstore.SOURCE,
    salesforce.SOURCE,
    hubspot.SOURCE,
    mapped.SOURCE,
)}
KINDS: tuple[str, ...] = tuple(SOURCES)


def import_dataset(kind: str, src: Path) -> ImportResult:
    """Convert a known dataset into quotacast tables.

    Args:
        kind: one of :data:`KINDS`.
        src: the dataset's folder or its main file.

    Returns:
        The frames, ready for ``engine.io.validate_tables``, and notes for the user.

    Raises:
        ValueError: unknown kind, missing file, or a file that is not the expected dataset.
    """
    source = SOURCES.get(kind)
    if source is None:
        raise ValueError(f"unknown dataset kind '{kind}': expected one of {', '.join(KINDS)}")
    return source.read(source.locate(Path(src)))
