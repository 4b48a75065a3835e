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
    prepare_stream,
    ranks_all_modes,
    run_prequential,
    summary_table,
)
from dsgd.evaluation.models import EvalParams, expand_models
from dsgd.evaluation.synthetic import generate_stream
from dsgd.evaluation.tuning import grid_search, sweep_batch_sizes

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
    assert expand_models("retrain") == ["als", "als+online:replace", "als+online:score-blend",
                                        "retrain+online:warm-start"]
    with pytest.raises(ValueError, match="unknown model"):
        expand_models("als+online:nonsense")


def _planted_tsv(tmp_path, n: int = 3000):
    ev = _planted(n)
    tsv = tmp_path / "stream.tsv"
    pd.DataFrame({"u": ev[USER].str[1:].astype(int), "i": ev[ITEM].str[1:].astype(int),
                  "s": (ev[TS] - ev[TS].iloc[0]) / 1000.0}).to_csv(tsv, sep="\t", header=False, index=False)
    return tsv


def test_cli_writes_consistent_csv_json_png_and_markdown(tmp_path, capsys):
    from dsgd.cli import main

    tsv = _planted_tsv(tmp_path)
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
    assert len(summ) == 9 and set(per["mode"]) == set(EXCLUSION_MODES)  # popularity + 4 models x 2 servings
    assert {"online", "online/fold-in", "batch+online:replace/fold-in"} <= set(summ["model"])
    assert (out / "dcg_by_period.png").read_bytes()[:4] == b"\x89PNG"
    for row in summ.itertuples():
        p = per[(per["model"] == row.model) & (per["mode"] == "off")]
        assert (p["n"] * p["mean"]).sum() / p["n"].sum() == pytest.approx(row.dcg_off)
        assert js["summary"][row.Index]["dcg_off"] == pytest.approx(row.dcg_off)
    assert js["speed"]["events"] == 3000 and js["params"]["rank"] == 10
    printed = capsys.readouterr().out
    assert "| online |" in printed and printed.count("per week") == 3


def test_cli_grid_reports_only_after_the_prefix_with_the_per_event_reference_and_extra_params(tmp_path, capsys):
    from dsgd.cli import main

    tsv = _planted_tsv(tmp_path, 2000)
    out = tmp_path / "out"
    rc = main(["evaluate", "--dataset", "lastfm-tsv", "--path", str(tsv), "--models", "popularity,online",
               "--serving", "fold-in", "--batch-seconds", "3600", "--grid", "--grid-prefix", "0.25", "--per-event",
               "--param", "foldin_prior=0.3", "--no-progress", "--out", str(out)])
    assert rc == 0
    js = json.loads((out / "results.json").read_text())
    assert js["eval_from"] == 500 and js["params"]["foldin_prior"] == 0.3
    assert set(js["grid"]["chosen"]) == {"lr", "rank", "negatives", "epochs", "use_bias"}
    assert len(pd.read_csv(out / "grid.csv")) > 1
    summ = pd.read_csv(out / "summary.csv")
    assert set(summ["model"]) == {"popularity", "online/fold-in", "online@1"}
    assert (summ["events"] == 1500).all()  # the validation prefix is not reported
    assert "micro-batch 3600.0 s" in capsys.readouterr().out
    assert main(["evaluate", "--dataset", "lastfm-tsv", "--path", str(tsv), "--param", "nonsense=1",
                 "--out", str(out)]) == 2


@pytest.mark.parametrize("sampling, order, d, epochs", [("uniform", "rotation", 2, 1),
                                                        ("popularity", "permutation", 3, 2)])
def test_harness_dsgd_step_equals_the_streaming_trainers_train_epochs_bit_for_bit(sampling, order, d, epochs):
    from dsgd.core.factors import SideFactors
    from dsgd.core.params import KernelParams
    from dsgd.core.schedules import Constant
    from dsgd.engines.local import train_epochs
    from dsgd.evaluation.models import DenseModel, dsgd_step

    st = prepare_stream(generate_stream(3000, n_users=60, n_items=90, seed=1, duration_days=5))
    kp = KernelParams(lr=0.1, reg=0.01, implicit=True, use_bias=False, negatives=5, negative_sampling=sampling)
    dense = DenseModel(st, 8, 7, 0.05, d)
    users, items = SideFactors.empty(8), SideFactors.empty(8)
    bounds = cut_batches(st.ts, batch_events=400)
    for b, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        dsgd_step(dense, slice(lo, hi), kp, epochs=epochs, schedule=Constant(0.1), strata_order=order, batch_id=b)
        u, i = st.user[lo:hi], st.item[lo:hi]
        train_epochs(users, items, st.user_keys[u], st.item_keys[i], st.user_ids[u], st.item_ids[i],
                     np.ones(hi - lo, np.float32), st.ts[lo:hi], st.seq[lo:hi], kp, d=d, epochs=epochs,
                     schedule=Constant(0.1), strata_order=order, seed=7, batch_id=b, init_scale=0.05, rank=8)
    for side, dense_side, keys in ((users, dense.users, st.user_keys), (items, dense.items, st.item_keys)):
        rows = side.index_of(keys)
        assert (rows >= 0).all() and dense_side.known.all()
        np.testing.assert_array_equal(side.vec[rows], dense_side.vec)
        np.testing.assert_array_equal(side.count[rows], dense_side.count)


# ---- fold-in: prequential honesty -----------------------------------------------------------------------
def _pairs_stream(n_users: int = 40, n_items: int = 30, batches: int = 30, seed: int = 5) -> pd.DataFrame:
    """A warm-up batch that makes every item known, then batches in which every user has two events
    (A, then B); for half of the users B == A. Leakage (scoring an event with itself or a later event
    folded in) would lift the rank of the first event's target A."""
    rng = np.random.default_rng(seed)
    rows, t = [], T0
    for i in range(n_items):
        rows.append((f"w{i}", f"i{i}", t))
        t += 1
    for b in range(batches):
        t = T0 + (b + 1) * 3_600_000
        for u in rng.permutation(n_users):
            a = int(rng.integers(n_items))
            rows += [(f"u{u}", f"i{a}", t), (f"u{u}", f"i{a if u % 2 else int(rng.integers(n_items))}", t + 1)]
            t += 2
    return _events(rows)


@pytest.mark.parametrize("params", [EvalParams(batch_epochs=2, foldin_method="sgd", foldin_lr=5.0),
                                    EvalParams(batch_epochs=2, foldin_method="ls", foldin_prior=0.1)],
                         ids=["sgd", "ls"])
def test_fold_in_never_uses_the_scored_event_or_a_later_one(params):
    ev = _pairs_stream()
    st = prepare_stream(ev)
    kw = {"batch_seconds": 3600, "serving": "plain,fold-in", "progress": False}
    models = "online,batch+online:replace,batch"
    res = run_prequential(st, models, params, **kw)
    users = st.user
    first = np.r_[True, users[1:] != users[:-1]]  # a user's first event of its batch (events come in pairs)
    first[: 30] = False  # warm-up batch
    second = np.r_[False, users[1:] == users[:-1]]
    for m in ("online", "batch+online:replace"):
        for mode in EXCLUSION_MODES:  # nothing to fold in before the first event: identical to plain
            np.testing.assert_array_equal(res.ranks[m + "/fold-in"][mode][first], res.ranks[m][mode][first])
    # the fold-in is live: a repeated second event ranks far better than without it
    repeat = second & (np.r_[0, st.item[:-1]] == st.item) & (np.arange(len(st)) > len(st) // 3)
    assert res.ranks["online/fold-in"]["off"][repeat].mean() < 0.5 * res.ranks["online"]["off"][repeat].mean()
    # perturbing the stream from event k on leaves every earlier event's ranks unchanged
    k = int(np.flatnonzero(second)[len(np.flatnonzero(second)) // 2]) - 1  # a first event in mid-stream
    alt = ev.copy()
    alt.loc[alt.index >= k, ITEM] = np.random.default_rng(9).permutation(alt.loc[alt.index >= k, ITEM].to_numpy())
    st2 = prepare_stream(alt)
    assert (st2.item[:k] == st.item[:k]).all() and (st2.item[k:] != st.item[k:]).any()
    res2 = run_prequential(st2, models, params, **kw)
    for m in res.models:
        for mode in EXCLUSION_MODES:
            np.testing.assert_array_equal(res2.ranks[m][mode][:k], res.ranks[m][mode][:k])


def test_fold_in_vector_is_the_core_function_on_exactly_the_earlier_events_of_the_batch():
    from dsgd.core.foldin import fold_in
    from dsgd.evaluation.models import FactorModel, Popularity

    st = prepare_stream(_pairs_stream(batches=4))
    p = EvalParams()
    model = FactorModel("online", p, Popularity(), st)
    bounds = cut_batches(st.ts, batch_seconds=3600)
    for b in range(3):
        model.update(st, int(bounds[b]), int(bounds[b + 1]), b)
    lo, hi = int(bounds[3]), int(bounds[4])
    n_known = int(st.item[:lo].max()) + 1
    vecs, warm = model.set.foldin_rows(st, lo, lo, hi, n_known)
    for e in range(lo, hi):
        u = st.user[e]
        earlier = [j for j in range(lo, e) if st.user[j] == u]
        start = model.set.m.users.vec[u] if model.set.m.users.known[u] else None
        want = (fold_in(model.set.m.items.vec, None, start, st.item[earlier], params=p.foldin(),
                        candidates=np.flatnonzero(model.set.m.items.known[:n_known]))[0]
                if earlier else model.set.m.users.vec[u])
        np.testing.assert_array_equal(vecs[e - lo], want)
        assert warm[e - lo] == (bool(earlier) or bool(model.set.m.users.known[u]))


def test_long_runs_log_per_model_progress_with_events_per_second_and_eta(monkeypatch, caplog):
    import logging

    import dsgd.evaluation.harness as ev_mod

    monkeypatch.setattr(ev_mod, "PROGRESS_EVERY_S", 0.0)
    st = prepare_stream(_planted(1500))
    with caplog.at_level(logging.INFO, logger="dsgd.evaluate"):
        run_prequential(st, "popularity,online", batch_events=100)
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("online: ") and "events/s" in line and "ETA" in line for line in lines), lines
    assert any(line.startswith("popularity: 1500 events in") for line in lines), lines
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dsgd.evaluate"):
        run_prequential(st, "online", batch_events=100, progress=False)
    assert not caplog.records


def test_retrain_choice_takes_the_best_policy_and_the_als_settings_of_the_best_als_policy():
    from dsgd.evaluation.tuning import select_retrain

    rows = [("online", None, None, None, None, 0.30), ("retrain+online:warm-start", "warm-start", None, None, None, 0.33),
            ("als+online:replace", "replace", 0.0, 0.0, None, 0.31), ("als", None, 0.0, 0.0, None, 0.50),
            ("als+online:score-blend", "score-blend", 0.0, 0.0, 0.25, 0.305),
            ("als+online:replace", "replace", 0.0, 14.0, None, 0.30),
            ("als+online:score-blend", "score-blend", 0.0, 14.0, 0.25, 0.32),
            ("als+online:score-blend", "score-blend", 0.0, 14.0, 0.5, 0.325)]
    table = pd.DataFrame(rows, columns=["model", "policy", "window_days", "half_life_days", "alpha", "dcg"])
    got = select_retrain(table)
    assert got["model"] == "retrain+online:warm-start" and got["policy"] == "warm-start"  # the frozen als never wins
    assert (got["window_days"], got["half_life_days"], got["alpha"]) == (0.0, 14.0, 0.5)
    only_online = table.assign(dcg=np.where(table["model"] == "online", 0.9, table["dcg"]))
    got = select_retrain(only_online)
    assert got["model"] == "online" and got["policy"] == "warm-start"


def test_cli_a_missing_data_path_is_a_usage_error_naming_the_path_tried(tmp_path, capsys):
    from dsgd.cli.main import main

    missing = tmp_path / "no-such.tsv"
    assert main(["evaluate", "--dataset", "lastfm-tsv", "--path", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "argument --path" in err and str(missing) in err and "Traceback" not in err, err


def test_cli_help_shows_the_default_of_every_model_option(capsys):
    from dsgd.cli.main import main
    from dsgd.evaluation.params import EvalParams

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: EvalParams)" not in out
    assert f"factor rank (default: {EvalParams().rank})" in out and f"(default: {EvalParams().k})" in out, out
