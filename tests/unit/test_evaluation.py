"""The prequential harness: DCG protocol on a hand-built stream, determinism, batch cuts, a planted
stream where online DSGD must beat popularity, and the files written by ``dsgd evaluate``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dsgd.core.columns import ITEM, RATING, SEQ, TS, USER
from dsgd.core.metrics import EXCLUSION_MODES, ranks_of_targets
from dsgd.evaluation.harness import (
    cut_batches,
    evaluate,
    grid_search,
    prepare_stream,
    ranks_all_modes,
    run_prequential,
    summary_table,
    sweep_batch_sizes,
)
from dsgd.evaluation.models import EvalParams, expand_models
from dsgd.evaluation.synthetic import generate_stream

DAY = 86_400_000
T0 = 1_600_000_000_000 // DAY * DAY


def _events(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame({USER: [r[0] for r in rows], ITEM: [r[1] for r in rows],
                         RATING: np.full(len(rows), np.nan, np.float32),
                         TS: np.array([r[2] for r in rows], np.int64), SEQ: np.arange(len(rows), dtype=np.int64)})


HAND = _events([("u1", "i1", T0), ("u2", "i1", T0 + 1), ("u1", "i2", T0 + 2), ("u1", "i1", T0 + 3),
                ("u2", "i2", T0 + 4), ("u3", "i3", T0 + 5), ("u3", "i2", T0 + 6)])


def test_popularity_ranks_per_event_match_hand_computation_in_all_three_modes():
    res = evaluate(HAND, "popularity", batch_events=1)
    r = res.ranks["popularity"]
    # e0 new item; e1 i1 alone; e2 new; e3 i1 top, seen by u1; e4 i2 behind i1 (3 vs 1), u2 saw i1;
    # e5 new; e6 i2 behind i1 (3 vs 2), u3 saw only i3
    assert r["off"].tolist() == [0, 1, 0, 1, 2, 0, 2]
    assert r["exclude_seen"].tolist() == [0, 1, 0, 1, 1, 0, 2]
    assert r["strict"].tolist() == [0, 1, 0, 0, 1, 0, 2]
    third = 1 / np.log2(3)
    assert res.dcg("popularity", "off") == pytest.approx([0, 1, 0, 1, third, 0, third])
    assert summary_table(res)["dcg_off"][0] == pytest.approx((2 + 2 * third) / 7)


def test_micro_batch_scores_every_event_against_the_state_before_the_batch():
    res = evaluate(HAND, "popularity", batch_events=2)
    r = res.ranks["popularity"]
    # batch [e0 e1]: nothing known; [e2 e3]: only i1 known (e2's i2 is new); [e4 e5]: i1=3, i2=1; [e6]
    assert r["off"].tolist() == [0, 0, 0, 1, 2, 0, 2]
    assert r["strict"].tolist() == [0, 0, 0, 0, 1, 0, 2]  # u1 had seen i1 in an earlier batch


def test_ranks_all_modes_agrees_with_metrics_ranks_of_targets():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, size=(40, 12)).astype(np.float32)  # many ties
    targets = rng.integers(0, 12, size=40)
    seen = rng.random((40, 12)) < 0.3
    got = ranks_all_modes(scores, targets, seen)
    exclude = [np.flatnonzero(row) for row in seen]
    for mode in EXCLUSION_MODES:
        np.testing.assert_array_equal(got[mode], ranks_of_targets(scores, targets, exclude, mode))
    assert ranks_all_modes(scores, np.full(40, 12), seen)["off"].tolist() == [0] * 40  # new item


def test_cut_batches_by_count_and_by_time_and_at_week_boundaries():
    ts = T0 + np.array([0, 1, 2, 3, 4, 7 * DAY, 7 * DAY + 1, 7 * DAY + 2 * 3_600_000], np.int64)
    assert cut_batches(ts, batch_events=2).tolist() == [0, 2, 4, 5, 7, 8]
    assert cut_batches(ts, batch_events=2, period=None).tolist() == [0, 2, 4, 6, 8]
    assert cut_batches(ts, batch_seconds=3600).tolist() == [0, 5, 7, 8]
    assert cut_batches(ts, batch_seconds=86400).tolist() == [0, 5, 8]
    with pytest.raises(ValueError, match="exactly one"):
        cut_batches(ts, batch_events=2, batch_seconds=1)


def _planted(n: int = 6000) -> pd.DataFrame:
    return generate_stream(n, n_users=100, n_items=200, temperature=0.3, seed=1, duration_days=21)


def test_same_seed_gives_identical_results_and_cut_by_time_runs():
    ev = _planted(2500)
    a = evaluate(ev, "online,batch+online", batch_events=50)
    b = evaluate(ev, "online,batch+online", batch_events=50)
    for m in a.models:
        for mode in EXCLUSION_MODES:
            np.testing.assert_array_equal(a.ranks[m][mode], b.ranks[m][mode])
    c = evaluate(ev, "online", EvalParams(seed=7), batch_events=50)
    assert not np.array_equal(a.ranks["online"]["off"], c.ranks["online"]["off"])
    t = evaluate(ev, "online", batch_seconds=6 * 3600)
    assert t.info["n_batches"] >= 21 * 4 and t.dcg("online").mean() > 0


def test_online_dsgd_beats_popularity_on_a_planted_stream():
    res = evaluate(_planted(), "popularity,online,batch,batch+online", batch_events=50)
    s = summary_table(res).set_index("model")["dcg_off"]
    assert s["online"] >= 1.2 * s["popularity"], s.to_dict()
    assert s["batch+online:warm-start"] >= 1.2 * s["popularity"], s.to_dict()


def test_grid_search_uses_only_the_prefix_and_sweep_reports_speed():
    st = prepare_stream(_planted(2000))
    best, grid = grid_search(st, {"lr": [0.02, 0.2], "epochs": [1]}, prefix=0.25, batch_events=50)
    assert len(grid) == 2 and best.lr == grid.loc[grid["dcg"].idxmax(), "lr"]
    sw = sweep_batch_sizes(st, [10, 500, "day"], "online")
    assert sw["batch_size"].tolist() == ["10", "500", "day"] and (sw["events_per_s"] > 0).all()
    late = run_prequential(st, "popularity", eval_from=1500)
    assert late.dcg("popularity").shape == (500,)


def test_expand_models_names_both_batch_online_variants():
    assert expand_models("popularity,batch+online") == ["popularity", "batch+online:warm-start",
                                                        "batch+online:replace"]
    with pytest.raises(ValueError, match="unknown model"):
        expand_models("als")


def test_cli_writes_consistent_csv_json_png_and_markdown(tmp_path, capsys):
    from dsgd.cli import main

    ev = _planted(3000)
    tsv = tmp_path / "stream.tsv"
    pd.DataFrame({"u": ev[USER].str[1:].astype(int), "i": ev[ITEM].str[1:].astype(int),
                  "s": (ev[TS] - ev[TS].iloc[0]) / 1000.0}).to_csv(tsv, sep="\t", header=False, index=False)
    out = tmp_path / "out"
    rc = main(["evaluate", "--dataset", "lastfm-tsv", "--path", str(tsv), "--models",
               "popularity,online,batch,batch+online", "--period", "week", "--batch-events", "100",
               "--batch-epochs", "3", "--out", str(out), "--sweep-batch-sizes", "50,day"])
    assert rc == 0
    for f in ("summary.csv", "periods.csv", "results.json", "dcg_by_period.png", "summary.md", "sweep.csv",
              "sweep.png", "sweep.md"):
        assert (out / f).stat().st_size > 0, f
    summ = pd.read_csv(out / "summary.csv")
    per = pd.read_csv(out / "periods.csv")
    js = json.loads((out / "results.json").read_text())
    assert len(summ) == 5 and set(per["mode"]) == set(EXCLUSION_MODES)
    assert (out / "dcg_by_period.png").read_bytes()[:4] == b"\x89PNG"
    for row in summ.itertuples():
        p = per[(per["model"] == row.model) & (per["mode"] == "off")]
        assert (p["n"] * p["mean"]).sum() / p["n"].sum() == pytest.approx(row.dcg_off)
        assert js["summary"][row.Index]["dcg_off"] == pytest.approx(row.dcg_off)
    assert js["speed"]["events"] == 3000 and js["params"]["rank"] == 10
    printed = capsys.readouterr().out
    assert "| online |" in printed and printed.count("per week") == 3
