#!/usr/bin/env python3
"""CPU per unchanged poll, taken apart: the figures of bench/README.md
that bench_tracker.py cannot give on its own.

Serves N feeds from bench_tracker's loopback farm (another process), then
measures this process's CPU (getrusage) per unchanged poll in one of three ways:

  --how fetch    one thread polls every feed in turn with the Fetcher,
                 --gap seconds of sleep between two polls (0: back to back)
  --how tracker  the Tracker in this process, its worker threads as shipped
  --how inline   the Tracker with each poll run in its scheduler's thread

    python3 bench/poll_cost.py --how fetch --gap 0
    python3 bench/poll_cost.py --how fetch --gap 0.01
    python3 bench/poll_cost.py --how tracker --feeds 1000 --interval 10
    python3 bench/poll_cost.py --how inline --feeds 1000 --interval 10
"""
import argparse
import os
import resource
import sys
import threading
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import bench_tracker                 # noqa: E402  the farm
import openai_status_tracker as tracker   # noqa: E402


def inline_lane(workers, work):
    """A Lane that runs each poll in the thread that submits it."""
    return types.SimpleNamespace(submit=work, pump=lambda: float("inf"), shutdown=lambda: None,
                                 resize=lambda workers: None)


def usage():
    """Return (CPU seconds, context switches) of this process so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime, own.ru_nvcsw + own.ru_nivcsw


def by_fetch(urls, args):
    """CPU per poll of one thread polling each feed in turn; (ms, switches, polls)."""
    fetch, parsing, jobs = tracker.Fetcher(), threading.Lock(), {}

    def poll(url):
        job = jobs.get(url) or tracker.Job(url, None, None, None, args.timeout)
        outcome = tracker.fetch_feed(fetch, job, parsing)
        jobs[url] = job._replace(etag=outcome.etag, last_modified=outcome.last_modified,
                                 body_sha256=outcome.body_sha256)
    for url in urls * 2:              # first looks (parsed), then one unchanged round
        poll(url)
    before, polls = usage(), 0
    for _ in range(args.rounds):
        for url in urls:
            poll(url)
            polls += 1
            if args.gap:
                time.sleep(args.gap)
    after = usage()
    return (after[0] - before[0]) * 1000 / polls, (after[1] - before[1]) / polls, polls


def by_tracker(urls, args, lane):
    """CPU per poll of a Tracker in this process over a quiet window."""
    providers = [tracker.Provider(url, "feed-%05d" % n) for n, url in enumerate(urls)]
    config = tracker.Config(interval=args.interval, workers=args.workers)
    run = tracker.Tracker(providers, config, fetch=tracker.Fetcher(), lane=lane)
    thread = threading.Thread(target=run.run)
    thread.start()
    try:
        time.sleep(2 * args.interval + 3)     # the first round parses; measure after it
        before, polls = usage(), run.stats["polls"]
        time.sleep(args.window)
        after, polls = usage(), run.stats["polls"] - polls
    finally:
        run.stop()
        thread.join()
    return (after[0] - before[0]) * 1000 / polls, (after[1] - before[1]) / polls, polls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--how", choices=["fetch", "tracker", "inline"], default="fetch")
    parser.add_argument("--feeds", type=int, default=500)
    parser.add_argument("--openai-share", type=float, default=0.5)
    parser.add_argument("--gap", type=float, default=0.0, help="fetch: sleep between polls")
    parser.add_argument("--rounds", type=int, default=4, help="fetch: rounds measured")
    parser.add_argument("--interval", type=float, default=10.0, help="tracker, inline")
    parser.add_argument("--workers", type=int, default=tracker.MAX_WORKERS)
    parser.add_argument("--window", type=float, default=20.0, help="tracker, inline: seconds")
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args(argv)
    farm = bench_tracker.FarmClient({
        "feeds": args.feeds, "interval": args.interval, "seed": 1,
        "openai_share": args.openai_share, "gzip": True,
        "feeds_dir": os.path.join(os.path.dirname(HERE), "testdata"), "dead": 0,
        "max_seconds": 3600})
    urls = ["http://127.0.0.1:%d/feeds/%05d.atom" % (farm.port, n) for n in range(args.feeds)]
    try:
        if args.how == "fetch":
            cost, switches, polls = by_fetch(urls, args)
        else:
            cost, switches, polls = by_tracker(
                urls, args, inline_lane if args.how == "inline" else tracker.Lane)
    finally:
        farm.close()
    print("%s: %.3f ms CPU per unchanged poll, %.1f context switches a poll (%d polls, "
          "%d feeds, Python %s)" % (args.how, cost, switches, polls, args.feeds,
                                    sys.version.split()[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
