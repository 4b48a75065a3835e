from __future__ import annotations

import json
import math

import pytest

from dsgd.core.schedules import make_schedule, schedule_from_state


def test_constant():
    s = make_schedule("constant", 0.1)
    s.observe(1.0)
    assert [s.rate(t) for t in (0, 1, 100)] == [0.1, 0.1, 0.1]


def test_inverse_sqrt():
    s = make_schedule("inverse_sqrt", 0.2)
    assert s.rate(0) == pytest.approx(0.2)
    assert s.rate(3) == pytest.approx(0.1)
    assert s.rate(99) == pytest.approx(0.2 / math.sqrt(100))


def test_bold_driver_up_and_down():
    s = make_schedule("bold_driver", 0.1)
    assert s.rate(0) == 0.1
    s.observe(1.0)  # first loss: no comparison yet
    assert s.rate(1) == pytest.approx(0.1)
    s.observe(0.8)  # decreased
    assert s.rate(2) == pytest.approx(0.105)
    s.observe(0.9)  # increased
    assert s.rate(3) == pytest.approx(0.0525)
    s.observe(0.9)  # not decreased
    assert s.rate(4) == pytest.approx(0.02625)


def test_bold_driver_custom_factors():
    s = make_schedule("bold_driver", 1.0, up=2.0, down=0.25)
    s.observe(2.0)
    s.observe(1.0)
    s.observe(3.0)
    assert s.rate(3) == pytest.approx(0.5)


def test_unknown_kind_names_allowed_values():
    with pytest.raises(ValueError, match="constant, inverse_sqrt, bold_driver"):
        make_schedule("cosine", 0.1)


@pytest.mark.parametrize("kind", ["constant", "inverse_sqrt", "bold_driver"])
def test_state_round_trip_through_json(kind):
    s = make_schedule(kind, 0.3)
    for loss in (1.0, 0.7, 0.9):
        s.observe(loss)
    state = json.loads(json.dumps(s.to_state()))
    t = schedule_from_state(state)
    assert type(t) is type(s) and t.to_state() == s.to_state()
    for loss in (0.5, 0.6):
        s.observe(loss)
        t.observe(loss)
    assert [t.rate(k) for k in range(5)] == [s.rate(k) for k in range(5)]
    assert type(s).from_state(state).to_state() == state
