from __future__ import annotations

import numpy as np
import pytest

from dsgd.core.strata import strata_schedule, stratum_blocks


@pytest.mark.parametrize("order", ["rotation", "permutation"])
@pytest.mark.parametrize("d", range(1, 13))
def test_every_block_once_and_strata_are_interchangeable(d, order):
    for epoch in range(3):
        strata = strata_schedule(d, order, seed=11, epoch=epoch)
        assert len(strata) == d
        seen = []
        for stratum in strata:
            blocks = stratum_blocks(stratum)
            assert len(blocks) == d
            assert len({ub for ub, _ in blocks}) == d  # no shared user block
            assert len({ib for _, ib in blocks}) == d  # no shared item block
            seen.extend(blocks)
        assert sorted(seen) == [(ub, ib) for ub in range(d) for ib in range(d)]


def test_rotation_pairs_b_with_b_plus_s():
    strata = strata_schedule(4, "rotation")
    assert [s.tolist() for s in strata] == [[0, 1, 2, 3], [1, 2, 3, 0], [2, 3, 0, 1], [3, 0, 1, 2]]


def _as_lists(strata):
    return [s.tolist() for s in strata]


@pytest.mark.parametrize("d", range(3, 13))
def test_permutation_depends_on_seed_and_epoch(d):
    base = _as_lists(strata_schedule(d, "permutation", seed=5, epoch=0))
    assert base == _as_lists(strata_schedule(d, "permutation", seed=5, epoch=0))
    others = [_as_lists(strata_schedule(d, "permutation", seed=s, epoch=0)) for s in range(6, 12)]
    assert any(o != base for o in others)
    epochs = [_as_lists(strata_schedule(d, "permutation", seed=5, epoch=e)) for e in range(1, 7)]
    assert any(o != base for o in epochs)
    if d >= 5:
        assert others[0] != base


def test_bad_arguments():
    with pytest.raises(ValueError, match="rotation"):
        strata_schedule(3, "random")
    with pytest.raises(ValueError, match="d must be"):
        strata_schedule(0)


def test_stratum_blocks():
    assert stratum_blocks(np.array([2, 0, 1])) == [(0, 2), (1, 0), (2, 1)]
