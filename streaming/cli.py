"""``dsgd stream`` and ``dsgd produce``."""

from __future__ import annotations

import argparse
import sys

from dsgd.cli.registry import command
from dsgd.core.config import Config


def _stream_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--available-now", action="store_true",
                   help="process what is in the topic and stop (sets stream.trigger=available_now)")
    p.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")


@command("stream", "run the streaming trainer: Kafka -> evaluate -> DSGD -> Delta", _stream_args)
def cmd_stream(args: argparse.Namespace, cfg: Config) -> int:
    from streaming.main import main as stream_main

    if args.available_now:
        cfg = cfg.replace(stream={"trigger": "available_now"})
    return stream_main(None, cfg, timeout_s=args.timeout)


def _produce_args(p: argparse.ArgumentParser) -> None:
    from dsgd.evaluation.loaders import DATASETS

    p.add_argument("--dataset", default="synthetic", choices=("synthetic", *DATASETS),
                   help="what to replay (a published format, or the synthetic generator)")
    p.add_argument("--path", help="file or folder of the data set (not for synthetic)")
    p.add_argument("--events", type=int, default=100_000, help="synthetic: number of events")
    p.add_argument("--users", type=int, default=2000, help="synthetic: number of users")
    p.add_argument("--items", type=int, default=1000, help="synthetic: number of items")
    p.add_argument("--seed", type=int, default=0, help="synthetic: seed")
    p.add_argument("--explicit", action="store_true", help="synthetic: emit ratings")
    p.add_argument("--limit", type=int, default=None, help="replay at most this many events")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, default=None,
                      help="events per second (default, with neither pace flag: as fast as the broker takes them)")
    pace.add_argument("--speedup", type=float, default=None,
                      help="replay event time this many times faster (ml-100k spans 7 months: 100000 takes ~3 min)")
    p.add_argument("--create-topic", action="store_true", help="create the topic first")


@command("produce", "replay a data set or a synthetic stream into the topic, in event-time order; rows that "
         "break the event contract are not sent (counted and reported)", _produce_args)
def cmd_produce(args: argparse.Namespace, cfg: Config) -> int:
    from dsgd.ops.kafka_broker import create_topic
    from streaming.produce import produce_events

    if args.dataset == "synthetic":
        from dsgd.evaluation.synthetic import generate_stream

        df = generate_stream(args.events, n_users=args.users, n_items=args.items, seed=args.seed,
                             implicit=not args.explicit)
    else:
        from dsgd.evaluation.loaders import load_dataset

        if not args.path:
            raise SystemExit(f"dsgd produce: --path is required for --dataset {args.dataset}")
        df = load_dataset(args.dataset, args.path, limit=args.limit)
    if args.limit:
        df = df.iloc[: args.limit]
    if args.create_topic:
        create_topic(cfg.kafka.bootstrap_servers, cfg.kafka.topic, cfg.kafka.partitions)
    m = cfg.model
    done = produce_events(df, bootstrap=cfg.kafka.bootstrap_servers, topic=cfg.kafka.topic, rate=args.rate,
                          speedup=args.speedup, progress=True, explicit=m.kind == "explicit",
                          rating_min=m.rating_min, rating_max=m.rating_max)
    print(f"produced {done.sent} events to {cfg.kafka.topic}")
    if done.skipped:  # checked with the event contract (the trainer would quarantine them): not sent
        print(f"dsgd produce: {done.report()}", file=sys.stderr)
    return 0
