#!/usr/bin/env python3
"""Print every new incident and status update from status pages, exactly once.

Watches the OpenAI status page (status.openai.com, served by incident.io) and
every other status page listed in providers.txt, through their Atom or RSS
feeds, and prints each new incident and each update once.  At start it prints
the incidents still open and remembers the rest silently; from then on every
update once, oldest first.  README.md has the rest: options, providers.txt,
filters, notifications, the systemd unit.

Usage:
    python3 openai_status_tracker.py --interval 30
    python3 openai_status_tracker.py --once --history 5     # look, then exit
    python3 openai_status_tracker.py --state FILE --notify https://hooks.slack.com/...

Options (see --help): --interval SECONDS (60), --providers FILE, --once,
--history N, --json, --workers N, --timeout SECONDS (20), --state FILE,
--only [FIELD:]REGEX, --skip [FIELD:]REGEX, --no-maintenance, --no-api,
--notify [KIND:]URL, --exec 'CMD ARGS', -v, --version.

Output: every event is three lines on stdout, flushed at once:
    [2026-09-13 17:47:55] Product: OpenAI - Conversations
    Status: Resolved - All impacted services have now fully recovered.
    Incident: Elevated errors for ChatGPT users in Europe (https://status.openai.com//incidents/01M2DV6788RRSDZ5K98S5HN0A8)
The time is the update's own, in UTC; Product is the provider's name and the
components the feed (or a Statuspage page's JSON API) names.  With --json each
event is one JSON object on one line instead.  Logs go to stderr.

With --state FILE what was printed is kept in FILE, written before each event
is printed, so a restart repeats nothing and prints what happened while it was
down.  --notify and --exec also deliver each printed event, each target from
its own queue, never holding up polling.

Exit codes: 0 normal, also when stopped by SIGTERM or Ctrl+C; 1 runtime
failure (stdout closed, or --once when a feed could not be read or an event
not delivered); 2 bad usage, providers file, --notify URL or secret, or
--state path.

Signals: SIGTERM and SIGINT stop it at once (exit 0); SIGHUP re-reads the
providers file (a broken one is reported and the old list kept); SIGUSR1 logs
a summary line, as every exit does.

Requires Python 3.6 or newer and nothing outside its standard library.  Under
systemd (Type=notify) it speaks sd_notify over $NOTIFY_SOCKET: READY=1 after
the first round of polls, WATCHDOG=1 when WatchdogSec= is set, STOPPING=1 on
the way out.  Events are flushed line by line, so `journalctl -f -u <unit>`
shows them as they happen.
"""

__version__ = "1.1.0"
# Python 2 and 3.5 stop at the line below, and show it: that is its purpose.
_REQUIRES = f"openai_status_tracker.py needs Python 3.6 or newer: run it with python3"

import argparse
import base64
import binascii
import collections
import concurrent.futures
import errno
import hashlib
import heapq
import hmac
import html
import http.client
import io
import json
import os
import random
import re
import select
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import urllib.robotparser
import xml.etree.ElementTree as ET
import xml.parsers.expat
import zlib
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_tz
from typing import Any, NamedTuple, Optional, Tuple

try:
    import ssl
except ImportError:   # a Python built without OpenSSL: http feeds only
    ssl = None
try:
    import resource
except ImportError:   # not on Windows: no file descriptor limit to raise
    resource = None


# ---------------------------------------------------------------- constants

OPENAI_FEED = "https://status.openai.com/history.atom"
OPENAI_NAME = "OpenAI"
PROVIDERS_FILE = "providers.txt"
USER_AGENT = "openai_status_tracker/%s (+python-urllib)" % __version__
ACCEPT = ("application/atom+xml, application/rss+xml;q=0.9, "
          "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.1")

DEFAULT_INTERVAL = 60.0          # seconds between two polls of one feed
DEFAULT_TIMEOUT = 20.0           # whole deadline of one request, seconds
MAX_SECONDS = 86400.0            # longest interval or timeout: a wait of 1e10 s overflows time_t
MAX_WORKERS = 32                 # default cap of concurrent requests
MAX_BODY_BYTES = 4 * 1024 * 1024 # per answer, before and after gzip decoding
MAX_REDIRECTS = 5
MAX_INFORMATIONAL = 10           # 1xx answers skipped before the final one
MAX_HEADER_LINES = 100           # header fields of one answer (what http.client allows)
MAX_LINE = 65536                 # bytes of a status, header or chunk-size line
MAX_HEAD = 262144                # bytes of an answer's status line and header
MAX_IDLE_CONNECTIONS = 65536     # kept-alive connections, one per directly reached feed
GZIP_SLICE = 1024                # bytes of a later gzip member given to zlib first (gunzip)
MAX_ELEMENTS = 100000            # XML elements per feed: bounds parse time and memory
BACKOFF_CAP = 300.0              # a failing feed is retried this often at least ...
BACKOFF_INTERVALS = 5            # ... or every 5 of its intervals, if that is longer
DEFAULT_PORTS = {"http": 80, "https": 443}
RETRY_AFTER_CAP = 3600.0         # longest Retry-After honoured (RFC 9110 10.2.3)
FIRST_ROUND_SPACING = 0.01       # seconds between first polls of a long list
PARSE_SLOTS = 2                  # feeds parsed at once
LAUNCH_QUANTUM = 0.5             # polls due this soon start together (fewer wake-ups)
LANE_WIDTH = 2                   # polls a lane runs at once, at least (it widens when they wait)
LANE_PATIENCE = 0.1              # seconds a poll may wait for a place before its lane widens
LANE_SETTLE = 1.0                # seconds between two narrowings of a lane
GONE_GRACE = 7 * 86400.0         # remember entries that left a feed this long
GONE_FLOOR = 1000                # ... but of a feed's entries gone, this many at most
GONE_PER_ENTRY = 4               # ... plus this many per entry the feed shows now
HISTORY_WINDOW = 3600            # seconds: a new entry this much older than a feed's news is history
FUTURE_SKEW = 300.0              # seconds: an update dated further past the clock gives a Mark no time
MARK_TIME_SHIFT = 40             # bits below a Mark's time: count (8) and text crc (32)
STATE_VERSION = 2                # format of the --state file (1: marks of tracker 1.0)
MAX_STATE_BYTES = 64 * 1024 * 1024   # a larger state file is set aside unread
STATE_SAVE_INTERVAL = 60.0       # seconds: save quiet changes (validators, ...) this often
MESSAGE_LIMIT = 500              # characters of a message printed before "…"
TEXT_LIMIT = 300                 # characters of a title or product line
READ_SLICE = 0.5                 # a blocked read re-checks deadline and stop this often
FAST_LANE_TIMEOUT = 5.0          # deadline of a poll in the fast lane (longer ones: slow lane)
SLOW_POLL = 3.0                  # seconds: a poll that took longer moves its feed to the slow lane
SLOW_LANE_WORKERS = 4            # workers of the slow lane: dead servers wait only for each other
API_INCIDENTS = "/api/v2/incidents.json"   # Statuspage's public API: components of incidents
API_TIMEOUT = 5.0                # deadline of each request to it (robots.txt, the API)
ROBOTS_TTL = 86400.0             # seconds a page's robots.txt answer is kept
MAX_API_ITEMS = 200              # incidents, updates, components read from one API answer
NOTIFY_KINDS = ("slack", "discord", "teams", "webhook")   # what --notify speaks ("KIND:URL")
NOTIFY_QUEUE = 1000              # events waiting per target; the oldest beyond are dropped
NOTIFY_LINE_LIMIT = 16384        # bytes of one event's JSON sent (and kept in the outbox) at most
MIN_WEBHOOK_KEY = 16             # bytes of TRACKER_WEBHOOK_SECRET's key at least
NOTIFY_RETRY_BASE = 1.0          # first wait before a delivery is tried again, seconds
NOTIFY_RETRY_CAP = 300.0         # longest wait between two tries of a delivery, seconds
# seconds between two sends: Slack allows 1 message a second per webhook
# (api.slack.com/apis/rate-limits), Discord 5 per 2 s (its X-RateLimit-* on
# webhooks), Teams' connectors 4 a second
NOTIFY_PACE = {"slack": 1.0, "discord": 0.4, "teams": 0.25}
DISCORD_HOSTS = ("discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com")
TEAMS_HOST_SUFFIXES = (".logic.azure.com", ".api.powerplatform.com", ".webhook.office.com")
SLACK_LIMIT = 3000               # characters of a Slack section block's text (and ours)
STATE_COLOURS = {"investigating": 0xE01E5A, "identified": 0xE8912D, "monitoring": 0xECB22E,
                 "resolved": 0x2EB67D, "scheduled": 0x36C5F0, "in_progress": 0x36C5F0,
                 "verifying": 0xECB22E, "completed": 0x2EB67D, "postmortem": 0x2EB67D}

CLOSED_STATES = frozenset(["resolved", "completed", "postmortem"])
# incident.io's words for a component's impact, as Statuspage's API names them
COMPONENT_STATUSES = {"operational": "operational", "degraded performance": "degraded_performance",
                      "partial outage": "partial_outage", "full outage": "major_outage",
                      "major outage": "major_outage", "under maintenance": "under_maintenance"}
MAINTENANCE_LABELS = frozenset(["scheduled", "in progress", "verifying", "completed"])
STATES = {
    "investigating": "investigating", "identified": "identified",
    "monitoring": "monitoring", "resolved": "resolved",
    "scheduled": "scheduled", "in_progress": "in_progress",
    "verifying": "in_progress", "completed": "completed",
    "postmortem": "postmortem",
    # AWS's words for an event still going on ("Informational message" may
    # be news of no outage at all: its state stays unknown)
    "service_disruption": "investigating", "service_degradation": "investigating",
}
LABELS = ("Investigating", "Identified", "Update", "Monitoring", "Resolved",
          "Scheduled", "In progress", "Verifying", "Completed", "Postmortem")

MONTHS = {name: number for number, name in enumerate(
    "jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
# Zones that Statuspage writes in its <small> dates (old feeds use the page's
# zone, e.g. "PST"); RFC 822 names the US ones too.  Numeric offsets ("-03",
# "+0530") are read as such; a name not listed here is taken as UTC and said
# at -v, never guessed from the entry's own time (which moves on silent edits).
ZONES = {"UTC": 0, "GMT": 0, "Z": 0, "UT": 0, "EST": -5, "EDT": -4,
         "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
         "AKST": -9, "AKDT": -8, "HST": -10, "AST": -4, "ADT": -3, "NST": -3.5,
         "NDT": -2.5, "BRT": -3, "ART": -3, "CLT": -4, "WET": 0, "WEST": 1,
         "BST": 1, "IST": 5.5, "CET": 1, "CEST": 2, "MET": 1, "MEST": 2,
         "EET": 2, "EEST": 3, "MSK": 3, "TRT": 3, "WAT": 1, "CAT": 2,
         "SAST": 2, "EAT": 3, "GST": 4, "PKT": 5, "NPT": 5.75, "ICT": 7,
         "WIB": 7, "HKT": 8, "SGT": 8, "PHT": 8, "AWST": 8, "JST": 9,
         "KST": 9, "ACST": 9.5, "ACDT": 10.5, "AEST": 10, "AEDT": 11,
         "NZST": 12, "NZDT": 13}

_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)(?:[Tt ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d+))?)?)?"
    r"\s*([Zz]|[+-]\d\d:?\d\d)?$")
_BLOCK_DATE = re.compile(
    r"\b([A-Za-z]{3})[a-z]*\.?\s+(\d{1,2})(?:,?\s+(\d{4}))?\s*[,-]?\s*"
    r"(\d{1,2}):(\d\d)\s*(?:([A-Za-z]{1,5})\b)?\s*([+-]\d\d(?::?\d\d)?)?")
# Every pattern that sees feed text runs in linear time on hostile input (re
# holds the GIL: one slow match would stall every feed).  So no ".*?" that
# could rescan the rest of a 4 MB entry from each of a million starts: a
# "tempered" (?:(?!<tag>).)* stops at the next tag of its kind, [^<>]* at
# the next "<", and an unclosed <script> or comment runs to the end.
# Statuspage: <p><small>DATE</small><br><strong>Label</strong> - message</p>,
# newest first; a maintenance starts with a <strong> banner outside any block.
_STATUSPAGE_BLOCK = re.compile(
    r"<small>((?:(?!</?small>).)*)</small>\s*(?:<br\s*/?>\s*)*"
    r"<strong>((?:(?!</?strong>|<small>).)*)</strong>(.*?)(?=<small>|\Z)", re.S | re.I)
# incident.io: <b>Status: Resolved</b><br/><br/>message<br/><br/>
# <b>Affected components</b><ul><li>Name (Current state)</li></ul>
_INCIDENTIO_STATUS = re.compile(r"<b>\s*Status:\s*((?:(?!</?b>).)*)</b>(.*)", re.S | re.I)
_INCIDENTIO_COMPONENTS = re.compile(r"<b>\s*Affected components\s*</b>", re.I)
_LIST_ITEM = re.compile(r"<li\b[^<>]*>((?:(?!</?li\b).)*)</li\s*>", re.S | re.I)
_TRAILING_STATE = re.compile(r"\s*\([^()]*\)$")
_AFFECTED = re.compile(
    r"(?:Affected (?:products|components|services)|This incident affected)"
    r"\s*:\s*([^\n<]+)", re.I)
_LEADING_LABEL = re.compile(
    r"^(%s)\s*[-:\u2013\u2014]\s*" % "|".join(LABELS), re.I)
# Feeds of neither platform state the state in words; each shape below was
# seen in a real feed (testdata/PROVENANCE.md says which).  The first match
# wins; a label of None takes the matched words.
_STATED = (
    # cState (status.torproject.org): "[Resolved] ..."; AWS: "... [RESOLVED] ..."
    ("title", re.compile(r"\[(resolved|investigating|identified|monitoring|completed)\]", re.I), None),
    ("title", re.compile(r"^(resolved)\s*:", re.I), None),                # Google Cloud "RESOLVED: ..."
    ("title", re.compile(r"^service is operating normally\s*:", re.I), "Resolved"),    # AWS
    ("text", re.compile(r"^incident began at .{1,80}? and ended at ", re.I), "Resolved"),  # Google Cloud
    ("title", re.compile(r"^(service disruption|service degradation|informational message)\s*:",
                         re.I), None),                                    # AWS, still going on
)
_TAG = re.compile(r"<[^<>]*>")
_DROPPED_HTML = re.compile(
    r"<(script|style)\b.*?(?:</\1\s*>|\Z)|<!--.*?(?:-->|\Z)", re.S | re.I)
_BREAKING_TAG = re.compile(r"<(?:br|/p|/li|/div|/h\d|/tr)\b[^<>]*>", re.I)
# A character reference beyond U+10FFFF: html.unescape would turn its digits
# into an int, quadratic in their number before Python 3.11, refused after.
_HUGE_REFERENCE = re.compile(r"&#(?:[xX]0*[1-9a-fA-F][0-9a-fA-F]{6,}|0*[1-9][0-9]{7,});?")
# Terminal escapes (CSI, OSC, two-byte ESC) go whole; then every other control
# character, C1 included, and the invisible format characters that can
# disguise text: bidi overrides ("Trojan Source", CVE-2021-42574), zero-width
# spaces and joiners, the Arabic letter mark, word joiners, a BOM inside
# text, and the tag characters that can hide a whole ASCII string.
_ESCAPE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]?|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[ -~]?)")
_CONTROL = re.compile(u"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_INVISIBLE = re.compile(u"[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069"
                        u"\ufeff\U000e0000-\U000e007f]")
# A lone surrogate is no character: UTF-8 cannot encode it, so the state
# file, stdout and every target would refuse the event.  json.loads makes
# one of "\ud800"; it becomes U+FFFD, as html.unescape and decoding do.
_SURROGATE = re.compile(u"[\ud800-\udfff]")
_ENTRIES_START = re.compile(rb"<(?:[\w.-]+:)?(?:entry|item)[\s>/]")
_PROLOG = re.compile(r"(?:\s+|<\?.*?\?>|<!--.*?-->)*", re.S)   # blanks, PIs, comments
_XML_ENCODING = re.compile(rb"""\s*<\?xml[^>]*?\bencoding\s*=\s*["']([\w.:-]+)""")
_UP_TO_LAST_AT = re.compile(r"//.*@")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_INCIDENT_CODE = re.compile(r"/incidents/([0-9a-z]{6,40})\Z")   # a Statuspage incident link
_OPTION_WORD = re.compile(r"[A-Za-z_]+=")   # providers.txt: trailing key=value words
_STATUS_LINE = re.compile(r"(HTTP/[0-9]\.[0-9]) +([1-9][0-9][0-9])(?: +(.*))?\Z", re.S)
_HEAD_END = re.compile(rb"\n\r?\n")
_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7f) if chr(c) not in "\"<>\\^`{|}")
_FIELD_VALUE = re.compile(u"[\x21-\x7e\x80-\xff](?:[\x20-\x7e\x80-\xff\t]*[\x21-\x7e\x80-\xff])?\\Z")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")
_KEY_HEX = re.compile(r"[0-9a-f]{1,16}\Z")
_STRAY_BYTE = re.compile(u"[\udc80-\udcff]")   # an undecodable byte, surrogate-escaped
_ZEROS = re.compile(rb"\0*")                     # padding after a gzip member
_MARKDOWN = re.compile(r"([\\`*_~|\[\]<])")   # markup inside Discord's and Teams' text
_QUEUED_ID = re.compile(r'\{"webhook_id": "(msg_[0-9a-f]{32})", ')   # see queued_line()


# ---------------------------------------------------------------- data types

class Filter(NamedTuple):
    """One --only or --skip: a field of the event ("" for all it prints) and a regex."""
    field: str
    pattern: Any           # a compiled, case-insensitive re


class Provider(NamedTuple):
    """One line of providers.txt."""
    url: str
    name: str
    interval: Optional[float] = None   # interval=SECONDS: this feed's own
    only: Tuple[Filter, ...] = ()      # only=REGEX: as --only, for this feed
    skip: Tuple[Filter, ...] = ()      # skip=REGEX


class Update(NamedTuple):
    """One status update of an incident."""
    time: Optional[datetime]   # aware UTC, None when the feed gave no date
    label: str                 # "Investigating", "Update", "Resolved", ...
    message: str               # plain text


class Entry(NamedTuple):
    """One incident as a feed shows it now."""
    id: str
    title: str
    link: str
    updated: str           # the raw <updated>/<pubDate>: moves when the entry changes
    components: Tuple[str, ...]
    updates: Tuple[Update, ...]   # newest first
    complete: bool         # True when `updates` is the whole history (Statuspage)
    notes: Tuple[str, ...] = ()   # dates not read as written, for -v
    statuses: Tuple[str, ...] = ()   # each component's status, when the feed says it
    impact: str = ""       # Statuspage's impact (none, minor, major, critical, maintenance)


class Parts(NamedTuple):
    """What an entry's HTML says, by the provider's conventions."""
    components: Tuple[str, ...]
    updates: Tuple[Update, ...]   # newest first
    complete: bool                # the updates are the whole history (Statuspage)
    notes: Tuple[str, ...] = ()   # what -v should say of dates not read as written
    statuses: Tuple[str, ...] = ()   # the components' statuses, when given


class Event(NamedTuple):
    """One update to print."""
    provider: str
    kind: str              # "new" (first sight of the incident) or "update"
    entry: Entry
    index: int             # which of entry.updates
    key: int = 0           # entry_key(entry.id)
    undo: int = 0          # packed Mark the entry goes back to if this is not printed


class Mark(NamedTuple):
    """What was printed of an entry: the dedup dict's value, packed in one int."""
    time: int              # ms since 1970 of the newest update printed not past the clock; 0: none
    count: int             # updates printed dated `time` or later, at most 255
    text_crc: int          # crc32 of that update's label, message and components

    def pack(self):
        """Return the Mark as one int (one object per entry, not four); time sorts first."""
        return (self.time << MARK_TIME_SHIFT) | (min(self.count, 0xFF) << 32) | self.text_crc

    @classmethod
    def unpack(cls, value):
        return cls(value >> MARK_TIME_SHIFT, (value >> 32) & 0xFF, value & 0xFFFFFFFF)


# A packed Mark(0, 0, 0): the entry is known but none of its updates was
# printed (stdout refused them); it is never taken for history.
NOTHING_PRINTED = 0


class Diff(NamedTuple):
    """What one parsed copy of a feed means."""
    events: list           # Events to print, oldest first
    marks: dict            # entry key -> packed Mark to remember
    notes: list            # what -v says about the copy (stale, odd dates)


class Response(NamedTuple):
    """An HTTP answer: status 200 with a body, or 304 with none."""
    status: int
    body: bytes
    etag: Optional[str]
    last_modified: Optional[str]


class Job(NamedTuple):
    """What a worker needs to poll one feed; a copy, so workers share nothing."""
    url: str
    etag: Optional[str]
    last_modified: Optional[str]
    body_sha256: Optional[bytes]
    timeout: float
    slack: float = LAUNCH_QUANTUM   # how late the scheduler may take in its outcome


class Outcome(NamedTuple):
    """What a worker found; entries is None when nothing changed or it failed."""
    url: str
    status: int = 200      # HTTP status, 0 when there was none
    entries: Optional[list] = None
    body_sha256: Optional[bytes] = None
    etag: Optional[str] = None
    last_modified: Optional[str] = None
    error: Optional[str] = None
    retry_after: Optional[float] = None
    size: int = 0
    seconds: float = 0.0
    timeout: float = DEFAULT_TIMEOUT   # the deadline the request had
    timed_out: bool = False            # it ran into that deadline
    note: str = ""                     # for -v: why the Statuspage API added nothing


class Config(NamedTuple):
    """The command line, as the tracker uses it."""
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    workers: int = 0                   # polls at once per lane; 0: min(MAX_WORKERS, feeds watched)
    history: int = 0
    json: bool = False
    verbose: bool = False
    once: bool = False
    fast_timeout: float = FAST_LANE_TIMEOUT
    only: Tuple[Filter, ...] = ()      # print an event only if one of these matches it
    skip: Tuple[Filter, ...] = ()      # ... and none of these
    maintenance: bool = True           # False: --no-maintenance


class TrackerError(Exception):
    """A bad providers file or a bad feed; the message says which and why."""


class ConfigError(TrackerError):
    """The configuration cannot be used."""


class FeedError(TrackerError):
    """A feed could not be read or parsed."""

    def __init__(self, message, status=0, retry_after=None, timed_out=False):
        TrackerError.__init__(self, message)
        self.status = status
        self.retry_after = retry_after
        self.timed_out = timed_out


# ---------------------------------------------------------------- text and dates

def clean_text(text, limit=None):
    """Return text on one line, encodable: no control characters or lone
    surrogates, whitespace collapsed."""
    if not text.isprintable():   # the rare case: isprintable() is false for all we change
        text = _ESCAPE.sub("", text)
        text = _INVISIBLE.sub("", _CONTROL.sub(" ", _SURROGATE.sub(u"\ufffd", text)))
    text = " ".join(text.split())
    if limit is not None and len(text) > limit:
        text = text[:limit - 1].rstrip() + "\u2026"
    return text


def html_to_text(markup, limit=None):
    """Return the plain text of an HTML fragment: tags gone, entities decoded."""
    if "<" in markup:
        markup = _BREAKING_TAG.sub(" ", _DROPPED_HTML.sub(" ", markup))
        markup = _TAG.sub("", markup)
    if "&" in markup:
        markup = unescape(markup)
    return clean_text(markup, limit)


def unescape(markup):
    """Return html.unescape(markup), in linear time whatever the references."""
    return html.unescape(_HUGE_REFERENCE.sub(u"\ufffd", markup))


def _utc(year, month, day, hour=0, minute=0, second=0, micro=0, offset=0.0):
    """Return an aware UTC datetime, or None for an impossible date."""
    try:
        local = datetime(year, month, day, hour, minute, second, micro)
    except (ValueError, OverflowError):
        return None
    return (local - timedelta(hours=offset)).replace(tzinfo=timezone.utc)


def parse_date(text):
    """Return an RFC 3339 or RFC 822 date as aware UTC, or None."""
    text = (text or "").strip()
    if len(text) > 100:   # not a date; and parsedate_tz's int() of a huge number is slow
        return None
    match = _RFC3339.match(text)
    if match:
        year, month, day, hour, minute, second, fraction, zone = match.groups()
        offset = _offset_hours(zone) if zone and zone not in "Zz" else 0.0
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        return _utc(int(year), int(month), int(day), int(hour or 0),
                    int(minute or 0), int(second or 0), micro, offset)
    try:
        parts = parsedate_tz(text)
    except (TypeError, ValueError, IndexError):
        parts = None
    if not parts:
        return None
    # RFC 5322 3.3: an unknown zone means "-0000", i.e. UTC with no claim.
    offset = (parts[9] or 0) / 3600.0
    return _utc(*parts[:6], offset=offset)


def _offset_hours(zone):
    """Return "+05:30", "-0300" or "-03" as hours east of UTC."""
    digits = zone[1:].replace(":", "")
    return (-1 if zone[0] == "-" else 1) * (int(digits[:2]) + int(digits[2:] or 0) / 60.0)


def parse_block_date(text, reference, opened_only=False):
    """Return (aware UTC, zone name not understood or "") of a Statuspage block date.

    "Jul  9, 06:01 UTC" gives no year.  The reference is the entry's newest
    date, and a block is no later than that (+2 days of slack): the latest
    such year is taken, so a Dec 31 block of an entry updated Jan 2 is in the
    previous year, and a postmortem months later does not move old blocks
    into the future.  For an entry with only <published> (its opening,
    opened_only=True) a block is no earlier than that, so its Jan 1 block is
    in the new year.  An unknown zone is read as UTC.  The time is None when
    there is no date, or no year to be had.
    """
    match = _BLOCK_DATE.search(text)
    month = MONTHS.get(match.group(1).lower()) if match else None
    if month is None:
        return None, ""
    _, day, year, hour, minute, name, number = match.groups()
    offset, unknown = _block_zone(name, number)
    if year is None and reference is None:
        return None, unknown
    years = [int(year)] if year else [reference.year - 1, reference.year, reference.year + 1]
    candidates = [when for when in (
        _utc(y, month, int(day), int(hour), int(minute), offset=offset) for y in years)
        if when is not None]
    if not candidates or year:
        return (candidates[0] if candidates else None), unknown
    return _closest_year(candidates, reference, opened_only), unknown


def _block_zone(name, number):
    """Return (offset hours, zone name not understood or "") of a block date's zone."""
    if number:
        return _offset_hours(number), ""
    offset = ZONES.get((name or "UTC").upper())
    if offset is None:
        return 0, name
    return offset, ""


def _closest_year(candidates, reference, opened_only):
    """Return the candidate (one a year, oldest first) the entry's reference date allows."""
    slack = timedelta(days=2)
    if opened_only:
        after = [when for when in candidates if when >= reference - slack]
        return after[0] if after else candidates[-1]
    before = [when for when in candidates if when <= reference + slack]
    return before[-1] if before else candidates[0]


def normalise_state(label):
    """Return the --json state of a label: investigating, ..., or unknown."""
    return STATES.get(label.strip().lower().replace(" ", "_").replace("-", "_"),
                      "unknown")


def state_at(entry, index=0):
    """Return the state as of update `index`: its newest label that is not "Update"."""
    for update in entry.updates[index:]:
        if update.label.strip().lower() != "update":
            return normalise_state(update.label)
    return "unknown"


def is_open(entry):
    """True for an incident or maintenance that has not ended."""
    return state_at(entry) not in CLOSED_STATES | {"unknown"}


def is_maintenance(entry):
    """True when an update carries a maintenance label (Scheduled, ...)."""
    return any(update.label.strip().lower() in MAINTENANCE_LABELS
               for update in entry.updates)


# ---------------------------------------------------------------- parsing feeds

def _local(tag):
    """Return an element tag without its namespace."""
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _namespace(tag):
    """Return an element tag's "{namespace}" part, "" for none."""
    return tag[:tag.find("}") + 1] if isinstance(tag, str) and tag[:1] == "{" else ""


def _as_expat_reads(body):
    """Return a document as text whose markup is where expat will see it.

    Expat reads UTF-16 (by BOM, or by "<" and a zero byte), UTF-8, and 8-bit
    charsets that keep ASCII in place (it refuses others, and multi-byte
    ones): outside UTF-16 every "<!" is the bytes b"<!", which latin-1 keeps.
    """
    if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return body.decode("utf-16", "replace")
    if body[:2] in (b"<\0", b"\0<"):
        return body.decode("utf-16-le" if body[:1] == b"<" else "utf-16-be", "replace")
    return body[3:].decode("latin-1") if body[:3] == b"\xef\xbb\xbf" else body.decode("latin-1")


def refuse_dtd(body):
    """Raise FeedError for an HTML page or a document with a DTD (entity bombs, XXE).

    Feeds never need a DTD.  After the prolog's comments, processing
    instructions and blanks (however long), a feed's root element starts;
    "<!" there is a DOCTYPE, refused before expat expands anything it
    declares: billion laughs, quadratic blowup and external entities, whatever
    the expat version (its own limits came in 2.4).
    """
    text = _as_expat_reads(body)
    start = _PROLOG.match(text).end()
    rest = text[start:start + 14].lower()
    if rest == "<!doctype html" or rest[:5] == "<html":
        raise FeedError("got an HTML page, not a feed")
    if rest[:2] == "<!" and rest[:4] != "<!--":   # "<!--": a comment left open
        raise FeedError("refused: the document declares a DTD")


def recode_misdeclared(body):
    """Return a body that says (or implies) UTF-8 but is not, as UTF-8; else None.

    Servers paste Windows-1252 text into UTF-8 feeds, and expat stops at the
    first such byte: read each byte that is not UTF-8 as cp1252 instead.
    """
    text = body[3:] if body[:3] == b"\xef\xbb\xbf" else body
    if text[:2] in (b"\xff\xfe", b"\xfe\xff", b"<\0", b"\0<"):
        return None
    declared = _XML_ENCODING.match(text[:1024])
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        return None
    try:
        text.decode("utf-8")
        return None          # it is UTF-8: the fault lies elsewhere
    except UnicodeDecodeError:
        pass
    text = _STRAY_BYTE.sub(_as_cp1252, text.decode("utf-8", "surrogateescape"))
    return text.encode("utf-8")


def _as_cp1252(stray):
    """Return the cp1252 character of a surrogate-escaped byte."""
    return bytes([ord(stray.group()) - 0xdc00]).decode("cp1252", "replace")


def _parse_bounded(body):
    """Return the root element; raise FeedError for a DTD or too many elements."""
    refuse_dtd(body)
    parser = ET.XMLPullParser(events=("start",))
    root, count = None, 0
    for offset in range(0, len(body), 65536):
        parser.feed(body[offset:offset + 65536])
        for _, element in parser.read_events():
            root = element if root is None else root
            count += 1
        if count > MAX_ELEMENTS:   # bounds the tree, and the time to walk it
            raise FeedError("more than %d XML elements; refused" % MAX_ELEMENTS)
    parser.close()
    return root


def parse_xml(body):
    """Return the root element of a feed document; raise FeedError."""
    if not body.strip():
        raise FeedError("empty body")
    try:
        return _parse_bounded(body)
    except ET.ParseError as exc:
        error = FeedError("not well-formed XML: %s" % exc)
    except (LookupError, ValueError) as exc:   # what expat makes of encoding="x-klingon"
        raise FeedError("cannot read its declared encoding: %s" % clean_text(str(exc), 80))
    recoded = recode_misdeclared(body)
    if recoded is None:
        raise error
    try:
        return _parse_bounded(recoded)
    except ET.ParseError:
        raise error


def parse_feed(body):
    """Parse an Atom 1.0 or RSS 2.0 document (bytes) into Entries, as ordered."""
    root = parse_xml(body)
    kind = _local(root.tag)
    if kind == "feed":
        items = [child for child in root if _local(child.tag) == "entry"
                 and _namespace(child.tag) == _namespace(root.tag)]
        return [_atom_entry(item) for item in items]
    if kind in ("rss", "RDF"):
        # rss/channel/item (2.0) or rdf:RDF/item (1.0), in the channel's
        # namespace: an extension's <x:item>, anywhere, is not an entry.
        channels = [child for child in root if _local(child.tag) == "channel"]
        own = _namespace(channels[0].tag) if channels else ""
        items = [node for parent in [root] + channels for node in parent
                 if _local(node.tag) == "item" and _namespace(node.tag) == own]
        return [_rss_entry(item) for item in items]
    raise FeedError("not an Atom or RSS feed (root element <%s>)" % clean_text(kind, 40))


def _children(element):
    """Map local child names to their first element, its own namespace first.

    An extension may reuse a name (<media:title> before <title>); it counts
    only when the element's own is missing (so <dc:date> still serves).
    """
    own = _namespace(element.tag)
    found = {}
    for child in element:
        name = _local(child.tag)
        if name not in found or _namespace(child.tag) == own != _namespace(found[name].tag):
            found[name] = child
    return found


def _text_of(element):
    """Return an element's text content, '' for a missing element."""
    if element is None:
        return ""
    return "".join(element.itertext())


def _markup_of(element):
    """Return an Atom text construct as HTML (RFC 4287 3.1: text, html, xhtml)."""
    if element is None:
        return ""
    if element.get("type", "text") in ("html", "text/html"):
        return _text_of(element)
    return html.escape(_text_of(element), quote=False)


def _atom_link(element):
    """Return the entry's alternate link (RFC 4287 4.2.7.2: rel defaults to it)."""
    links = [child for child in element if _local(child.tag) == "link"]
    for link in links:
        if link.get("rel", "alternate") == "alternate":
            return link.get("href", "")
    return links[0].get("href", "") if links else ""


def _atom_entry(element):
    """Return the Entry of an Atom <entry>."""
    fields = _children(element)
    title = fields.get("title")
    title = html_to_text(_markup_of(title), TEXT_LIMIT)
    updated = _text_of(fields.get("updated")) or _text_of(fields.get("published"))
    markup = _markup_of(fields.get("content")) or _markup_of(fields.get("summary"))
    dates = [parse_date(_text_of(fields.get(name))) for name in ("updated", "published")]
    return build_entry(_text_of(fields.get("id")), title, _atom_link(element),
                       updated.strip(), markup, dates, opened_only=dates[0] is None)


def _rss_entry(element):
    """Return the Entry of an RSS <item>."""
    fields = _children(element)
    updated = _text_of(fields.get("pubDate")) or _text_of(fields.get("date"))
    markup = _text_of(fields.get("encoded")) or _text_of(fields.get("description"))
    title = clean_text(_text_of(fields.get("title")), TEXT_LIMIT)
    return build_entry(_text_of(fields.get("guid")), title,
                       _text_of(fields.get("link")).strip(), updated.strip(),
                       markup, [parse_date(updated)])


def build_entry(raw_id, title, link, updated, markup, dates, opened_only=False):
    """Return an Entry from an item's parts, recognising the provider's shape.

    opened_only: the one date known is when the incident opened (an Atom
    <published> without <updated>), so its updates come after it.
    """
    known = [date for date in dates if date is not None]
    newest = max(known) if known else None
    parts = extract_updates(markup, newest, opened_only, title)
    updates = parts.updates
    entry_id = clean_text(raw_id) or clean_text(link)
    if not entry_id:
        seed = ("%s\n%s" % (title, updated)).encode("utf-8", "replace")
        entry_id = "sha1:" + hashlib.sha1(seed).hexdigest()
    if not updates:
        updates = (Update(newest, "Update", title),)
    return Entry(entry_id, title, clean_text(link, 2 * TEXT_LIMIT), updated,
                 parts.components, updates, parts.complete, parts.notes, parts.statuses)


def extract_updates(markup, newest, opened_only=False, title=""):
    """Return the Parts of an entry's HTML: components, updates newest first, ..."""
    blocks = _STATUSPAGE_BLOCK.findall(markup)
    if blocks:
        pairs = [_statuspage_update(when, label, body, newest, opened_only)
                 for when, label, body in blocks]
        notes = tuple(_unique(note for _, note in pairs))
        return Parts(_affected(markup), tuple(update for update, _ in pairs), True, notes)
    status = _INCIDENTIO_STATUS.search(markup)
    if status:
        rest = _INCIDENTIO_COMPONENTS.split(status.group(2), 1)
        items = _LIST_ITEM.findall(rest[1]) if len(rest) > 1 else []
        statuses = collections.OrderedDict()     # name -> status; a repeated name: the first
        for item in items:
            name, status_ = _component_status(html_to_text(item))
            if name:
                statuses.setdefault(name, status_)
        label = html_to_text(status.group(1), 40) or "Update"
        update = Update(newest, label, html_to_text(rest[0], MESSAGE_LIMIT))
        return Parts(tuple(statuses), (update,), False, (), tuple(statuses.values()))
    return _generic_update(markup, newest, title)


def _component_status(text):
    """Return (name, status) of incident.io's "Responses (Degraded performance)"."""
    match = _TRAILING_STATE.search(text)
    if not match:
        return text, ""
    said = match.group().strip(" ()").lower()
    return text[:match.start()], COMPONENT_STATUSES.get(said, "_".join(said.split()))


def _statuspage_update(when, label, body, newest, opened_only):
    """Return one Statuspage block as (Update, note for -v or "")."""
    message = html_to_text(body, MESSAGE_LIMIT + 2)
    message = clean_text(message[1:] if message.startswith("-") else message, MESSAGE_LIMIT)
    date = html_to_text(when)
    time_, unknown = parse_block_date(date, newest, opened_only)
    note = ""
    if unknown:
        note = "zone %r of block date %r not known; read as UTC" % (unknown, date[:40])
    elif time_ is None:
        note = "block date %r not understood" % date[:40]
    return Update(time_, html_to_text(label, 40) or "Update", message), note


def _generic_update(markup, newest, title):
    """Return the single Update of a feed of no known shape."""
    text = html_to_text(markup)
    match = _LEADING_LABEL.match(text)
    if match:
        label, text = match.group(1).capitalize(), text[match.end():]
    else:
        label = stated_label(title, text)
    text = text or title
    if not text:
        return Parts(_affected(markup), (), False)
    return Parts(_affected(markup), (Update(newest, label, clean_text(text, MESSAGE_LIMIT)),), False)


def stated_label(title, text):
    """Return the state a generic item's title or text states in words, else "Update"."""
    for field, pattern, label in _STATED:
        match = pattern.search(title if field == "title" else text)
        if match:
            return label or match.group(1).capitalize()
    return "Update"


def _affected(markup):
    """Return components a text names itself ("Affected products: A, B")."""
    match = _AFFECTED.search(unescape(_BREAKING_TAG.sub("\n", markup)))
    if not match:
        return ()
    # whitespace collapsed first: \s+ tried at each of a million blanks is quadratic
    names = re.split(r", ?| and ", " ".join(match.group(1).split()).rstrip("."))
    return _unique(html_to_text(name) for name in names)


def _unique(names):
    """Return names de-duplicated, order kept, empty ones dropped."""
    seen = collections.OrderedDict()
    for name in names:
        if name:
            seen.setdefault(name, None)
    return tuple(seen)


def body_sha256(body):
    """Return the sha256 of the entries part of a feed.

    incident.io (OpenAI) sends no ETag or Last-Modified and rewrites the
    feed-level <updated> on every fetch: only what follows it says whether
    anything happened.
    """
    match = _ENTRIES_START.search(body)
    start = match.start() if match else 0
    return hashlib.sha256(memoryview(body)[start:]).digest()   # faster than blake2b with SHA-NI


# ---------------------------------------------------------------- deciding what to print

def entry_key(entry_id):
    """Return the 64-bit int the dedup dict files an entry id under.

    At 5,000 feeds of ~90 entries memory is the limit: an int key and a
    packed int Mark take ~130 bytes an entry, the id string and a tuple ~350.
    """
    data = entry_id.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _crc(text):
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def _millis(when):
    """Return a time as whole milliseconds since 1970; 0 for none (or earlier)."""
    return max(0, int(when.timestamp() * 1000)) if when is not None else 0


def text_crc(entry, index=0):
    """Return a crc32 of what update `index` prints: label, message, components as a set.

    incident.io lists an incident's components in an order that changes from
    one fetch to the next (seen in two real OpenAI captures): a reorder is no news.
    """
    update = entry.updates[index]
    return _crc("\n".join((update.label, update.message) + tuple(sorted(entry.components))))


def mark_through(entry, index=0, until=None):
    """Return the Mark of an entry whose updates from `index` down (older) were printed.

    until (ms since 1970; None: no limit) is the latest time a Mark may hold.
    An update dated later (a zone slip, a typo) would make every true update
    after it look old: it gives the Mark no time, and Mark.count counts it
    with the updates of the Mark's time.
    """
    times = [_millis(update.time) for update in entry.updates[index:]]
    time_ = next((t for t in times if until is None or t <= until), 0)
    return Mark(time_, sum(1 for t in times if t >= time_), text_crc(entry, index))


def _ahead(new, old):
    """True when Mark `new` is later than `old`: a newer copy of the entry."""
    return (new.time, new.count) > (old.time, old.count)


def fresh_updates(entry, packed, until=None):
    """Return the indexes of the updates of a known entry not printed yet.

    packed is the entry's packed Mark, until as in mark_through().  Marks
    only move forward: a copy older than what was printed (a CDN serving a
    stale copy between two newer ones) prints nothing.
    """
    if packed < 0:
        return _fresh_since_format_1(entry, -1 - packed)
    if packed == NOTHING_PRINTED:
        return list(range(len(entry.updates)))
    old = Mark.unpack(packed)
    if entry.complete:
        # Statuspage keeps every update, newest posted on top, each dated
        # to the minute: of the blocks from the mark's minute on, the lowest
        # `count` were printed, those above them are new (one more in the
        # same minute, a later one, one dated past the clock).  Blocks
        # deleted or edited in place print nothing.
        times = [_millis(update.time) for update in entry.updates]
        since = [index for index, time_ in enumerate(times) if time_ >= old.time]
        return since[:max(0, len(since) - old.count)]
    new = mark_through(entry, until=until)
    if new.text_crc != old.text_crc and (new.time > old.time or new.time == old.time == 0):
        return [0]        # moved on and reads differently; without a date, reads differently
    return []


def _fresh_since_format_1(entry, value):
    """fresh_updates() for a mark of a format-1 state file, by that format's rules.

    It packed (crc32 of <updated> << 48 | updates seen << 32 | crc32 of label,
    message and components in order); the first change after an upgrade is
    judged by it, then the entry has a Mark.
    """
    if entry.complete:
        return list(range(max(0, len(entry.updates) - ((value >> 32) & 0xFFFF))))
    update = entry.updates[0]
    text = _crc("\n".join((update.label, update.message) + entry.components))
    moved = (value >> 48) != _crc(entry.updated)
    return [0] if moved and text != value & 0xFFFFFFFF else []


def diff_entries(seen, entries, first=False, history=0, provider="", now=None):
    """Return the Diff of a parsed copy of a feed against what was printed.

    seen maps entry_key(id) -> packed Mark from earlier polls; Diff.marks
    holds the marks to remember for the entries of this copy (never behind
    the ones in seen).  On a feed's first poll (first=True) only incidents
    still open print, plus the `history` newest updates; the rest is
    remembered silently.  now (epoch seconds) keeps an entry dated in the
    future from making real news look old, and any Mark from going past it.
    """
    marks, fresh, kept, notes = {}, [], [], []
    until = None if now is None else int((now + FUTURE_SKEW) * 1000)
    keys = [entry_key(entry.id) for entry in entries]
    horizon = _history_horizon(seen, keys, now)
    stale = old_news = 0
    for entry, key in zip(entries, keys):
        if key in marks:               # a duplicate id: the first one counts
            continue
        kept.append(entry)
        notes.extend(entry.notes)
        new = mark_through(entry, until=until)
        packed = seen.get(key)
        # no Mark to compare with: a new entry, NOTHING_PRINTED, a format-1 mark
        old = Mark.unpack(packed) if packed is not None and packed > 0 else None
        if first:
            indexes = [0] if is_open(entry) else []
        elif packed is None and 0 < new.time < horizon:
            indexes, old_news = [], old_news + 1
        elif packed is None:
            indexes = range(len(entry.updates))
        else:
            indexes = fresh_updates(entry, packed, until)
        if old is not None and not indexes and not _ahead(new, old):
            marks[key] = packed            # what was printed stays printed
            stale += _ahead(old, new)
        else:
            marks[key] = new.pack()
        kind = "update" if packed is not None else "new"
        fresh += [(entry, index, kind) for index in indexes]
    if first and history:
        fresh += _newest_updates(kept, history)
    if stale:
        notes.append("stale copy: %d entries older than already seen; nothing printed "
                     "from them" % stale)
    if old_news:
        notes.append("%d entries new to the tracker but older than its newest news by "
                     "over %ds: remembered as history, not printed" % (old_news, HISTORY_WINDOW))
    return Diff(_events(_in_order(fresh), seen, provider, until), marks, notes)


def _history_horizon(seen, keys, now):
    """Return the time (ms) a new entry's news must pass not to be history; 0: none is.

    Most of a copy's ids new at once is a changed id scheme or a wider
    window: of those, an entry well older than the feed's newest news is
    history coming into view.  A few new ids among known ones are news
    however old their dates: a page may post an incident afterwards, with
    its real times (Statuspage and incident.io both allow it).
    """
    distinct = set(keys)
    if len(distinct - seen.keys()) * 2 <= len(distinct):
        return 0
    newest = max(seen.values(), default=0) >> MARK_TIME_SHIFT
    if now is not None:
        newest = min(newest, int(now * 1000))
    return newest - HISTORY_WINDOW * 1000


def _newest_updates(entries, count):
    """Return the `count` newest (entry, index, "new") across a feed."""
    pairs = [(entry, index, "new") for entry in entries
             for index in range(len(entry.updates))]
    pairs.sort(key=lambda pair: _time_key(pair[0].updates[pair[1]].time), reverse=True)
    return pairs[:count]


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _time_key(when):
    return when if when is not None else _EPOCH


def _in_order(fresh):
    """Return (entry, index, kind) oldest first, without repeats; unknown times first."""
    unique = collections.OrderedDict()
    for entry, index, kind in fresh:
        unique.setdefault((entry.id, index), (entry, index, kind))
    return sorted(unique.values(), key=lambda item: (
        _time_key(item[0].updates[item[1]].time), -item[1]))


def _events(ordered, seen, provider, until=None):
    """Return Events, each with the mark its entry falls back to if it is not printed."""
    events, printed = [], {}   # entry key -> index of its last event so far
    for entry, index, kind in ordered:
        key = entry_key(entry.id)
        if key in printed:
            undo = mark_through(entry, printed[key], until).pack()
        elif key in seen:
            undo = seen[key]
        elif index + 1 < len(entry.updates):   # first sight: the older ones count as told
            undo = mark_through(entry, index + 1, until).pack()
        else:
            undo = NOTHING_PRINTED             # known, and every update still to print
        printed[key] = index
        events.append(Event(provider, kind, entry, index, key, undo))
    return events


class Printed(object):
    """One feed's dedup dict: entry_key(id) -> packed Mark, and when entries left.

    Never changed once made: remembered() and taken_back() return new ones,
    so a poll's step can be a function of values.
    """

    __slots__ = ("marks", "gone")

    def __init__(self, marks=None, gone=None):
        self.marks = marks if marks is not None else {}   # entry key -> packed Mark
        self.gone = gone if gone is not None else {}      # entry key -> wall time it left

    def remembered(self, marks, now):
        """Return this with the marks of a fresh parse; entries gone GONE_GRACE forgotten,
        and the longest gone beyond GONE_FLOOR + GONE_PER_ENTRY per entry shown now.

        Entries leave a real feed a few a week, pushed off by new ones, or for
        a poll or two (a stale or narrower copy): the bound leaves those alone
        (a window shrunk to a quarter and grown back, a feed answering empty
        once) and holds a feed whose ids change on every poll to a few times
        what it shows, not a week of them in memory and in the state file.
        """
        seen, gone = dict(self.marks), dict(self.gone)
        for key in seen:
            if key not in marks:
                gone.setdefault(key, now)
        for key in marks:
            gone.pop(key, None)
        expired = [key for key, since in gone.items() if now - since > GONE_GRACE]
        excess = len(gone) - len(expired) - GONE_FLOOR - GONE_PER_ENTRY * len(marks)
        if excess > 0:      # the longest gone first: the expired ones, then more
            expired = sorted(gone, key=gone.get)[:len(expired) + excess]
        for key in expired:
            del gone[key]
            seen.pop(key, None)
        seen.update(marks)
        return Printed(seen, gone)

    def forgetting(self, before):
        """Return this without the entries that left their feed before `before`."""
        old = set(key for key, since in self.gone.items() if since < before)
        return Printed(dict((key, mark) for key, mark in self.marks.items() if key not in old),
                       dict((key, since) for key, since in self.gone.items() if key not in old))

    def taken_back(self, key, undo):
        """Return this with an entry's mark back where it was before an unprinted event."""
        marks = dict(self.marks)
        marks[key] = undo
        return Printed(marks, self.gone)

    def to_json(self):
        return {"seen": dict(("%016x" % key, mark) for key, mark in self.marks.items()),
                "gone": dict(("%016x" % key, since) for key, since in self.gone.items())}


class FeedState(NamedTuple):
    """What the tracker knows of a feed between two polls: what --state keeps of it."""
    printed: Optional[Printed] = None   # None until a good poll showed entries
    etag: Optional[str] = None
    last_modified: Optional[str] = None
    body_sha256: Optional[bytes] = None
    failures: int = 0                   # polls failed in a row
    slow: bool = False                  # its next poll goes to the slow lane

    def to_json(self):
        data = self.printed.to_json() if self.printed else {"seen": None, "gone": {}}
        data.update(etag=self.etag, last_modified=self.last_modified, failures=self.failures,
                    body_sha256=self.body_sha256.hex() if self.body_sha256 else None)
        return data


class Step(NamedTuple):
    """What one poll's outcome means for its feed."""
    state: FeedState       # the feed's state from now on
    events: list           # Events to print, oldest first
    due: float             # when to poll it next (clock time)
    logs: list             # lines for stderr
    changed: bool          # the state file must take this feed again
    kind: str              # "parsed", "unchanged", "not_modified", "error" or "slow"


def poll_step(state, provider, outcome, config, due, now, wall, rand=random.random):
    """Return the Step of a feed in `state` whose poll, due at `due`, gave `outcome`.

    now is the scheduler's clock, wall the time of day (seconds since 1970).
    """
    logs = [_poll_line(provider, outcome)] if config.verbose else []
    if outcome.error is not None:
        return _failed_step(state, provider, outcome, config, now, logs, rand)
    if state.failures:
        logs.append("%s (%s) recovered after %d failed polls" % (
            provider.name, redact(provider.url), state.failures))
    new = state._replace(etag=outcome.etag, last_modified=outcome.last_modified,
                         failures=0, slow=outcome.seconds > SLOW_POLL)
    changed = state.failures > 0 or (state.etag, state.last_modified) != (new.etag, new.last_modified)
    events, kind = [], "not_modified" if outcome.status == 304 else "unchanged"
    if outcome.entries is not None:
        printed = state.printed or Printed()
        # Until a feed has shown an entry, its next copy is still a first look:
        # a feed that answered empty once must not print its whole history.
        first = not printed.marks
        diff = diff_entries(printed.marks, outcome.entries, first,
                            config.history if first else 0, provider.name, wall)
        new = new._replace(printed=printed.remembered(diff.marks, wall),
                           body_sha256=outcome.body_sha256)
        events, kind, changed = diff.events, "parsed", True
        if config.verbose:
            logs += ["%s: %s" % (provider.name, note)
                     for note in diff.notes + ([outcome.note] if outcome.note else [])]
    # On schedule, not from when the answer came, so polls do not drift; a
    # poll more than an interval late starts a new schedule from now.
    interval = interval_of(provider, config)
    following = due + interval
    return Step(new, events, following if following > now else now + interval,
                logs, changed, kind)


def interval_of(provider, config):
    """Return a feed's time between polls: its interval= in providers.txt, else --interval."""
    return provider.interval or config.interval


def _failed_step(state, provider, outcome, config, now, logs, rand):
    if outcome.timed_out and not state.slow and outcome.timeout < config.timeout:
        # The fast lane gives a poll a few seconds: a server that needs more
        # is tried again at once in the slow lane, with the whole --timeout,
        # where it can hold up no healthy feed.
        return Step(state._replace(slow=True), [], now, logs, False, "slow")
    if not state.failures or config.once:   # --once says why it exits 1, every time
        logs.append("%s (%s) is failing: %s%s" % (
            provider.name, redact(provider.url), outcome.error,
            "" if config.once else "; retrying with backoff"))
    failures = state.failures + 1
    interval = interval_of(provider, config)
    # capped: a feed is never blind for long after an outage
    delay = backoff(failures, interval, max(BACKOFF_CAP, BACKOFF_INTERVALS * interval),
                    outcome.retry_after, rand)
    return Step(state._replace(failures=failures, slow=True), [], now + delay, logs, True, "error")


def _poll_line(provider, outcome):
    what = outcome.error or ("unchanged" if outcome.entries is None else "parsed")
    return "poll %s %s %dB %dms %s" % (provider.name, outcome.status or "-", outcome.size,
                                      outcome.seconds * 1000, what)


def backoff(failures, base, cap, retry_after=None, rand=random.random):
    """Return seconds until the next try after `failures` failures in a row (of a
    feed's polls or a target's deliveries): base doubling, within [base, cap]."""
    delay = base * 2 ** min(max(failures, 1) - 1, 20)
    delay *= 0.8 + 0.4 * rand()                       # jitter: no herd
    delay = max(base, min(delay, cap))                # capped after the jitter
    if retry_after is not None:                       # what the server asked, within reason
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
    return delay


# ---------------------------------------------------------------- formatting

def _stamp(when):
    return when.strftime("%Y-%m-%d %H:%M:%S") if when else "no date"


def product_of(event):
    """Return "Provider - A, B" or just "Provider"."""
    components = ", ".join(event.entry.components)
    text = "%s - %s" % (event.provider, components) if components else event.provider
    return clean_text(text, TEXT_LIMIT)


def format_event(event):
    """Return the three lines that show one event (no trailing newline)."""
    entry = event.entry
    update = entry.updates[event.index]
    status = "%s - %s" % (update.label, update.message) if update.message else update.label
    incident = entry.title or entry.id
    if entry.link:
        incident = "%s (%s)" % (incident, entry.link)
    return "[%s] Product: %s\nStatus: %s\nIncident: %s" % (
        _stamp(update.time), product_of(event), status, incident)


def format_json(event):
    """Return one event as one line of JSON."""
    entry = event.entry
    update = entry.updates[event.index]
    when = update.time.strftime("%Y-%m-%dT%H:%M:%SZ") if update.time else None
    return json.dumps(collections.OrderedDict([
        ("time", when), ("provider", event.provider),
        ("product", product_of(event)), ("components", list(entry.components)),
        ("state", state_at(entry, event.index)), ("label", update.label),
        ("message", update.message), ("title", entry.title),
        ("link", entry.link), ("id", entry.id), ("kind", event.kind),
        ("maintenance", is_maintenance(entry)),
        ("component_status", collections.OrderedDict(zip(entry.components, entry.statuses))),
        ("impact", entry.impact or None),
    ]), ensure_ascii=False)


FILTER_FIELDS = ("provider", "product", "component", "state", "title")
PROVIDER_OPTIONS = ("interval", "only", "skip")


def parse_filter(text):
    """Return the Filter of "regex" or "field:regex"; raise ValueError saying why not.

    A word before a colon must be a field ("components" is "component"): a
    misspelt one would otherwise match nothing, silently.  A pattern with a
    colon of its own after a word writes it \\: .
    """
    field, rest = "", text
    prefix = re.match(r"([A-Za-z_]+):\s*", text)
    if prefix:
        field, rest = prefix.group(1).lower(), text[prefix.end():]
        if field not in FILTER_FIELDS and field.rstrip("s") in FILTER_FIELDS:
            field = field.rstrip("s")
        if field not in FILTER_FIELDS:
            raise ValueError("unknown field %r (known: %s; write \\: for a colon)" % (
                prefix.group(1), ", ".join(FILTER_FIELDS)))
    try:
        return Filter(field, re.compile(rest, re.IGNORECASE))
    except (re.error, OverflowError, RecursionError) as exc:   # a{9999999999}, ((((...
        raise ValueError("bad regular expression %r: %s" % (
            clean_text(rest, 60), "nested too deep" if isinstance(exc, RecursionError) else exc))


def wanted(event, config, provider=None):
    """True when the event passes --no-maintenance, --only and --skip, and
    its feed's only= and skip= when the provider is given.

    A filtered event still counts as printed: a change of filters never
    brings back what an earlier run left out.
    """
    if not config.maintenance and is_maintenance(event.entry):
        return False
    for only, skip in [(config.only, config.skip)] + (
            [(provider.only, provider.skip)] if provider else []):
        if only and not any(_matches(rule, event, config) for rule in only):
            return False
        if any(_matches(rule, event, config) for rule in skip):
            return False
    return True


def _matches(rule, event, config):
    if rule.field == "component":
        return any(rule.pattern.search(name) for name in event.entry.components)
    printed = format_json if config.json else format_event
    text = {"provider": lambda: event.provider, "product": lambda: product_of(event),
            "state": lambda: state_at(event.entry, event.index),
            "title": lambda: event.entry.title,
            "": lambda: printed(event)}[rule.field]()
    return rule.pattern.search(text) is not None


# ---------------------------------------------------------------- providers.txt

def url_problem(url, shown):
    """Return why url is no http(s) URL with a host name, naming it as `shown`; or None.

    The one check of a feed's URL and of a --notify target's.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port
    except ValueError as exc:
        if "@" in url:   # the reason could quote a piece of the password
            return "bad URL %s: a raw '/', '?', '#' or '@' in user:password@ must be %%-encoded" \
                % shown
        return "bad URL %s: %s" % (shown, exc)
    if parts.scheme.lower() not in ("http", "https"):
        return "not an http or https URL: %s" % shown
    if not parts.hostname:
        return "no host name in %s" % shown
    return None


def normalise_url(url):
    """Return the one spelling of a feed URL (RFC 3986 6.2.2-6.2.3).

    Scheme and host in lower case, no default port, no dot segments, no
    needless %-escapes and the others in upper case (user:password@ too), no
    fragment: `HTTP://Host:80/./%78#top` and `http://host/x` are one feed.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = "[%s]" % host          # an IPv6 address keeps its brackets
    if parts.port is not None and parts.port != DEFAULT_PORTS.get(scheme):
        host = "%s:%d" % (host, parts.port)
    userinfo = _normalise_escapes(parts.netloc.rpartition("@")[0])
    netloc = "%s@%s" % (userinfo, host) if userinfo else host
    path = _remove_dot_segments(_normalise_escapes(parts.path)) or "/"
    return urllib.parse.urlunsplit((scheme, netloc, path, _normalise_escapes(parts.query), ""))


def _normalise_escapes(text):
    """Return text with %-escapes of letters, digits and -._~ decoded, the
    others in upper case (RFC 3986 6.2.2.1-2)."""
    return _PERCENT_ESCAPE.sub(_normalise_escape, text)


def _normalise_escape(escape):
    character = chr(int(escape.group()[1:], 16))
    return character if character in _UNRESERVED else escape.group().upper()


def _remove_dot_segments(path):
    """Return path without "." and ".." segments (RFC 3986 5.2.4)."""
    segments = []
    for segment in path.split("/"):
        if segment == "..":
            if len(segments) > 1:
                segments.pop()
        elif segment != ".":
            segments.append(segment)
    if path.endswith(("/.", "/..")):
        segments.append("")
    return "/".join(segments)


def redact(url):
    """Return url fit for logs: password and query values replaced by ***.

    A password holding a raw "/", "?" or "#" makes the URL parse with the
    userinfo elsewhere: then all up to the last "@" is hidden.
    """
    if "@" in url and "@" not in _split_or_none(url, "netloc"):
        url = _UP_TO_LAST_AT.sub("//***@", url, 1)
    parts = _split_or_none(url)
    if parts is None:
        return "***"
    user, at, host = parts.netloc.rpartition("@")
    netloc = "%s:***@%s" % (user.partition(":")[0], host) if at and ":" in user else parts.netloc
    query = "&".join(
        "%s=***" % pair.partition("=")[0] if "=" in pair else pair
        for pair in parts.query.split("&")) if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _split_or_none(url, field=None):
    """Return urlsplit(url) (or one field of it); None ("" for a field) if it cannot."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "" if field else None
    return getattr(parts, field) if field else parts


def state_key(url):
    """Return what the state file files a feed under: its URL, or, when the URL
    carries a secret, the redacted URL and a hash of the whole one."""
    shown = redact(url)
    if shown == url:
        return url
    return "%s#sha256=%s" % (shown, hashlib.sha256(url.encode("utf-8")).hexdigest()[:16])


def parse_providers(text, source=PROVIDERS_FILE, notes=None):
    """Return Providers from providers.txt text; raise ConfigError "source:line: why".

    A URL listed twice (in any spelling) keeps its first line; the list
    `notes`, if given, receives a line naming each line dropped.
    """
    providers, lines = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*", "", line).strip()
        if not line:
            continue
        words = line.split()   # a tab parts them as a space does
        url, (name, options) = words[0], _name_and_options(words[1:])
        problem = url_problem(url, redact(url)) or _options_problem(options) or _misplaced_option(name)
        if problem:
            raise ConfigError("%s:%d: %s" % (source, number, clean_text(problem, TEXT_LIMIT)))
        url = normalise_url(url)
        if url in lines:
            if notes is not None:
                notes.append("%s:%d: %s is already listed on line %d; line dropped" % (
                    source, number, redact(url), lines[url]))
            continue
        lines[url] = number
        name = clean_text(name, 80) or urllib.parse.urlsplit(url).hostname
        providers.append(Provider(url, name, parse_seconds(options["interval"][-1])
                                  if "interval" in options else None,
                                  tuple(parse_filter(text) for text in options.get("only", ())),
                                  tuple(parse_filter(text) for text in options.get("skip", ()))))
    if not providers:
        raise ConfigError("%s: no feeds listed" % source)
    return providers


def _name_and_options(words):
    """Return the display name and the options {key: [values]} of a line's words
    after its URL: the options are its trailing key=value words, in their order."""
    first = len(words)
    while first > 0 and _OPTION_WORD.match(words[first - 1]):
        first -= 1
    options = collections.OrderedDict()
    for word in words[first:]:   # appended: a line of 100,000 of them parses in linear time
        key, _, value = word.partition("=")
        options.setdefault(key, []).append(value)
    return " ".join(words[:first]), options


def _misplaced_option(name):
    """Return why a display name holds an option (before the name's end, or a value
    with a space in it), or None."""
    for word in name.split():
        key = word.partition("=")[0]
        if "=" in word and key in PROVIDER_OPTIONS:
            return ("%s= is not at the end of the line, or its value holds a space "
                    "(write \\s)" % key)
    return None


def _options_problem(options):
    """Return why a line's key=value words cannot be used, or None."""
    for key, values in options.items():
        if key not in PROVIDER_OPTIONS:
            return "unknown option %r (known: %s)" % (key, ", ".join(PROVIDER_OPTIONS))
        if key == "interval" and len(values) > 1:
            return "interval= given %d times" % len(values)
        for value in values:
            try:
                (parse_seconds if key == "interval" else parse_filter)(value)
            except ValueError as exc:
                return "%s=: %s" % (key, exc)
    return None


def parse_seconds(text):
    """Return text as seconds above 0 and at most MAX_SECONDS; raise ValueError saying why not."""
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError("%r is not a number" % clean_text(text, 40))
    if not seconds > 0:   # nan too
        raise ValueError("must be greater than 0, not %s" % clean_text(text, 40))
    if seconds > MAX_SECONDS:
        raise ValueError("must be at most %d (a day), not %s" % (MAX_SECONDS, clean_text(text, 40)))
    return seconds


def load_providers(path, notes=None):
    """Return the Providers of a providers file; raise ConfigError."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):   # a FIFO would block start-up
            raise ConfigError("%s: not a regular file" % path)
        with open(path, "rb") as handle:
            data = handle.read(MAX_BODY_BYTES + 1)
    except OSError as exc:
        raise ConfigError("%s: cannot read: %s" % (path, exc.strerror or exc))
    if len(data) > MAX_BODY_BYTES:
        raise ConfigError("%s: larger than %d bytes" % (path, MAX_BODY_BYTES))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError("%s: not UTF-8 text (byte %d)" % (path, exc.start))
    return parse_providers(text, path, notes)


def default_providers_path():
    """Return providers.txt beside this file."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), PROVIDERS_FILE)


# ---------------------------------------------------------------- fetching: the one seam to the network

_request = threading.local()   # the deadline and stop flag of this thread's request


def _remaining():
    """Return the seconds left to this thread's request; raise socket.timeout if none."""
    deadline, stop = _request.limits
    remaining = deadline - time.monotonic()
    if remaining <= 0 or stop.is_set():
        raise socket.timeout("deadline passed")
    return remaining


def _connect_by_deadline(address, timeout, source_address=None):
    """socket.create_connection, the socket left to time out at the request's deadline.

    So sending, and the TLS handshake (whose timeout is a total since Python
    3.5), end by the deadline too, not --timeout after the connect.
    """
    if getattr(_request, "limits", None) is None:
        return socket.create_connection(address, timeout, source_address)
    sock = socket.create_connection(address, min(timeout, _remaining()), source_address)
    try:
        sock.settimeout(_remaining())
    except socket.timeout:
        sock.close()
        raise
    return sock


class _DeadlineSocket(object):
    """Wrap a connected socket so that every read honours one whole deadline.

    A per-read socket timeout alone lets a server trickle one byte a second
    forever; here each read waits at most until the request's deadline, and
    re-checks the stop flag every READ_SLICE seconds.
    """

    def __init__(self, sock, deadline, stop):
        self._sock, self._deadline, self._stop = sock, deadline, stop

    def makefile(self, mode="rb", *args, **kwargs):
        # Like socket.makefile: count the reader, so that closing the
        # connection leaves the socket open until the response is read.
        self._sock._io_refs += 1
        return io.BufferedReader(socket.SocketIO(self, "rb"))

    def recv_into(self, buffer, nbytes=0, flags=0):
        while True:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                raise socket.timeout("deadline passed")
            self._sock.settimeout(min(remaining, READ_SLICE))
            try:
                return self._sock.recv_into(buffer, nbytes, flags)
            except socket.timeout:
                continue

    def fileno(self):
        return self._sock.fileno()

    def _decref_socketios(self):
        self._sock._decref_socketios()


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock, *args, **kwargs):
        limits = getattr(_request, "limits", None)
        if limits is not None:
            sock = _DeadlineSocket(sock, *limits)
        http.client.HTTPResponse.__init__(self, sock, *args, **kwargs)

    def _read_status(self):
        # RFC 9110 15.2: a client skips the 1xx answers (102 Processing, 103
        # Early Hints) before the final one; http.client skips only 100.
        for _ in range(MAX_INFORMATIONAL):
            version, status, reason = http.client.HTTPResponse._read_status(self)
            if not 100 <= status < 200 or status == 101:
                return version, status, reason
            http.client.parse_headers(self.fp)   # bounded: 100 lines of 64 KiB
        raise http.client.HTTPException("more than %d 1xx answers" % MAX_INFORMATIONAL)


class _DeadlineHTTPConnection(http.client.HTTPConnection):
    response_class = _DeadlineResponse

    def connect(self):
        self._create_connection = _connect_by_deadline
        http.client.HTTPConnection.connect(self)


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_DeadlineHTTPConnection, req)


if hasattr(http.client, "HTTPSConnection"):   # Python built without ssl has neither
    class _DeadlineHTTPSConnection(http.client.HTTPSConnection):
        response_class = _DeadlineResponse

        def connect(self):
            self._create_connection = _connect_by_deadline
            http.client.HTTPSConnection.connect(self)

    class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
        def do_open(self, http_class, req, **kwargs):
            return urllib.request.HTTPSHandler.do_open(
                self, _DeadlineHTTPSConnection, req, **kwargs)


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow at most MAX_REDIRECTS redirects (307 and 308 too), never to plain HTTP
    from HTTPS, carrying Basic credentials to the same origin only."""
    max_redirections = MAX_REDIRECTS
    max_repeats = 2

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        # urllib would then read the redirect's whole body, without limit:
        # closing it first leaves nothing to read.
        fp.close()
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if new.scheme.lower() not in ("http", "https"):   # urllib would follow ftp:// too
            raise FeedError("redirect to a non-HTTP URL refused (%s)"
                            % clean_text(new.scheme, 20), code)
        if old.scheme == "https" and new.scheme.lower() == "http":
            raise FeedError("redirect from https to plain http refused", code)
        # Built here, not by urllib: before Python 3.11 it refuses to follow 308.
        kept = dict((name, value) for name, value in req.header_items()
                    if name.lower() not in ("authorization", "content-length", "content-type"))
        request = urllib.request.Request(newurl.replace(" ", "%20"), headers=kept,
                                         origin_req_host=req.origin_req_host,
                                         unverifiable=True)
        if _origin(old) == _origin(new) and req.has_header("Authorization"):
            request.add_unredirected_header("Authorization", req.get_header("Authorization"))
        return request

    http_error_307 = http_error_308 = urllib.request.HTTPRedirectHandler.http_error_302


def _origin(parts):
    """Return (scheme, host, port) of urlsplit() parts (RFC 6454)."""
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or ""), parts.port or DEFAULT_PORTS.get(scheme)


def split_credentials(url):
    """Return (url without user:password@, Basic Authorization value or None)."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    pair = "%s:%s" % (urllib.parse.unquote(user), urllib.parse.unquote(password))
    token = base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), "Basic " + token


def header_value(value):
    """Return value if it can be sent back as a header field (RFC 9110 5.5), else None.

    A validator with CR, LF or other controls, or beyond Latin-1, would make
    http.client refuse every later request of the feed.
    """
    if isinstance(value, str) and _FIELD_VALUE.match(value) and len(value) <= 1024:
        return value
    return None


def parse_retry_after(value, now=None):
    """Return Retry-After (seconds or HTTP date, RFC 9110 10.2.3) in seconds, or None."""
    value = (value or "").strip()
    if re.match(r"[0-9]+$", value):   # not str.isdigit(): "\xb2" is a digit to it
        return wait_seconds(value)
    when = parse_date(value) if value else None
    if when is None:
        return None
    now = now if now is not None else time.time()
    return wait_seconds(when.timestamp() - now)


def wait_seconds(value):
    """Return a wait a server asked for as seconds within 0..RETRY_AFTER_CAP, or None.

    Every number from the network goes through here: a 400-digit one is an
    OverflowError to float(), and inf or nan a wait that never ends.
    """
    try:
        seconds = float(value)
    except OverflowError:
        return RETRY_AFTER_CAP
    except (TypeError, ValueError):
        return None
    return None if seconds != seconds else max(0.0, min(seconds, RETRY_AFTER_CAP))


def _describe(error):
    """Return a short reason for a network error."""
    reason = getattr(error, "reason", None)
    if isinstance(error, urllib.error.URLError) and isinstance(reason, BaseException):
        error = reason
    if isinstance(error, socket.timeout):
        return "timed out"
    if isinstance(error, socket.gaierror):
        return "DNS lookup failed: %s" % (error.strerror or error)
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, http.client.RemoteDisconnected):   # a ConnectionResetError
        return "connection closed without an answer"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if getattr(error, "verify_message", None):   # ssl.SSLCertVerificationError, 3.7+
        return "TLS certificate not accepted: %s" % clean_text(error.verify_message, 120)
    if type(error).__module__ == "ssl":
        return "TLS error: %s" % (getattr(error, "reason", None) or error)
    if isinstance(error, http.client.IncompleteRead):
        return "answer cut short"
    text = str(error) or type(error).__name__
    return clean_text("%s: %s" % (type(error).__name__, text), 200)


def _read_body(response, limit):
    """Read a response body in chunks, refusing more than `limit` bytes."""
    if (getattr(response, "length", None) or 0) > limit:   # Content-Length says so
        raise FeedError("answer larger than %d bytes" % limit)
    chunks, size = [], 0
    while True:
        chunk = response.read(65536)
        if not chunk:
            # read(n) takes an early end of a Content-Length body in silence
            if getattr(response, "length", None):
                raise FeedError("answer cut short: %d bytes missing" % response.length)
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise FeedError("answer larger than %d bytes" % limit)
        chunks.append(chunk)


def gunzip(data, limit):
    """Return a gzip body (RFC 1952) decoded, at most `limit` bytes; raise FeedError.

    zlib's gzip mode reads each member's header and checks its CRC-32 and
    length.  A body may hold several members, read end to end (RFC 1952
    2.2), and zero bytes after one, as gzip.decompress reads them.
    """
    parts, size, start, view = [], 0, 0, memoryview(data)
    while True:
        decoder, end = zlib.decompressobj(16 + zlib.MAX_WBITS), start
        while not decoder.eof and end < len(data):
            # The first member is given the whole body, a later one at most as
            # much again as it took so far: at a member's end, unused_data copies
            # the rest of what it was given, and 200,000 empty members stay linear.
            piece = view[end:end + (max(GZIP_SLICE, end - start) if start else len(data))]
            try:
                parts.append(decoder.decompress(piece, limit + 1 - size))
            except zlib.error as exc:
                raise FeedError("bad gzip data: %s" % exc)
            size, end = size + len(parts[-1]), end + len(piece)
            if size > limit:
                raise FeedError("answer larger than %d bytes after gzip decoding" % limit)
        if not decoder.eof:
            raise FeedError("gzip data cut short")
        start = _ZEROS.match(data, end - len(decoder.unused_data)).end()
        if start == len(data):
            return b"".join(parts)


class Route(NamedTuple):
    """How the Fetcher reaches one feed URL, worked out once."""
    url: str                       # without user:password@
    authorization: Optional[str]   # their Basic value
    https: bool
    host: str
    port: int
    head: bytes                    # request line and fixed fields of a direct GET
    direct: bool                   # kept alive, over the Fetcher's own HTTP/1.1


class Fetcher(object):
    """Conditional GET: the only code that talks to the network.

    A feed reached directly keeps its connection open between polls
    (HTTP/1.1 keep-alive): a poll then costs one round trip and no TLS
    handshake.  That exchange is written here, not left to http.client,
    which parses every answer's header with the email package, the larger
    part of an unchanged poll's CPU (bench/README.md has the figures that
    keep it).  Redirects, proxies and the rest go
    through urllib, which does them all; both verify TLS the same way and
    share the deadline and the body limits.
    """

    def __init__(self, user_agent=USER_AGENT, max_bytes=MAX_BODY_BYTES,
                 max_idle=MAX_IDLE_CONNECTIONS, tls=None):
        self.user_agent, self.max_bytes, self.max_idle = user_agent, max_bytes, max_idle
        self.stopping = threading.Event()
        self._tls = tls          # an ssl.SSLContext; None: the system's, verified
        handlers = [_RedirectHandler, _DeadlineHTTPHandler]
        if ssl is not None:
            handlers.append(_DeadlineHTTPSHandler(context=tls))
        self._opener = urllib.request.build_opener(*handlers)
        self._proxies = urllib.request.getproxies()
        self._idle = {}   # url -> its idle open socket (a feed is never polled twice at once)
        self._routes = {}  # feed url -> its Route

    def __call__(self, url, etag=None, last_modified=None, timeout=DEFAULT_TIMEOUT, keep=True):
        """Return a Response; raise FeedError with a one-line reason.

        keep=False: close the connection after the answer (a URL asked now and
        then, as robots.txt, must not hold an idle socket for a day).
        """
        # RFC 9110 13.1: send back the validators of the last answer.
        validators = [(name, value) for name, value in
                      (("If-None-Match", etag), ("If-Modified-Since", last_modified))
                      if header_value(value)]
        _request.limits = (time.monotonic() + timeout, self.stopping)
        try:
            route = self._routes.get(url) or self._route(url)   # IDNA may refuse the host
            if route.direct:
                answer = self._get_direct(route, validators, keep)
                if answer is not None:
                    return answer
            return self._get(route, validators, timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 304:   # urllib raises it; for us it is the cheap success
                exc.close()
                return _not_modified(exc.headers)
            raise self._http_error(exc)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            cause = getattr(exc, "reason", exc)
            raise FeedError(_describe(exc), timed_out=isinstance(cause, socket.timeout))
        finally:
            _request.limits = None

    def _get(self, route, validators, timeout):
        """GET through urllib: redirects, proxies."""
        headers = dict(validators, **{"User-Agent": self.user_agent, "Accept": ACCEPT,
                                      "Accept-Encoding": "gzip"})
        request = urllib.request.Request(route.url, headers=headers)
        if route.authorization:   # unredirected: a redirect decides whether it follows
            request.add_unredirected_header("Authorization", route.authorization)
        with self._opener.open(request, timeout=timeout) as answer:
            body = _read_body(answer, self.max_bytes)
            headers = answer.headers
        return self._decoded(body, headers)

    def _route(self, url):
        """Work out once how to reach url (parsing URLs is a good part of a 304's cost)."""
        plain, authorization = split_credentials(url)
        parts = urllib.parse.urlsplit(plain)
        if parts.scheme not in DEFAULT_PORTS:
            raise FeedError("not an http or https URL")
        proxied = parts.scheme in self._proxies and \
            not urllib.request.proxy_bypass(parts.hostname or "")
        host, port = parts.hostname or "", parts.port
        port = DEFAULT_PORTS[parts.scheme] if port is None else port
        # Printable ASCII only on the request line (RFC 9112 3.2): the rest %-encoded.
        target = urllib.parse.quote((parts.path or "/") + ("?" + parts.query if parts.query else ""),
                                    safe=_PRINTABLE)
        lines = ["GET %s HTTP/1.1" % target, "Host: %s" % _host_field(host, port, parts.scheme),
                 "User-Agent: " + self.user_agent, "Accept: " + ACCEPT, "Accept-Encoding: gzip"]
        if authorization:
            lines.append("Authorization: " + authorization)
        route = self._routes[url] = Route(
            plain, authorization, parts.scheme == "https", host, port,
            "".join(line + "\r\n" for line in lines).encode("latin-1"),
            bool(self.max_idle) and not proxied)
        return route

    def _get_direct(self, route, validators, keep=True):
        """GET over the feed's kept-alive connection; None: let urllib do it (a redirect)."""
        if not keep:
            validators = validators + [("Connection", "close")]
        head = route.head + "".join("%s: %s\r\n" % pair for pair in validators).encode(
            "latin-1") + b"\r\n"
        sock = self._idle.pop(route.url, None)
        if sock is not None and _has_input(sock):
            sock.close()
            sock = None
        try:
            return self._exchange(sock or self._connect(route), route, head, keep)
        except _IDLE_CLOSED:
            if sock is None:
                raise
            # the server closed the idle connection as we spoke: once more, fresh
            return self._exchange(self._connect(route), route, head, keep)

    def _connect(self, route):
        """Return a new connected socket to the route's server, TLS verified if https."""
        sock = _connect_by_deadline((route.host, route.port), _remaining())
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # as http.client
            if route.https:
                if ssl is None:
                    raise FeedError("https needs the ssl module, which this Python lacks")
                if self._tls is None:
                    self._tls = ssl.create_default_context()   # what urllib uses: verified
                sock = self._tls.wrap_socket(sock, server_hostname=route.host)
        except BaseException:
            sock.close()
            raise
        return sock

    def _exchange(self, sock, route, head, keep=True):
        """Send one GET on sock; keep sock for the next poll if the answer allows it."""
        try:
            sock.settimeout(_remaining())
            sock.sendall(head)
            wire = _Wire(sock)
            version, status, reason, fields = read_answer_head(wire)
            if status in (301, 302, 303, 307, 308):
                sock.close()
                return None
            if status not in (200, 304):
                raise http_failure(status, reason, fields.get("Retry-After"))
            body, delimited = read_payload(wire, status, fields, self.max_bytes)
        except BaseException:
            sock.close()
            raise
        tokens = (fields.get("Connection") or "").lower().replace(",", " ").split()
        keep = keep and delimited and version == "HTTP/1.1" and "close" not in tokens and \
            not wire.buffered and len(self._idle) < self.max_idle
        # setdefault: a URL asked by two workers at once (a page's API) keeps one
        if not keep or self._idle.setdefault(route.url, sock) is not sock:
            sock.close()
        if status == 304:
            return _not_modified(fields)
        return self._decoded(body, fields)

    def stop(self):
        """Make requests in flight give up within READ_SLICE seconds."""
        self.stopping.set()

    def forget(self, url):
        """Close the kept-alive connection of a feed no longer watched."""
        route = self._routes.pop(url, None)
        sock = self._idle.pop(route.url, None) if route else None
        if sock is not None:
            sock.close()

    def close(self):
        """Close the kept-alive connections."""
        while self._idle:
            self._idle.popitem()[1].close()

    def _decoded(self, body, headers):
        """Return the Response of a 200 answer, its body gzip-decoded."""
        encoding = (headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            body = gunzip(body, self.max_bytes)
        elif encoding != "identity":
            raise FeedError("unsupported Content-Encoding %r" % clean_text(encoding, 40))
        return Response(200, body, header_value(headers.get("ETag")),
                        header_value(headers.get("Last-Modified")))

    @staticmethod
    def _http_error(exc):
        """Return the FeedError for an HTTP error status urllib raised (304 is not one)."""
        try:
            exc.close()
        except Exception:
            pass
        if str(exc.reason).startswith(urllib.request.HTTPRedirectHandler.inf_msg):
            return FeedError("more than %d redirects, or a redirect loop" % MAX_REDIRECTS,
                             exc.code)
        return http_failure(exc.code, str(exc.reason),
                            exc.headers.get("Retry-After") if exc.headers else None)


# How a server's closing of an idle connection shows when it is used again; with
# OpenSSL 3 before Python 3.8, as an SSLError with a made-up reason.
_IDLE_CLOSED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) + (
    (ssl.SSLError,) if ssl is not None else ())


def http_failure(status, reason, retry_after=None):
    """Return the FeedError of an answer with an error status; 429 and 503 say when to retry."""
    retry = parse_retry_after(retry_after) if status in (429, 503) else None
    return FeedError(("HTTP %d %s" % (status, clean_text(reason, 80))).strip(), status, retry)


def _host_field(host, port, scheme):
    """Return the Host field of a request (RFC 9110 7.2): IDNA, [IPv6], port unless default."""
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:   # its class and words differ from 3.6 to 3.13
            raise FeedError("host name not valid in IDNA: %s" % clean_text(
                str(getattr(exc, "reason", exc)), 80))
    if ":" in host:
        host = "[%s]" % host
    return host if port == DEFAULT_PORTS[scheme] else "%s:%d" % (host, port)


_LIST_FIELDS = frozenset(["connection", "content-length", "transfer-encoding"])


class Fields(dict):
    """An answer's header fields by lower-case name (see parse_fields)."""

    def get(self, name, default=None):
        return dict.get(self, name.lower(), default)


class _Wire(object):
    """Read one answer from a connection through a buffer of our own (RFC 9112).

    Owning the buffer tells what http.client cannot: whether the server sent
    bytes beyond its answer, which would be read as the next poll's answer.
    """

    def __init__(self, sock):
        self._sock = _DeadlineSocket(sock, *_request.limits)
        self._buffer = bytearray()
        self._scratch = bytearray(16384)

    @property
    def buffered(self):
        return len(self._buffer)

    def _fill(self):
        count = self._sock.recv_into(self._scratch)
        self._buffer += memoryview(self._scratch)[:count]
        return count

    def read_head(self):
        """Return the lines (str) of the next head, status line first, up to its
        empty line; [] when the stream ends before it starts."""
        start = 0
        while True:
            end = _HEAD_END.search(self._buffer, start)
            if end is not None and end.end() > MAX_HEAD:
                raise FeedError("answer has a head larger than %d bytes" % MAX_HEAD)
            if end is not None:
                head = self._buffer[:end.start()].decode("latin-1")
                del self._buffer[:end.end()]
                lines = [line[:-1] if line.endswith("\r") else line for line in head.split("\n")]
                if max(len(line) for line in lines) > MAX_LINE:
                    raise FeedError("answer has a line longer than %d bytes" % MAX_LINE)
                if len(lines) > MAX_HEADER_LINES + 1:
                    raise FeedError("answer has more than %d header lines" % MAX_HEADER_LINES)
                return lines
            if len(self._buffer) > MAX_HEAD:
                raise FeedError("answer has a head larger than %d bytes" % MAX_HEAD)
            start = max(0, len(self._buffer) - 2)
            if not self._fill():
                if self._buffer:
                    raise FeedError("answer cut short in its head")
                return []

    def readline(self):
        """Return the next line without its line end; None at the end of the stream."""
        end = -1
        while end < 0:
            end = self._buffer.find(b"\n", 0, MAX_LINE + 2)
            if end < 0 and len(self._buffer) > MAX_LINE + 1:
                raise FeedError("answer has a line longer than %d bytes" % MAX_LINE)
            if end < 0 and not self._fill():
                if self._buffer:
                    raise FeedError("answer cut short")
                return None
        line = bytes(self._buffer[:end])
        del self._buffer[:end + 1]
        return line[:-1] if line.endswith(b"\r") else line

    def read(self, size):
        """Return exactly size bytes."""
        while len(self._buffer) < size:
            if not self._fill():
                raise FeedError("answer cut short: %d bytes missing" % (size - len(self._buffer)))
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read_to_end(self, limit):
        """Return what comes until the server closes, refusing more than limit bytes."""
        while len(self._buffer) <= limit and self._fill():
            pass
        if len(self._buffer) > limit:
            raise FeedError("answer larger than %d bytes" % limit)
        data, self._buffer = bytes(self._buffer), bytearray()
        return data


def read_answer_head(wire):
    """Return (version, status, reason, Fields) of the final answer on wire.

    RFC 9110 15.2: a client skips the 1xx answers (102 Processing, 103 Early
    Hints) before the final one.
    """
    for _ in range(MAX_INFORMATIONAL + 1):
        lines = wire.read_head()
        if not lines:
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        match = _STATUS_LINE.match(lines[0])
        if match is None:
            raise FeedError("not an HTTP answer: %s" % clean_text(lines[0], 60))
        status = int(match.group(2))
        if not 100 <= status < 200 or status == 101:
            return match.group(1), status, match.group(3) or "", parse_fields(lines[1:])
    raise FeedError("more than %d 1xx answers" % MAX_INFORMATIONAL)


def parse_fields(lines):
    """Return the Fields of header lines (str, no line ends).

    A field said twice keeps its first value, as http.client's get() did,
    but the framing ones join theirs (RFC 9110 5.3), so that two lengths
    can be seen to differ.  A line starting with a space or tab continues
    the last value (obs-fold, RFC 9112 5.2); a line that is not a field is
    skipped, as http.client does.
    """
    fields, last = Fields(), None
    for line in lines:
        if line[:1] in (" ", "\t"):
            if last is not None:
                fields[last] += " " + line.strip(" \t")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            continue
        name, value = name.strip().lower(), value.strip(" \t")
        if name not in fields:
            fields[name], last = value, name
        elif name in _LIST_FIELDS:
            fields[name], last = fields[name] + ", " + value, name
        else:
            last = None
    return fields


def read_payload(wire, status, fields, limit):
    """Return (body, delimited): the answer's body, and whether its end was known
    without the server closing (RFC 9112 6.3), so the connection can go on."""
    if status in (204, 304):
        return b"", True
    codings = [coding.strip() for coding in (fields.get("Transfer-Encoding") or "").lower().split(",")
               if coding.strip() not in ("", "identity")]
    length = fields.get("Content-Length")
    if codings == ["chunked"]:
        # with a Content-Length too, the framing is in doubt (RFC 9112 6.3): close after
        return _read_chunked(wire, limit), length is None
    if codings:
        raise FeedError("unsupported Transfer-Encoding %r" % clean_text(", ".join(codings), 40))
    if length is None:
        return wire.read_to_end(limit), False
    sizes = set(value.strip() for value in length.split(","))
    if len(sizes) != 1 or not re.match(r"[0-9]{1,18}\Z", next(iter(sizes))):
        raise FeedError("answer with a bad Content-Length: %s" % clean_text(length, 40))
    size = int(sizes.pop())
    if size > limit:
        raise FeedError("answer larger than %d bytes" % limit)
    return wire.read(size), True


def _read_chunked(wire, limit):
    """Return a chunked body (RFC 9112 7.1), refusing more than limit bytes."""
    body = bytearray()
    while True:
        line = wire.readline()
        size = line.split(b";", 1)[0].strip() if line is not None else b""
        if not re.match(rb"[0-9A-Fa-f]+\Z", size) or len(size.lstrip(b"0")) > 15:
            raise FeedError("answer cut short" if line is None else "answer with a bad chunk")
        size = int(size, 16)
        if size == 0:
            for _ in range(MAX_HEADER_LINES + 1):   # the trailer, up to its empty line
                line = wire.readline()
                if not line:
                    return bytes(body)
            raise FeedError("answer has more than %d trailer lines" % MAX_HEADER_LINES)
        if len(body) + size > limit:
            raise FeedError("answer larger than %d bytes" % limit)
        body += wire.read(size)
        if wire.readline() != b"":
            raise FeedError("answer with a bad chunk")


def _not_modified(headers):
    """Return the Response of a 304 answer."""
    return Response(304, b"", header_value(headers.get("ETag")),
                    header_value(headers.get("Last-Modified")))


def _has_input(sock):
    """True when an idle connection has something to read: EOF, or bytes nobody asked for.

    Either way it is out of step and must be closed: bytes already inside the
    TLS layer (pending()) are invisible to poll(), and read as the next answer
    they would print a reply to a request never made.
    """
    try:
        if getattr(sock, "pending", None) and sock.pending():
            return True
        if hasattr(select, "poll"):     # select() cannot take descriptors >= 1024
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLPRI)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def fetch_feed(fetch, job, parsing, api=None):
    """Fetch one feed and parse it unless unchanged; return an Outcome, never raise.

    parsing, a semaphore, bounds how many feeds are parsed at once; api, a
    StatuspageApi, adds components to a changed Statuspage feed's entries.
    """
    started = time.monotonic()
    status, size = 0, 0
    try:
        response = fetch(job.url, job.etag, job.last_modified, job.timeout)
        status, size = response.status, len(response.body)
        if status == 304:
            if not (job.etag or job.last_modified):
                raise FeedError("304 Not Modified to a request that asked for none", 304)
            return Outcome(job.url, 304, None, job.body_sha256, response.etag or job.etag,
                           response.last_modified or job.last_modified,
                           seconds=time.monotonic() - started, timeout=job.timeout)
        digest = body_sha256(response.body)
        entries, note = None, ""
        if digest != job.body_sha256:     # the same digest: the same entries, not parsed again
            with parsing:
                entries = parse_feed(response.body)
            if api is not None:
                try:
                    entries, note = api.enrich(job.url, entries)
                except Exception as exc:   # a bug there must cost the components, not the poll
                    note = "%s: internal error: %s; no components" % (API_INCIDENTS, _describe(exc))
        return Outcome(job.url, status, entries, digest, response.etag, response.last_modified,
                       size=size, seconds=time.monotonic() - started, timeout=job.timeout,
                       note=note)
    except FeedError as exc:
        return Outcome(job.url, exc.status or status, error=str(exc),
                       retry_after=exc.retry_after, size=size,
                       seconds=time.monotonic() - started, timeout=job.timeout,
                       timed_out=exc.timed_out)
    except Exception as exc:   # a bug must cost one poll, never the process
        return Outcome(job.url, status, error="internal error: %s" % _describe(exc),
                       size=size, seconds=time.monotonic() - started, timeout=job.timeout)


# ---------------------------------------------------------------- Statuspage's API

class StatuspageApi(object):
    """Components and impact of Statuspage incidents, from the page's public API.

    A Statuspage feed names no components.  When a poll finds its body
    changed, enrich() asks <page>/api/v2/incidents.json once (conditional,
    with the Fetcher's deadline and caps), if the page's robots.txt (read
    once a day) lets a generic agent.  Whatever goes wrong, the entries come
    back as they were, with a note for -v: the events print on time.
    """

    def __init__(self, fetch, clock=time.monotonic, timeout=API_TIMEOUT):
        self.fetch, self.clock, self.timeout = fetch, clock, timeout
        self._robots = {}      # origin -> (checked at, allowed)
        self._answers = {}     # origin -> (etag, last_modified, {code: ApiIncident})
        self._lock = threading.Lock()   # feeds of one origin poll in different workers

    def enrich(self, feed_url, entries):
        """Return (entries, note for -v)."""
        codes = dict((number, match.group(1)) for number, match in (
            (number, _INCIDENT_CODE.search(entry.link)) for number, entry in enumerate(entries)
            if entry.complete) if match)
        if not codes:
            return entries, ""
        parts = urllib.parse.urlsplit(feed_url)
        origin = "%s://%s" % (parts.scheme, parts.netloc)
        try:
            if not self._allowed(origin):
                return entries, "robots.txt disallows %s: no components" % API_INCIDENTS
            incidents = self._incidents(origin, set(codes.values()))
        except FeedError as exc:
            return entries, "%s: %s: no components" % (API_INCIDENTS, exc)
        enriched = list(entries)
        for number, code in codes.items():
            if code in incidents:
                enriched[number] = with_api_components(entries[number], incidents[code])
        matched = sum(code in incidents for code in codes.values())
        return enriched, "" if matched else "%s names none of the feed's incidents" % API_INCIDENTS

    def _allowed(self, origin):
        with self._lock:
            checked = self._robots.get(origin)
        if checked and self.clock() - checked[0] < ROBOTS_TTL:
            return checked[1]
        try:
            body = self.fetch(origin + "/robots.txt", timeout=self.timeout, keep=False).body
        except FeedError as exc:
            if not 400 <= exc.status < 500:   # unreachable: ask again at the next change
                raise FeedError("robots.txt: %s" % exc)
            body = b""             # RFC 9309 2.3.1.3: no robots.txt, no rules
        try:
            rules = urllib.robotparser.RobotFileParser()
            rules.parse(body.decode("utf-8", "replace").splitlines())
            allowed = rules.can_fetch(getattr(self.fetch, "user_agent", USER_AGENT),
                                      origin + API_INCIDENTS)
        except Exception as exc:   # robotparser: int("²") on a Crawl-delay of "²"
            raise FeedError("robots.txt: not understood (%s)" % _describe(exc))
        with self._lock:
            self._robots[origin] = (self.clock(), allowed)
        return allowed

    def _incidents(self, origin, codes):
        """Return {code: ApiIncident} of the API's answer, for the codes asked.

        Only those are kept for the next answer's 304: a page's 50 incidents
        for each of thousands of pages would be megabytes.
        """
        with self._lock:
            etag, modified, known = self._answers.get(origin, (None, None, {}))
        answer = self.fetch(origin + API_INCIDENTS, etag, modified, self.timeout, keep=False)
        if answer.status != 304:
            known = parse_incidents(answer.body)
        incidents = dict((code, known[code]) for code in codes if code in known)
        with self._lock:
            self._answers[origin] = (answer.etag or etag, answer.last_modified or modified,
                                     incidents)
        return incidents


class ApiIncident(NamedTuple):
    """What Statuspage's API says of one incident, as the tracker uses it."""
    impact: str
    components: Tuple[Tuple[str, str], ...]     # (name, status) now
    updates: Tuple[Tuple[Optional[datetime], str, Tuple[Tuple[str, str], ...]], ...]
    # each update: (time, status, affected (name, new status))


def parse_incidents(body):
    """Return {incident code: ApiIncident} of an incidents.json, its text
    cleaned as a feed's is; raise FeedError."""
    try:
        document = json.loads(body.decode("utf-8"))
    except RecursionError:
        raise FeedError("not JSON: nested too deep")
    except ValueError:   # UnicodeDecodeError too
        raise FeedError("not JSON")
    try:
        incidents = {}
        for incident in document["incidents"][:MAX_API_ITEMS]:
            updates = tuple(
                (parse_date(update.get("display_at") or update.get("created_at") or ""),
                 _api_text(update.get("status"), 40),
                 _api_components(update.get("affected_components"), "new_status"))
                for update in (incident.get("incident_updates") or ())[:MAX_API_ITEMS])
            incidents[str(incident["id"])] = ApiIncident(
                _api_text(incident.get("impact"), 20),
                _api_components(incident.get("components"), "status"), updates)
        return incidents
    except (KeyError, TypeError, AttributeError, ValueError):
        raise FeedError("not the JSON of Statuspage's API")


def _api_text(value, limit):
    """Return an API value as clean text ("" for null): where the API's text enters."""
    return clean_text(str(value or ""), limit)


def _api_components(parts, status):
    """Return the (name, status) pairs of an API list of components."""
    return tuple((_api_text(part["name"], 80), _api_text(part.get(status), 40))
                 for part in (parts or ())[:MAX_API_ITEMS])


def with_api_components(entry, incident):
    """Return the entry with the components and impact the API gives.

    The components are those the update of the entry's newest block names
    (same minute, same state if one does), else the incident's.
    """
    newest = entry.updates[0] if entry.updates else None
    parts = incident.components
    if newest is not None and newest.time is not None:
        minute = newest.time.replace(second=0, microsecond=0)
        same = [update for update in incident.updates
                if update[0] is not None and update[0].replace(second=0, microsecond=0) == minute]
        same.sort(key=lambda update: update[1] != normalise_state(newest.label))
        if same and same[0][2]:
            parts = same[0][2]
    return entry._replace(components=tuple(name for name, _ in parts),
                          statuses=tuple(status for _, status in parts), impact=incident.impact)


# ---------------------------------------------------------------- the state file and systemd

def parse_state(data):
    """Return {state key: FeedState} from a state file's bytes; raise ValueError saying why not."""
    return _saved_feeds(_state_document(data))


def _state_document(data):
    """Return a state file's JSON, checked as far as its format goes; raise ValueError."""
    try:
        document = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("not valid JSON: nested too deep")
    except ValueError as exc:
        raise ValueError("not valid JSON: %s" % exc)
    if not isinstance(document, dict) or not isinstance(document.get("feeds"), dict):
        raise ValueError("not a tracker state file")
    version = document.get("version", 1)    # the very first files had none
    if type(version) is not int or version < 1:
        raise ValueError("not a tracker state file (format %s)" % clean_text(repr(version), 40))
    if version > STATE_VERSION:
        raise ValueError("written by a newer tracker (format %d)" % version)
    return document


def _saved_feeds(document):
    version = document.get("version", 1)
    return dict((key, _saved_feed(value, version))
                for key, value in document["feeds"].items())


def saved_outbox(document):
    """Return ({target key: [event lines]} a state file says are undelivered, how many
    of its lines were not events).  A hand-edited outbox costs its bad lines only."""
    outbox = document.get("outbox") or {}
    if not isinstance(outbox, dict):
        return {}, 1
    kept, bad = {}, 0
    for key, lines in outbox.items():
        good = [line for line in (lines if isinstance(lines, list) else [None])
                if _is_event_line(line)]
        bad += (len(lines) if isinstance(lines, list) else 1) - len(good)
        kept[key] = good
    return kept, bad


def _is_event_line(line):
    try:
        item = json.loads(line) if isinstance(line, str) else None
    except ValueError:
        return False
    return isinstance(item, dict) and all(isinstance(item.get(name), str)
                                          for name in ("provider", "product", "label"))


def bounded_outbox(outbox, limit):
    """Return (outbox trimmed to at most `limit` bytes of UTF-8 JSON, lines left out):
    the oldest of the longest queue go first, so the state file stays loadable."""
    outbox = dict((key, list(lines)) for key, lines in outbox.items())
    # json.dumps(outbox): "{}", per queue its key, ": [", "]" and ", ", per line ", "
    sizes = dict((key, [_json_size(line) + 2 for line in lines]) for key, lines in outbox.items())
    size = 2 + sum(_json_size(key) + 6 + sum(sizes[key]) for key in outbox)
    left_out = 0
    while size > limit and any(outbox.values()):
        longest = max(outbox, key=lambda key: len(outbox[key]))
        outbox[longest].pop(0)
        size -= sizes[longest].pop(0)
        left_out += 1
    return dict((key, lines) for key, lines in outbox.items() if lines), left_out


def _json_size(text):
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def _no_constant(name):
    raise ValueError("%s is not a number" % name)


def _saved_feed(data, version):
    """Return the FeedState of one feed's JSON; raise ValueError."""
    _check(isinstance(data, dict), "a feed is not an object")
    seen = data.get("seen")
    if seen is not None:
        _check(isinstance(seen, dict), "'seen' is not an object")
        seen = dict((_entry_key(key), _mark(value, version)) for key, value in seen.items())
    gone = data.get("gone") or {}
    _check(isinstance(gone, dict), "'gone' is not an object")
    gone = dict((_entry_key(key), _number(since)) for key, since in gone.items())
    failures = data.get("failures") or 0
    _check(type(failures) is int and 0 <= failures < 1 << 32, "'failures' is not a count")
    body = data.get("body_sha256") if version > 1 else data.get("digest")
    _check(body is None or isinstance(body, str) and _SHA256_HEX.match(body),
           "'body_sha256' is not a sha256")
    # A validator that cannot be sent back is dropped, not a failure forever.
    return FeedState(Printed(seen, gone) if seen is not None else None,
                     header_value(data.get("etag")), header_value(data.get("last_modified")),
                     bytes.fromhex(body) if body else None, failures, failures > 0)


def _check(condition, why):
    if not condition:
        raise ValueError(why)


def _entry_key(text):
    _check(bool(_KEY_HEX.match(text)), "bad entry key %s" % clean_text(repr(text), 40))
    return int(text, 16)


def _mark(value, version):
    """Return a packed Mark; a format-1 one as -1 - value (see fresh_updates)."""
    _check(type(value) is int and -1 << 96 < value < 1 << 96,
           "bad mark %s" % clean_text(repr(value), 40))
    if version == 1:
        _check(value >= 0, "bad mark %d" % value)
        return -1 - value
    return value


def _number(value):
    _check(type(value) in (int, float) and abs(value) < 1e12, "bad time %s" % clean_text(repr(value), 40))
    return float(value)


class StateFile(object):
    """The --state snapshot: per feed what FeedState.to_json() gives, written atomically.

    Each feed's JSON is kept as text and only changed feeds are encoded
    again, so saving after an event costs little even with thousands of feeds.
    """

    def __init__(self, path, log):
        self.path, self.log = path, log
        self._fragments = {}
        self._failing = False
        self.outbox = {}       # what load() found undelivered: target key -> event lines

    def load(self):
        """Return {state key: FeedState}; raise ConfigError if the path cannot be read.

        A file whose content cannot be used is set aside as FILE.bad-<time>.
        A path that can never be written is refused at once, not found out
        at the first save; temporary files a kill left behind are removed.
        """
        self._clear_folder()
        try:
            info = os.stat(self.path)
            if not stat.S_ISREG(info.st_mode):    # a directory is never renamed
                raise ConfigError("state file %s: not a regular file" % self.path)
            if info.st_size > MAX_STATE_BYTES:    # refused unread
                return self._set_aside("larger than %d bytes" % MAX_STATE_BYTES)
            with open(self.path, "rb") as handle:
                data = handle.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError("state file %s: cannot read: %s" % (self.path, _describe(exc)))
        try:
            _check(len(data) <= MAX_STATE_BYTES, "larger than %d bytes" % MAX_STATE_BYTES)
            document = _state_document(data)
            feeds, (self.outbox, bad) = _saved_feeds(document), saved_outbox(document)
            if bad:
                self.log("state file %s: %d line%s of its outbox not an event: dropped" % (
                    self.path, bad, "" if bad == 1 else "s"))
            return feeds
        except ValueError as exc:
            return self._set_aside(clean_text(str(exc), 200))

    def _clear_folder(self):
        """Remove write_atomically()'s leftovers beside the file; raise ConfigError if a
        file cannot be made there."""
        folder, name = os.path.split(os.path.abspath(self.path))
        leftover = re.compile(re.escape(name) + r"\.tmp-[a-z0-9_]{8}\Z")   # mkstemp's names
        try:
            for other in filter(leftover.match, os.listdir(folder)):
                other = os.path.join(folder, other)
                if stat.S_ISREG(os.lstat(other).st_mode):   # ours are files, never links
                    os.unlink(other)
            descriptor, probe = _temporary_beside(self.path)
            os.close(descriptor)
            os.unlink(probe)
        except OSError as exc:
            raise ConfigError("state file %s: cannot write: %s" % (self.path, exc.strerror or exc))

    def _set_aside(self, why):
        aside = "%s.bad-%s" % (self.path, time.strftime("%Y%m%dT%H%M%S"))
        try:
            os.replace(self.path, aside)
            where = "moved to %s" % aside
        except OSError as exc:
            where = "could not move it aside: %s" % _describe(exc)
        self.log("state file %s is unusable (%s); %s; starting without it"
                 % (self.path, why, where))
        return {}

    def save(self, states, changed, outbox=None):
        """Write every feed's state (url -> FeedState), re-encoding those in `changed`,
        and the outbox: target key -> the event lines it has not taken yet.

        A feed not encoded since the start (it only answered 304) is encoded
        now: the file always holds every feed watched.
        """
        for url, state in states.items():
            if url in changed or url not in self._fragments:
                self._fragments[url] = _feed_json(url, state)
        for url in list(self._fragments):
            if url not in states:
                del self._fragments[url]
        try:
            write_atomically(self.path, self._encoded(states, outbox or {}))
        except OSError as exc:
            if not self._failing:
                self.log("cannot write state file %s: %s" % (self.path, _describe(exc)))
            self._failing = True
            return False
        self._failing = False
        return True

    def _encoded(self, states, outbox):
        """Return the file's bytes, cut to what load() takes (MAX_STATE_BYTES): the outbox
        has a quarter at most, and what the feeds leave; then the feeds lose the marks of
        the entries gone from them longest ago.  Raise OSError if even that is too large."""
        head = ('{"version": %d, "tracker": %s, "feeds": {\n' % (
            STATE_VERSION, json.dumps(__version__))).encode("utf-8")
        room = MAX_STATE_BYTES - len(head) - len("}}\n")
        feeds = ",\n".join(self._fragments.values()).encode("utf-8")
        if len(feeds) > room:
            feeds = _fitting_feeds(states, room)
            self.log("state file %s: the marks of entries gone from their feeds longest ago "
                     "not saved (the file would pass %d bytes)" % (self.path, MAX_STATE_BYTES))
        limit = min(MAX_STATE_BYTES // 4, room - len(feeds) - len(', "outbox": '))
        outbox, left_out = bounded_outbox(outbox, limit)
        if left_out:
            self.log("state file %s: %d oldest undelivered events not saved (the outbox "
                     "would pass %d bytes)" % (self.path, left_out, max(0, limit)))
        tail = ', "outbox": %s' % json.dumps(outbox, ensure_ascii=False) if outbox else ""
        return head + feeds + b"}" + tail.encode("utf-8") + b"}\n"


def _feed_json(url, state):
    return "%s: %s" % (json.dumps(state_key(url), ensure_ascii=False),
                       json.dumps(state.to_json(), ensure_ascii=False))


def _fitting_feeds(states, room):
    """Return the feeds' JSON in `room` bytes without the marks of the entries gone longest
    (the older half of them, then 3/4, ... then all); raise OSError if it never fits."""
    times = sorted(since for state in states.values() if state.printed
                   for since in state.printed.gone.values())
    keep = len(times)
    while True:
        keep //= 2
        before = times[-keep] if keep else float("inf")
        feeds = ",\n".join(_feed_json(url, state._replace(
            printed=state.printed and state.printed.forgetting(before)))
            for url, state in states.items()).encode("utf-8")
        if len(feeds) <= room:
            return feeds
        if not keep:
            raise OSError("the feeds alone take %d bytes, more than %d" % (
                len(feeds), MAX_STATE_BYTES))


def write_atomically(path, data):
    """Replace path with data so that a crash leaves the old file or the new one.

    The temporary file is mkstemp's: a fresh unpredictable name opened with
    O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600, so nothing planted beside the
    state file is followed or waited on.  It takes the mode of the file it
    replaces, so an operator's chmod survives.
    """
    folder = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = _temporary_beside(path)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            try:
                os.fchmod(handle.fileno(), stat.S_IMODE(os.stat(path).st_mode))
            except (OSError, AttributeError):   # no file yet: mkstemp's 0600 stands
                pass
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    try:   # make the rename itself durable (POSIX: fsync the directory)
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _temporary_beside(path):
    """Return (descriptor, name) of a new empty file PATH.tmp-XXXXXXXX (see StateFile._clear_folder)."""
    folder, name = os.path.split(os.path.abspath(path))
    return tempfile.mkstemp(prefix=name + ".tmp-", dir=folder)


class Notifier(object):
    """sd_notify(3) over $NOTIFY_SOCKET with the stdlib: READY, WATCHDOG, STOPPING."""

    def __init__(self, environ=None):
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):   # Linux abstract namespace
            address = "\0" + address[1:]
        self.address = address if hasattr(socket, "AF_UNIX") else ""
        self.watchdog = None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog = int(usec) / 1e6 / 2   # ping twice per period, as sd_watchdog_enabled(3) advises

    def send(self, message):
        """Send one notification; quietly nothing when not under systemd."""
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall(message.encode("utf-8"))
        except OSError:
            pass


# ---------------------------------------------------------------- delivering events elsewhere

class Target(NamedTuple):
    """Where --notify or --exec sends each event, and in which dialect."""
    kind: str                 # slack, discord, teams, webhook or exec
    address: str              # the URL, or the command line of exec
    key: str                  # names it in the state file's outbox (a hash: URLs are secrets)
    shown: str                # names it in logs: scheme and host only


class DeliveryError(Exception):
    """A delivery that failed; refused: the target will never take this event."""

    def __init__(self, message, retry_after=None, refused=False):
        super(DeliveryError, self).__init__(message)
        self.retry_after, self.refused = retry_after, refused


def parse_target(text, kind=None):
    """Return the Target of a --notify URL ("KIND:URL" names its dialect); raise ValueError."""
    words = text.split(":", 1)
    if kind is None and len(words) == 2 and words[0].lower() in NOTIFY_KINDS:
        kind, text = words[0].lower(), words[1]
    if kind != "exec":
        if re.search(r"[\x00-\x20\x7f]", text):
            raise ValueError("--notify: a space or control character in %s" % redact_target(text))
        problem = url_problem(text, redact_target(text))
        if problem:
            raise ValueError("--notify: " + problem)
        kind = kind or _kind_by_host(urllib.parse.urlsplit(text))
    key = "sha256:" + hashlib.sha256(("%s:%s" % (kind, text)).encode("utf-8")).hexdigest()[:24]
    shown = "exec %s" % clean_text(text.split()[0] if text.split() else "", 80) \
        if kind == "exec" else "%s %s" % (kind, redact_target(text))
    return Target(kind, text, key, shown)


def _kind_by_host(parts):
    host, path = (parts.hostname or "").lower(), parts.path
    if host == "hooks.slack.com":
        return "slack"
    if host in DISCORD_HOSTS and path.startswith("/api/webhooks/"):
        return "discord"
    if host.endswith(TEAMS_HOST_SUFFIXES):   # Workflows (Power Automate) webhook URLs
        return "teams"
    return "webhook"


def redact_target(url):
    """Return scheme://host/… of a webhook URL: its path, query and user:password@ are its secret."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = ":%d" % parts.port if parts.port else ""
        host = parts.hostname or "?"
    except ValueError:
        return "(a URL)"
    return "%s://%s%s/…" % (parts.scheme or "?", "[%s]" % host if ":" in host else host, port)


def event_fields(line):
    """Return the event of a --json line as a dict with every field (outbox lines are these)."""
    item = json.loads(line)
    return dict((name, item.get(name)) for name in (
        "time", "provider", "product", "components", "state", "label", "message", "title",
        "link", "id", "kind", "maintenance", "impact"))


def event_text(item):
    """Return the three lines format_event prints, from an event's fields."""
    status = "%s - %s" % (item["label"], item["message"]) if item["message"] else item["label"]
    incident = item["title"] or item["id"]
    if item["link"]:
        incident = "%s (%s)" % (incident, item["link"])
    when = (item["time"] or "no date").replace("T", " ").rstrip("Z")
    return "[%s] Product: %s\nStatus: %s\nIncident: %s" % (when, item["product"], status, incident)


def _slack_escape(text):
    # api.slack.com/reference/surfaces/formatting#escaping: these three only
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _markdown_escape(text, limit):
    """Return text cut to `limit` with Discord's and Teams' markdown characters escaped:
    a feed's "[Details](https://evil.example)" must read as that, not as a link
    that shows one address and opens another."""
    return clean_text(_MARKDOWN.sub(r"\\\1", text or ""), limit)


def web_link(link):
    """Return an event's link if a chat service can open it (absolute http or https), else "".

    Feeds give relative links ("/incidents/abc"); resolved against the feed's
    URL they could carry its user:password@, so they are left out.
    """
    try:
        parts = urllib.parse.urlsplit(link or "")
    except ValueError:
        return ""
    return link if parts.scheme.lower() in ("http", "https") and parts.netloc else ""


def _clip_escaped(text, limit):
    """_clip, never cutting an &entity; in two."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    if cut.rfind("&") > cut.rfind(";"):
        cut = cut[:cut.rfind("&")]
    return cut + "…"


def slack_message(item):
    """Return the JSON body of a Slack incoming webhook: text (the notification) and blocks.

    Both are mrkdwn: a status text's "<!channel>" must not ping anyone, so
    <, > and & are escaped; the message is what is cut to fit 3,000.
    """
    title = _slack_escape(item["title"] or item["id"])
    if web_link(item["link"]):
        title = "<%s|%s>" % (_slack_escape(item["link"]).replace("|", "%7C"), title)
    head = "*%s*\n%s\n" % (_slack_escape(item["product"]), title)
    status = "*%s*%s" % (_slack_escape(item["label"]),
                         " - " + _slack_escape(item["message"]) if item["message"] else "")
    section = _clip_escaped(head + _clip_escaped(status, max(80, SLACK_LIMIT - len(head))),
                            SLACK_LIMIT)
    return {"text": _clip_escaped(_slack_escape(event_text(item)), SLACK_LIMIT), "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": section}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip_escaped(
            "%s · %s" % (_slack_escape(item["time"] or "no date"), item["state"] or "?"),
            SLACK_LIMIT)}]}]}


def discord_message(item):
    """Return the JSON body of a Discord webhook: one embed, within Discord's limits.

    discord.com/developers/docs/resources/message#embed-object-embed-limits:
    content 2,000; title 256; description 4,096; footer 2,048; all embeds 6,000.
    No mention in a status text may ping anyone (allowed_mentions).
    """
    title = _markdown_escape(item["title"] or item["id"], 256)
    description = clean_text("**%s**%s" % (
        _markdown_escape(item["label"], None),
        " - " + _markdown_escape(item["message"], 4096) if item["message"] else ""), 4096)
    footer = clean_text(item["product"], 2048)          # a footer shows no markdown
    embed = {"title": title, "description": description, "footer": {"text": footer},
             "color": STATE_COLOURS.get(item["state"], 0x8D8D8D)}
    if web_link(item["link"]):
        embed["url"] = item["link"]
    if item["time"]:
        embed["timestamp"] = item["time"]
    return {"content": _markdown_escape("%s: %s" % (item["product"], item["label"]), 2000),
            "embeds": [embed], "allowed_mentions": {"parse": []}}


def teams_message(item):
    """Return the JSON body of a Teams Workflows webhook: a message with an Adaptive Card."""
    facts = [{"title": "Product", "value": _markdown_escape(item["product"], None)},
             {"title": "State", "value": item["state"] or "?"},
             {"title": "Time", "value": item["time"] or "no date"}]
    status = "%s%s" % (item["label"], " - " + item["message"] if item["message"] else "")
    card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard", "version": "1.4", "body": [
                {"type": "TextBlock", "text": _markdown_escape(item["title"] or item["id"], None),
                 "weight": "Bolder", "size": "Medium", "wrap": True},
                {"type": "TextBlock", "text": _markdown_escape(status, None), "wrap": True},
                {"type": "FactSet", "facts": facts}]}
    if web_link(item["link"]):
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open", "url": item["link"]}]
    return {"type": "message", "attachments": [{
        "contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
        "content": card}]}


def queued_line(event):
    """Return the line a courier queues for an event: its --json line, first a message id
    born with the event.  The outbox keeps it, so every retry and restart sends that id,
    and two events never share one (an undated item flipping back reads the same)."""
    return '{"webhook_id": "msg_%s", %s' % (os.urandom(16).hex(), format_json(event)[1:])


def split_queued(line):
    """Return (Standard Webhooks message id, the event's --json line) of a queued line.

    A line queued by an older tracker has no id of its own: a hash of it
    stands in, the same on every try.
    """
    found = _QUEUED_ID.match(line)
    if found:
        return found.group(1), "{" + line[found.end():]
    return "msg_" + hashlib.sha256(line.encode("utf-8")).hexdigest()[:32], line


def webhook_signature(secret, message_id, timestamp, body):
    """Return the webhook-signature value (standardwebhooks.com, v1: HMAC-SHA256, base64).

    secret is "whsec_" + base64 of the key; the signed content is
    "<id>.<timestamp>.<body>".  Raises ValueError for a secret not in that form.
    """
    if not secret.startswith("whsec_"):
        raise ValueError("TRACKER_WEBHOOK_SECRET must start with whsec_")
    try:
        key = base64.b64decode(secret[len("whsec_"):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("TRACKER_WEBHOOK_SECRET is not whsec_ and base64")
    if len(key) < MIN_WEBHOOK_KEY:
        raise ValueError("TRACKER_WEBHOOK_SECRET's key is %d bytes; at least %d are needed"
                         % (len(key), MIN_WEBHOOK_KEY))
    signed = b"%s.%d.%s" % (message_id.encode("ascii"), timestamp, body)
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def delivery_request(target, line, secret=None, now=None):
    """Return (body bytes, headers) of the POST that delivers one queued line to target."""
    message_id, line = split_queued(line)
    item = event_fields(line)
    builder = {"slack": slack_message, "discord": discord_message, "teams": teams_message}.get(
        target.kind)
    body = json.dumps(builder(item) if builder else json.loads(line),
                      ensure_ascii=False).encode("utf-8")
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if target.kind == "webhook":
        stamp = int(time.time() if now is None else now)
        headers.update({"webhook-id": message_id, "webhook-timestamp": str(stamp)})
        if secret:
            headers["webhook-signature"] = webhook_signature(secret, message_id, stamp, body)
    return body, headers


def retry_after_of(status, headers, body):
    """Return the seconds a 429 (or 503) asks to wait: Retry-After, or Discord's JSON retry_after."""
    wait = parse_retry_after(headers.get("Retry-After")) if headers else None
    if wait is None and status == 429:
        try:
            wait = wait_seconds(json.loads(body.decode("utf-8"))["retry_after"])
        except (ValueError, KeyError, TypeError, AttributeError):
            wait = None
    return wait


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None               # a webhook that moved is a failure, not a GET elsewhere


def post_event(target, line, timeout, secret=None):
    """Deliver one event line to an http(s) target; raise DeliveryError."""
    body, headers = delivery_request(target, line, secret)
    url, authorization = split_credentials(target.address)
    if authorization:
        headers["Authorization"] = authorization
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    handlers = [_NoRedirect, _DeadlineHTTPHandler]
    if ssl is not None:
        handlers.append(_DeadlineHTTPSHandler())
    # one deadline for the whole POST, as for a poll: a receiver that drips its answer a
    # byte at a time cannot hold the target's queue for hours
    _request.limits = (time.monotonic() + timeout, threading.Event())
    try:
        with urllib.request.build_opener(*handlers).open(request, timeout=timeout) as answer:
            answer.read(MAX_LINE)
    except urllib.error.HTTPError as exc:
        try:
            detail = exc.read(MAX_LINE)
        except Exception:
            detail = b""
        exc.close()
        wait = retry_after_of(exc.code, exc.headers, detail)
        refused = 400 <= exc.code < 500 and exc.code not in (408, 429)
        raise DeliveryError("HTTP %d %s" % (exc.code, clean_text(str(exc.reason), 80)),
                            wait, refused)
    except (http.client.InvalidURL, ValueError):   # their text quotes the URL: a secret
        raise DeliveryError("not a URL urllib can send to")
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError(_describe(getattr(exc, "reason", exc)))
    finally:
        _request.limits = None


def run_command(target, line, timeout):
    """Run --exec's command for one event: its JSON on stdin, TRACKER_* in its environment.

    The environment is bytes (Python 3.6 under the C locale cannot encode a
    "ü" otherwise) and holds none of the secrets: $TRACKER_NOTIFY's URLs and
    the webhook key are not the command's business.
    """
    line = split_queued(line)[1]
    item = event_fields(line)
    environ = dict((name, value) for name, value in os.environb.items()
                   if name not in (b"TRACKER_NOTIFY", b"TRACKER_WEBHOOK_SECRET"))
    for name in ("provider", "product", "state", "label", "message", "title", "link", "time",
                 "id"):
        environ[b"TRACKER_" + name.upper().encode()] = \
            str(item[name] or "").replace("\0", "").encode("utf-8", "surrogateescape")
    try:
        child = subprocess.Popen(shlex.split(target.address), stdin=subprocess.PIPE,
                                 stdout=_log_stream(), env=environ, start_new_session=True)
    except (OSError, ValueError) as exc:
        raise DeliveryError(_describe(exc))
    with _COMMANDS_LOCK:
        _COMMANDS.add(child)
    try:
        child.communicate(line.encode("utf-8") + b"\n", timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(child)
        raise DeliveryError("still running after %gs; killed" % timeout)
    finally:
        with _COMMANDS_LOCK:
            _COMMANDS.discard(child)
    if child.returncode:
        raise DeliveryError("exit status %d" % child.returncode)


_COMMANDS = set()                 # --exec children running now, killed when the tracker stops
_COMMANDS_LOCK = threading.Lock()


def _kill_group(child):
    """Kill a command and whatever it started (its own session), and reap it."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except OSError:
        pass
    child.wait()


def kill_commands():
    """Kill the --exec commands still running: the tracker is on its way out."""
    with _COMMANDS_LOCK:
        children = list(_COMMANDS)
    for child in children:
        _kill_group(child)


def _log_stream():
    """Where a command's output goes: the tracker's stderr (the journal), never its stdout."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):   # a test's captured stderr
        return subprocess.DEVNULL


class Courier(object):
    """Delivers the events of one target in order, from a thread of its own.

    put() never blocks: polling and stdout never wait for a slow webhook.
    An event leaves the queue when the target took it or refused it for
    good (a 4xx); any other failure is retried, with backoff, jitter and
    the target's Retry-After, for as long as it takes.  Sends are paced
    under the service's published rate.  Beyond NOTIFY_QUEUE events the
    oldest (but the one being tried) are dropped, counted and logged.
    """

    def __init__(self, target, deliver, log, delay=None, pace=None):
        self.target = target
        self._deliver, self._log = deliver, log
        self._delay = delay or (lambda tries, retry_after: backoff(
            tries, NOTIFY_RETRY_BASE, NOTIFY_RETRY_CAP, retry_after))
        self._pace = NOTIFY_PACE.get(target.kind, 0.0) if pace is None else pace
        self._queue = collections.deque()     # event lines, oldest first
        self._lock = threading.Condition()
        self._stopping = False
        self.changed = False      # the queue lost events since the last save (pending(saving=True))
        self.delivered = self.refused = self.dropped = 0
        self.failing = None       # why, while it fails
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="deliver to " + target.kind)
        self._thread.start()

    def put(self, lines):
        lines = [line for line in lines if self._fits(line)]
        with self._lock:
            self._queue.extend(lines)
            excess = len(self._queue) - NOTIFY_QUEUE
            if excess > 0:          # the oldest after the one being tried go
                head = self._queue.popleft()
                for _ in range(excess):
                    self._queue.popleft()
                self._queue.appendleft(head)
            self._lock.notify()
        if excess > 0:
            self.dropped += excess
            self._log("%s: %d events waiting; dropped the %d oldest (%d so far)" % (
                self.target.shown, NOTIFY_QUEUE, excess, self.dropped))

    def _fits(self, line):
        if len(line) <= NOTIFY_LINE_LIMIT:
            return True
        self.dropped += 1    # a feed naming 300,000 components: it would bloat the state file
        self._log("%s: an event of %d bytes dropped (more than %d)" % (
            self.target.shown, len(line), NOTIFY_LINE_LIMIT))
        return False

    def pending(self, saving=False):
        """Return the events not delivered yet, oldest first; saving: they are
        being saved, so the queue counts as unchanged from now."""
        with self._lock:
            if saving:
                self.changed = False
            return list(self._queue)

    def waiting(self):
        with self._lock:
            return len(self._queue)

    def withdraw(self, lines):
        """Take back events not sent yet (stdout refused them: the next run prints and sends them)."""
        unwanted = set(lines)
        with self._lock:
            head = self._queue.popleft() if self._queue else None   # it may be on its way
            kept = [line for line in self._queue if line not in unwanted]
            self._queue.clear()
            self._queue.extend(([head] if head is not None else []) + kept)

    def idle(self):
        with self._lock:
            return not self._queue

    def stop(self):
        with self._lock:
            self._stopping = True
            self._lock.notify()

    def _wait(self, seconds):
        """Sleep the whole `seconds` unless stopped; True when stopped.  A backoff,
        a Retry-After or the pace is a wait on purpose: put() wakes only an idle courier."""
        deadline = time.monotonic() + seconds
        with self._lock:
            while not self._stopping and time.monotonic() < deadline:
                self._lock.wait(deadline - time.monotonic())
            return self._stopping

    def _run(self):
        tries = 0
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                line = self._queue[0]
            try:
                self._deliver(self.target, line)
            except DeliveryError as exc:
                if not exc.refused:
                    tries += 1
                    self._failed(str(exc), tries)
                    if self._wait(self._delay(tries, exc.retry_after)):
                        return
                    continue
                self.refused += 1
                self._log("%s refused an event for good (%s): dropped" % (self.target.shown, exc))
            except Exception as exc:   # a bug here must cost one event, never delivery
                self.refused += 1
                self._log("%s: internal error: %s; event dropped" % (
                    self.target.shown, _describe(exc)))
            else:
                self.delivered += 1
            if self.failing:
                self._log("%s recovered after %d failed tries" % (self.target.shown, tries))
            tries, self.failing = 0, None
            with self._lock:
                if self._queue and self._queue[0] is line:
                    self._queue.popleft()
                self.changed = True
            if self._wait(self._pace):
                return

    def _failed(self, why, tries):
        if self.failing is None:
            self._log("%s is failing: %s; retrying with backoff" % (self.target.shown, why))
        self.failing = why


# ---------------------------------------------------------------- the scheduler

class Feed(object):
    """The loop's record of one feed: its state and its place in the schedule."""

    __slots__ = ("provider", "state", "due", "busy", "polls")

    def __init__(self, provider, state=None):
        self.provider = provider
        self.state = state if state is not None else FeedState()
        self.due, self.busy, self.polls = 0.0, False, 0


class _Wakeup(object):
    """A socket pair: workers and signal handlers wake the scheduler's select().

    Sending on a socket takes no Python lock, so a signal handler may do it
    at any moment without risking a deadlock (threading.Event could).
    """

    def __init__(self):
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def notify(self):
        try:
            self._writer.send(b"\0")
        except OSError:      # full: a wake-up is pending anyway
            pass

    def wait(self, timeout):
        if timeout > 0:
            select.select([self._reader], [], [], timeout)
        try:
            while self._reader.recv(4096):
                pass
        except OSError:
            pass

    def close(self):
        self._reader.close()
        self._writer.close()


class Lane(object):
    """One lane of polls: a few long-lived loops on a ThreadPoolExecutor, taking jobs in turn.

    Each thread runnable at once costs CPU: many workers taking a burst of
    quick polls contend for the GIL and wake each other, where a few take
    them in turn (bench/README.md).  So a lane starts LANE_WIDTH loops
    and widens, up to `workers`, when a job has waited LANE_PATIENCE: to
    twice the loops held that long (hung servers count for nothing), and by
    one at least.  A burst of quick jobs waiting for the GIL, not for a
    loop, is gone before that: more loops would only slow it.  With nothing
    waiting a loop leaves while another is free, one each LANE_SETTLE
    seconds at most.  pump() widens; the scheduler calls it in time.
    """

    def __init__(self, workers, work, clock=time.monotonic):
        # threads start only as loops are added: room for the widest the lane may become
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(workers, MAX_WORKERS))
        self._work, self._clock, self._most = work, clock, workers
        self._lock = threading.Condition()
        self._waiting = collections.deque()   # (queued at, job) no loop has taken yet
        self._running = {}                    # loop -> when its job started
        self.width, self._free = 0, 0         # loops, and those not running a job
        self._changed_at = clock()            # when a loop came or left
        self._closing = False

    def submit(self, job):
        with self._lock:
            self._waiting.append((self._clock(), job))
            if self._free:
                self._lock.notify()
            if len(self._waiting) > self._free and self.width < min(LANE_WIDTH, self._most):
                self._widen()

    def pump(self):
        """Widen if jobs wait on slow ones; return the seconds until it is worth asking again."""
        with self._lock:
            if len(self._waiting) <= self._free or self.width >= self._most:
                return float("inf")      # free loops take what waits, or no loop more to add
            now = self._clock()
            due = LANE_PATIENCE + max(self._waiting[0][0], self._changed_at)
            if now < due:
                return due - now
            # loops held LANE_PATIENCE or more (hung servers?) count for nothing, and
            # as many again are added: 30 hung servers ahead cost 0.4 s, not 3
            held = sum(now - started >= LANE_PATIENCE for started in self._running.values())
            width = min(self._most, self.width + len(self._waiting) - self._free,
                        max(self.width + 1, held + max(held, LANE_WIDTH)))
            while self.width < width:
                self._widen()
            return LANE_PATIENCE

    def resize(self, workers):
        """Let the lane widen up to `workers` loops from now on (it narrows by itself)."""
        with self._lock:
            self._most = workers

    def shutdown(self):
        """Return at once; the jobs queued still run, and end at once when
        the Fetcher was told to stop (Fetcher.stop)."""
        with self._lock:
            self._closing = True
            while self.width < self._most and len(self._waiting) > self._free:
                self._widen()
            self._lock.notify_all()
        self._pool.shutdown(wait=False)

    def _widen(self):
        self.width += 1
        self._free += 1            # from now: it takes a job as it starts
        self._changed_at = self._clock()
        self._pool.submit(self._loop)

    def _narrow(self):
        """True when this free loop should leave (the lock held)."""
        if self._closing or self._free >= 2 and self.width > LANE_WIDTH and \
                self._clock() - self._changed_at >= LANE_SETTLE:
            self.width -= 1
            self._free -= 1
            self._changed_at = self._clock()
            return True
        return False

    def _loop(self):
        """Take jobs until the lane narrows or closes: one warm thread, not one woken a job."""
        me = object()
        with self._lock:
            while True:
                while not self._waiting:
                    if self._narrow():
                        return
                    self._lock.wait()
                self._free -= 1
                self._running[me] = self._clock()
                job = self._waiting.popleft()[1]
                self._lock.release()
                try:
                    self._work(job)
                except Exception:      # never: fetch_feed makes every failure an Outcome; as
                    pass               # in a ThreadPoolExecutor, a bug costs the job, not the loop
                finally:
                    self._lock.acquire()
                del self._running[me]
                self._free += 1


class Tracker(object):
    """Poll feeds on schedule in three lanes of workers; the thread calling run() owns all state.

    The edges are parameters: fetch (the network), emit and log (stdout and
    stderr), clock and wall (monotonic and epoch time), wait (sleeps until a
    timeout or a wake-up; a test's can move a fake clock), lane (makes a
    Lane(workers, work)), state_file (a StateFile or None) and saved (what it
    loaded), notify (systemd), reload (returns the providers on SIGHUP),
    api (a StatuspageApi, or None) and couriers (Courier, one a --notify or
    --exec target; their undelivered events are saved with the state).
    The constructor reads no file and touches no network.  emit raising
    OSError or ValueError means stdout is gone: run() keeps the unprinted
    events unprinted and returns 1.

    Three lanes of workers: a feed whose last poll failed or was slow polls
    in the slow lane, a few workers of its own, so dead servers wait for each
    other, never for (or instead of) the healthy ones; a feed not yet polled
    in this run polls in the new lane, so the unknown ones of a first round
    or a reload hold up no feed already known to answer; the rest poll in the
    fast lane.  Outside the slow lane a poll gets at most Config.fast_timeout
    seconds before it is moved there.
    """

    def __init__(self, providers, config=Config(), fetch=None, emit=None,
                 log=None, clock=time.monotonic, wall=time.time, wait=None, lane=Lane,
                 state_file=None, notify=None, reload=None, saved=None, api=None,
                 couriers=()):
        self.config = config
        self.couriers = list(couriers)   # each delivers every event shown to its target
        self.fetch = fetch if fetch is not None else Fetcher()
        self.api = api            # a StatuspageApi, or None: no components from it
        self.emit = emit or (lambda text: None)
        self.log = log or (lambda text: None)
        self.clock, self.wall = clock, wall
        self.state_file, self.reload_source = state_file, reload
        self.notifier = notify or Notifier({})
        self.feeds = collections.OrderedDict()
        self.stats = collections.Counter()
        self.stopping = False
        self.unprinted = 0        # events stdout did not take; run() returns 1
        self._make_lane = lane
        self._lanes = None        # "fast", "new" and "slow", made by run()
        self._queue = []          # heap of (due, sequence, url)
        self._sequence = 0
        self._done = collections.deque()
        self._in_flight = {}      # url -> the Feed whose poll of it runs now: one at a time
        self._departed = {}       # state_key -> FeedState of a feed a reload removed
        self._reader = None       # the thread reading providers.txt for a reload, if any
        self._reload_wanted = False
        self._reloaded = collections.deque()   # what it read: providers, or a ConfigError
        self._wakeup = _Wakeup()
        self._wait = wait or self._wakeup.wait
        self._requests = set()    # "reload", "summary": asked for by signals
        self._changed = set()     # urls whose state is not saved yet
        self._saved_at = clock()
        self._ready = False
        self._unpolled = set()    # feeds the first round still waits for
        self._held = []           # (url, Event) of the first round, printed when it ends
        self._sleeping = False    # the scheduler is in, or about to enter, its wait
        self._wake_at = 0.0       # ... which ends then at the latest
        # Parsing holds the GIL: more parses at once only add their trees to
        # the peak memory (the first round of 5,000 feeds is all parsing).
        self._parsing = threading.BoundedSemaphore(PARSE_SLOTS)
        self._watchdog_at = clock()
        self._add_feeds(providers, saved or {})

    # -- asked from signal handlers or other threads: a flag and a wake-up, no locks

    def stop(self):
        """Ask run() to return soon."""
        self.stopping = True
        self._wakeup.notify()

    def request(self, what):
        """Ask run() to "reload" providers or log a "summary" at its next turn."""
        self._requests.add(what)
        self._wakeup.notify()

    def wait_idle(self, timeout):
        """After run(): wait up to `timeout` for requests still running; True if none."""
        deadline = time.monotonic() + timeout
        while len(self._in_flight) > len(self._done):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    # -- the loop

    def run(self, rounds=None):
        """Poll until stopped (or each feed `rounds` times); return an exit code."""
        fast, slow = self._widths()
        self._lanes = {"fast": self._make_lane(fast, self._work),
                       "new": self._make_lane(fast, self._work),
                       "slow": self._make_lane(slow, self._work)}
        try:
            while not self.stopping and not self._finished(rounds):
                self._launch_due(rounds)
                self._sleep()
                self._serve_requests()
                events = []
                while self._done:
                    events += self._apply(self._done.popleft())
                self._publish(self._in_stable_order(events))
                self._tell_systemd()
        finally:
            self.notifier.send("STOPPING=1")
            for ending in ("stop", "close"):   # what a Fetcher has; a test's may not
                if hasattr(self.fetch, ending):
                    getattr(self.fetch, ending)()
            for lane in self._lanes.values():
                lane.shutdown()
            self._take_back(self._held)        # stopped before the first round ended
            if self.state_file and (self._changed or any(c.changed for c in self.couriers)):
                self._save()
            self._wakeup.close()
        failed = [f for f in self.feeds.values() if f.polls and f.state.failures]
        return 1 if self.unprinted or rounds is not None and failed else 0

    def _widths(self):
        """Return the most polls at once of the fast and new lanes, and of the slow one:
        --workers, else as many as the feeds watched now (MAX_WORKERS at most)."""
        workers = self.config.workers or max(1, min(MAX_WORKERS, len(self.feeds)))
        return workers, min(SLOW_LANE_WORKERS, workers)

    def summary(self):
        """Return the one-line account of this run."""
        counts = self.stats
        delivery = ""
        if self.couriers:
            delivery = " delivered=%d undelivered=%d refused=%d dropped=%d" % (
                sum(c.delivered for c in self.couriers),
                sum(c.waiting() for c in self.couriers),
                sum(c.refused for c in self.couriers), sum(c.dropped for c in self.couriers))
        return ("summary: feeds=%d polls=%d ok=%d not_modified=%d unchanged=%d "
                "errors=%d events=%d%s%s" % (
                    len(self.feeds), counts["polls"], counts["parsed"] + counts["unchanged"],
                    counts["not_modified"], counts["unchanged"], counts["error"],
                    counts["events"],
                    " filtered=%d" % counts["filtered"] if counts["filtered"] else "", delivery))

    def _publish(self, events):
        """Save the state with the events in the outbox, hand them to the couriers,
        then print: a crash can never make an event print twice, nor lose one a
        target waits for, nor send one it sent under a new webhook id.

        events are (url, Event).  When stdout refuses one, it and the ones
        after it are taken back out of the state, which is saved again, and
        the tracker stops: the next run prints them.
        """
        shown = [(url, event) for url, event in events
                 if wanted(event, self.config, self._provider_of(url))]
        self.stats["filtered"] += len(events) - len(shown)
        lines = [queued_line(event) for _, event in shown] if self.couriers else []
        if events and self.state_file:
            self._save(lines)
        elif self.state_file and not self._held and \
                (self._changed or any(c.changed for c in self.couriers)) and \
                self.clock() - self._saved_at >= STATE_SAVE_INTERVAL:
            self._save()
        for courier in self.couriers:
            courier.put(lines)
        format_ = format_json if self.config.json else format_event
        events = shown
        for number, (_, event) in enumerate(events):
            try:
                self.emit(format_(event))
            except (OSError, ValueError) as exc:
                lost = events[number:]
                self._take_back(lost)
                for courier in self.couriers:
                    courier.withdraw(lines[number:])
                if self.state_file:
                    self._save()
                self.unprinted, self.stopping = len(lost), True
                self.log("stdout is closed (%s): %d event%s not printed%s; stopping" % (
                    (getattr(exc, "strerror", None) or str(exc)).lower(),
                    len(lost), "" if len(lost) == 1 else "s",
                    "; the next run with this --state prints them" if self.state_file else ""))
                return
            self.stats["events"] += 1

    def _provider_of(self, url):
        feed = self.feeds.get(url)
        return feed.provider if feed is not None else None

    def _take_back(self, events):
        """Mark (url, Event) pairs as not printed: the next run prints them.

        The validators and the body's sha256 go too: the next poll must read
        and diff the feed again, not take a 304 for "nothing new".
        """
        done = set()
        for url, event in events:
            feed = self.feeds.get(url)
            if feed is not None and (url, event.key) not in done:
                done.add((url, event.key))    # its first unprinted event says where to go back to
                feed.state = feed.state._replace(
                    printed=feed.state.printed.taken_back(event.key, event.undo),
                    etag=None, last_modified=None, body_sha256=None)
                self._changed.add(url)

    def _save(self, fresh=()):
        """Write the state file; fresh: event lines about to be handed to every courier."""
        states = collections.OrderedDict((url, f.state) for url, f in self.feeds.items())
        outbox = dict((c.target.key, c.pending(saving=True) + list(fresh))
                      for c in self.couriers)
        if self.state_file.save(states, self._changed,
                                dict((key, lines) for key, lines in outbox.items() if lines)):
            self._changed.clear()
        else:
            for courier in self.couriers:
                courier.changed = True     # not saved: ask again
        self._saved_at = self.clock()

    def save(self):
        """Write the state file now (after run(): what the couriers delivered since)."""
        if self.state_file:
            self._save()

    def _in_stable_order(self, events):
        """Return events to print now: the first round's wait until it ends, then
        come in providers.txt order (each feed's oldest first), run after run."""
        if self._ready:
            return events
        self._held += events
        if self._unpolled:
            return []
        rank = dict((url, number) for number, url in enumerate(self.feeds))
        held, self._held = self._held, []
        return sorted(held, key=lambda pair: rank.get(pair[0], len(rank)))

    def _tell_systemd(self):
        if not self._ready and not self._unpolled:
            self._ready = True
            self.notifier.send("READY=1")
        if self.notifier.watchdog and self.clock() >= self._watchdog_at:
            self.notifier.send("WATCHDOG=1")
            self._watchdog_at = self.clock() + self.notifier.watchdog

    def _serve_requests(self):
        requests, self._requests = self._requests, set()
        if "summary" in requests:
            self.log(self.summary())
        self._reload_wanted |= "reload" in requests and self.reload_source is not None
        while self._reloaded:
            self._reader, read = None, self._reloaded.popleft()
            if isinstance(read, ConfigError):
                self.log("reload failed, keeping the %d feeds in force: %s" % (
                    len(self.feeds), read))
            else:
                self.replace_providers(read)
        if self._reload_wanted and self._reader is None:
            # in a thread of its own: a long providers file never holds up a poll
            self._reload_wanted = False
            self._reader = threading.Thread(target=self._read_providers, name="reload")
            self._reader.daemon = True
            self._reader.start()

    def _read_providers(self):
        try:
            read = self.reload_source()
        except ConfigError as exc:
            read = exc
        except Exception as exc:   # a bug must cost the reload, never the process
            read = ConfigError("internal error: %s" % _describe(exc))
        self._reloaded.append(read)
        self._wakeup.notify()

    # -- the feed list

    def _add_feeds(self, providers, saved):
        now = self.clock()
        spacing = min(FIRST_ROUND_SPACING, self.config.interval / max(1, len(providers)))
        for number, provider in enumerate(providers):
            feed = self.feeds[provider.url] = Feed(provider, saved.get(state_key(provider.url)))
            if not self._ready and not feed.state.failures:
                # one already failing when the tracker stopped does not hold
                # up the first round (nor READY=1): it waits in the slow lane
                self._unpolled.add(provider.url)
            # spread the first polls of a long list; a short one starts at once
            self._schedule(feed, now + number * spacing)

    def replace_providers(self, providers):
        """Watch `providers` from now on: new feeds start fresh, kept ones keep all,
        and a failing one is tried again at once (the reload may be its fix).

        A feed removed and put back in one run goes on from what it printed.
        """
        wanted = collections.OrderedDict((p.url, p) for p in providers)
        removed = [url for url in self.feeds if url not in wanted]
        for url in removed:
            printed = self.feeds.pop(url).state.printed
            if printed is not None:
                self._departed[state_key(url)] = FeedState(printed)
            self._unpolled.discard(url)
            if hasattr(self.fetch, "forget"):   # its kept-alive connection goes too
                self.fetch.forget(url)
        added = [p for url, p in wanted.items() if url not in self.feeds]
        now = self.clock()
        for url, provider in wanted.items():
            feed = self.feeds.get(url)
            if feed is not None:
                feed.provider = provider   # a new display name
                if feed.state.failures and not feed.busy:
                    self._schedule(feed, now)
        self._add_feeds(added, self._departed)
        self.feeds = collections.OrderedDict((url, self.feeds[url]) for url in wanted)
        self._changed.update(p.url for p in added)
        if self._lanes:   # the pools follow the feeds watched
            fast, slow = self._widths()
            for name, lane in self._lanes.items():
                lane.resize(slow if name == "slow" else fast)
        if removed and self.state_file:
            self._save()
        self.log("reloaded: %d feeds (%d added, %d removed)" % (
            len(self.feeds), len(added), len(removed)))

    # -- scheduling

    def _schedule(self, feed, due):
        feed.due = due
        self._sequence += 1
        heapq.heappush(self._queue, (due, self._sequence, feed.provider.url))

    def _finished(self, rounds):
        if rounds is None:
            return False
        return all(f.polls >= rounds and not f.busy for f in self.feeds.values())

    def _sleep(self):
        """Wait until the next poll is due, or a worker or a signal has news."""
        now, wait = self.clock(), 3600.0
        if self._queue:
            wait = self._queue[0][0] - now
        if self.notifier.watchdog:
            wait = min(wait, self._watchdog_at - now)
        for lane in self._lanes.values():
            wait = min(wait, lane.pump())
        self._wake_at = now + wait
        self._sleeping = True    # then look at _done: a worker sees one or the other
        if not (self._done or self._requests or self._reloaded):
            self._wait(max(0.0, wait))
        self._sleeping = False

    def _launch_due(self, rounds):
        """Launch every poll due now or within a short quantum: one wake-up, many polls."""
        now = self.clock()
        # A poll after a sleep costs more CPU than one right after another
        # (cold caches, the wake-up itself; bench/README.md).  Early by at
        # most 5 % of the feed's interval, and on its own grid: no drift.
        fast = min(self.config.timeout, self.config.fast_timeout)
        while self._queue:
            due, _, url = self._queue[0]
            feed = self.feeds.get(url)
            if feed is None or feed.busy or due != feed.due or url in self._in_flight:
                heapq.heappop(self._queue)
                continue   # dropped, rescheduled since, or its URL polled by a feed a reload removed
            horizon = min(LAUNCH_QUANTUM, interval_of(feed.provider, self.config) / 20)
            if due > now + horizon:
                break
            heapq.heappop(self._queue)
            if rounds is not None and feed.polls >= rounds:
                continue
            feed.busy, self._in_flight[url] = True, feed
            self.stats["lateness_max"] = max(self.stats["lateness_max"], now - due)
            state = feed.state
            lane = "slow" if state.slow else "fast" if feed.polls else "new"
            timeout = self.config.timeout if state.slow or self.config.once else fast
            self._lanes[lane].submit(Job(url, state.etag, state.last_modified,
                                         state.body_sha256, timeout, horizon))

    def _work(self, job):
        """Run in a worker thread: poll, hand the outcome to the scheduler.

        Only a scheduler asleep for longer than the feed's launch horizon is
        woken: one that wakes sooner, or is awake, takes the outcome anyway.
        """
        self._done.append(fetch_feed(self.fetch, job, self._parsing, self.api))
        if self._sleeping and self._wake_at - self.clock() > job.slack:
            self._wakeup.notify()

    # -- applying outcomes (scheduler thread)

    def _apply(self, outcome):
        """Take one poll's outcome into its feed; return (url, Event) to print."""
        started, feed = self._in_flight.pop(outcome.url, None), self.feeds.get(outcome.url)
        if feed is not started:
            # Removed by a reload while it was polled, maybe put back since: the
            # outcome is the removed feed's, and the connection its poll kept
            # goes now.  The feed put back polls now, on a fresh connection.
            if hasattr(self.fetch, "forget"):
                self.fetch.forget(outcome.url)
            if feed is not None:
                self._schedule(feed, self.clock())
            return []
        feed.busy = False
        failing = feed.state.failures
        feed.polls += 1
        self._unpolled.discard(outcome.url)
        step = poll_step(feed.state, feed.provider, outcome, self.config, feed.due,
                         self.clock(), self.wall())
        feed.state = step.state
        for line in step.logs:
            self.log(line)
        self.stats["polls"] += step.kind != "slow"   # a move to the slow lane is no poll
        self.stats[step.kind] += 1
        if step.changed:
            self._changed.add(outcome.url)
        self._schedule(feed, step.due)
        if failing and not step.state.failures:
            self._retry_after_outage(feed)
        return [(outcome.url, event) for event in step.events]

    def _retry_after_outage(self, recovered):
        """A feed recovered while every other one was failing: the network was
        down, not the pages, so the others are tried again now, not at their backoff."""
        others = [f for f in self.feeds.values() if f is not recovered]
        if others and all(f.state.failures for f in others):
            now = self.clock()
            for feed in others:
                if not feed.busy:
                    self._schedule(feed, now)


# ---------------------------------------------------------------- command line

def _positive(kind):
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a number" % text)
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError("must be greater than 0, not %s" % text)
        return value
    return convert


def _seconds(text):
    try:
        return parse_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _filter(text):
    try:
        return parse_filter(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _count(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a whole number" % text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more, not %s" % text)
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """Bad usage: one line on stderr, exit code 2 (argparse adds a usage line)."""
        self.exit(2, "error: %s (see --help)\n" % message)

    def _print_message(self, message, file=None):
        try:   # stdout or stderr closed at start is None, and 3.6's argparse writes to it
            super(_Parser, self)._print_message(message, file)
        except (AttributeError, OSError, ValueError):
            pass


def build_parser():
    parser = _Parser(
        prog="openai_status_tracker.py",
        description="Print every new incident and update from status pages, once.")
    parser.add_argument("--interval", type=_seconds, default=DEFAULT_INTERVAL, metavar="SECONDS",
                        help="seconds between polls of a feed (default 60, at most 86400)")
    parser.add_argument("--providers", metavar="FILE",
                        help="feeds to watch (default: providers.txt beside this "
                             "file, or OpenAI alone if there is none)")
    parser.add_argument("--once", action="store_true",
                        help="poll every feed once, print, exit (1 if a feed failed)")
    parser.add_argument("--history", type=_count, default=0, metavar="N",
                        help="also print the N newest updates of each feed at start")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per event per line")
    parser.add_argument("--workers", type=_positive(int), metavar="N",
                        help="concurrent requests (default: min(32, number of feeds))")
    parser.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help="whole deadline of one request (default 20, at most 86400)")
    parser.add_argument("--state", metavar="FILE",
                        help="keep what was printed in FILE, so that a restart "
                             "repeats nothing and misses nothing")
    parser.add_argument("--only", type=_filter, action="append", default=[],
                        metavar="[FIELD:]REGEX",
                        help="print only events that match (repeatable; FIELD is one of "
                             "%s; without it, anything the event prints)" % ", ".join(FILTER_FIELDS))
    parser.add_argument("--skip", type=_filter, action="append", default=[],
                        metavar="[FIELD:]REGEX", help="print no event that matches (repeatable)")
    parser.add_argument("--no-maintenance", action="store_true",
                        help="print no scheduled maintenance")
    parser.add_argument("--notify", action="append", default=[], metavar="[KIND:]URL",
                        help="also send each event shown to this webhook (repeatable; also "
                             "$TRACKER_NOTIFY): Slack, Discord, Teams by host, else a "
                             "Standard Webhooks POST; KIND is one of %s" % ", ".join(NOTIFY_KINDS))
    parser.add_argument("--exec", action="append", default=[], metavar="'CMD ARGS'",
                        help="run this command for each event shown: its JSON on stdin, "
                             "TRACKER_* variables (repeatable; no shell)")
    parser.add_argument("--no-api", action="store_true",
                        help="never ask a Statuspage page's JSON API for components")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every poll to stderr")
    parser.add_argument("--version", action="version",
                        version="%(prog)s " + __version__)
    return parser


def _providers_of(path, notes=None):
    """Return the Providers to watch; raise ConfigError."""
    if path is None:
        path = default_providers_path()
        if not os.path.exists(path):
            return [Provider(OPENAI_FEED, OPENAI_NAME)]
    return load_providers(path, notes)


def _safe_stream(stream):
    """Return stream with unencodable characters escaped, never raising."""
    encoding = (getattr(stream, "encoding", None) or "").lower()
    if hasattr(stream, "reconfigure"):
        stream.reconfigure(errors="backslashreplace")
    elif hasattr(stream, "buffer") and encoding.replace("-", "") != "utf8":
        stream = io.TextIOWrapper(stream.buffer, encoding=stream.encoding,
                                  errors="backslashreplace", line_buffering=True)
    return stream


def _writer(stream):
    def write(text):
        if stream is None:     # started with it closed (`>&-`): Python made it None
            raise OSError(errno.EBADF, "Bad file descriptor")
        stream.write(text + "\n")
        stream.flush()   # under systemd stdout is a pipe: nothing waits in a buffer
    return write


def _hold_closed_stdio():
    """Hold fds 1 and 2 on /dev/null when started without them: a socket or file opened
    later must not take their numbers (a command's stderr would write into it).
    Read-only for stdout, so printing fails as on a closed pipe; Python's
    sys.stdout stays None and _writer says so."""
    for fd, flags in ((1, os.O_RDONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(fd)
        except OSError:
            held = os.open(os.devnull, flags)
            if held != fd:
                os.dup2(held, fd)
                os.close(held)


def main(argv=None):
    """Run the tracker; return the exit code."""
    args = build_parser().parse_args(argv)
    _hold_closed_stdio()
    out, err = _safe_stream(sys.stdout), _safe_stream(sys.stderr)
    write_err = _writer(err)

    def log(text):
        try:
            write_err(clean_text(text, 1000))
        except (OSError, ValueError):
            pass             # stderr closed: the logs are lost, never the events

    def providers_now():
        notes = []
        providers = _providers_of(args.providers, notes)
        for note in notes:
            log(note)
        return providers

    state_file = StateFile(args.state, log) if args.state else None
    try:
        targets, secret = targets_of(args.notify, args.exec, os.environ)
        providers = providers_now()
        saved = state_file.load() if state_file else {}
    except ConfigError as exc:
        log("error: %s" % exc)
        return 2
    config = Config(interval=args.interval, timeout=args.timeout,
                    workers=args.workers or 0,
                    history=args.history, json=args.json, verbose=args.verbose,
                    once=args.once, only=tuple(args.only), skip=tuple(args.skip),
                    maintenance=not args.no_maintenance)
    fetch = Fetcher(max_idle=_connection_budget(config.workers or MAX_WORKERS, len(providers)))
    couriers = start_couriers(targets, state_file.outbox if state_file else {}, log,
                              lambda target, line: deliver(target, line, args.timeout, secret))
    tracker = Tracker(providers, config, fetch=fetch, emit=_writer(out), log=log, state_file=state_file,
                      notify=Notifier(), reload=providers_now, saved=saved,
                      api=None if args.no_api else StatuspageApi(fetch), couriers=couriers)
    log("openai_status_tracker %s: %s %d feed%s%s" % (
        __version__, "polling" if args.once else "watching", len(providers),
        "" if len(providers) == 1 else "s",
        " once" if args.once else " every %gs" % args.interval))
    if args.verbose:
        log("expat %s" % xml.parsers.expat.EXPAT_VERSION)
    previous = _install_signals(tracker)
    try:
        code = tracker.run(rounds=1 if args.once else None)
    except Exception as exc:
        log("error: %s" % _describe(exc))
        code = 1
    try:
        code = max(code, finish_deliveries(couriers, tracker, args.timeout if args.once else 0,
                                           log))
        log(tracker.summary())
        if tracker.unprinted:
            _silence(sys.stdout)
        if not tracker.wait_idle(1.0):
            # A request stuck in connect() or DNS would hold the exit until its
            # deadline (the pool joins its threads at exit): SIGTERM must not wait.
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (AttributeError, OSError, ValueError):   # None: started without it
                    pass
            os._exit(code)
    finally:
        _restore_signals(previous)
    return code


def targets_of(notify, commands, environ):
    """Return ([Target], webhook secret) of --notify, $TRACKER_NOTIFY and --exec; raise ConfigError."""
    targets = collections.OrderedDict()
    try:
        for text in list(notify) + environ.get("TRACKER_NOTIFY", "").split():
            target = parse_target(text)
            targets[target.key] = target
        for command in commands:
            words = shlex.split(command)
            if not words:
                raise ValueError("--exec needs a command")
            if not shutil.which(words[0]):
                raise ValueError("--exec: no such command: %s" % clean_text(words[0], 80))
            target = parse_target(command, "exec")
            targets[target.key] = target
        secret = environ.get("TRACKER_WEBHOOK_SECRET") or None
        if secret:
            webhook_signature(secret, "msg_", 0, b"")    # says what is wrong with it, now
    except ValueError as exc:
        raise ConfigError(str(exc))
    return list(targets.values()), secret


def deliver(target, line, timeout, secret=None):
    """Deliver one event line to a target; raise DeliveryError."""
    if target.kind == "exec":
        run_command(target, line, timeout)
    else:
        post_event(target, line, timeout, secret)


def start_couriers(targets, outbox, log, send):
    """Return a started Courier per target, given first what the state file's outbox kept for it."""
    couriers = []
    for target in targets:
        courier = Courier(target, send, log)
        courier.put(outbox.get(target.key, []))
        couriers.append(courier)
    given = set(target.key for target in targets)
    forgotten = sum(len(lines) for key, lines in outbox.items() if key not in given)
    if forgotten:
        log("state file: %d undelivered event%s for a target no longer given: dropped" % (
            forgotten, "" if forgotten == 1 else "s"))
    return couriers


def finish_deliveries(couriers, tracker, wait, log):
    """Give the couriers up to `wait` seconds to empty their queues, stop them and save
    what is left; return 1 when an event was not delivered (refused, dropped, left)."""
    deadline = time.monotonic() + wait
    while any(not c.idle() for c in couriers) and time.monotonic() < deadline and \
            not tracker.stopping:                     # SIGTERM ends the wait too
        time.sleep(0.05)
    for courier in couriers:
        courier.stop()
    kill_commands()
    left = sum(c.waiting() for c in couriers)
    tracker.save()
    if left and not tracker.state_file:
        log("%d event%s not delivered (without --state they are lost)" % (
            left, "" if left == 1 else "s"))
    return 1 if wait and (left or any(c.refused or c.dropped for c in couriers)) else 0


def _silence(stream):
    """Point a broken stdout at /dev/null, so the exit's flush adds no traceback."""
    if stream is None:           # started without one: nothing to flush at exit
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _connection_budget(workers, feeds):
    """Return how many idle connections may stay open, raising the soft fd limit if need be.

    One kept-alive connection per feed is 5,000 descriptors for 5,000 feeds,
    above the usual soft limit of 1024 (the hard limit is usually far higher).
    Room is made for twice the feeds watched, so a reload may add as many.
    """
    budget = min(MAX_IDLE_CONNECTIONS, max(1024, 2 * feeds))
    if resource is None:
        return budget
    spare = workers + SLOW_LANE_WORKERS + 64     # connections in use, the state file, stdio
    wanted = budget + spare
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return budget
    return max(0, min(budget, soft - spare))


def _install_signals(tracker):
    """SIGTERM and Ctrl+C stop, SIGHUP reloads, SIGUSR1 logs a summary."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    actions = {"SIGINT": tracker.stop, "SIGTERM": tracker.stop,
               "SIGHUP": lambda: tracker.request("reload"),
               "SIGUSR1": lambda: tracker.request("summary")}
    previous = {}
    for name, action in actions.items():
        number = getattr(signal, name, None)
        if number is not None:
            previous[number] = signal.signal(number, lambda *_, act=action: act())
    return previous


def _restore_signals(previous):
    for number, handler in previous.items():
        signal.signal(number, handler)


if __name__ == "__main__":
    sys.exit(main())
