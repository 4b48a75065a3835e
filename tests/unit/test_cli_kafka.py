from __future__ import annotations

import json

from dsgd import cli


def test_kafka_stop_says_when_no_broker_was_running(tmp_path, capsys):
    assert cli.main(["kafka", "stop", "--profile", "local", "--set", f'broker.home="{tmp_path / "kb"}"']) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["stopped_pid"] is None and out["message"] == "no broker was running" and not out["running"]
