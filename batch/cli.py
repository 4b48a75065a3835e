"""``dsgd retrain``, ``dsgd recommend``, ``dsgd export`` and ``dsgd rollback``.

Exit codes (also of ``batch/retrain_main.py`` under spark-submit): 0 ok (including a re-run of an
as-of that is already blended), 1 failure, 2 bad config or usage, 3 nothing to do (no events up to the
as-of). The ``[retrain]`` keys can be overridden per run with ``--policy``/``--alpha``/``--retrain-set``.

Example
-------
    dsgd retrain --profile local --as-of 2024-06-02T00:00:00Z --policy replace
    dsgd recommend --profile local --user u42 -k 10
    dsgd export --profile local -k 20
    dsgd rollback --profile local --version 12
"""

from __future__ import annotations

import argparse
import json

from dsgd.cli.registry import command
from dsgd.core.config import Config, ConfigError


def _retrain_cfg(args: argparse.Namespace, cfg: Config):
    from batch.retrain_config import retrain_config, validated

    values = {}
    for text in getattr(args, "retrain_set", None) or []:
        if "=" not in text:
            raise ConfigError(f"--retrain-set {text!r} must look like key=value")
        key, value = text.split("=", 1)
        values[key.strip().removeprefix("retrain.")] = value.strip()
    if getattr(args, "policy", None):
        values["policy"] = args.policy
    if getattr(args, "alpha", None) is not None:
        values["alpha"] = args.alpha
    return validated(retrain_config(cfg), values)


def _retrain_args(p: argparse.ArgumentParser) -> None:
    from batch.retrain_config import POLICIES

    p.add_argument("--as-of", default="now", help="cut-off: ISO-8601 time, epoch ms, or 'now' (default)")
    p.add_argument("--policy", choices=POLICIES, default=None, help="blend policy (default: retrain.policy)")
    p.add_argument("--alpha", type=float, default=None, help="score-blend weight of the batch model")
    p.add_argument("--retrain-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one [retrain] key, e.g. als_max_iter=20 (repeatable)")


@command("retrain", "batch ALS retrain up to --as-of, versioned snapshot, blend into the live model",
         _retrain_args)
def cmd_retrain(args: argparse.Namespace, cfg: Config) -> int:
    from batch.retrain import main

    return main(None, cfg, as_of=args.as_of, retrain=_retrain_cfg(args, cfg))


def _recommend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", required=True, help="user id")
    p.add_argument("-k", type=int, default=None, help="number of items (default: retrain.top_k)")
    p.add_argument("--include-seen", action="store_true", help="do not filter the user's seen items")


@command("recommend", "print the top-K items of one user as JSON", _recommend_args)
def cmd_recommend(args: argparse.Namespace, cfg: Config) -> int:
    from batch.serving import recommend
    from dsgd.store.session import build_session

    out = recommend(build_session(cfg), cfg, args.user, k=args.k, filter_seen=False if args.include_seen else None,
                    retrain=_retrain_cfg(args, cfg))
    print(json.dumps(out))
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-k", type=int, default=None, help="items per user (default: retrain.top_k)")


@command("export", "top-K recommendations of every user -> Delta 'recommendations'", _export_args)
def cmd_export(args: argparse.Namespace, cfg: Config) -> int:
    from batch.serving import export_top_k
    from dsgd.store.session import build_session

    print(json.dumps(export_top_k(build_session(cfg), cfg, k=args.k, retrain=_retrain_cfg(args, cfg))))
    return 0


def _rollback_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--version", type=int, help="Delta version of the factors table to restore")
    g.add_argument("--timestamp", help="restore the factors table as of this time: ISO 8601, UTC unless it has an offset "
                   "(e.g. '2024-06-02 00:00:00', '2024-06-02T02:00:00+02:00')")


@command("rollback", "restore the live model (factors table) to an earlier Delta version or timestamp",
         _rollback_args)
def cmd_rollback(args: argparse.Namespace, cfg: Config) -> int:
    from batch.changes import model_changes
    from batch.serving import rollback
    from dsgd.store.factor_store import timestamp_ms
    from dsgd.store.session import build_session

    if args.timestamp is not None:
        try:
            timestamp_ms(args.timestamp)  # before the JVM starts
        except ValueError as exc:
            print(json.dumps({"error": str(exc)}))
            return 2
    spark = build_session(cfg)
    try:
        out = rollback(spark, cfg, version=args.version, timestamp=args.timestamp)
    except ValueError as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    out["changes"] = model_changes(spark, cfg, before=out["restored_from"], after=out["factors_version"])
    print(json.dumps(out))
    return 0
