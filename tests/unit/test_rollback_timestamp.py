from __future__ import annotations

import json

import pytest

from dsgd import cli
from dsgd.store.factor_store import timestamp_ms

JUNE_2 = 1717286400000  # 2024-06-02T00:00:00Z


@pytest.mark.parametrize("text, ms", [("2024-06-02", JUNE_2), ("2024-06-02 00:00:00", JUNE_2),
                                      ("2024-06-02T00:00:00Z", JUNE_2), ("2024-06-02T02:00:00+02:00", JUNE_2),
                                      ("2024-06-02 00:00:01.250", JUNE_2 + 1250)])
def test_a_rollback_timestamp_is_iso_8601_and_utc_without_an_offset(text, ms):
    assert timestamp_ms(text) == ms


def test_a_malformed_rollback_timestamp_is_refused_before_spark_starts(capsys):
    assert cli.main(["rollback", "--profile", "local", "--timestamp", "yesterday"]) == 2
    err = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    assert "'yesterday' is not a date or time" in err and "2024-06-02T02:00:00+02:00" in err
