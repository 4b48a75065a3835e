"""DSGDModel.recommend for users given their events: the served fold-in rule, through the model API."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dsgd import DSGD
from dsgd.core.blend import events_ptr
from dsgd.core.foldin_rule import FoldInRule, fold_users
from dsgd.core.scoring import score_matrix
from tests.serve.helpers import cluster_of, planted_events


@pytest.fixture(scope="module")
def model():
    return DSGD(rank=8, kind="implicit", lr=0.1, negatives=8, epochs=15, blocks=2, engine="local",
                seed=3).fit(planted_events(n_users=60, events_per_user=20))


def test_a_new_user_is_folded_in_from_their_events_with_the_served_rule(model):
    ev = pd.DataFrame({"user": ["new"] * 4, "item": ["i2_0", "i2_1", "i2_3", "i2_2"], "ts": [1, 2, 3, 4]})
    got = model.recommend(["new"], k=10, events=ev)
    assert not set(got["item"]) & set(ev["item"])  # exclude_seen covers the events' items
    assert sum(cluster_of(i) == 2 for i in got["item"]) >= 7
    rule = FoldInRule.for_model(kind="implicit")
    rows = model._item_index.get_indexer(ev["item"].to_numpy(object))
    vec, _, folded = fold_users(model.items.vec, None, None, None, None, events_ptr([4]), rows,
                                params=rule.online, new_user_min_events=3)
    s = score_matrix(vec, model.items.vec)[0]
    s[rows] = -np.inf
    assert folded[0]
    np.testing.assert_allclose(got["score"], np.sort(s)[::-1][:10], rtol=1e-5)


def test_too_few_events_keep_a_new_user_on_popularity_and_known_users_move(model):
    two = pd.DataFrame({"user": ["new", "new"], "item": ["i3_0", "i3_1"]})
    cold = model.recommend(["new"], k=5, exclude_seen=False)
    assert list(model.recommend(["new"], k=5, events=two, exclude_seen=False)["item"]) == list(cold["item"])
    known = model.user_ids[1]
    moved = pd.DataFrame({"user": [known] * 6, "item": [f"i3_{j}" for j in range(6)]})
    before = model.recommend([known], k=10)
    after = model.recommend([known], k=10, events=moved)
    assert list(after["item"]) != list(before["item"])
    assert sum(cluster_of(i) == 3 for i in after["item"]) > sum(cluster_of(i) == 3 for i in before["item"])
    with pytest.raises(ValueError, match="events must be"):
        model.recommend([known], events=pd.DataFrame({"who": [1]}))
