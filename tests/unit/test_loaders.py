from __future__ import annotations

import numpy as np
import pytest

from dsgd.core.columns import ITEM, RATING, SEQ, TS, USER
from dsgd.evaluation.loaders import DATASETS, load_dataset, load_lastfm_1k

COLUMNS = [USER, ITEM, RATING, TS, SEQ]


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def _check_schema(df):
    assert list(df.columns) == COLUMNS
    assert df[RATING].dtype == np.float32
    assert df[TS].dtype == np.int64 and df[SEQ].dtype == np.int64
    assert all(isinstance(x, str) for x in df[USER]) and all(isinstance(x, str) for x in df[ITEM])
    assert df[SEQ].tolist() == list(range(len(df)))
    assert (np.diff(df[TS].to_numpy()) >= 0).all()


# unsorted, with a ts tie (rows 2 and 3: file order must be kept)
ML100K = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n244\t51\t2\t878887116\n"


def test_ml100k_folder_is_sorted_by_time_with_stable_ties(tmp_path):
    _write(tmp_path / "u.data", ML100K)
    df = load_dataset("ml-100k", tmp_path)
    _check_schema(df)
    assert df[USER].tolist() == ["22", "244", "196", "186"]
    assert df[ITEM].tolist() == ["377", "51", "242", "302"]
    assert df[TS].tolist()[0] == 878887116000
    assert df[RATING].tolist() == [1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("name", ["ml-1m", "ml-10m"])
def test_movielens_dat_double_colon(tmp_path, name):
    f = _write(
        tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3.5::978302109\n2::3068::4::978299000\n"
    )
    df = load_dataset(name, f)
    _check_schema(df)
    assert df[USER].tolist() == ["2", "1", "1"]
    assert df[ITEM].tolist() == ["3068", "1193", "661"]
    assert df[RATING].tolist() == [4.0, 5.0, 3.5]


@pytest.mark.parametrize("name", ["ml-20m", "ml-latest"])
def test_movielens_csv_with_header(tmp_path, name):
    _write(
        tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,0.5,964981247\n"
    )
    df = load_dataset(name, tmp_path)
    _check_schema(df)
    assert df[ITEM].tolist() == ["3", "1"]
    assert df[RATING].tolist() == [0.5, 4.0]
    assert df[TS].tolist() == [964981247000, 964982703000]


def test_movielens_csv_rejects_wrong_header(tmp_path):
    f = _write(tmp_path / "ratings.csv", "user,item,rating,ts\n1,1,4.0,964982703\n")
    with pytest.raises(ValueError, match="userId,movieId,rating,timestamp"):
        load_dataset("ml-latest", f)


def test_movietweetings_keeps_imdb_leading_zeros(tmp_path):
    f = _write(tmp_path / "ratings.dat", "1::1074638::7::1365029107\n2::0104257::10::1364690142\n")
    df = load_dataset("movietweetings", f)
    _check_schema(df)
    assert df[ITEM].tolist() == ["0104257", "1074638"]
    assert df[RATING].tolist() == [10.0, 7.0]


LASTFM_RAW = (
    "user_000001\t2009-05-04T23:08:57Z\tf1b1cf71-bd35-4e99-8624-24a6e15f133a\tDeep Dish\t\tFuck Me Im Famous\n"
    "user_000001\t2009-05-02T14:30:56Z\t\tRocket Empire\t\tSimmer Down Jammie\n"
    'user_000001\t2009-04-01T15:27:05Z\taf8a8ede-2c56\tJohnny "Hammond" Smith\t9383afaa\tTell Me What To Do\n'
    "user_000002\t2009-05-01T11:58:15Z\t\tRocket Empire\t\tIntro\n"
    "user_000002\tnot-a-time\tabc\tX\t\tY\n"
    "user_000002\t2009-05-01T11:00:00Z\tonly\tfour fields\n"
)


def test_lastfm_1k_raw_artists_with_name_fallback_and_bad_lines_skipped(tmp_path):
    f = _write(tmp_path / "raw.tsv", LASTFM_RAW)
    with pytest.warns(UserWarning, match="skipped 2 malformed"):
        df = load_dataset("lastfm-1k", f)
    _check_schema(df)
    assert df[RATING].isna().all()
    assert df[USER].tolist() == ["user_000001", "user_000002", "user_000001", "user_000001"]
    assert df[ITEM].tolist() == [
        "af8a8ede-2c56",
        "name:Rocket Empire",
        "name:Rocket Empire",
        "f1b1cf71-bd35-4e99-8624-24a6e15f133a",
    ]
    assert df[TS].iloc[-1] == 1241478537000  # 2009-05-04T23:08:57Z


def test_lastfm_1k_raw_tracks(tmp_path):
    f = _write(tmp_path / "raw.tsv", LASTFM_RAW)
    with pytest.warns(UserWarning):
        df = load_lastfm_1k(f, item_kind="track")
    assert df[ITEM].tolist() == [
        "9383afaa",
        "name:Rocket Empire - Intro",
        "name:Rocket Empire - Simmer Down Jammie",
        "name:Deep Dish - Fuck Me Im Famous",
    ]
    with pytest.raises(ValueError, match="artist, track"):
        load_lastfm_1k(f, item_kind="album")


def test_lastfm_tsv_indexed_stream(tmp_path):
    f = _write(tmp_path / "listens.tsv", "0\t0\t0\n1\t1\t54\n0\t2\t54.5\n1\t1\t20\n")
    df = load_dataset("lastfm-tsv", f)
    _check_schema(df)
    assert df[TS].tolist() == [0, 20000, 54000, 54500]
    assert df[ITEM].tolist() == ["0", "1", "1", "2"]
    assert df[RATING].isna().all()


def test_implicit_threshold_keeps_high_ratings_and_drops_values(tmp_path):
    _write(tmp_path / "u.data", ML100K)
    df = load_dataset("ml-100k", tmp_path, implicit_threshold=3)
    assert df[ITEM].tolist() == ["242", "302"]
    assert df[RATING].isna().all() and df[RATING].dtype == np.float32
    assert df[SEQ].tolist() == [0, 1]


def test_first_only_and_min_item_count_and_limit(tmp_path):
    f = _write(tmp_path / "l.tsv", "7\t70\t1\n7\t70\t2\n8\t70\t3\n7\t71\t4\n8\t72\t5\n8\t72\t6\n")
    first = load_dataset("lastfm-tsv", f, first_only=True)
    assert list(zip(first[USER], first[ITEM], strict=True)) == [
        ("7", "70"),
        ("8", "70"),
        ("7", "71"),
        ("8", "72"),
    ]
    assert first[SEQ].tolist() == [0, 1, 2, 3]
    popular = load_dataset("lastfm-tsv", f, min_item_count=2)
    assert popular[ITEM].tolist() == ["70", "70", "70", "72", "72"]
    both = load_dataset("lastfm-tsv", f, first_only=True, min_item_count=2)
    assert both[ITEM].tolist() == ["70", "70"]
    assert load_dataset("lastfm-tsv", f, limit=2)[TS].tolist() == [1000, 2000]


def test_dispatcher_names_allowed_datasets_and_missing_files(tmp_path):
    with pytest.raises(ValueError) as err:
        load_dataset("netflix", tmp_path)
    for name in DATASETS:
        assert name in str(err.value)
    with pytest.raises(FileNotFoundError, match="u.data"):
        load_dataset("ml-100k", tmp_path)
