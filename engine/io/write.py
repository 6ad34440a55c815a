"""Atomic writes: outputs appear whole or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

__all__ = ["SUFFIXES", "atomic_path", "output_format", "write_data_dir", "write_frame"]

SUFFIXES = (".csv", ".csv.gz", ".parquet")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    elif fmt == "csv.gz":
        frame.to_csv(path, index=False, compression="gzip")
    else:
        frame.to_csv(path, index=False)


def output_format(path: str | Path) -> str:
    """``csv``, ``csv.gz`` or ``parquet`` from a file name; ``ValueError`` otherwise."""
    name = Path(path).name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix.lstrip(".")
    raise ValueError(f"unknown output format for {name}: use .csv, .csv.gz or .parquet")


def write_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` to ``path`` (.csv, .csv.gz or .parquet) atomically."""
    fmt = output_format(path)
    with atomic_path(path) as tmp:
        _write(frame, tmp, fmt)
    return Path(path)


def write_data_dir(frames: dict[str, pd.DataFrame], out_dir: str | Path, fmt: str = "csv") -> Path:
    """Write tables as a data directory, all or nothing.

    The tables are written into a temporary sibling directory which then replaces ``out_dir``;
    a failure part-way leaves any previous ``out_dir`` untouched.
    """
    target = Path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = target.with_name(f".{target.name}.old")
    try:
        for name, frame in frames.items():
            _write(frame, tmp / f"{name}.{fmt}", fmt)
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return target
