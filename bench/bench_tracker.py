#!/usr/bin/env python3
"""Benchmark openai_status_tracker against N status feeds served on 127.0.0.1.

A "feed farm" child process (this file with --serve) serves N Atom feeds on a
loopback port from one single-threaded selectors loop: half shaped like
status.openai.com (incident.io: no ETag, no Last-Modified, the feed-level
<updated> rewritten on every fetch, ~87 entries), half like an Atlassian
Statuspage page (GitHub, Claude: weak ETag W/"<first 32 hex of sha256(body)>",
304 to a matching If-None-Match, ~25 entries).  The bodies come from the real
captures in ../testdata (or, with --generated, from the sample builders of
../testdata/samples.py that the tests use); every feed gets its own host name,
so its entry ids are its own.

With --dead FRACTION that share of the feeds (spread over both shapes) is
dead, served by the same loop at next to no cost: half "hang" (the request is
read, never answered, the connection held open until the client gives up),
half "drip" (a 200 head promising a 1 MB body, then one byte a second).
The tracker is expected to report them failing: they are left out of the
injections, of the lateness and gap figures and of the "no feed failed" rule.
With --latency S every healthy answer is held S seconds (a far network's
round trip); with --notify-delay S the tracker also gets --notify to a
webhook receiver in the farm that answers each POST after S seconds, and the
notifications it received are reported.

The tracker runs as a subprocess (`openai_status_tracker.py --json`, stopped
with SIGTERM) or in this process (Tracker(...).run() in a thread).  A run has
four phases, all timed with CLOCK_MONOTONIC (shared by both processes):

    warm-up   until every feed has been fetched once (first poll parses all)
    quiet     --quiet seconds, nothing changes: CPU per *unchanged* poll
    inject    every --inject-every s, --inject-per-tick random feeds change
              (OpenAI shape: top entry's <updated>/status/message, or a new
              entry; Statuspage: a new <p><small>..</small><strong>Label</strong>
              block on an entry, or a new incident; new ETag) -- a feed is only
              changed again after the tracker has fetched its last change
    drain     interval + margin, nothing changes: late detections arrive

Reported: polls/s; tracker CPU ms per poll (whole run, quiet window = unchanged
polls only, inject+drain windows); peak RSS (VmHWM) and RSS per feed beyond the
baseline (a python that imported the tracker and watches nothing); bytes the
server sent per response incl. headers, by shape and kind (first / changed /
unchanged 200 / 304); lateness of polls against their schedule (server-side:
per feed, request k at t_k, lateness = (t_k - k*interval) - min over the
feed's requests of (t_m - m*interval); in-process also the tracker's own
stats["lateness_max"]); updates injected versus detected (each exactly once);
and the farm's own CPU, to show the server is not the bottleneck.
For the healthy feeds also: the largest gap between two consecutive polls of
one feed from its second poll on (server-side times; target <= interval +
10 %), and when every healthy feed had been fetched once, from the tracker's
start (target <= 1.5 intervals).  Connections: the farm numbers each TCP
connection it accepts and keeps it open (HTTP/1.1) until the client closes;
reported are connections opened, requests, and the healthy feeds whose polls
after the first used more than one connection (kept-alive feeds: 0).  The
quiet window counts healthy polls only.

CPU: subprocess mode reads utime+stime of the tracker from /proc/PID/stat
(all its threads, 10 ms ticks).  In-process mode uses time.process_time() of
this process minus the main thread's own time.thread_time(); the server is in
another process either way.

Usage:
    python3 bench/bench_tracker.py --feeds 1000 --interval 10 --quiet 20 --inject 20
    python3 bench/bench_tracker.py --feeds 5000 --interval 60 --mode subprocess
    python3 bench/bench_tracker.py --feeds 1000 --interval 10 --timeout 20 --dead 0.05 \
        --quiet 20 --inject 20
    python3 bench/bench_tracker.py --feeds 1000 --interval 10 --quiet 20 --inject 20 --latency 0.15
    python3 bench/bench_tracker.py --feeds 1000 --interval 10 --quiet 20 --inject 20 --notify-delay 2

Exit codes: 0 every injected update detected exactly once and no healthy feed failed;
1 otherwise (or the run broke); 2 bad usage.  Python 3.6+, standard library only.
"""

import argparse
import collections
import hashlib
import heapq
import html
import json
import os
import random
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TRACKER = os.path.join(ROOT, "openai_status_tracker.py")
FEEDS_DIR = os.path.join(ROOT, "testdata")
OPENAI_SAMPLE = "openai-incidentio-history-20260914.atom"
STATUSPAGE_SAMPLE = "anthropic-claude-statuspage-history-20261008.atom"
HOST = b"HOST-PLACEHOLDER"       # replaced by each feed's own host when served
DRIP_EVERY = 1.0                 # seconds between the bytes of a dripping dead feed
TOKEN = re.compile(r"inj-(\d+)")
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

_ENTRY = re.compile(rb"[ \t]*<entry>.*?</entry>\n?", re.S)
_UPDATED = re.compile(rb"<updated>[^<]*</updated>")
_OPENAI_CODE = re.compile(rb"/incidents/([0-9A-Za-z]+)</id>")
_TITLE_CDATA = re.compile(rb"<title[^>]*><!\[CDATA\[(.*?)\]\]></title>", re.S)
_CONTENT = re.compile(rb'(<content type="html">)')

sys.path.insert(0, FEEDS_DIR)   # testdata/samples.py: the feed builders the tests use too
import samples  # noqa: E402


# ---------------------------------------------------------------- feed shapes

def _stamp_ms(now):
    """incident.io's time format: 2026-09-14T03:57:19.771Z."""
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000)


def _stamp_s(now):
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _chunk(entry, real_host):
    """A samples.* entry as the farm keeps one: bytes on its own lines, host a placeholder."""
    return (entry.strip("\n") + "\n").encode("utf-8").replace(real_host, HOST)


def openai_entry(code, title, updated, label, message, components=()):
    """One incident.io <entry>; components are names, all "(Operational)"."""
    return _chunk(samples.openai_entry(code, title, updated, label, message,
                                       ["%s (Operational)" % c for c in components]),
                  b"status.openai.com")


def statuspage_block(when, label, message):
    """One Statuspage update as samples takes it: (date, time, label, message)."""
    return ("%s %d" % (when.strftime("%b"), when.day), when.strftime("%H:%M"), label, message)


def statuspage_content(blocks):
    """Update blocks as they sit in a Statuspage <content>: HTML-escaped bytes."""
    return html.escape(samples.statuspage_blocks(blocks), quote=False).encode("utf-8")


def statuspage_entry(number, title, updated, blocks):
    """One Statuspage <entry> (published = updated); blocks newest first."""
    return _chunk(samples.statuspage_entry(number, title, updated, updated, blocks,
                                           host="status.claude.com"), b"status.claude.com")


def _generated_openai(rand):
    """87 incident.io entries like the real feed, all resolved."""
    parts = ["Chat Completions", "Responses", "Codex", "Conversations", "Login",
             "File uploads", "Voice mode", "Image Generation", "Fine-tuning"]
    entries, when = [], datetime(2026, 9, 14, 3, 57, 19, 771000)
    for number in range(87):
        code = "01M2%022d" % (number * 7919)
        components = rand.sample(parts, rand.randint(0, 3))
        message = "All impacted services have now fully recovered." + (
            " We are monitoring closely." * rand.randint(0, 4))
        entries.append(samples.openai_entry(
            code, "Elevated error rates for %s" % (components[0] if components else "ChatGPT"),
            _stamp_ms(when), "Resolved", message,
            ["%s (Operational)" % c for c in components]))
        when = when.replace(day=max(1, when.day - 1)) if number % 9 == 8 else when
    return _split_feed(samples.openai_feed(*entries), b"status.openai.com")


def _generated_statuspage(rand):
    """25 Statuspage entries like the Claude feed; the second one still open."""
    labels = ["Investigating", "Identified", "Update", "Monitoring"]
    entries = []
    for number in range(25):
        when = datetime(2026, 10, 7, 21, 23) .replace(day=7 - number // 5)
        blocks = []
        count = rand.randint(1, 5)
        for index in range(count):
            label = "Resolved" if index == 0 and number != 1 else (
                "Monitoring" if index == 0 else labels[(count - index) % 4])
            blocks.append(statuspage_block(when, label, "We are investigating elevated "
                                           "errors on requests to Claude models. " * 2))
        entries.append(samples.statuspage_entry(
            31617588 - number * 1000, "Elevated errors on Claude %d" % number,
            _stamp_s(when), _stamp_s(when), blocks, host="status.claude.com"))
    return _split_feed(samples.statuspage_feed(*entries, host="status.claude.com", name="Claude"),
                       b"status.claude.com")


def _split_feed(body, real_host):
    """Return (head, entries, tail) of a captured feed, its host made a placeholder."""
    body = body.replace(real_host, HOST)
    entries = _ENTRY.findall(body)
    first = body.index(entries[0])
    last = body.rindex(entries[-1]) + len(entries[-1])
    return body[:first], entries, body[last:]


def load_templates(feeds_dir, seed):
    """Return {"openai": (head, entries, tail), "statuspage": ...} and where they came from."""
    rand = random.Random(seed)
    paths = [os.path.join(feeds_dir, name) for name in (OPENAI_SAMPLE, STATUSPAGE_SAMPLE)]
    if feeds_dir and all(os.path.exists(path) for path in paths):
        with open(paths[0], "rb") as handle:
            openai = _split_feed(handle.read(), b"status.openai.com")
        with open(paths[1], "rb") as handle:
            statuspage = _split_feed(handle.read(), b"status.claude.com")
        return {"openai": openai, "statuspage": statuspage}, "captured feeds in %s" % feeds_dir
    return ({"openai": _generated_openai(rand), "statuspage": _generated_statuspage(rand)},
            "generated by testdata/samples.py" + (" (no captures in %s)" % feeds_dir
                                                  if feeds_dir else ""))


# ---------------------------------------------------------------- the feed farm (child process)

class FarmFeed(object):
    """One served feed: shared template entries plus its own changes."""

    __slots__ = ("number", "shape", "host", "entries", "version", "served", "etag",
                 "times", "conns", "changed_at", "dead")

    def __init__(self, number, shape, entries):
        self.number, self.shape = number, shape
        self.host = ("f%05d.%s.example" % (number, shape)).encode()
        self.entries = list(entries)   # references to the shared template chunks
        self.version = 0               # bumped by every injected change
        self.served = -1               # version last sent with a 200 / confirmed by a 304
        self.etag = None               # cached per version (Statuspage shape)
        self.times = []                # monotonic arrival time of each request
        self.conns = []                # number of the TCP connection each request came on
        self.changed_at = None
        self.dead = None               # None (healthy), "hang" or "drip"


class Farm(object):
    """Serve N feeds from one selectors loop; inject and record updates."""

    def __init__(self, config):
        self.config = config
        self.interval = config["interval"]
        self.templates, self.source = load_templates(config["feeds_dir"], config["seed"])
        self.rand = random.Random(config["seed"])
        count = config["feeds"]
        openai_count = int(round(count * config["openai_share"]))
        self.feeds = [FarmFeed(n, "openai" if n < openai_count else "statuspage",
                               self.templates["openai" if n < openai_count else "statuspage"][1])
                      for n in range(count)]
        # dead feeds: a --dead share of them, spread over both shapes; half hang, half drip
        dead = sorted(random.Random(config["seed"] + 7919).sample(
            range(count), int(round(count * config.get("dead", 0.0)))))
        for index, number in enumerate(dead):
            self.feeds[number].dead = "hang" if index % 2 == 0 else "drip"
        self.live = [feed for feed in self.feeds if feed.dead is None]
        self.dripping = {}             # socket -> state of a dripping answer
        self.latency = config.get("latency", 0.0)
        self.delayed = []              # heap of answers held back by --latency
        self.next_drip = None
        self.counters = collections.Counter()
        self.injections = []
        self.inject_every = self.next_inject = None
        self.per_tick = 1
        self.fetched = 0               # healthy feeds fetched at least once
        self.fetched_dead = 0          # dead feeds asked at least once
        self.service_max = self.loop_lag_max = self.build_max = 0.0
        self.selector = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4096)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.control = b""
        self.running = True

    # -- bodies

    def body(self, feed, now_wall):
        head, _, tail = self.templates[feed.shape]
        if feed.shape == "openai":   # incident.io rewrites the feed <updated> per fetch
            head = _UPDATED.sub(("<updated>%s</updated>" % _stamp_ms(now_wall)).encode(),
                                head, 1)
        return b"".join([head] + feed.entries + [tail]).replace(HOST, feed.host)

    def etag_of(self, feed, body=None):
        if feed.etag is None:
            body = body if body is not None else self.body(feed, None)
            feed.etag = 'W/"%s"' % hashlib.sha256(body).hexdigest()[:32]
        return feed.etag

    # -- HTTP

    def respond(self, request, conn=0):
        """Return (response bytes, counter key, body length, keep-alive?) for a request head.

        A dead feed's key is "dead hang" (the response is empty: never answer)
        or "dead drip" (the response is the head; the body then drips)."""
        lines = request.split(b"\r\n")
        parts = lines[0].split()
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        # HTTP/1.1 connections persist unless the client says close (urllib always does)
        keep = parts[2:] == [b"HTTP/1.1"] and headers.get(b"connection", b"").lower() != b"close"
        response, key, length = self._answer(parts, headers, keep, conn)
        return response, key, length, keep

    def _answer(self, parts, headers, keep, conn=0):
        connection = "" if keep else "Connection: close\r\n"
        match = re.match(rb"/feeds/(\d+)\.atom$", parts[1]) if len(parts) == 3 else None
        number = int(match.group(1)) if match else -1
        if parts[:1] != [b"GET"] or not 0 <= number < len(self.feeds):
            return (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                    + connection.encode() + b"\r\n", "404", 0)
        feed = self.feeds[number]
        now = time.monotonic()
        if not feed.times:
            if feed.dead:
                self.fetched_dead += 1
            else:
                self.fetched += 1
        feed.times.append(now)
        feed.conns.append(conn)
        if feed.dead == "hang":      # never answer; keep the connection open
            return b"", "dead hang", 0
        if feed.dead == "drip":      # promise 1 MB (under the tracker's 4 MB cap), then a byte a second
            return (b"HTTP/1.1 200 OK\r\nContent-Type: application/atom+xml\r\n"
                    b"Content-Length: 1000000\r\n\r\n"), "dead drip", 0
        date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
        wall = datetime.now(timezone.utc)
        kind = "first" if feed.served < 0 else (
            "changed" if feed.served != feed.version else "unchanged")
        if feed.shape == "statuspage":
            etag = self.etag_of(feed)
            if headers.get(b"if-none-match", b"").decode("latin-1") == etag and feed.served >= 0:
                feed.served = feed.version
                return (("HTTP/1.1 304 Not Modified\r\nDate: %s\r\nETag: %s\r\n"
                         "Cache-Control: max-age=10, public, s-maxage=15, "
                         "stale-while-revalidate=30, stale-if-error=3600\r\n"
                         "Vary: Accept-Encoding\r\n%s\r\n"
                         % (date, etag, connection)).encode(), "statuspage 304 " + kind, 0)
            extra = ("ETag: %s\r\nCache-Control: max-age=10, public, s-maxage=15, "
                     "stale-while-revalidate=30, stale-if-error=3600\r\n" % etag)
        else:
            extra = "Cache-Control: public\r\n"
        body = self.body(feed, wall)
        feed.served = feed.version
        if self.config["gzip"] and b"gzip" in headers.get(b"accept-encoding", b""):
            packer = zlib.compressobj(6, zlib.DEFLATED, 31)
            body = packer.compress(body) + packer.flush()
            extra += "Content-Encoding: gzip\r\n"
        head = ("HTTP/1.1 200 OK\r\nDate: %s\r\nContent-Type: application/atom+xml; "
                "charset=utf-8\r\nContent-Length: %d\r\n%sVary: Accept-Encoding\r\n"
                "%s\r\n" % (date, len(body), extra, connection)).encode()
        return head + body, "%s 200 %s" % (feed.shape, kind), len(body)

    def accept(self):
        for _ in range(256):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            self.counters["connections"] += 1
            # in, out, service start, keep-alive, connection number, dead kind
            self.selector.register(sock, selectors.EVENT_READ,
                                   [b"", b"", time.monotonic(), False,
                                    self.counters["connections"], None])

    def readable(self, sock, state):
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            return self.close(sock, state)
        if state[5]:                 # a dead feed's connection: whatever comes is dropped
            return
        state[0] += data
        self.process(sock, state)

    def process(self, sock, state):
        """Answer the request buffered in state[0], if it is complete."""
        end = state[0].find(b"\r\n\r\n")
        if end < 0:
            if len(state[0]) > 65536:
                self.close(sock, state)
            return
        if state[0].startswith(b"POST "):
            return self.take_notification(sock, state, end)
        self.counters["request bytes"] += end + 4
        state[2] = time.monotonic()     # service time: from a whole request to its last byte
        response, key, body_length, state[3] = self.respond(state[0][:end], state[4])
        self.build_max = max(self.build_max, time.monotonic() - state[2])
        state[0] = state[0][end + 4:]
        self.counters[key + " n"] += 1
        self.counters[key + " bytes"] += len(response)
        self.counters[key + " body"] += body_length
        self.counters["requests"] += 1
        if key.startswith("dead "):
            self.counters["dead requests"] += 1
            state[0], state[3], state[5] = b"", True, key[5:]
            if not response:         # hanging: wait for the client to give up
                return
        if self.latency and not key.startswith("dead "):   # a far network: held a round trip
            self.counters["held answers"] += 1
            heapq.heappush(self.delayed, (time.monotonic() + self.latency,
                                          self.counters["held answers"], sock, state, response))
            return
        self.send(sock, state, response)

    def take_notification(self, sock, state, end):
        """A webhook receiver beside the feeds: take the POST, answer 200 after --notify-delay."""
        length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", state[0][:end + 2])
        size = end + 4 + (int(length.group(1)) if length else 0)
        if len(state[0]) < size:
            return                   # the body is not all here yet
        state[0], state[3] = state[0][size:], True
        self.counters["notifications"] += 1
        response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        self.counters["held answers"] += 1
        heapq.heappush(self.delayed, (time.monotonic() + self.config.get("notify_delay", 0.0),
                                      self.counters["held answers"], sock, state, response))

    def send(self, sock, state, response):
        state[1] = response
        self.writable(sock, state)
        if state[1]:
            self.selector.modify(sock, selectors.EVENT_WRITE, state)

    def send_delayed(self, now):
        """Send the answers held back (--latency, --notify-delay) whose time has come."""
        while self.delayed and self.delayed[0][0] <= now:
            _, _, sock, state, response = heapq.heappop(self.delayed)
            if sock.fileno() >= 0:
                self.send(sock, state, response)

    def writable(self, sock, state):
        while state[1]:
            try:
                sent = sock.send(state[1])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return self.close(sock, state)
            state[1] = state[1][sent:]
        if state[5]:                 # a dead feed's head is out: drip from now on
            if state[5] == "drip":
                self.dripping[sock] = state
                if self.next_drip is None:
                    self.next_drip = time.monotonic() + DRIP_EVERY
            if self.selector.get_key(sock).events != selectors.EVENT_READ:
                self.selector.modify(sock, selectors.EVENT_READ, state)
            return
        self.service_max = max(self.service_max, time.monotonic() - state[2])
        if not state[3]:
            return self.close(sock, state)
        if self.selector.get_key(sock).events != selectors.EVENT_READ:
            self.selector.modify(sock, selectors.EVENT_READ, state)
        if b"\r\n\r\n" in state[0]:
            self.process(sock, state)

    def drip(self):
        """Send one byte of its never-ending body on every dripping connection."""
        for sock, state in list(self.dripping.items()):
            try:
                sock.send(b" ")
                self.counters["dead drip bytes"] += 1
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self.close(sock, state)
        self.next_drip = time.monotonic() + DRIP_EVERY if self.dripping else None

    def close(self, sock, state):
        self.dripping.pop(sock, None)
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    # -- injecting updates

    def inject_tick(self):
        eligible = [feed for feed in self.rand.sample(self.live, min(len(self.live),
                                                                    4 * self.per_tick + 8))
                    if feed.served == feed.version]
        for feed in eligible[:self.per_tick]:
            self.inject(feed)

    def inject(self, feed):
        number = len(self.injections)
        token = "inj-%06d" % number
        now = datetime.now(timezone.utc)
        label = self.rand.choice(["Investigating", "Identified", "Monitoring", "Resolved"])
        message = "Injected update %s for %s: %s." % (
            token, feed.host.decode(), self.rand.choice(
                ["we are looking into it", "a fix is rolling out", "errors are recovering"]))
        kind = "new" if self.rand.random() < 0.3 else "update"
        if feed.shape == "openai":
            if kind == "new":
                entry = openai_entry("01INJ%021d" % number, "Injected incident %s" % token,
                                     _stamp_ms(now), label, message, ["Responses"])
                feed.entries = [entry] + feed.entries[:-1]
            else:
                top = feed.entries[0]
                title = _TITLE_CDATA.search(top).group(1).decode("utf-8")
                code = _OPENAI_CODE.search(top).group(1).decode()
                feed.entries[0] = openai_entry(code, title, _stamp_ms(now), label,
                                               message, ["Chat Completions"])
        else:
            block = statuspage_block(now, label if kind == "new" else self.rand.choice(
                ["Update", "Monitoring", "Resolved", "Identified"]), message)
            if kind == "new":
                entry = statuspage_entry(90000000 + number, "Injected incident %s" % token,
                                         _stamp_s(now), [block])
                feed.entries = [entry] + feed.entries[:-1]
            else:
                index = self.rand.randrange(min(3, len(feed.entries)))
                entry = _UPDATED.sub(("<updated>%s</updated>" % _stamp_s(now)).encode(),
                                     feed.entries[index], 1)
                feed.entries[index] = _CONTENT.sub(
                    lambda match: match.group(1) + statuspage_content([block]) + b" ", entry, 1)
        feed.version += 1
        feed.etag = None
        feed.changed_at = time.monotonic()
        self.injections.append({"token": token, "feed": feed.number, "shape": feed.shape,
                                "kind": kind, "time": feed.changed_at,
                                "provider": "feed-%05d" % feed.number})

    # -- control channel (stdin lines of JSON, answers on stdout)

    def command(self, line):
        request = json.loads(line)
        name = request["cmd"]
        answer = {"ok": True}
        if name == "status":
            dead = [f.times[0] for f in self.feeds if f.dead and f.times]
            answer.update(fetched=self.fetched, fetched_dead=self.fetched_dead,
                          dead_total=len(self.feeds) - len(self.live),
                          dead_asked_at=max(dead) if dead else None,
                          requests=self.counters["requests"])
        elif name == "inject":
            self.inject_every = request.get("every")
            self.per_tick = request.get("per_tick", 1)
            self.next_inject = time.monotonic() if self.inject_every else None
        elif name == "snapshot":
            answer.update(counters=dict(self.counters), cpu=time.process_time(),
                          time=time.monotonic(), injected=len(self.injections))
        elif name == "report":
            answer.update(counters=dict(self.counters), injections=self.injections,
                          lateness=self.lateness(request.get("until")),
                          connections=self.connections(request.get("until")),
                          dead={kind: [f.number for f in self.feeds if f.dead == kind]
                                for kind in ("hang", "drip")},
                          dripping=len(self.dripping),
                          service_max=self.service_max, build_max=self.build_max,
                          loop_lag_max=self.loop_lag_max,
                          cpu=time.process_time(), source=self.source,
                          body_sizes=self.body_sizes())
        elif name == "quit":
            self.running = False
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()

    def body_sizes(self):
        return {shape: len(b"".join([t[0]] + t[1] + [t[2]]))
                for shape, t in self.templates.items()}

    def lateness(self, until):
        """Healthy feeds: (t_k - k*interval) minus its minimum over the feed's requests;
        the gaps between consecutive polls; when the first round was done."""
        values, gaps, later, after, tails, firsts = [], [], [], [], [], []
        for feed in self.live:
            times = [t for t in feed.times if until is None or t <= until]
            if not times:
                continue
            firsts.append(times[0])
            grid = [t - k * self.interval for k, t in enumerate(times)]
            base = min(grid)
            values.extend(g - base for g in grid)
            if len(grid) > 1:      # the same, leaving out the first poll (first round)
                later.append(max(grid[1:]) - min(grid[1:]))
            gaps.extend(b - a - self.interval for a, b in zip(times, times[1:]))
            # gaps between polls after the first one (the first round is spread out)
            after.extend((b - a, feed.number) for a, b in zip(times[1:], times[2:]))
            if until is not None:
                tails.append(until - times[-1])
        values.sort()
        after.sort()
        limit = 1.1 * self.interval
        return {"max": values[-1] if values else None,
                "p99": values[int(0.99 * (len(values) - 1))] if values else None,
                "max_after_first": max(later) if later else None,
                "gap_max": max(gaps) if gaps else None,
                "gap_min": min(gaps) if gaps else None,
                "polls_per_feed_min": min(len(f.times) for f in self.live) if self.live else 0,
                # largest gap between two consecutive polls of a healthy feed, from its
                # second poll on (server-side times), and how many gaps exceed interval+10%
                "healthy_gap_max": after[-1][0] if after else None,
                "healthy_gap_max_feed": after[-1][1] if after else None,
                "healthy_gap_p99": after[int(0.99 * (len(after) - 1))][0] if after else None,
                "healthy_gap_min": after[0][0] if after else None,
                # the same with each feed's first->second poll (its first poll is in the
                # first round, its second may wait for the first round's parsing)
                "healthy_gap_max_incl_first": (max(gaps) + self.interval) if gaps else None,
                "healthy_gaps": len(after),
                "healthy_gaps_over_110": sum(1 for gap, _ in after if gap > limit),
                "healthy_feeds_gap_over_110": len(set(n for gap, n in after if gap > limit)),
                # the longest a healthy feed had not been polled when the run stopped
                "healthy_silence_at_end_max": max(tails) if tails else None,
                "healthy_fetched": len(firsts), "healthy_feeds": len(self.live),
                # monotonic time at which every healthy feed had been fetched once
                "healthy_first_round_done_at": (max(firsts) if len(firsts) == len(self.live)
                                                and firsts else None)}

    def connections(self, until):
        """TCP connections the requests of each feed arrived on (healthy and dead apart)."""
        result = {"opened": self.counters["connections"], "requests": self.counters["requests"]}
        for name, feeds in (("healthy", self.live),
                            ("dead", [f for f in self.feeds if f.dead])):
            per_feed, multi_after, reconnecting, reconnects, requests = [], 0, 0, 0, 0
            for feed in feeds:
                conns = [c for t, c in zip(feed.times, feed.conns) if until is None or t <= until]
                if not conns:
                    continue
                requests += len(conns)
                per_feed.append(len(set(conns)))
                # after the first round: more than one connection among polls 2..n
                multi_after += len(set(conns[1:])) > 1
                # a new connection for some poll after the first (poll 2 counts)
                changes = sum(1 for a, b in zip(conns, conns[1:]) if a != b)
                reconnects += changes
                reconnecting += changes > 0
            per_feed.sort()
            result[name] = {
                "feeds": len(per_feed), "requests": requests, "connections": sum(per_feed),
                "per_feed_min": per_feed[0] if per_feed else None,
                "per_feed_median": per_feed[len(per_feed) // 2] if per_feed else None,
                "per_feed_max": per_feed[-1] if per_feed else None,
                "feeds_multi_conn_after_first": multi_after,
                "feeds_reconnecting_after_first": reconnecting,
                "reconnects_after_first": reconnects}
        return result

    def read_control(self):
        try:
            data = os.read(0, 65536)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self.running = False
            return
        self.control += data
        while b"\n" in self.control:
            line, self.control = self.control.split(b"\n", 1)
            if line.strip():
                self.command(line.decode())

    def serve(self, max_seconds):
        os.set_blocking(0, False)
        self.selector.register(0, selectors.EVENT_READ, "control")
        sys.stdout.write(json.dumps({"port": self.listener.getsockname()[1],
                                     "source": self.source, "healthy": len(self.live)}) + "\n")
        sys.stdout.flush()
        deadline = time.monotonic() + max_seconds
        while self.running and time.monotonic() < deadline:
            now = time.monotonic()
            if self.next_inject is not None and now >= self.next_inject:
                self.loop_lag_max = max(self.loop_lag_max, now - self.next_inject)
                self.inject_tick()
                self.next_inject += self.inject_every
            if self.next_drip is not None and now >= self.next_drip:
                self.drip()
            timeout = 0.5 if self.next_inject is None else max(0.0, min(
                0.5, self.next_inject - time.monotonic()))
            if self.next_drip is not None:
                timeout = max(0.0, min(timeout, self.next_drip - time.monotonic()))
            self.send_delayed(time.monotonic())
            if self.delayed:
                timeout = max(0.0, min(timeout, self.delayed[0][0] - time.monotonic()))
            for key, _ in self.selector.select(timeout):
                if key.data == "accept":
                    self.accept()
                elif key.data == "control":
                    self.read_control()
                elif key.data[1]:
                    self.writable(key.fileobj, key.data)
                else:
                    self.readable(key.fileobj, key.data)


def serve_farm():
    """Entry point of the farm child: config as the first stdin line."""
    config = json.loads(sys.stdin.readline())
    Farm(config).serve(config["max_seconds"])
    return 0


# ---------------------------------------------------------------- measuring a process

def proc_cpu(pid, split=False):
    """Return utime+stime (or both) of a process, all threads, in seconds, from /proc."""
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rpartition(")")[2].split()
    user, system = int(fields[11]) / float(CLK_TCK), int(fields[12]) / float(CLK_TCK)
    return (user, system) if split else user + system


def proc_status(pid, key):
    """Return a /proc/PID/status field in kB (VmHWM, VmRSS) or as a number."""
    with open("/proc/%s/status" % pid) as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def tracker_version(path):
    """Return "<git commit>[+modified] sha256:<12 hex>" of the tracker file measured."""
    with open(path, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()[:12]
    folder = os.path.dirname(os.path.abspath(path))
    try:
        commit = subprocess.check_output(["git", "-C", folder, "log", "-1", "--format=%h"],
                                         stderr=subprocess.DEVNULL, universal_newlines=True,
                                         timeout=10).strip()
        dirty = subprocess.call(["git", "-C", folder, "diff", "--quiet", "HEAD", "--",
                                 os.path.basename(path)], stderr=subprocess.DEVNULL, timeout=10)
        commit += "+modified" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "no git"
    return "%s sha256:%s" % (commit, digest)


def fast_lane_timeout(path, default=5.0):
    """The tracker's FAST_LANE_TIMEOUT, read from its source (no import needed)."""
    try:
        with open(path) as handle:
            match = re.search(r"^FAST_LANE_TIMEOUT\s*=\s*([0-9.]+)", handle.read(), re.M)
        return float(match.group(1)) if match else default
    except (OSError, ValueError):
        return default


def baseline_rss(python, tracker_path):
    """VmHWM (kB) of a python that imported the tracker and watches nothing."""
    code = ("import sys; sys.path.insert(0, %r); import openai_status_tracker; "
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
            % os.path.dirname(os.path.abspath(tracker_path)))
    out = subprocess.check_output([python, "-c", code], universal_newlines=True, timeout=60)
    return int(out.strip())


class FarmClient(object):
    """Start the farm child and talk to it."""

    def __init__(self, config):
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, universal_newlines=True)
        self.process.stdin.write(json.dumps(config) + "\n")
        self.process.stdin.flush()
        hello = self._read()
        self.port, self.source, self.healthy = hello["port"], hello["source"], hello["healthy"]

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the feed farm died")
        return json.loads(line)

    def ask(self, cmd, **fields):
        fields["cmd"] = cmd
        self.process.stdin.write(json.dumps(fields) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self):
        try:
            self.ask("quit")
            self.process.wait(10)
        except Exception:
            self.process.kill()
            self.process.wait()


# ---------------------------------------------------------------- running the tracker

class SubprocessTracker(object):
    """The tracker as `python3 openai_status_tracker.py --json`, its stdout read by a thread."""

    def __init__(self, args, providers_path):
        command = [sys.executable, args.tracker, "--providers", providers_path,
                   "--interval", str(args.interval), "--json", "--timeout", str(args.timeout)]
        if args.workers:
            command += ["--workers", str(args.workers)]
        if args.notify_delay is not None:
            command += ["--notify", "http://127.0.0.1:%d/hook" % args.farm_port]
        self.command = command
        self.events, self.logs = [], []
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, universal_newlines=True)
        self.pid = self.process.pid
        self._threads = [threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
                         for stream, sink in ((self.process.stdout, self.events),
                                              (self.process.stderr, self.logs))]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _pump(stream, sink):
        for line in stream:
            sink.append((time.monotonic(), line.rstrip("\n")))

    def cpu(self):
        return proc_cpu(self.pid)

    def cpu_system(self):
        return proc_cpu(self.pid, True)[1]

    def alive(self):
        return self.process.poll() is None

    def stats(self):
        return {}

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        for thread in self._threads:
            thread.join(10)
        return code


class InprocessTracker(object):
    """Tracker(...).run() in a thread of this process."""

    def __init__(self, args, urls):
        sys.path.insert(0, os.path.dirname(os.path.abspath(args.tracker)))
        import openai_status_tracker as ost
        self.pid = os.getpid()
        self.events, self.logs, self.result = [], [], []
        self.baseline = proc_status("self", "VmRSS")
        providers = [ost.Provider(url, name) for url, name in urls]
        fields = {"interval": args.interval, "timeout": args.timeout, "json": True,
                  "workers": args.workers or min(getattr(ost, "MAX_WORKERS", 32), len(urls))}
        config = ost.Config(**{k: v for k, v in fields.items() if k in ost.Config._fields})
        self.command = ["Tracker(%d providers, %r).run() in a thread" % (len(urls), config)]
        self.tracker = ost.Tracker(
            providers, config,
            emit=lambda text: self.events.extend((time.monotonic(), line)
                                                 for line in text.split("\n")),
            log=lambda text: self.logs.append((time.monotonic(), text)))
        self.thread = threading.Thread(target=lambda: self.result.append(self.tracker.run()),
                                       daemon=True)
        self._main_cpu = getattr(time, "thread_time", lambda: 0.0)
        self.thread.start()

    def cpu(self):
        # this process minus the main thread (which only sleeps and talks to the farm)
        return time.process_time() - self._main_cpu()

    def cpu_system(self):
        return os.times()[1]    # the whole process: the main thread's share is tiny

    def alive(self):
        return self.thread.is_alive()

    def stats(self):
        return dict(self.tracker.stats)

    def stop(self):
        self.tracker.stop()
        self.thread.join(30)
        return self.result[0] if self.result else 1


# ---------------------------------------------------------------- the benchmark

def _sleep_until(deadline, tracker):
    while time.monotonic() < deadline:
        if not tracker.alive():
            raise RuntimeError("the tracker stopped by itself")
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def _window(farm, tracker):
    snap = farm.ask("snapshot")
    snap["tracker_cpu"] = tracker.cpu()
    snap["tracker_sys"] = tracker.cpu_system()
    return snap


def _delta(a, b, key):
    return b["counters"].get(key, 0) - a["counters"].get(key, 0)


def run_bench(args):
    """Run one benchmark; return (figures dict, exit code)."""
    farm = FarmClient({"feeds": args.feeds, "interval": args.interval, "seed": args.seed,
                       "openai_share": args.openai_share, "gzip": not args.no_gzip,
                       "feeds_dir": "" if args.generated else args.feeds_dir,
                       "dead": args.dead, "latency": args.latency,
                       "notify_delay": args.notify_delay or 0.0,
                       "max_seconds": args.max_seconds()})
    urls = [("http://127.0.0.1:%d/feeds/%05d.atom" % (farm.port, n), "feed-%05d" % n)
            for n in range(args.feeds)]
    handle, providers_path = tempfile.mkstemp(prefix="bench-providers-", suffix=".txt",
                                              dir="/tmp")
    with os.fdopen(handle, "w") as out:
        out.writelines("%s %s\n" % pair for pair in urls)
    baseline = baseline_rss(sys.executable, args.tracker)
    version = tracker_version(args.tracker)
    tracker = None
    try:
        started = time.monotonic()
        args.farm_port = farm.port
        if args.mode == "subprocess":
            tracker = SubprocessTracker(args, providers_path)
        else:
            tracker = InprocessTracker(args, urls)
            baseline_inproc = tracker.baseline
        # warm-up: every healthy feed fetched once (first polls parse everything)
        limit = started + 2 * args.interval + 0.05 * args.feeds + 30
        while True:
            status = farm.ask("status")
            if status["fetched"] >= farm.healthy and status["fetched_dead"] >= status["dead_total"]:
                break
            if time.monotonic() > limit:
                raise RuntimeError("first round not done after %.0fs" % (limit - started))
            _sleep_until(time.monotonic() + 0.5, tracker)
        first_round = time.monotonic() - started
        settled = time.monotonic() + args.settle
        if status["dead_asked_at"] is not None:
            # the tracker ends its first round (and prints what it held back) only when
            # the last dead feed's fast-lane poll has timed out: measure after that
            settled = max(settled, status["dead_asked_at"] + fast_lane_timeout(args.tracker) + 1)
        _sleep_until(settled, tracker)
        w0 = _window(farm, tracker)
        _sleep_until(w0["time"] + args.quiet, tracker)
        w1 = _window(farm, tracker)
        drain = args.interval * 1.1 + 5
        inject_for = args.inject
        if args.duration:
            inject_for = max(args.interval, args.duration - (time.monotonic() - started) - drain)
        per_tick = args.inject_per_tick or max(1, args.feeds // 1000)
        farm.ask("inject", every=args.inject_every, per_tick=per_tick)
        _sleep_until(w1["time"] + inject_for, tracker)
        farm.ask("inject", every=None)
        w2 = _window(farm, tracker)
        _sleep_until(w2["time"] + drain, tracker)
        w3 = _window(farm, tracker)
        peak = proc_status(tracker.pid, "VmHWM")
        rss_end = proc_status(tracker.pid, "VmRSS")
        threads = proc_status(tracker.pid, "Threads")
        tracker_stats = tracker.stats()
        cpu_total = tracker.cpu()
        elapsed = time.monotonic() - started
        stop_time = time.monotonic()
        exit_code = tracker.stop()
        report = farm.ask("report", until=stop_time)
    finally:
        if tracker is not None and tracker.alive():
            tracker.stop()
        farm.close()
        os.unlink(providers_path)
    if args.mode == "inprocess":
        baseline = baseline_inproc
    figures = summarise(args, locals())
    return figures, figures["exit"]


def summarise(args, v):
    """Turn the raw measurements into the figures reported."""
    w0, w1, w2, w3, report = v["w0"], v["w1"], v["w2"], v["w3"], v["report"]
    counters = report["counters"]
    # healthy feeds' polls only: a dead feed's request costs the tracker a wait, not a parse
    polls_quiet = _delta(w0, w1, "requests") - _delta(w0, w1, "dead requests")
    polls_active = _delta(w1, w3, "requests") - _delta(w1, w3, "dead requests")
    changed_active = sum(_delta(w1, w3, "%s 200 changed n" % s) for s in ("openai", "statuspage"))
    cpu_quiet = w1["tracker_cpu"] - w0["tracker_cpu"]
    cpu_active = w3["tracker_cpu"] - w1["tracker_cpu"]
    per_unchanged = 1000.0 * cpu_quiet / max(1, polls_quiet)
    polls_first = w0["counters"]["requests"]
    kinds = {}
    for key in counters:
        if key.endswith(" n"):
            name = key[:-2]
            kinds[name] = {"n": counters[key],
                           "bytes_each": counters[name + " bytes"] / float(counters[key]),
                           "body_each": counters[name + " body"] / float(counters[key])}
    # detected versus injected
    injected = {item["token"]: item for item in report["injections"]}
    detected = collections.defaultdict(list)
    startup = unexpected = wrong_provider = 0
    for when, line in v["tracker"].events:
        try:
            event = json.loads(line)
        except ValueError:
            unexpected += 1
            continue
        match = TOKEN.search(event.get("message") or "") or TOKEN.search(event.get("title") or "")
        if not match:
            if when < w0["time"]:
                startup += 1
            else:
                unexpected += 1
            continue
        detected[match.group(0)].append(when)
        item = injected.get(match.group(0))
        if item is not None and event.get("provider") != item["provider"]:
            wrong_provider += 1
    missing = sorted(set(injected) - set(detected))
    repeated = sorted(token for token, times in detected.items() if len(times) > 1)
    unknown = sorted(set(detected) - set(injected))
    delays = sorted(detected[t][0] - injected[t]["time"] for t in injected if t in detected)
    # the dead feeds are expected to fail: only a healthy feed's failure counts
    dead_names = set("feed-%05d" % n for kind in report["dead"].values() for n in kind)
    failing = [text for _, text in v["tracker"].logs
               if "is failing" in text or text.startswith("error")]
    errors = [text for text in failing if text.split(" ", 1)[0] not in dead_names]
    dead_failing = set(text.split(" ", 1)[0] for text in failing) & dead_names
    dead_failures = [text for text in failing if text.split(" ", 1)[0] in dead_names]
    startup_last = max([when for when, line in v["tracker"].events if when < v["w0"]["time"]]
                       or [None])
    tracker_stats = dict(v["tracker_stats"])
    for _, text in v["tracker"].logs:     # the tracker's own exit line, if it logs one
        if text.startswith("summary:"):
            tracker_stats.update(pair.split("=", 1) for pair in text.split()[1:] if "=" in pair)
    ok = not (missing or repeated or unknown or unexpected or wrong_provider or errors
              or v["exit_code"] != 0)
    quiet_seconds = w1["time"] - w0["time"]
    farm_busy = [(b["cpu"] - a["cpu"]) / (b["time"] - a["time"]) for a, b in ((w0, w1), (w1, w3))]
    late, conns = report["lateness"], report["connections"]
    done_at = late["healthy_first_round_done_at"]
    first_healthy = None if done_at is None else done_at - v["started"]
    gap = late["healthy_gap_max"]
    return {
        "feeds": args.feeds, "mode": args.mode, "interval": args.interval,
        "openai_share": args.openai_share, "gzip": not args.no_gzip,
        "workers": args.workers or "default", "source": report["source"],
        "command": v["tracker"].command, "threads": v["threads"],
        "tracker_version": v["version"],
        "elapsed": v["elapsed"], "first_round": v["first_round"],
        "polls_total": counters["requests"], "polls_per_s_total": counters["requests"] / v["elapsed"],
        "polls_per_s_quiet": polls_quiet / quiet_seconds, "quiet_seconds": quiet_seconds,
        "polls_quiet": polls_quiet, "polls_active": polls_active, "changed_active": changed_active,
        "cpu_total_s": v["cpu_total"],
        "cpu_ms_per_poll_total": 1000.0 * v["cpu_total"] / max(1, counters["requests"]),
        "cpu_ms_per_unchanged_poll": per_unchanged,
        "cpu_ms_per_poll_active": 1000.0 * cpu_active / max(1, polls_active),
        "cpu_ms_per_poll_first_round": 1000.0 * w0["tracker_cpu"] / max(1, polls_first),
        "polls_first_round": polls_first,
        "requests_per_connection": counters["requests"] / float(max(1, counters["connections"])),
        "cpu_share_quiet": cpu_quiet / quiet_seconds,
        "peak_rss_kb": v["peak"], "rss_end_kb": v["rss_end"],
        "sys_share_quiet": (w1["tracker_sys"] - w0["tracker_sys"]) / max(1e-9, cpu_quiet), "baseline_rss_kb": v["baseline"],
        "rss_per_feed_kb": (v["peak"] - v["baseline"]) / float(args.feeds),
        "kinds": kinds, "request_bytes_each": counters.get("request bytes", 0) / max(1, counters["requests"]),
        "body_sizes": report["body_sizes"],
        "lateness": report["lateness"], "tracker_lateness_max": v["tracker_stats"].get("lateness_max"),
        "dead_fraction": args.dead, "dead_hanging": len(report["dead"]["hang"]),
        "dead_dripping": len(report["dead"]["drip"]),
        "dead_requests": counters.get("dead requests", 0),
        "dead_reported_failing": len(dead_failing), "dead_failures": dead_failures[:4],
        "startup_events_done_s": None if startup_last is None else startup_last - v["started"],
        "dead_dripping_at_end": report["dripping"],
        "healthy_feeds": late["healthy_feeds"],
        "healthy_first_round_s": first_healthy,
        "healthy_first_round_intervals": (None if first_healthy is None
                                          else first_healthy / args.interval),
        "healthy_gap_max_s": gap,
        "healthy_gap_max_intervals": None if gap is None else gap / args.interval,
        "healthy_gap_p99_s": late["healthy_gap_p99"], "healthy_gap_min_s": late["healthy_gap_min"],
        "healthy_gap_max_incl_first_s": late["healthy_gap_max_incl_first"],
        "healthy_gaps_over_110": late["healthy_gaps_over_110"],
        "healthy_feeds_gap_over_110": late["healthy_feeds_gap_over_110"],
        "healthy_silence_at_end_max_s": late["healthy_silence_at_end_max"],
        "connections": conns,
        "connections_opened": conns["opened"],
        "feeds_multi_conn_after_first": conns["healthy"]["feeds_multi_conn_after_first"],
        "feeds_reconnecting_after_first": conns["healthy"]["feeds_reconnecting_after_first"],
        "tracker_stats": tracker_stats,
        "injected": len(injected), "detected": sum(len(t) for t in detected.values()),
        "notifications": counters.get("notifications", 0), "notify_delay": args.notify_delay,
        "missing": missing[:10], "repeated": repeated[:10], "unknown": unknown[:10],
        "startup_events": startup, "unexpected_events": unexpected, "wrong_provider": wrong_provider,
        "detect_delay_max": delays[-1] if delays else None,
        "detect_delay_median": delays[len(delays) // 2] if delays else None,
        "errors": errors[:5], "tracker_exit": v["exit_code"],
        "farm_cpu_share": farm_busy, "farm_service_max": report["service_max"],
        "farm_build_max": report["build_max"],
        "farm_loop_lag_max": report["loop_lag_max"],
        "machine": "%d cores, Python %s" % (os.cpu_count() or 0, sys.version.split()[0]),
        "exit": 0 if ok else 1,
    }


def _fmt(value, spec=".2f"):
    return "-" if value is None else format(value, spec)


def print_summary(f):
    kinds = f["kinds"]
    def each(key, field="bytes_each"):
        return _fmt(kinds[key][field], ".0f") if key in kinds else "-"
    late = f["lateness"]
    lines = [
        "bench_tracker: %d feeds (%.0f%% OpenAI-shaped), interval %gs, mode %s, workers %s, "
        "gzip %s; bodies: %s; %s" % (f["feeds"], 100 * f["openai_share"], f["interval"], f["mode"],
                                     f["workers"], "on" if f["gzip"] else "off", f["source"],
                                     f["machine"]),
        "tracker: %s (%s)" % (" ".join(f["command"]), f["tracker_version"]),
        "run: %.1fs, first round %.1fs, %d polls (%.1f/s overall, %.1f/s in the quiet window "
        "of %.0fs), tracker threads %s" % (
            f["elapsed"], f["first_round"], f["polls_total"], f["polls_per_s_total"],
            f["polls_per_s_quiet"], f["quiet_seconds"], f["threads"]),
        "CPU (tracker): %.3f ms/poll over the whole run (%.1fs incl. first round); "
        "%.3f ms per unchanged poll (quiet window, %d polls, %.0f%% of one core, %.0f%% of it "
        "in the kernel); "
        "%.3f ms/poll while injecting (%d polls, %d changed); %.2f ms/poll until the first round "
        "was done (%d polls, nearly all parsed; includes start-up)" % (
            f["cpu_ms_per_poll_total"], f["cpu_total_s"], f["cpu_ms_per_unchanged_poll"],
            f["polls_quiet"], 100 * f["cpu_share_quiet"], 100 * f["sys_share_quiet"],
            f["cpu_ms_per_poll_active"],
            f["polls_active"], f["changed_active"], f["cpu_ms_per_poll_first_round"],
            f["polls_first_round"]),
        "memory: peak RSS %.1f MB (%.1f MB at the end), baseline %.1f MB, %.2f KB per feed "
        "beyond baseline at peak (%.2f at the end)" % (
            f["peak_rss_kb"] / 1024.0, f["rss_end_kb"] / 1024.0, f["baseline_rss_kb"] / 1024.0,
            f["rss_per_feed_kb"], (f["rss_end_kb"] - f["baseline_rss_kb"]) / float(f["feeds"])),
        "bytes sent per response incl. headers (body): OpenAI-shaped 200 unchanged %s (%s), "
        "changed %s, first %s; Statuspage-shaped 304 %s (%s), 200 changed %s, first %s; "
        "request %.0f; %.2f requests per TCP connection" % (
            each("openai 200 unchanged"), each("openai 200 unchanged", "body_each"),
            each("openai 200 changed"), each("openai 200 first"),
            each("statuspage 304 unchanged"), each("statuspage 304 unchanged", "body_each"),
            each("statuspage 200 changed"), each("statuspage 200 first"),
            f["request_bytes_each"], f["requests_per_connection"]),
        "lateness (server-seen, vs each feed's own grid): max %ss, p99 %ss, max after the "
        "first round %ss; gap-interval %s..%ss; tracker's own lateness_max %ss; fewest polls "
        "of a feed %d" % (
            _fmt(late["max"], ".3f"), _fmt(late["p99"], ".3f"), _fmt(late["max_after_first"], ".3f"),
            _fmt(late["gap_min"], ".3f"),
            _fmt(late["gap_max"], ".3f"), _fmt(f["tracker_lateness_max"], ".3f"),
            late["polls_per_feed_min"]),
        "healthy feeds (%d): largest gap between consecutive polls after the first round "
        "%ss = %s x interval (target <= 1.10; p99 %ss, min %ss; %d gaps > interval+10%% in %d "
        "feeds; with each feed's first->second poll: %ss); "
        "first round of healthy feeds done %ss after the tracker's start = %s x interval "
        "(target <= 1.5); longest unpolled at the end %ss" % (
            f["healthy_feeds"], _fmt(f["healthy_gap_max_s"], ".3f"),
            _fmt(f["healthy_gap_max_intervals"], ".3f"), _fmt(f["healthy_gap_p99_s"], ".3f"),
            _fmt(f["healthy_gap_min_s"], ".3f"), f["healthy_gaps_over_110"],
            f["healthy_feeds_gap_over_110"], _fmt(f["healthy_gap_max_incl_first_s"], ".3f"),
            _fmt(f["healthy_first_round_s"], ".2f"), _fmt(f["healthy_first_round_intervals"], ".2f"),
            _fmt(f["healthy_silence_at_end_max_s"], ".2f")),
        "dead feeds (--dead %g): %d hanging + %d dripping, %d requests, %d of them reported "
        "failing by the tracker, %d connections still dripping at the end; the tracker "
        "printed its first round's events by %ss after its start%s" % (
            f["dead_fraction"], f["dead_hanging"], f["dead_dripping"], f["dead_requests"],
            f["dead_reported_failing"], f["dead_dripping_at_end"],
            _fmt(f["startup_events_done_s"], ".1f"),
            ("; e.g. %s" % f["dead_failures"][0]) if f["dead_failures"] else ""),
        "connections: %d opened for %d requests; healthy feeds: %d connections for %d requests, "
        "per feed min/median/max %s/%s/%s, %d feeds used more than one connection after the "
        "first round (target 0), %d opened a new one for some poll after their first "
        "(%d reconnects); dead feeds: %d connections for %d requests" % (
            f["connections"]["opened"], f["connections"]["requests"],
            f["connections"]["healthy"]["connections"], f["connections"]["healthy"]["requests"],
            f["connections"]["healthy"]["per_feed_min"], f["connections"]["healthy"]["per_feed_median"],
            f["connections"]["healthy"]["per_feed_max"], f["feeds_multi_conn_after_first"],
            f["feeds_reconnecting_after_first"],
            f["connections"]["healthy"]["reconnects_after_first"],
            f["connections"]["dead"]["connections"], f["connections"]["dead"]["requests"]),
        "updates: injected %d, detected %d (missing %d, repeated %d, unknown %d, wrong provider "
        "%d); startup events %d, unexpected %d; detection delay median %ss max %ss" % (
            f["injected"], f["detected"], len(f["missing"]), len(f["repeated"]),
            len(f["unknown"]), f["wrong_provider"], f["startup_events"],
            f["unexpected_events"], _fmt(f["detect_delay_median"], ".1f"),
            _fmt(f["detect_delay_max"], ".1f")) + (
            "; notifications received %d (each answered after %gs)" % (
                f["notifications"], f["notify_delay"]) if f["notify_delay"] is not None else ""),
        "server (farm process): CPU %.0f%% of one core quiet, %.0f%% injecting; longest "
        "response build %.1f ms, longest request-to-last-byte %.1f ms (includes a slow "
        "reader); timer lag max %.1f ms" % (
            100 * f["farm_cpu_share"][0], 100 * f["farm_cpu_share"][1],
            1000 * f["farm_build_max"], 1000 * f["farm_service_max"],
            1000 * f["farm_loop_lag_max"]),
        "tracker exit %s; feed errors logged: %d%s" % (
            f["tracker_exit"], len(f["errors"]), (" e.g. %s" % f["errors"][0]) if f["errors"] else ""),
        "RESULT: %s" % ("PASS" if f["exit"] == 0 else "FAIL"),
        "",
        "| N | mode | interval | polls/s | CPU ms/poll (all) | CPU ms/unchanged poll | "
        "peak RSS MB | KB/feed | bytes/unchanged poll OpenAI / Statuspage | max lateness s | "
        "dead | healthy max gap / interval | healthy first round / interval | connections "
        "(feeds > 1 after first round) | injected = detected |",
        "| %d | %s | %gs | %.1f | %.3f | %.3f | %.1f | %.2f | %s / %s | %s | %g | %s | %s | "
        "%d (%d) | %d = %d%s |" % (
            f["feeds"], f["mode"], f["interval"], f["polls_per_s_quiet"],
            f["cpu_ms_per_poll_total"], f["cpu_ms_per_unchanged_poll"],
            f["peak_rss_kb"] / 1024.0, f["rss_per_feed_kb"],
            each("openai 200 unchanged"), each("statuspage 304 unchanged"),
            _fmt(late["max"], ".2f"), f["dead_fraction"],
            _fmt(f["healthy_gap_max_intervals"], ".3f"),
            _fmt(f["healthy_first_round_intervals"], ".2f"), f["connections_opened"],
            f["feeds_multi_conn_after_first"], f["injected"], f["detected"],
            "" if f["exit"] == 0 else " FAIL"),
    ]
    if f["tracker_stats"]:
        lines.insert(-4, "tracker's own counters: %s" % ", ".join(
            "%s=%s" % item for item in sorted(f["tracker_stats"].items())))
    print("\n".join(lines))
    sys.stdout.flush()


def build_parser():
    parser = argparse.ArgumentParser(description="Benchmark openai_status_tracker on N loopback feeds.")
    parser.add_argument("--feeds", type=int, default=100, metavar="N", help="feeds to serve (100)")
    parser.add_argument("--interval", type=float, default=10.0, metavar="S",
                        help="tracker --interval (10)")
    parser.add_argument("--duration", type=float, metavar="S",
                        help="whole run from the tracker's start; sets the inject phase "
                             "(default: warm-up + quiet + inject + drain)")
    parser.add_argument("--quiet", type=float, metavar="S",
                        help="quiet window measuring unchanged polls (default: interval)")
    parser.add_argument("--inject", type=float, metavar="S",
                        help="inject phase length (default: interval)")
    parser.add_argument("--inject-every", type=float, default=1.0, metavar="S",
                        help="seconds between injection ticks (1)")
    parser.add_argument("--inject-per-tick", type=int, metavar="K",
                        help="feeds changed per tick (default max(1, N/1000))")
    parser.add_argument("--mode", choices=("subprocess", "inprocess"), default="subprocess")
    parser.add_argument("--workers", type=int, help="tracker --workers (default: its own)")
    parser.add_argument("--timeout", type=float, default=20.0, help="tracker --timeout (20)")
    parser.add_argument("--openai-share", type=float, default=0.5,
                        help="fraction of OpenAI-shaped feeds (0.5)")
    parser.add_argument("--latency", type=float, default=0.0, metavar="S",
                        help="hold each healthy answer S seconds: a far network's round "
                             "trip (0)")
    parser.add_argument("--notify-delay", type=float, metavar="S",
                        help="run the tracker with --notify to a receiver in the farm that "
                             "answers each POST after S seconds")
    parser.add_argument("--dead", type=float, default=0.0, metavar="FRACTION",
                        help="fraction of the feeds that are dead: half hang (accept, never "
                             "answer), half drip (a head promising 1 MB, then a byte a "
                             "second); excluded from the checks (0)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds after the first round before measuring (2)")
    parser.add_argument("--no-gzip", action="store_true",
                        help="never gzip (default: gzip when the client asks, like real CDNs)")
    parser.add_argument("--generated", action="store_true",
                        help="build the feed bodies with testdata/samples.py instead of "
                             "using the real captures in testdata/")
    parser.add_argument("--feeds-dir", default=FEEDS_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--tracker", default=TRACKER, help="path of openai_status_tracker.py")
    parser.add_argument("--json-out", metavar="FILE", help="also write every figure as JSON")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.serve:
        return serve_farm()
    if args.feeds < 1 or args.interval <= 0 or not 0 <= args.openai_share <= 1 \
            or not 0 <= args.dead < 1:
        build_parser().error("--feeds >= 1, --interval > 0, 0 <= --openai-share <= 1, "
                             "0 <= --dead < 1")
    args.quiet = args.quiet or args.interval
    args.inject = args.inject or args.interval
    budget = (2 * args.interval + 0.05 * args.feeds + 30 + args.settle + args.quiet
              + max(args.inject, args.duration or 0) + 1.1 * args.interval + 60)
    args.max_seconds = lambda: budget + 120
    try:
        figures, code = run_bench(args)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    print_summary(figures)
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump(figures, out, indent=1, default=str)
    return code


if __name__ == "__main__":
    sys.exit(main())
