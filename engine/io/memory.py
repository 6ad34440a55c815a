"""Giving back memory that a read no longer uses.

Arrow converts Parquet columns to pandas through its own memory pool (mimalloc here), which
keeps the pages it freed for the next allocation instead of returning them to the system: after
reading a large table the process holds the table's Arrow copy as well as its frame (on the
`large` demo company's orders, about as much again as the frame). :func:`release_unused_memory`
hands those pages back; it changes no value, only what the process keeps.
"""

from __future__ import annotations

import sys

__all__ = ["release_unused_memory"]


def release_unused_memory() -> None:
    """Return the pages Arrow's memory pool keeps free to the system (nothing when pyarrow was
    never imported: a CSV-only run pays nothing)."""
    if "pyarrow" not in sys.modules:
        return
    import pyarrow as pa

    pa.default_memory_pool().release_unused()

