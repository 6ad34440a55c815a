"""The demo company generated a block of customers at a time (the 3x and 10x benchmark
companies): one block is `generate`'s company, more blocks are deterministic and valid, and
their Parquet files add up to one data directory."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from engine import synthetic as syn
from engine.compute.parquet import write_parquet_dir
from engine.io import load_tables, validate_tables
from engine.schemas import (
    AMOUNT,
    CUSTOMER_ID,
    CUSTOMERS,
    INVOICE_ID,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REP,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_ID,
    ORDERS,
    ORG,
    PERIOD,
    RECEIVABLES,
    TARGETS,
)

SPEC = syn.SizeSpec("three-blocks", 450, years=2, regions=2, teams_per_region=(1, 2),
                    reps_per_team=(2, 3))


def _merged(blocks: list[dict[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    names = dict.fromkeys(name for block in blocks for name in block)
    return {name: pd.concat([b[name] for b in blocks if name in b], ignore_index=True)
            for name in names}


@pytest.fixture(scope="module")
def blocks() -> list[dict[str, pd.DataFrame]]:
    return list(syn.generate_blocks(SPEC, seed=11, block=150))


def test_one_block_is_the_company_of_generate() -> None:
    whole = syn.generate(SPEC, seed=11)
    (block, last) = syn.generate_blocks(SPEC, seed=11)
    assert set(last) == {ORG, TARGETS}
    for name, frame in whole.items():
        pd.testing.assert_frame_equal({**block, **last}[name], frame, obj=name)


def test_blocks_are_deterministic_and_their_own_customers(
        blocks: list[dict[str, pd.DataFrame]]) -> None:
    assert len(blocks) == 4  # three blocks of 150 customers, then the org and the targets
    again = list(syn.generate_blocks(SPEC, seed=11, block=150))
    for block, same in zip(blocks, again, strict=True):
        for name, frame in block.items():
            pd.testing.assert_frame_equal(frame, same[name], obj=name)
    # The first block is generate's company of a block's customers, the others draw elsewhere.
    first = syn.generate(replace(SPEC, customers=150), seed=11)
    for name, frame in blocks[0].items():
        pd.testing.assert_frame_equal(frame, first[name], obj=name)
    assert not blocks[1][ORDERS][AMOUNT].iloc[:100].equals(first[ORDERS][AMOUNT].iloc[:100])
    other = list(syn.generate_blocks(SPEC, seed=12, block=150))
    assert not other[1][ORDERS][AMOUNT].equals(blocks[1][ORDERS][AMOUNT])


def test_blocks_make_one_valid_company(blocks: list[dict[str, pd.DataFrame]]) -> None:
    company = _merged(blocks)
    assert validate_tables(company)[1] == []
    for name, column in ((ORDERS, ORDER_ID), (CUSTOMERS, CUSTOMER_ID),
                         (OPPORTUNITIES, OPPORTUNITY_ID), (RECEIVABLES, INVOICE_ID)):
        assert company[name][column].is_unique, name  # ids continue from block to block
    assert company[ORDERS][CUSTOMER_ID].isin(company[CUSTOMERS][CUSTOMER_ID]).all()
    # Every block sells: each block's customers have orders.
    for block in blocks[:-1]:
        assert block[ORDERS][CUSTOMER_ID].isin(block[CUSTOMERS][CUSTOMER_ID]).all()
        assert len(block[ORDERS]) > 1000
    # Targets planned on all blocks' revenue, bottom-up: the reps add up to the company.
    targets = company[TARGETS]
    year = targets[targets[PERIOD] == targets[PERIOD].min()]
    reps = year.loc[year[LEVEL] == LEVEL_REP, AMOUNT].sum()
    assert reps == pytest.approx(year.loc[year[LEVEL] == LEVEL_COMPANY, AMOUNT].sum())
    one_block = syn.generate(replace(SPEC, customers=150), seed=11)[TARGETS]
    one = one_block[(one_block[PERIOD] == year[PERIOD].iloc[0])
                    & (one_block[LEVEL] == LEVEL_REP)][AMOUNT].sum()
    assert reps > 2 * one  # planned on three blocks of customers, not on the first
    assert set(year[KEY]) >= set(company[ORG]["rep"])


def test_blocks_written_as_parts_load_as_one_directory(blocks: list[dict[str, pd.DataFrame]],
                                                       tmp_path: Path) -> None:
    for part, block in enumerate(blocks):
        write_parquet_dir(block, tmp_path / "company", part=part)
    loaded = load_tables(tmp_path / "company")
    company = _merged(blocks)
    assert {name: len(frame) for name, frame in loaded.frames.items()} == {
        name: len(frame) for name, frame in company.items()}
    assert sorted(loaded.frames[ORDERS][ORDER_ID]) == sorted(company[ORDERS][ORDER_ID])


def test_block_must_hold_a_customer() -> None:
    with pytest.raises(ValueError, match="block must be a positive"):
        next(syn.generate_blocks(SPEC, block=0))
