"""Column names shared by every table, DataFrame and Arrow batch of the engine.

Events (wire, ``events`` table, loaders, synthetic generator):
``user``, ``item`` (ids as strings), ``rating`` (float, null/NaN for implicit), ``ts`` (epoch ms),
``seq`` (int64 tie-breaker: position in the stream).

Derived id keys: ``user_key`` / ``item_key`` = XXH64(utf-8 id, seed 42) as signed int64, equal to
Spark's ``xxhash64(id)``; blocks and initial vectors derive from these keys.
"""

from __future__ import annotations

USER = "user"
ITEM = "item"
RATING = "rating"
TS = "ts"
SEQ = "seq"
USER_KEY = "user_key"
ITEM_KEY = "item_key"
EVENT_DATE = "event_date"

# factors table
SIDE = "side"  # "u" or "i"
ID = "id"
KEY = "key"
VEC = "vec"
BIAS = "bias"
COUNT = "count"  # events trained on this id (item popularity for side "i")
LAST_BATCH = "last_batch"
UPDATED_AT = "updated_at"
MODEL_SEQ = "model_seq"  # the model commit that wrote this row version (latest per side + id is current)

SIDE_USER = "u"
SIDE_ITEM = "i"
SIDE_META = "m"  # model metadata row (global mean, rank, ...) committed with the factors
