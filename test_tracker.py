"""Specification of openai_status_tracker, as tests.

Order: real-shaped sample feeds; the pure functions (parse, extract, diff,
format, providers); a real http.server on 127.0.0.1 and the fetcher and the
tracker against it; the command line through main(); a subprocess or two.
No test touches the internet.
"""

import ast
import base64
import collections
import email.utils
import glob
import gzip
import hashlib
import hmac
import html
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import socket
import socketserver
import stat
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import xml.parsers.expat
import zlib
from datetime import datetime, timezone

import pytest

import openai_status_tracker as tracker

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.join(HERE, "testdata")
SCRIPT = os.path.join(HERE, "openai_status_tracker.py")
SERVER_POLL = 0.005   # seconds a test server takes to notice shutdown(): 135 teardowns wait it

sys.path.insert(0, TESTDATA)   # testdata/samples.py: the feed builders, shared with bench/
from samples import (openai_entry, openai_feed, statuspage_blocks,  # noqa: E402
                     statuspage_entry, statuspage_feed, statuspage_incidents_json)


# ---------------------------------------------------------------- samples, in the real shapes

def rss_feed(*items):
    return ("""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">
    <channel>
        <title>Status</title>
        <link>https://status.example.com/</link>
        <description>Status page updates</description>%s
    </channel>
</rss>""" % "".join(items)).encode("utf-8")


def rss_item(title, guid, date, description, encoded=None):
    extra = ""
    if encoded is not None:
        extra = "<content:encoded><![CDATA[%s]]></content:encoded>" % encoded
    return """
        <item>
            <title><![CDATA[%s]]></title>
            <link>%s</link>
            <guid>%s</guid>
            <pubDate>%s</pubDate>
            <description><![CDATA[%s]]></description>%s
        </item>""" % (title, guid, guid, date, description, extra)


OPENAI_RESOLVED = openai_entry(
    "01M2EWYR55J47M2BPG9WC76VEG", "Elevated error rates for Codex and ChatGPT Work",
    "2026-09-14T03:57:19.771Z", "Resolved",
    "All impacted services have now fully recovered.",
    ["Chat Completions (Operational)", "Responses (Degraded performance)",
     "Chat Completions (Operational)"])
OPENAI_NO_COMPONENTS = openai_entry(
    "01M2DV6788RRSDZ5K98S5HN0A8", "Elevated errors for ChatGPT users in Europe",
    "2026-09-13T17:47:55.091Z", "Resolved", "All impacted services have now fully recovered.")

GITHUB_OPEN = [("Jul 9", "06:01", "Update", "We are continuing to work on a mitigation."),
               ("Jul 9", "04:51", "Identified", "We have identified the cause."),
               ("Jul 9", "04:34", "Investigating",
                "We are investigating reports of degraded performance for Actions")]
GITHUB_RESOLVED = [("Jul 9", "13:52", "Resolved", "This incident has been resolved."),
                   ("Jul 9", "13:41", "Update", "Actions have recovered.")] + GITHUB_OPEN


def github_feed(blocks, updated="2026-07-09T06:01:43Z"):
    return statuspage_feed(
        statuspage_entry(30837849, "Delays starting Actions runs", "2026-07-09T04:34:43Z",
                         updated, blocks),
        statuspage_entry(30818171, "Actions and Codespaces APIs experiencing partial failures",
                         "2026-07-07T14:47:16Z", "2026-07-07T16:17:17Z",
                         [("Jul 7", "16:17", "Resolved", "This incident has been resolved."),
                          ("Jul 7", "14:47", "Investigating", "We are investigating.")]))


def at(text):
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)


def shared(name):
    """A real captured feed: testdata/NAME, copied from the team's shared/feeds (PROVENANCE.md)."""
    with open(os.path.join(TESTDATA, name), "rb") as handle:
        return handle.read()


# ---------------------------------------------------------------- parsing

def test_incidentio_atom_gives_label_message_and_components():
    first, second = tracker.parse_feed(openai_feed(OPENAI_RESOLVED, OPENAI_NO_COMPONENTS))
    assert first.id == "https://status.openai.com//incidents/01M2EWYR55J47M2BPG9WC76VEG"
    assert first.link == first.id
    assert first.title == "Elevated error rates for Codex and ChatGPT Work"
    assert first.components == ("Chat Completions", "Responses")
    assert first.updates == (tracker.Update(
        datetime(2026, 9, 14, 3, 57, 19, 771000, tzinfo=timezone.utc), "Resolved",
        "All impacted services have now fully recovered."),)
    assert not first.complete
    assert second.components == ()
    assert tracker.state_at(second) == "resolved"


def test_incidentio_rss_reads_content_encoded_and_pubdate():
    body = "<b>Status: Investigating</b><br/><br/>We are looking into it.<br/><br/>" \
           "<b>Affected components</b>\n<ul>\n<li>Images (Degraded performance)</li>\n</ul>"
    (entry,) = tracker.parse_feed(rss_feed(rss_item(
        "High error rate for Dall-e", "https://status.openai.com//incidents/01KEDRBQ2A3Y9JJ7G3F3YM4KT3",
        "Thu, 08 Jan 2026 02:45:00 GMT", body, encoded=body)))
    assert entry.id.endswith("01KEDRBQ2A3Y9JJ7G3F3YM4KT3")
    assert entry.components == ("Images",)
    assert entry.updates[0] == tracker.Update(at("2026-01-08 02:45"), "Investigating",
                                              "We are looking into it.")
    assert tracker.is_open(entry)


def test_statuspage_atom_gives_every_block_newest_first():
    (entry, older) = tracker.parse_feed(github_feed(GITHUB_OPEN))
    assert entry.complete
    assert [u.label for u in entry.updates] == ["Update", "Identified", "Investigating"]
    assert entry.updates[0] == tracker.Update(
        at("2026-07-09 06:01"), "Update", "We are continuing to work on a mitigation.")
    assert entry.link == "https://www.githubstatus.com/incidents/i30837849"
    # "Update" is not a state: the newest label that is one counts.
    assert tracker.state_at(entry) == "identified"
    assert tracker.is_open(entry) and not tracker.is_open(older)


def test_statuspage_maintenance_skips_the_banner_and_is_maintenance():
    banner = ("<p><strong>THIS IS A SCHEDULED EVENT May <var data-var='date'>28</var>, "
              "<var data-var='time'>16:30</var> UTC &nbsp;-&nbsp; May "
              "<var data-var='date'>29</var>, <var data-var='time'>16:30</var> UTC</strong></p>")
    feed = statuspage_feed(statuspage_entry(
        25233647, "Codespaces Scheduled Maintenance", "2025-05-28T16:30:00Z",
        "2025-05-22T15:26:24Z",
        [("May 28", "16:30", "In progress", "Scheduled maintenance is currently in progress."),
         ("May 22", "15:26", "Scheduled", "Codespaces will be undergoing maintenance.")],
        banner=banner))
    (entry,) = tracker.parse_feed(feed)
    assert [u.label for u in entry.updates] == ["In progress", "Scheduled"]
    assert entry.updates[1].time == at("2025-05-22 15:26")
    assert tracker.state_at(entry) == "in_progress"
    assert tracker.is_maintenance(entry) and tracker.is_open(entry)


def test_statuspage_block_year_comes_from_the_entry_across_new_year():
    feed = statuspage_feed(statuspage_entry(
        1, "Over new year", "2025-12-31T23:50:00Z", "2026-01-01T00:20:00Z",
        [("Jan 1", "00:20", "Resolved", "Fixed."),
         ("Dec 31", "23:50", "Investigating", "Looking.")]))
    (entry,) = tracker.parse_feed(feed)
    assert [u.time for u in entry.updates] == [at("2026-01-01 00:20"), at("2025-12-31 23:50")]


def test_statuspage_rss_with_named_zone_and_affected_components():
    description = ("<p><small>Jan <var data-var='date'> 5</var>, <var data-var='time'>22:04</var> "
                   "PST</small><br><strong>Resolved</strong> - Fixed.</p><p>This incident "
                   "affected: API, Dashboard and Webhooks.</p>")
    (entry,) = tracker.parse_feed(rss_feed(rss_item(
        "Webhook delays", "https://status.example.com/incidents/x1",
        "Wed, 06 Jan 2021 06:10:00 +0000", description)))
    assert entry.updates[0].time == at("2021-01-06 06:04")
    assert entry.components == ("API", "Dashboard", "Webhooks")
    assert entry.complete


@pytest.mark.parametrize("summary, label, message, components", [
    ("Resolved - The API is back. Affected products: API, Console",
     "Resolved", "The API is back. Affected products: API, Console", ("API", "Console")),
    ("Something happened.", "Update", "Something happened.", ()),
])
def test_generic_atom_entry(summary, label, message, components):
    feed = ("""<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom">
      <entry><id>urn:x:1</id><title>Outage</title><updated>2026-03-01T10:00:00+02:00</updated>
      <summary>%s</summary></entry></feed>""" % summary).encode()
    (entry,) = tracker.parse_feed(feed)
    assert entry.updates == (tracker.Update(at("2026-03-01 08:00"), label, message),)
    assert entry.components == components


def test_entry_identity_falls_back_to_link_then_hash():
    feed = rss_feed("<item><title>A</title><link>https://x.test/a</link></item>",
                    "<item><title>B</title><pubDate>Mon, 02 Mar 2026 10:00:00 GMT</pubDate></item>")
    first, second = tracker.parse_feed(feed)
    assert first.id == "https://x.test/a"
    assert second.id.startswith("sha1:") and len(second.id) == 45
    assert tracker.parse_feed(feed)[1].id == second.id


@pytest.mark.parametrize("text, expected", [
    ("2026-09-14T03:57:19.771Z", datetime(2026, 9, 14, 3, 57, 19, 771000, tzinfo=timezone.utc)),
    ("2026-09-14T05:57:19+02:00", datetime(2026, 9, 14, 3, 57, 19, tzinfo=timezone.utc)),
    ("2026-09-14t03:57:19z", datetime(2026, 9, 14, 3, 57, 19, tzinfo=timezone.utc)),
    ("Thu, 08 Jan 2026 02:45:00 GMT", at("2026-01-08 02:45")),
    ("Thu, 08 Jan 2026 02:45:00 -0500", at("2026-01-08 07:45")),
    ("Thu, 08 Jan 2026 02:45:00 PST", at("2026-01-08 10:45")),
    ("yesterday", None), ("", None), ("2026-02-30T00:00:00Z", None),
])
def test_parse_date(text, expected):
    assert tracker.parse_date(text) == expected


def test_html_to_text_decodes_entities_and_collapses_whitespace():
    assert tracker.html_to_text("<p>It&#39;s&nbsp;<b>down</b><br/>again &amp; again</p>\n\n") \
        == "It's down again & again"
    assert tracker.html_to_text("x" * 600, 500) == "x" * 499 + "\u2026"


@pytest.mark.parametrize("body, reason", [
    (b"", "empty body"),
    (b"<!DOCTYPE html><html><body>Hi</body></html>", "HTML page"),
    (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><rss/>', "DTD"),
    (b"<rss><channel><item><title>cut", "not well-formed"),
    (b"<html><body>maintenance</body></html>", "HTML page"),
    (b'<?xml version="1.0"?><opml/>', "not an Atom or RSS feed"),
])
def test_parse_feed_refuses_what_is_not_a_feed(body, reason):
    with pytest.raises(tracker.FeedError, match=reason):
        tracker.parse_feed(body)


# ---------------------------------------------------------------- deciding what to print

def diff(seen, body, first=False, history=0):
    events, marks, _ = tracker.diff_entries(seen, tracker.parse_feed(body), first, history, "P")
    return [(e.entry.updates[e.index].label, e.kind) for e in events], marks


def test_first_poll_prints_open_incidents_only_and_history_on_request():
    events, marks = diff({}, github_feed(GITHUB_OPEN), first=True)
    assert events == [("Update", "new")]
    assert len(marks) == 2
    events, _ = diff({}, github_feed(GITHUB_OPEN), first=True, history=3)
    # the three newest updates of the feed (the open incident's newest among them, once)
    assert events == [("Investigating", "new"), ("Identified", "new"), ("Update", "new")]


def test_several_new_statuspage_blocks_print_oldest_first_once():
    _, marks = diff({}, github_feed(GITHUB_OPEN), first=True)
    events, marks = diff(marks, github_feed(GITHUB_RESOLVED, "2026-07-09T13:52:00Z"))
    assert events == [("Update", "update"), ("Resolved", "update")]
    assert diff(marks, github_feed(GITHUB_RESOLVED, "2026-07-09T13:52:00Z"))[0] == []


def test_statuspage_text_edited_in_place_is_not_an_event():
    _, marks = diff({}, github_feed(GITHUB_OPEN), first=True)
    edited = [("Jul 9", "06:01", "Update", "We are continuing to work on a fix.")] + GITHUB_OPEN[1:]
    assert diff(marks, github_feed(edited, "2026-07-09T06:05:00Z"))[0] == []


def test_incidentio_update_prints_when_updated_and_text_move():
    _, marks = diff({}, openai_feed(OPENAI_RESOLVED), first=True)
    reopened = OPENAI_RESOLVED.replace("Resolved", "Monitoring").replace(
        "2026-09-14T03:57:19.771Z", "2026-09-14T05:00:00.000Z")
    assert diff(marks, openai_feed(reopened))[0] == [("Monitoring", "update")]
    # updated moved, nothing printable changed (component order shuffled): silent
    shuffled = OPENAI_RESOLVED.replace("2026-09-14T03:57:19.771Z", "2026-09-14T05:00:00.000Z")
    assert diff(marks, openai_feed(shuffled))[0] == []
    # text changed, updated did not move: a silent edit
    edited = OPENAI_RESOLVED.replace("fully recovered", "recovered")
    assert diff(marks, openai_feed(edited))[0] == []


def test_new_incident_after_first_poll_prints_all_its_updates():
    _, marks = diff({}, openai_feed(OPENAI_NO_COMPONENTS), first=True)
    events, _ = diff(marks, openai_feed(OPENAI_RESOLVED, OPENAI_NO_COMPONENTS))
    assert events == [("Resolved", "new")]


def test_events_of_one_poll_come_oldest_first_across_entries():
    late = openai_entry("B", "b", "2026-09-14T10:00:00Z", "Investigating", "b")
    early = openai_entry("A", "a", "2026-09-14T09:00:00Z", "Investigating", "a")
    events, _, _ = tracker.diff_entries({}, tracker.parse_feed(openai_feed(late, early)))
    assert [e.entry.title for e in events] == ["a", "b"]


# ---------------------------------------------------------------- formatting

def first_event(body, provider="OpenAI", history=1):
    events, _, _ = tracker.diff_entries({}, tracker.parse_feed(body), True, history, provider)
    return events[-1]


def test_format_event_byte_for_byte():
    event = first_event(openai_feed(OPENAI_RESOLVED))
    assert tracker.format_event(event) == (
        "[2026-09-14 03:57:19] Product: OpenAI - Chat Completions, Responses\n"
        "Status: Resolved - All impacted services have now fully recovered.\n"
        "Incident: Elevated error rates for Codex and ChatGPT Work "
        "(https://status.openai.com//incidents/01M2EWYR55J47M2BPG9WC76VEG)")


def test_format_event_without_components_names_the_provider_alone():
    event = first_event(openai_feed(OPENAI_NO_COMPONENTS))
    assert tracker.format_event(event).splitlines()[0] == \
        "[2026-09-13 17:47:55] Product: OpenAI"


def test_format_json_fields():
    event = first_event(github_feed(GITHUB_OPEN), "GitHub")
    assert json.loads(tracker.format_json(event)) == {
        "time": "2026-07-09T06:01:00Z", "provider": "GitHub", "product": "GitHub",
        "components": [], "state": "identified", "label": "Update",
        "message": "We are continuing to work on a mitigation.",
        "title": "Delays starting Actions runs",
        "link": "https://www.githubstatus.com/incidents/i30837849",
        "id": "tag:www.githubstatus.com,2005:Incident/30837849",
        "kind": "new", "maintenance": False, "component_status": {}, "impact": None}


def test_json_gives_each_incidentio_components_status():
    event = first_event(openai_feed(OPENAI_RESOLVED))
    assert json.loads(tracker.format_json(event))["component_status"] == {
        "Chat Completions": "operational", "Responses": "degraded_performance"}
    # the real capture: 87 resolved incidents, each component back to "(Operational)"
    entries = [e for e in tracker.parse_feed(shared(OPENAI)) if e.components]
    assert entries and all(e.statuses == ("operational",) * len(e.components) for e in entries)


@pytest.mark.parametrize("said, status", [
    ("Operational", "operational"), ("Degraded performance", "degraded_performance"),
    ("Partial outage", "partial_outage"), ("Full outage", "major_outage"),
    ("Under maintenance", "under_maintenance"), ("Something new", "something_new")])
def test_incidentio_impact_words_become_statuspage_status_names(said, status):
    entry = openai_entry("S", "T", "2026-09-14T03:00:00.000Z", "Investigating", "x", ["API (%s)" % said])
    [parsed] = tracker.parse_feed(openai_feed(entry))
    assert (parsed.components, parsed.statuses) == (("API",), (status,))


def test_feed_text_cannot_forge_lines_or_escape_sequences():
    # Raw ESC is not legal XML, but an HTML character reference in the content is.
    sneaky = openai_entry("X", "t&#27;]0;owned&#7;itle", "2026-09-14T03:57:19Z", "Investigating",
                          "bad\n[2026-01-01 00:00:00] Product: X&#27;[31m red\u202e\x85ok\x9b")
    text = tracker.format_event(first_event(openai_feed(sneaky)))
    assert text.count("\n") == 2
    # html.unescape drops the ESC of "&#27;[31m": what is left is inert text
    assert text.splitlines()[1] == \
        "Status: Investigating - bad [2026-01-01 00:00:00] Product: X[31m red ok"
    assert "\x1b" not in text and "\x07" not in text
    assert "\n" not in tracker.format_json(first_event(openai_feed(sneaky)))


# ---------------------------------------------------------------- providers.txt

def test_parse_providers_names_comments_and_defaults():
    text = ("# watch these\n\nhttps://status.openai.com/history.atom OpenAI\n"
            "  https://www.githubstatus.com/history.atom   GitHub  Status # trailing\n"
            "http://status.example.com/history.rss\n")
    assert tracker.parse_providers(text) == [
        tracker.Provider("https://status.openai.com/history.atom", "OpenAI"),
        tracker.Provider("https://www.githubstatus.com/history.atom", "GitHub Status"),
        tracker.Provider("http://status.example.com/history.rss", "status.example.com")]


@pytest.mark.parametrize("text, message", [
    ("https://a.test/x\nftp://a.test/feed\n", "providers.txt:2: not an http or https URL"),
    ("https:///history.atom\n", "providers.txt:1: no host name in https:///history.atom"),
    ("https://a.test:99999/x\n", "providers.txt:1: bad URL"),
    ("# nothing\n\n", "providers.txt: no feeds listed"),
    ("https://a.test/x A\nhttps://b.test/x B every=5\n",
     "providers.txt:2: unknown option 'every' (known: interval, only, skip)"),
    ("https://a.test/x A interval=0\n", "providers.txt:1: interval=: must be greater than 0, not 0"),
    ("https://a.test/x A interval=soon\n", "providers.txt:1: interval=: 'soon' is not a number"),
    ("https://a.test/x A\n\nhttps://b.test/x only=title:(\n",
     "providers.txt:3: only=: bad regular expression '('"),
    ("https://a.test/x A skip=a{4294967296}\n", "providers.txt:1: skip=: bad regular expression"),
    ("https://a.test/x A only=component:codex web\n",
     "providers.txt:1: only= is not at the end of the line, or its value holds a space"),
    ("https://a.test/x A interval=5 interval=10\n", "providers.txt:1: interval= given 2 times"),
])
def test_parse_providers_rejects_bad_lines_with_file_and_line(text, message):
    with pytest.raises(tracker.ConfigError) as raised:
        tracker.parse_providers(text, "providers.txt")
    assert str(raised.value).startswith(message)


def test_providers_lines_may_end_in_options_for_that_feed():
    text = ("https://a.test/x Status of A interval=5 only=component:^api$ only=outage\n"
            "https://b.test/x\tskip=state:^resolved$\tinterval=7.5\n"
            "https://c.test/x C = D\n")
    a, b, c = tracker.parse_providers(text)
    assert (a.name, a.interval, b.name, b.interval) == ("Status of A", 5.0, "b.test", 7.5)
    assert [(rule.field, rule.pattern.pattern) for rule in a.only] == [
        ("component", "^api$"), ("", "outage")]
    assert [(rule.field, rule.pattern.pattern) for rule in b.skip] == [("state", "^resolved$")]
    assert (c.name, c.interval, c.only, c.skip) == ("C = D", None, (), ())


def test_a_feeds_own_interval_and_filters_apply_to_it_alone():
    now, calls = [0.0], collections.defaultdict(list)
    bodies = {"http://oa.test/x": shared("openai-incidentio-history-20260914.atom"),
              "http://gh.test/x": shared("github-statuspage-history-20250529-maint-inprogress.atom")}

    def fetch(url, etag=None, last_modified=None, timeout=None):
        calls[url].append(now[0])
        return tracker.Response(200, bodies[url], None, None)

    def wait(seconds):
        now[0] += seconds
    providers = tracker.parse_providers(
        "http://oa.test/x OpenAI interval=15 only=component:^codex\n"
        "http://gh.test/x GitHub skip=.\n")
    lines = []
    poller = tracker.Tracker(providers, tracker.Config(interval=60.0, history=40), fetch=fetch,
                             emit=lines.append, clock=lambda: now[0],
                             wall=lambda: 1.8e9 + now[0], wait=wait, lane=InlineLane)
    assert poller.run(rounds=5) == 0
    openai, github = calls["http://oa.test/x"], calls["http://gh.test/x"]
    assert [round(later - earlier, 6) for earlier, later in zip(openai, openai[1:])] == [15.0] * 4
    # the other keeps --interval (its grid starts 10 ms later: the first round's spacing)
    assert len(github) == 5 and all(0 <= 0.01 + 60.0 * k - polled <= tracker.LAUNCH_QUANTUM
                                    for k, polled in enumerate(github))
    products = [line.splitlines()[0].partition("Product: ")[2] for line in lines]
    assert products and all(product.startswith("OpenAI - ") and
                            any(name.startswith("Codex")
                                for name in product[len("OpenAI - "):].split(", "))
                            for product in products)
    assert poller.stats["filtered"] > len(lines)   # all of GitHub, most of OpenAI


def test_shipped_providers_file_is_valid_and_starts_with_openai():
    providers = tracker.load_providers(os.path.join(HERE, "providers.txt"))
    assert providers[0] == tracker.Provider(tracker.OPENAI_FEED, "OpenAI")
    assert {"GitHub", "Claude"} <= {p.name for p in providers}


# ---------------------------------------------------------------- a real HTTP server on loopback

class Script(object):
    """What the test server answers, per path, and what it was asked."""

    def __init__(self):
        self.routes = {}
        self.requests = []
        self.peers = []      # the client's port, request by request
        self.closed = []     # the client's port, connection by connection, once closed
        self.posts = []      # (monotonic time, path, headers, body) of each POST
        self.answers = collections.defaultdict(list)   # path -> what the next POSTs get

    def set(self, path, body=b"", status=200, headers=None, etag=None):
        self.routes[path] = (status, body, dict(headers or {}), etag)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        script = self.server.script
        script.requests.append((self.path, dict(self.headers)))
        script.peers.append(self.client_address[1])
        status, body, headers, etag = script.routes.get(self.path, (404, b"no", {}, None))
        if callable(body):
            return body(self)
        if etag and self.headers.get("If-None-Match") == etag:
            status, body = 304, b""
        self.send_response(status)
        if etag:
            self.send_header("ETag", etag)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        """A webhook receiver: records the POST, answers what script.answers says
        for its path next: (status, headers, body), "drop" (close, no answer),
        a number (seconds to wait, then 200) or a callable route; else 200."""
        script = self.server.script
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        script.posts.append((time.monotonic(), self.path, self.headers, body))   # any case
        queue = script.answers[self.path]
        answer = queue.pop(0) if queue else (200, {}, b"ok")
        if answer == "drop":
            self.close_connection = True
            return
        if callable(answer):
            return answer(self)
        if not isinstance(answer, tuple):
            time.sleep(answer)
            answer = (200, {}, b"ok")
        reply(self, answer[2], answer[0], list(answer[1].items()))

    def log_message(self, *args):
        pass

    def handle(self):
        try:
            http.server.BaseHTTPRequestHandler.handle(self)
        except (ConnectionResetError, BrokenPipeError):
            pass   # the tracker closed a kept-alive connection: not a test failure
        finally:
            self.server.script.closed.append(self.client_address[1])


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


@pytest.fixture
def server():
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.script = Script()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": SERVER_POLL})
    thread.daemon = True
    thread.start()
    httpd.url = "http://127.0.0.1:%d" % httpd.server_address[1]
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_fetcher_sends_user_agent_and_validators_and_takes_304(server):
    server.script.set("/feed", b"<rss/>", etag='W/"abc"',
                      headers={"Last-Modified": "Mon, 14 Sep 2026 04:56:53 GMT"})
    fetch = tracker.Fetcher()
    first = fetch(server.url + "/feed")
    assert (first.status, first.body, first.etag) == (200, b"<rss/>", 'W/"abc"')
    second = fetch(server.url + "/feed", first.etag, first.last_modified)
    assert second.status == 304
    _, headers = server.script.requests[-1]
    assert headers["If-None-Match"] == 'W/"abc"'
    assert headers["If-Modified-Since"] == "Mon, 14 Sep 2026 04:56:53 GMT"
    assert headers["User-Agent"] == "openai_status_tracker/%s (+python-urllib)" % tracker.__version__
    assert headers["Accept-Encoding"] == "gzip"


def test_fetcher_keeps_a_feeds_connection_alive_between_polls(server):
    server.script.set("/gh", github_feed(GITHUB_OPEN), etag='W/"1"')
    fetch = tracker.Fetcher()
    first = fetch(server.url + "/gh")
    assert fetch(server.url + "/gh", first.etag).status == 304
    assert fetch(server.url + "/gh", first.etag).status == 304
    assert len(set(server.script.peers)) == 1
    assert "Connection" not in server.script.requests[0][1]   # urllib would say "close"


def test_fetcher_reconnects_when_the_server_closed_the_idle_connection(server):
    body = openai_feed(OPENAI_RESOLVED)

    def answer_then_hang_up(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        handler.close_connection = True     # closes without saying so first
    server.script.set("/oa", answer_then_hang_up)
    fetch = tracker.Fetcher()
    assert [fetch(server.url + "/oa").body for _ in range(3)] == [body] * 3
    assert len(set(server.script.peers)) == 3


def test_fetcher_follows_redirects_through_urllib(server):
    server.script.set("/old", b"moved", status=301, headers={"Location": "/gh"})
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    assert tracker.Fetcher()(server.url + "/old").body == github_feed(GITHUB_OPEN)
    assert server.script.requests[-1][1]["Connection"] == "close"


def test_fetcher_decodes_gzip(server):
    body = openai_feed(OPENAI_RESOLVED)
    server.script.set("/gz", gzip.compress(body), headers={"Content-Encoding": "gzip"})
    assert tracker.Fetcher()(server.url + "/gz").body == body


def gzip_member(body, flags=0, extra=b"", name=b"", comment=b""):
    """A gzip member (RFC 1952) of body with the optional header fields flags asks for."""
    head = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\xff"
    head += (len(extra).to_bytes(2, "little") + extra if flags & 4 else b"")
    head += (name + b"\0" if flags & 8 else b"") + (comment + b"\0" if flags & 16 else b"")
    head += (zlib.crc32(head) & 0xFFFF).to_bytes(2, "little") if flags & 2 else b""
    deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return head + deflate.compress(body) + deflate.flush() + struct.pack(
        "<II", zlib.crc32(body), len(body))


@pytest.mark.parametrize("flags", [0, 2, 4, 8, 16, 4 | 8 | 16 | 2],
                         ids=["plain", "FHCRC", "FEXTRA", "FNAME", "FCOMMENT", "all four"])
def test_gunzip_reads_every_optional_gzip_header_field(flags):
    body = openai_feed(OPENAI_RESOLVED)
    data = gzip_member(body, flags, extra=b"AP\x02\0hi", name=b"history.atom",
                       comment=b"from a CDN")
    assert tracker.gunzip(data, CAP) == body
    assert tracker.gunzip(gzip.compress(body), CAP) == body


@pytest.mark.parametrize("data, why", [
    (b"", "gzip data cut short"),
    (b"\x1f\x8b", "gzip data cut short"),
    (b"<rss/>", "bad gzip data: Error -3 while decompressing data: incorrect header check"),
    (gzip_member(b"<rss/>", 8, name=b"no end")[:14], "gzip data cut short"),
    (gzip_member(b"<rss/>")[:-3], "gzip data cut short"),
    (gzip_member(b"<rss/>")[:-4] + b"\x07\0\0\0", "bad gzip data: Error -3 while "
     "decompressing data: incorrect length check"),
    (gzip_member(b"<rss/>")[:-8] + struct.pack("<II", zlib.crc32(b"<rss/>") ^ 1, 6),
     "bad gzip data: Error -3 while decompressing data: incorrect data check"),
    (gzip_member(b"<rss/>", 0x20), "bad gzip data: Error -3 while decompressing data: "
     "unknown header flags set"),
    (gzip_member(b"<rss/>", 2)[:10] + b"\0\0" + gzip_member(b"<rss/>", 2)[12:],
     "bad gzip data: Error -3 while decompressing data: header crc mismatch"),
    (gzip_member(b"<rss/>") + b"\0\0junk",
     "bad gzip data: Error -3 while decompressing data: incorrect header check"),
    (gzip_member(b"<rss") + gzip_member(b"/>")[:-1], "gzip data cut short"),
    (gzip_member(b"<rss/>")[:10] + b"\x07" + gzip_member(b"<rss/>")[11:],   # block type 3
     "bad gzip data: Error -3 while decompressing data: invalid block type"),
])
def test_gunzip_refuses_what_is_not_whole_gzip_members(data, why):
    with pytest.raises(tracker.FeedError, match=re.escape(why)):
        tracker.gunzip(data, CAP)


def test_a_gzip_body_is_checked_against_its_crc(server):
    body = openai_feed(OPENAI_RESOLVED)
    good = gzip_member(body)
    bad = good[:-8] + struct.pack("<II", zlib.crc32(body) ^ 1, len(body))
    server.script.set("/gz", bad, headers={"Content-Encoding": "gzip"})
    outcome = poll_once(server.url + "/gz")
    assert outcome.entries is None
    assert outcome.error == "bad gzip data: Error -3 while decompressing data: incorrect data check"
    server.script.set("/gz", good, headers={"Content-Encoding": "gzip"})
    checked = poll_once(server.url + "/gz")
    assert checked.error is None and len(checked.entries) == 1


@pytest.mark.parametrize("status, headers, reason, retry", [
    (500, {}, "HTTP 500", None),
    (404, {}, "HTTP 404", None),
    (429, {"Retry-After": "120"}, "HTTP 429", 120.0),
    (503, {"Retry-After": "999999"}, "HTTP 503", tracker.RETRY_AFTER_CAP),
])
def test_fetcher_reports_http_errors_with_retry_after(server, status, headers, reason, retry):
    server.script.set("/e", b"down", status=status, headers=headers)
    with pytest.raises(tracker.FeedError, match=reason) as raised:
        tracker.Fetcher()(server.url + "/e")
    assert raised.value.retry_after == retry


def test_fetcher_reports_connection_refused(server):
    url = server.url + "/x"
    server.shutdown()
    server.server_close()
    with pytest.raises(tracker.FeedError, match="connection refused"):
        tracker.Fetcher()(url)


def run_tracker(providers, config, until, timeout=10.0, fetch=None):
    """Run a Tracker in a thread until until(lines, logs) holds; return (lines, logs, tracker)."""
    lines, logs = [], []
    poller = tracker.Tracker(providers, config, fetch=fetch, emit=lines.append, log=logs.append)
    thread = threading.Thread(target=poller.run)
    thread.start()
    deadline = time.monotonic() + timeout
    while not until(lines, logs) and time.monotonic() < deadline:
        time.sleep(0.01)
    poller.stop()
    thread.join(5)
    assert not thread.is_alive()
    return lines, logs, poller


def test_tracker_prints_each_update_once_as_the_feed_changes(server):
    script = server.script
    script.set("/gh", github_feed(GITHUB_OPEN[1:]), etag='W/"1"')
    script.set("/oa", openai_feed(OPENAI_NO_COMPONENTS))
    providers = [tracker.Provider(server.url + "/gh", "GitHub"),
                 tracker.Provider(server.url + "/oa", "OpenAI")]
    # each change, and how many events must have printed before it is made
    changes = [
        (1, lambda: script.set("/gh", github_feed(GITHUB_OPEN), etag='W/"2"')),
        (2, lambda: script.set("/oa", openai_feed(OPENAI_RESOLVED, OPENAI_NO_COMPONENTS,
                                                  updated="2026-09-14T05:00:00Z"))),
        (3, lambda: script.set("/gh", github_feed(GITHUB_RESOLVED, "2026-07-09T13:52:00Z"),
                               etag='W/"3"')),
        (5, None),
    ]
    settled = []

    def until(lines, logs):
        printed, change = changes[0]
        if len(lines) >= printed and change is not None:
            change()
            changes.pop(0)
        elif len(lines) >= printed and not settled:
            settled.append(len(script.requests))
        # after the last event, let both feeds be polled a few more times
        return bool(settled) and len(script.requests) >= settled[0] + 6

    lines, logs, _ = run_tracker(providers, tracker.Config(interval=0.05), until)
    heads = [line.splitlines()[1] for line in lines]
    assert heads == [
        "Status: Identified - We have identified the cause.",          # open at start
        "Status: Update - We are continuing to work on a mitigation.",
        "Status: Resolved - All impacted services have now fully recovered.",
        "Status: Update - Actions have recovered.",
        "Status: Resolved - This incident has been resolved.",
    ]
    assert logs == []


def test_tracker_skips_parsing_unchanged_bodies_and_uses_304(server, monkeypatch):
    server.script.set("/oa", openai_feed(OPENAI_RESOLVED, updated="2026-09-14T04:56:53.404Z"))
    server.script.set("/gh", github_feed(GITHUB_RESOLVED), etag='W/"x"')
    parsed = []
    real_parse = tracker.parse_feed
    monkeypatch.setattr(tracker, "parse_feed", lambda body: parsed.append(1) or real_parse(body))

    def rewrite_feed_updated(lines, logs):
        # incident.io rewrites the feed-level <updated> on every fetch
        stamp = "2026-09-14T04:%02d:00.000Z" % (len(server.script.requests) % 60)
        server.script.set("/oa", openai_feed(OPENAI_RESOLVED, updated=stamp))
        paths = [path for path, _ in server.script.requests]
        return paths.count("/oa") >= 6 and paths.count("/gh") >= 6

    _, _, poller = run_tracker([tracker.Provider(server.url + "/oa", "OpenAI"),
                                tracker.Provider(server.url + "/gh", "GitHub")],
                               tracker.Config(interval=0.02), rewrite_feed_updated)
    assert len(parsed) == 2
    assert poller.stats["unchanged"] >= 4 and poller.stats["not_modified"] >= 4
    gh_requests = [h for path, h in server.script.requests if path == "/gh"]
    assert "If-None-Match" not in gh_requests[0]
    assert all(h["If-None-Match"] == 'W/"x"' for h in gh_requests[1:])


def test_failing_feed_is_logged_once_then_recovery_once_and_others_go_on(server, monkeypatch):
    monkeypatch.setattr(tracker, "backoff", lambda failures, base, cap, retry=None, rand=None: base)
    server.script.set("/bad", b"oops", status=500)
    server.script.set("/good", openai_feed(OPENAI_NO_COMPONENTS))
    providers = [tracker.Provider(server.url + "/bad", "Bad"),
                 tracker.Provider(server.url + "/good", "Good")]
    state = {}

    def until(lines, logs):
        bad = [p for p, _ in server.script.requests if p == "/bad"]
        if len(bad) >= 4 and "fixed" not in state:
            server.script.set("/bad", openai_feed(OPENAI_RESOLVED))
            state["fixed"] = len(bad)
        return len(logs) >= 2 and len(server.script.requests) > 14

    lines, logs, _ = run_tracker(providers, tracker.Config(interval=0.02), until)
    assert logs == [
        "Bad (%s/bad) is failing: HTTP 500 Internal Server Error; retrying with backoff" % server.url,
        "Bad (%s/bad) recovered after %d failed polls" % (server.url, state["fixed"])]
    assert lines == []
    assert len([p for p, _ in server.script.requests if p == "/good"]) >= 4


@pytest.mark.parametrize("interval, failures, expected", [
    (60.0, 1, 60.0), (60.0, 2, 120.0), (60.0, 3, 240.0), (60.0, 4, 300.0), (60.0, 30, 300.0),
    (30.0, 30, 300.0), (120.0, 30, 600.0), (1.0, 30, 300.0)])
def test_backoff_doubles_up_to_five_minutes_or_five_intervals(interval, failures, expected):
    # issue 17 #9: capped at an hour, a 15-minute outage left a 30 s feed unpolled ~16 min
    cap = max(tracker.BACKOFF_CAP, tracker.BACKOFF_INTERVALS * interval)
    assert tracker.backoff(failures, interval, cap, rand=lambda: 0.5) == expected
    assert tracker.backoff(1, interval, cap, retry_after=900.0, rand=lambda: 0.5) == 900.0


# ---------------------------------------------------------------- the command line

def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_main_once_prints_open_incidents_and_exits_0(server, tmp_path, capsys):
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    assert tracker.main(["--once", "--providers", providers]) == 0
    out, err = capsys.readouterr()
    assert out == ("[2026-07-09 06:01:00] Product: GitHub\n"
                   "Status: Update - We are continuing to work on a mitigation.\n"
                   "Incident: Delays starting Actions runs "
                   "(https://www.githubstatus.com/incidents/i30837849)\n")
    assert "polling 1 feed once" in err


def test_main_once_json_with_history(server, tmp_path, capsys):
    server.script.set("/oa", openai_feed(OPENAI_RESOLVED, OPENAI_NO_COMPONENTS))
    providers = write(tmp_path, "p.txt", "%s/oa OpenAI\n" % server.url)
    assert tracker.main(["--once", "--json", "--history", "2", "--providers", providers]) == 0
    events = [json.loads(line) for line in capsys.readouterr()[0].splitlines()]
    assert [e["time"] for e in events] == ["2026-09-13T17:47:55Z", "2026-09-14T03:57:19Z"]
    assert events[1]["components"] == ["Chat Completions", "Responses"]
    assert events[1]["product"] == "OpenAI - Chat Completions, Responses"


def test_main_once_exits_1_with_the_reason_when_a_feed_fails(server, tmp_path, capsys):
    server.script.set("/ok", openai_feed(OPENAI_RESOLVED))
    providers = write(tmp_path, "p.txt", "%s/ok Fine\n%s/missing Gone\n" % (server.url, server.url))
    assert tracker.main(["--once", "--providers", providers]) == 1
    err = capsys.readouterr()[1]
    assert "Gone (%s/missing) is failing: HTTP 404" % server.url in err


@pytest.mark.parametrize("argv, message", [
    (["--interval", "0"], "must be greater than 0"),
    (["--interval", "inf"], "must be at most 86400 (a day), not inf"),
    (["--interval", "soon"], "is not a number"),
    (["--workers", "-1"], "must be greater than 0"),
    (["--history", "-2"], "must be 0 or more"),
    (["--bogus"], "unrecognized arguments"),
])
def test_main_bad_usage_exits_2(argv, message, capsys):
    with pytest.raises(SystemExit) as raised:
        tracker.main(argv)
    assert raised.value.code == 2
    assert message in capsys.readouterr()[1]


def test_main_bad_providers_file_exits_2_naming_file_and_line(tmp_path, capsys):
    path = write(tmp_path, "providers.txt", "https://ok.test/feed\nfile:///etc/passwd\n")
    assert tracker.main(["--providers", path]) == 2
    assert capsys.readouterr()[1] == \
        "error: %s:2: not an http or https URL: file:///etc/passwd\n" % path
    assert tracker.main(["--providers", str(tmp_path / "absent.txt")]) == 2
    assert "absent.txt: cannot read: No such file or directory" in capsys.readouterr()[1]


def test_main_version(capsys):
    with pytest.raises(SystemExit):
        tracker.main(["--version"])
    assert tracker.__version__ in capsys.readouterr()[0]


def test_tracker_imports_only_the_standard_library():
    with open(SCRIPT) as handle:
        tree = ast.parse(handle.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module.split(".")[0])
    stdlib = getattr(sys, "stdlib_module_names", None)
    if stdlib is None:   # before 3.10: everything must come from the stdlib directory
        import sysconfig
        base = sysconfig.get_paths()["stdlib"]
        for name in names:
            module = __import__(name)
            where = getattr(module, "__file__", None)
            assert where is None or where.startswith(base), name
    else:
        assert names <= set(stdlib), names - set(stdlib)


def test_sigterm_stops_a_running_tracker_at_once_with_exit_0(server, tmp_path):
    server.script.set("/oa", openai_feed(OPENAI_RESOLVED))
    providers = write(tmp_path, "p.txt", "%s/oa OpenAI\n" % server.url)
    process = subprocess.Popen([sys.executable, SCRIPT, "--providers", providers,
                                "--interval", "0.1"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while len(server.script.requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=10)
    assert time.monotonic() - started < 2
    assert process.returncode == 0
    assert b"Traceback" not in err
    assert out == b""


# ---------------------------------------------------------------- hostile feeds and dead servers
#
# Issue 3: any feed may be broken, slow, huge or malicious, and none of it may
# crash the tracker, stall the other feeds, eat memory or reach the terminal.
# Each test says which defence it checks; without that defence it fails.

MIB = 1 << 20
CAP = tracker.MAX_BODY_BYTES
# What no line of output or log may hold: C0 but newline, DEL, C1, the line
# and paragraph separators (str.splitlines() breaks there too), bidi overrides.
UNPRINTABLE = re.compile(u"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f"
                         u"\u202a-\u202e\u2066-\u2069]")


def reply(handler, body=b"", status=200, headers=(), reason=None):
    """Answer a request by hand, from a callable route."""
    handler.send_response(status, reason)
    for key, value in headers:
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def streamer(total, sent, done, status=200, headers=(), length=False):
    """A route sending `total` bytes from one small buffer; sent[0] counts them."""
    def answer(handler):
        handler.close_connection = True
        handler.send_response(status)
        for key, value in headers:
            handler.send_header(key, value)
        if length:
            handler.send_header("Content-Length", str(total))
        handler.end_headers()
        chunk = b" " * 65536
        sent.append(0)
        try:
            while sent[0] < total:
                handler.wfile.write(chunk)
                sent[0] += len(chunk)
        except OSError:    # the client hung up, as it should
            pass
        finally:
            done.set()
    return answer


def dripper(head, pause=0.05, limit=3.0):
    """A route sending `head`, then a byte every `pause` seconds: never a silence
    long enough for a per-read timeout (it gives up after `limit` seconds)."""
    def answer(handler):
        handler.close_connection = True
        deadline = time.monotonic() + limit
        try:
            handler.wfile.write(head)
            while time.monotonic() < deadline:
                handler.wfile.write(b" ")
                time.sleep(pause)
        except OSError:
            pass
    return answer


def tls_dripper(sock, pause=0.05, limit=3.0):
    """A TLS "server" promising a 16 KB handshake record and giving a byte at a time."""
    sock.recv(4096)                              # the ClientHello
    sock.sendall(b"\x16\x03\x03\x40\x00")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        sock.sendall(b"\x02")
        time.sleep(pause)


def listening_silently():
    """A socket the kernel accepts connections on, and nobody ever answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


class RawHandler(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            self.server.behaviour(self.request)
        except OSError:
            pass


@pytest.fixture
def raw_server():
    """start(behaviour) -> port of a plain TCP server on 127.0.0.1 running behaviour(sock)."""
    servers = []

    def start(behaviour):
        tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), RawHandler)
        tcp.daemon_threads = True
        tcp.behaviour = behaviour
        thread = threading.Thread(target=tcp.serve_forever, kwargs={"poll_interval": SERVER_POLL})
        thread.daemon = True
        thread.start()
        servers.append(tcp)
        return tcp.server_address[1]
    yield start
    for tcp in servers:
        tcp.shutdown()
        tcp.server_close()


def gzip_bomb(size):
    """A valid gzip stream of `size` zero bytes (whole MiBs), about size/1000 long.

    One deflated MiB after a full flush is the same every time, so it is
    repeated rather than deflating a gigabyte.
    """
    zeros = bytes(MIB)
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush()[:-8]            # the final block, less a trailer for 2 MiB
    crc = 0
    for _ in range(size // MIB):
        crc = zlib.crc32(zeros, crc)
    return first + again * (size // MIB - 1) + end + struct.pack("<II", crc, size % (1 << 32))


def poll_once(url, timeout=5.0):
    return tracker.fetch_feed(tracker.Fetcher(), tracker.Job(url, None, None, None, timeout),
                              threading.Lock())


def lol_levels(count):
    levels = '<!ENTITY lol0 "lol">'
    for number in range(1, count + 1):
        levels += '<!ENTITY lol%d "%s">' % (number, ("&lol%d;" % (number - 1)) * 10)
    return levels


def with_doctype(doctype, reference, head=u'<?xml version="1.0"?>\n'):
    return head + doctype + (u"<rss><channel><item><title>%s</title></item></channel></rss>"
                             % reference)


BILLION_LAUGHS = with_doctype("<!DOCTYPE lolz [%s]>" % lol_levels(9), "&lol9;")
XML_ATTACKS = [
    ("billion laughs", BILLION_LAUGHS.encode()),
    ("quadratic blowup", with_doctype('<!DOCTYPE r [<!ENTITY a "%s">]>' % ("x" * 50000),
                                      "&a;" * 50000).encode()),
    ("XXE file", with_doctype('<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
                              "&x;").encode()),
    ("XXE http", with_doctype('<!DOCTYPE r [<!ENTITY x SYSTEM "{url}/evil.dtd">]>',
                              "&x;").encode()),
    ("external DTD", with_doctype('<!DOCTYPE rss SYSTEM "{url}/evil.dtd">', "x").encode()),
    ("parameter entity", with_doctype(
        '<!DOCTYPE r [<!ENTITY % p SYSTEM "{url}/evil.dtd"> %p;]>', "x").encode()),
    ("after comments and PIs", with_doctype("<!DOCTYPE lolz [%s]>" % lol_levels(9), "&lol9;",
                                            u'<?xml version="1.0"?>\r\n<!-- %s -->\n<?pi x?>\n'
                                            % ("c" * 10000)).encode()),
    ("after a UTF-8 BOM", b"\xef\xbb\xbf" + BILLION_LAUGHS.encode()),
    ("lower case", BILLION_LAUGHS.replace("DOCTYPE", "doctype").encode()),
    ("UTF-16 with BOM", BILLION_LAUGHS.replace("?>", ' encoding="UTF-16"?>').encode("utf-16")),
    ("UTF-16LE without BOM", BILLION_LAUGHS.encode("utf-16-le")),
    ("UTF-16BE without BOM", BILLION_LAUGHS.encode("utf-16-be")),
]


@pytest.mark.parametrize("name, body", XML_ATTACKS, ids=[name for name, _ in XML_ATTACKS])
def test_xml_attacks_are_refused_before_expansion(server, name, body):
    # Defence: refuse_dtd before expat, BOM and UTF-16 included.  Without it
    # expat expands, fetches, or at best (2.4+) stops with another error.
    server.script.set("/attack", body.replace(b"{url}", server.url.encode()))
    started = time.monotonic()
    outcome = poll_once(server.url + "/attack")
    assert outcome.error == "refused: the document declares a DTD"
    assert time.monotonic() - started < 1.0
    assert [path for path, _ in server.script.requests] == ["/attack"]   # nothing fetched


@pytest.mark.parametrize("size, cap", [(MIB, 256 * 1024), (1 << 30, CAP)],
                         ids=["1 KB to 1 MiB", "1 MB to 1 GiB"])
def test_gzip_bomb_stops_at_the_cap(server, size, cap):
    # Defence: gunzip() inflates at most cap + 1 bytes (deflate cannot do
    # better than 1:1032, so a 1 KB body inflates to 1 MiB at most).
    bomb = gzip_bomb(size)
    assert len(bomb) < size // 1000 + 100
    server.script.set("/bomb", bomb, headers={"Content-Encoding": "gzip"})
    tracemalloc.start()
    try:
        started = time.monotonic()
        with pytest.raises(tracker.FeedError,
                           match="answer larger than %d bytes after gzip decoding" % cap):
            tracker.Fetcher(max_bytes=cap)(server.url + "/bomb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 2.0
    assert peak < 4 * cap + 2 * len(bomb)


@pytest.mark.parametrize("length", [False, True], ids=["streamed", "with Content-Length"])
def test_a_64_mb_answer_is_cut_off_at_the_cap(server, length):
    # Defence: _read_body reads 64 KB at a time and stops past the cap (at
    # once when Content-Length is over it); memory stays near the cap.
    sent, done = [], threading.Event()
    server.script.set("/huge", streamer(64 * MIB, sent, done, length=length))
    tracemalloc.start()
    try:
        with pytest.raises(tracker.FeedError, match="answer larger than %d bytes" % CAP):
            tracker.Fetcher()(server.url + "/huge")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert done.wait(5)
    assert peak < 3 * CAP
    assert sent[0] < 32 * MIB


def test_a_redirects_body_is_never_read(server):
    # Defence: _RedirectHandler.redirect_request closes the answer first;
    # urllib itself reads a redirect's whole body into memory, without limit.
    sent, done = [], threading.Event()
    server.script.set("/moved", streamer(64 * MIB, sent, done, status=302,
                                         headers=[("Location", "/feed")]))
    server.script.set("/feed", openai_feed(OPENAI_NO_COMPONENTS))
    assert tracker.Fetcher()(server.url + "/moved").body == openai_feed(OPENAI_NO_COMPONENTS)
    assert done.wait(5)
    assert sent[0] < 32 * MIB


def redirect_chain(script, hops, first="/f"):
    """Make `first` redirect `hops` times, to a feed."""
    for number in range(hops):
        script.set(first if number == 0 else "/hop%d" % number, status=302,
                   headers={"Location": "/hop%d" % (number + 1)})
    script.set("/hop%d" % hops, openai_feed(OPENAI_NO_COMPONENTS))


def test_five_redirects_are_followed_and_a_sixth_is_not(server):
    # Defence: _RedirectHandler.max_redirections (MAX_REDIRECTS = 5).
    redirect_chain(server.script, 5, "/five")
    assert poll_once(server.url + "/five").error is None
    redirect_chain(server.script, 6, "/six")
    assert poll_once(server.url + "/six").error == "more than 5 redirects, or a redirect loop"


def test_dead_servers_cost_one_request_at_most_the_timeout(server, raw_server):
    # Defence: the whole-request deadline, _DeadlineSocket, for every read of
    # the answer.  Each server here sends a byte (every 50 ms, not every
    # second, to keep the test short) before a per-read timeout could fire,
    # or accepts and says nothing.  The TLS handshake's own timeout is a total
    # (Python 3.5+), ended by the deadline (_connect_by_deadline).
    silent = listening_silently()
    server.script.set("/drip-head", dripper(b"HTTP/1.1 200 OK\r\nX-Slow: "))
    server.script.set("/drip-body", dripper(b"HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\n"))
    urls = {"drip-head": server.url + "/drip-head", "drip-body": server.url + "/drip-body",
            "silent": "http://127.0.0.1:%d/" % silent.getsockname()[1],
            "tls-drip": "https://127.0.0.1:%d/" % raw_server(tls_dripper)}
    timeout, results = 0.5, {}

    def fetch(name):
        started = time.monotonic()
        try:
            tracker.Fetcher()(urls[name], timeout=timeout)
            results[name] = ("answered", 0.0)
        except tracker.FeedError as exc:
            results[name] = (str(exc), time.monotonic() - started)
    threads = [threading.Thread(target=fetch, args=(name,)) for name in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    silent.close()
    assert sorted(results) == sorted(urls)
    for name, (reason, seconds) in results.items():
        assert reason == "timed out", (name, reason)
        assert timeout - 0.05 < seconds < timeout + 0.4, (name, seconds)


FAULTS = [   # (id, route of /f or URL, the reason logged)
    ("500", dict(body=b"oops", status=500), "HTTP 500 Internal Server Error"),
    ("503", dict(body=b"busy", status=503), "HTTP 503 Service Unavailable"),
    ("404", dict(status=404), "HTTP 404 Not Found"),
    ("410", dict(status=410), "HTTP 410 Gone"),
    ("reset", dict(body=lambda h: (setattr(h, "close_connection", True), h.connection.setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)), h.connection.close())),
     "connection reset"),
    ("hang up", dict(body=lambda h: setattr(h, "close_connection", True)),
     "connection closed without an answer"),
    ("redirect loop", dict(status=302, headers={"Location": "/f"}),
     "more than 5 redirects, or a redirect loop"),
    ("6 redirects", lambda script: redirect_chain(script, 6),
     "more than 5 redirects, or a redirect loop"),
    ("redirect to ftp", dict(status=301, headers={"Location": "ftp://127.0.0.1:1/feed"}),
     "redirect to a non-HTTP URL refused (ftp)"),
    ("304 unasked", dict(status=304), "304 Not Modified to a request that asked for none"),
    ("HTML", dict(body=b"<!doctype html>\n<html><body>Bad gateway</body></html>"),
     "got an HTML page, not a feed"),
    ("empty", dict(body=b""), "empty body"),
    ("truncated XML", dict(body=openai_feed(OPENAI_RESOLVED)[:-300]),
     "not well-formed XML: "),
    ("cut short", dict(body=lambda h: (setattr(h, "close_connection", True), h.send_response(200),
                                       h.send_header("Content-Length", "1000"), h.end_headers(),
                                       h.wfile.write(b"<rss>" * 100))),
     "answer cut short: 500 bytes missing"),
    ("gzip cut short", dict(body=gzip.compress(openai_feed(OPENAI_RESOLVED))[:-20],
                            headers={"Content-Encoding": "gzip"}), "gzip data cut short"),
    ("unknown charset", dict(body=b'<?xml version="1.0" encoding="x-klingon"?><rss/>'),
     "cannot read its declared encoding: unknown encoding: x-klingon"),
    ("DTD", dict(body=BILLION_LAUGHS.encode()), "refused: the document declares a DTD"),
    ("not a feed", dict(body=b'<?xml version="1.0"?><opml version="2.0"/>'),
     "not an Atom or RSS feed (root element <opml>)"),
    ("brotli", dict(body=b"x", headers={"Content-Encoding": "br"}),
     "unsupported Content-Encoding 'br'"),
]


def run_faulty(url, fix=None, good=None):
    """Poll `url` (beside the healthy `good`) until it failed 3 times, fix(),
    poll it 3 times more; return the tracker's logs, checked for hygiene."""
    fetcher, polls, fixed = tracker.Fetcher(), [], []

    def fetch(*args):
        try:
            return fetcher(*args)
        finally:
            polls.append(args[0])
    fetch.stop = fetcher.stop

    def until(lines, logs):
        if polls.count(url) >= 3 and fix and not fixed:
            fixed.append(fix())
        return polls.count(url) >= 6 and (good is None or polls.count(good) >= 3)

    providers = [tracker.Provider(url, "F")] + ([tracker.Provider(good, "Good")] if good else [])
    lines, logs, _ = run_tracker(providers, tracker.Config(interval=0.02, timeout=2.0),
                                 until, fetch=fetch)
    assert lines == [] and not any(UNPRINTABLE.search(line) for line in logs)
    return logs


def failing_then_recovered(url, reason, logs):
    assert len(logs) == 2, logs
    assert logs[0].startswith("F (%s) is failing: %s" % (url, reason)), logs
    assert logs[0].endswith("; retrying with backoff")
    assert re.match(r"F \(%s\) recovered after [3-9] failed polls$" % re.escape(url), logs[1])


@pytest.mark.parametrize("fault, reason", [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS])
def test_a_fault_is_one_clean_line_of_reason(server, fault, reason):
    # Defence: the fetcher and the parser give the reason in one line; the
    # step logs it once when failing starts (test_the_step_logs_failing_once...).
    if callable(fault):
        fault(server.script)
    else:
        server.script.set("/f", **fault)
    outcome = poll_once(server.url + "/f", timeout=2.0)
    assert outcome.error.startswith(reason), outcome.error
    assert not UNPRINTABLE.search(outcome.error)
    server.script.set("/f", openai_feed(OPENAI_NO_COMPONENTS))
    assert poll_once(server.url + "/f").error is None


def test_a_fault_is_logged_once_when_it_starts_and_once_when_it_ends(server, monkeypatch):
    # End to end, one fault: other feeds go on meanwhile.
    monkeypatch.setattr(tracker, "backoff", lambda failures, base, cap, retry=None, rand=None: base)
    server.script.set("/f", b"<html><body>Maintenance</body></html>")
    server.script.set("/good", openai_feed(OPENAI_NO_COMPONENTS))
    logs = run_faulty(server.url + "/f", good=server.url + "/good",
                      fix=lambda: server.script.set("/f", openai_feed(OPENAI_NO_COMPONENTS)))
    failing_then_recovered(server.url + "/f", "got an HTML page, not a feed", logs)


def test_connection_refused_then_back_is_logged_once_each(monkeypatch):
    # Defence: as above, for a server that is not there at all, then is.
    monkeypatch.setattr(tracker, "backoff", lambda failures, base, cap, retry=None, rand=None: base)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    revived = []

    def revive():
        httpd = Server(("127.0.0.1", port), Handler)
        httpd.script = Script()
        httpd.script.set("/f", openai_feed(OPENAI_NO_COMPONENTS))
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": SERVER_POLL})
        thread.daemon = True
        thread.start()
        revived.append(httpd)
    url = "http://127.0.0.1:%d/f" % port
    try:
        logs = run_faulty(url, fix=revive)
    finally:
        for httpd in revived:
            httpd.shutdown()
            httpd.server_close()
    failing_then_recovered(url, "connection refused", logs)


def answer_plain_http(sock):
    sock.recv(4096)
    sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize("url, reason", [
    ("http://status.example.invalid/feed", "DNS lookup failed: "),   # RFC 6761: never resolves
    ("https://127.0.0.1:{port}/feed", "TLS error: "),               # plain HTTP answers TLS
], ids=["DNS", "TLS"])
def test_dns_and_tls_failures_are_logged_once(raw_server, monkeypatch, url, reason):
    # Defence: _describe names them; poll_step logs once, not each poll.
    monkeypatch.setattr(tracker, "backoff", lambda failures, base, cap, retry=None, rand=None: base)
    url = url.replace("{port}", str(raw_server(answer_plain_http)))
    logs = run_faulty(url)
    assert len(logs) == 1 and logs[0].startswith("F (%s) is failing: %s" % (url, reason)), logs


def test_backoff_is_exponential_jittered_capped_and_never_gives_up():
    # Defence: backoff.  The cap holds after the jitter (it was 1.2 h).
    for failures in range(1, 60):
        nominal = 60.0 * 2 ** min(failures - 1, 30)
        low = tracker.backoff(failures, 60.0, tracker.BACKOFF_CAP, rand=lambda: 0.0)
        high = tracker.backoff(failures, 60.0, tracker.BACKOFF_CAP, rand=lambda: 0.999999)
        assert low == max(60.0, min(0.8 * nominal, tracker.BACKOFF_CAP))
        assert high == pytest.approx(max(60.0, min(1.2 * nominal, tracker.BACKOFF_CAP)), rel=1e-5)
    assert tracker.backoff(10 ** 9, 60.0, tracker.BACKOFF_CAP) <= tracker.BACKOFF_CAP   # still retried
    assert tracker.backoff(1, 60.0, tracker.BACKOFF_CAP, 7 * 86400.0) == tracker.RETRY_AFTER_CAP
    assert tracker.backoff(3, 60.0, tracker.BACKOFF_CAP, 5.0, rand=lambda: 0.5) == 240.0


FEED = tracker.Provider("http://feed.test/x", "F")


def steps(outcomes, config=tracker.Config(interval=10.0), state=tracker.FeedState()):
    """Run outcomes through poll_step, each at its due time; return the Steps."""
    done, due = [], 1000.0
    for outcome in outcomes:
        step = tracker.poll_step(state, FEED, outcome, config, due, due, 1.8e9,
                                 rand=lambda: 0.5)
        done.append(step)
        state, due = step.state, step.due
    return done


def failed(error="HTTP 500", **fields):
    return tracker.Outcome(FEED.url, 500, error=error, **fields)


def test_the_step_backs_off_and_counts_afresh_after_a_success():
    # Defence: failures count into backoff; a success resets them.
    done = steps([failed()] * 4 + [tracker.Outcome(FEED.url, 304)] + [failed()])
    assert [s.kind for s in done] == ["error"] * 4 + ["not_modified", "error"]
    assert [round(s.due - due) for s, due in zip(done, [1000.0] + [d.due for d in done])] == [
        10, 20, 40, 80, 10, 10]
    assert done[3].state.failures == 4 and done[4].state.failures == 0


def test_the_step_logs_failing_once_and_recovered_once():
    done = steps([failed()] * 3 + [tracker.Outcome(FEED.url, 304)] * 2)
    assert [s.logs for s in done] == [
        ["F (http://feed.test/x) is failing: HTTP 500; retrying with backoff"], [], [],
        ["F (http://feed.test/x) recovered after 3 failed polls"], []]
    assert [s.changed for s in done] == [True, True, True, True, False]


def test_the_step_honours_retry_after_and_says_nothing_of_retries_with_once():
    [step] = steps([failed("HTTP 429", retry_after=600.0)],
                   tracker.Config(interval=10.0, once=True))
    assert step.due == 1600.0
    assert step.logs == ["F (http://feed.test/x) is failing: HTTP 429"]


def test_a_fast_lane_timeout_moves_the_feed_to_the_slow_lane_at_once_silently():
    config = tracker.Config(interval=10.0, timeout=20.0)
    timed_out = failed("timed out", timeout=5.0, timed_out=True)
    first, second = steps([timed_out, failed("timed out", timeout=20.0, timed_out=True)], config)
    assert (first.kind, first.due, first.logs, first.state.slow) == ("slow", 1000.0, [], True)
    assert second.kind == "error" and second.logs[0].endswith("timed out; retrying with backoff")
    back = steps([tracker.Outcome(FEED.url, 304, seconds=0.1)], config, second.state)[0]
    assert not back.state.slow                      # a quick answer: the fast lane again


def test_a_poll_more_than_an_interval_late_starts_a_new_schedule():
    config = tracker.Config(interval=10.0)
    on_time, late = [tracker.poll_step(tracker.FeedState(), FEED, tracker.Outcome(FEED.url, 304),
                                       config, 1000.0, now, 1.8e9) for now in (1003.0, 1015.0)]
    assert (on_time.due, late.due) == (1010.0, 1025.0)   # not 1015.0: no second poll at once


def test_once_says_why_a_feed_fails_even_if_it_failed_before():
    [step] = steps([failed()], tracker.Config(once=True), tracker.FeedState(failures=3, slow=True))
    assert step.logs == ["F (http://feed.test/x) is failing: HTTP 500"]


def test_the_step_of_a_changed_feed_prints_and_remembers():
    body = github_feed(GITHUB_OPEN)
    outcome = tracker.Outcome(FEED.url, 200, tracker.parse_feed(body), b"sha", 'W/"1"')
    first, again = steps([outcome, outcome._replace(entries=tracker.parse_feed(body))])
    assert [e.entry.updates[e.index].label for e in first.events] == ["Update"]
    assert (first.kind, first.changed, first.state.etag, first.state.body_sha256) == (
        "parsed", True, 'W/"1"', b"sha")
    assert again.events == [] and len(again.state.printed.marks) == 2


def http_date(offset):
    return email.utils.formatdate(time.time() + offset, usegmt=True)


@pytest.mark.parametrize("value, expected", [
    ("120", 120.0), ("date+120", 120.0), ("date+864000", tracker.RETRY_AFTER_CAP),
    ("date-60", 0.0), ("99999999999999999999", tracker.RETRY_AFTER_CAP),
    ("soon", None), ("-5", None), ("\xb2", None), ("1e3", None), ("", None),
])
def test_retry_after_seconds_or_http_date_capped(server, value, expected):
    # Defence: parse_retry_after, ASCII digits only ("\xb2".isdigit() is True
    # and float() of it raised out of the fetcher).
    if value.startswith("date"):
        value = http_date(int(value[4:]))
    server.script.set("/busy", b"", status=429, headers={"Retry-After": value})
    with pytest.raises(tracker.FeedError, match="HTTP 429") as raised:
        tracker.Fetcher()(server.url + "/busy")
    if expected is None:
        assert raised.value.retry_after is None
    else:
        assert raised.value.retry_after == pytest.approx(expected, abs=2.0)


FORGED = "bad\n[2026-01-01 00:00:00] Product: X\r\nStatus: Resolved - fine"
NASTY = FORGED + u"\x85\x9b2J\u2028\u2029\u202eright-to-left&#13;&#10;&#x9b;&#27;[31m."


def test_feed_text_cannot_forge_lines_or_escapes_in_stdout_logs_or_json(server, tmp_path, capsys):
    # Defence: clean_text/html_to_text on every string from a feed or a server
    # (status reason too), and on every log line.  Raw ESC is not legal XML:
    # it can come only through HTTP, and does, in the reason phrase.
    entry = openai_entry("X\x85Y", u"t\x9bitle\u2028two\x85three", "2026-09-14T03:57:19Z",
                         "Investigating", NASTY, [u"Comp\x85[2026-01-01 00:00:00] Product: Y"])
    server.script.set("/evil", openai_feed(entry))
    server.script.set("/down", lambda h: reply(h, status=500,
                                               reason="\x1b]0;pwned\x07Oops\x1b[2J\x9b31m"))
    providers = write(tmp_path, "p.txt", u"%s/evil \x1b[31mEvil\x1b[0m\n%s/down Down\n"
                      % (server.url, server.url))
    assert tracker.main(["--once", "-v", "--providers", providers]) == 1
    out, err = capsys.readouterr()
    assert out.count("\n") == 3 and len(out.splitlines()) == 3 and not UNPRINTABLE.search(out)
    head, status, incident = out.splitlines()
    assert head == "[2026-09-14 03:57:19] Product: Evil - Comp [2026-01-01 00:00:00] Product: Y"
    assert status.startswith("Status: Investigating - bad [2026-01-01 00:00:00] Product: X "
                             "Status: Resolved - fine")
    assert incident == "Incident: t itle two three (https://status.openai.com//incidents/X Y)"
    assert len(err.splitlines()) == err.count("\n") and not UNPRINTABLE.search(err)
    assert [line for line in err.splitlines() if "is failing" in line] == [
        "Down (%s/down) is failing: HTTP 500 Oops 31m" % server.url]
    assert tracker.main(["--once", "--json", "--providers", providers]) == 1
    out = capsys.readouterr()[0]
    assert out.count("\n") == 1 and len(out.splitlines()) == 1 and not UNPRINTABLE.search(out)
    event = json.loads(out)
    assert event["message"].startswith("bad [2026-01-01 00:00:00] Product: X Status: Resolved")
    assert event["provider"] == "Evil" and event["id"] == event["link"]


ODD_RSS = (u"\ufeff" + u"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"
     xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:x="urn:example:extension">
  <channel><title><![CDATA[Odd]]></title><x:item>not an entry</x:item>
    <item>
      <media:title>A thumbnail's caption</media:title>
      <title>It&apos;s down &#8212; again&#x21;</title>
      <guid isPermaLink="false"><![CDATA[ urn:odd:1 ]]></guid>
      <dc:date><![CDATA[2026-03-02T10:00:00Z]]></dc:date>
      <description><![CDATA[<p>Resolved - It&apos;s fine&#8217;&amp;&#x2014;</p>]]></description>
      <x:item><x:title>nested, not an entry</x:title></x:item>
    </item>
    <item><title><![CDATA[No id, no date]]></title><link><![CDATA[https://x.test/2]]></link></item>
    <item><title>No id, no link, no date</title></item>
  </channel>
</rss>
""").replace(u"\n", u"\r\n").encode("utf-8")


def test_odd_but_legal_rss_reads_as_meant():
    # Defences: _children prefers the item's own <title> to <media:title>;
    # items are rss/channel/item, not any <x:item>.  The rest (BOM, CRLF,
    # CDATA, &apos; and numeric entities, missing ids and dates) must simply work.
    first, second, third = tracker.parse_feed(ODD_RSS)
    assert (first.id, first.title) == ("urn:odd:1", u"It's down \u2014 again!")
    assert first.updates == (tracker.Update(at("2026-03-02 10:00"), "Resolved",
                                            u"It's fine\u2019&\u2014"),)
    assert (second.id, second.link, second.updates[0].time) == ("https://x.test/2",) * 2 + (None,)
    assert third.id.startswith("sha1:") and third.updates[0].message == "No id, no link, no date"
    event = tracker.diff_entries({}, [third], history=1, provider="P")[0][0]
    assert tracker.format_event(event).startswith("[no date] Product: P\n")


def test_odd_but_legal_atom_extension_does_not_shadow_the_entry():
    # Defence: _children (own namespace first) and entries of the feed's own namespace.
    feed = b"""<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"
      xmlns:ext="urn:example:ext"><ext:entry><ext:id>no</ext:id></ext:entry>
      <entry><ext:title>Shadow</ext:title><ext:id>shadow</ext:id><title>Real</title>
      <id>urn:real</id><updated>2026-03-02T10:00:00Z</updated><summary>Text</summary>
      </entry></feed>"""
    (entry,) = tracker.parse_feed(feed)
    assert (entry.id, entry.title) == ("urn:real", "Real")


@pytest.mark.parametrize("declaration, raw, text", [
    (b'<?xml version="1.0" encoding="ISO-8859-1"?>', b"Caf\xe9", u"Caf\xe9"),
    (b'<?xml version="1.0" encoding="windows-1252"?>', b"\x93Caf\xe9\x94", u"\u201cCaf\xe9\u201d"),
    # wrong: UTF-8 declared or implied, Windows-1252 bytes (read as such)
    (b'<?xml version="1.0" encoding="utf-8"?>', b"\x93Caf\xe9\x94", u"\u201cCaf\xe9\u201d"),
    (b"", b"Caf\xe9 \xc3\xa9", u"Caf\xe9 \xe9"),
])
def test_declared_and_misdeclared_charsets(declaration, raw, text):
    # Defence (the last two): recode_misdeclared; expat stopped at the first such byte.
    body = declaration + b"<rss><channel><item><title>" + raw + b"</title></item></channel></rss>"
    assert tracker.parse_feed(body)[0].title == text


def test_duplicate_ids_and_out_of_order_entries_print_once_oldest_first(server):
    # Odd but legal: the first of two entries with one id counts; events come
    # oldest first, an undated one before them.
    server.script.set("/f", openai_feed(OPENAI_NO_COMPONENTS))
    late = openai_entry("B", "b", "2026-09-15T10:00:00Z", "Investigating", "late")
    early = openai_entry("A", "a", "2026-09-15T09:00:00Z", "Investigating", "early")
    again = openai_entry("B", "b again", "2026-09-15T11:00:00Z", "Investigating", "dup")
    undated = openai_entry("C", "c", "", "Investigating", "undated")
    changed = []

    def until(lines, logs):
        if len(server.script.requests) >= 2 and not changed:
            server.script.set("/f", openai_feed(late, OPENAI_NO_COMPONENTS, early, again, undated))
            changed.append(len(server.script.requests))
        return changed and len(server.script.requests) >= changed[0] + 4

    lines, logs, _ = run_tracker([tracker.Provider(server.url + "/f", "P")],
                                 tracker.Config(interval=0.02), until)
    assert [line.splitlines()[1] for line in lines] == [
        "Status: Investigating - undated", "Status: Investigating - early",
        "Status: Investigating - late"]
    assert logs == []


def test_thousands_of_entries_parse_and_diff_quickly():
    # Odd but legal; MAX_ELEMENTS must leave room for it.
    items = "".join(rss_item("Incident %d" % n, "urn:n:%d" % n, "Mon, 02 Mar 2026 10:00:00 GMT",
                             "Resolved - fixed.") for n in range(5000))
    started = time.monotonic()
    entries = tracker.parse_feed(rss_feed(items))
    events, marks, _ = tracker.diff_entries({}, entries, True)
    assert len(entries) == len(marks) == 5000 and events == []
    assert time.monotonic() - started < 3.0


def test_a_feed_of_too_many_elements_is_refused_quickly():
    # Defence: _parse_bounded stops at MAX_ELEMENTS.  4 MB of <item/> built a
    # 250 MB tree and took 8 s to turn into half a million entries.
    body = b"<rss><channel>" + b"<item/>" * 500000 + b"</channel></rss>"
    started = time.monotonic()
    with pytest.raises(tracker.FeedError, match="more than 100000 XML elements; refused"):
        tracker.parse_feed(body)
    assert time.monotonic() - started < 2.0


HOSTILE_MARKUP = r'''
import sys, time
sys.path.insert(0, sys.argv[1])
from xml.sax.saxutils import escape
import openai_status_tracker as tracker
N = 256 * 1024
SHAPES = [
    "<" * N, "<small>" * (N // 7), "<small>x</small>" * (N // 16),
    "<small>a</small><strong>" * (N // 24), "<b>Status:" * (N // 10),
    "<b>Status: x</b><b>Affected components</b>" + "<li>" * (N // 4),
    "<li" * (N // 3), "<script" * (N // 7), "<!--" * (N // 4), "<br" * (N // 3),
    "Affected products: A" + " " * N + "B", "<small>" + "a" * N + "</small><strong>R</strong>",
    "&#" + "9" * (4 * N) + ";", "&#x" + "f" * (4 * N) + ";",
]
for shape in SHAPES:
    body = ('<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>x</id><updated>%s</updated>'
            '<content type="html">%s</content></entry></feed>'
            % ("Mon, %s Jan 2026 10:00:00 GMT" % ("9" * 4 * N), escape(shape)))
    started = time.monotonic()
    tracker.parse_feed(body.encode())
    print("%.3f %s" % (time.monotonic() - started, shape[:12]))
'''


def test_hostile_markup_is_parsed_in_linear_time():
    # Defence: the linear patterns (_TAG, _STATUSPAGE_BLOCK, _LIST_ITEM, ...),
    # unescape() and parse_date's length check.  re holds the GIL, so one
    # quadratic match on a 4 MB entry froze every feed for hours.  In a
    # subprocess, so that a regression fails by timeout, not by hanging.
    result = subprocess.run([sys.executable, "-c", HOSTILE_MARKUP, HERE], timeout=60,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    assert result.returncode == 0, result.stderr
    seconds = [float(line.split()[0]) for line in result.stdout.splitlines()]
    assert len(seconds) == 14 and max(seconds) < 2.0, result.stdout


def write_bytes(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("make, message", [
    (lambda tmp: str(tmp), "not a regular file"),
    (lambda tmp: write(tmp, "p.txt", ""), "no feeds listed"),
    (lambda tmp: write(tmp, "p.txt", "# only comments\n\n"), "no feeds listed"),
    (lambda tmp: write(tmp, "p.txt", "gopher://x.test/feed\n"), "not an http or https URL"),
    (lambda tmp: write(tmp, "p.txt", "status.example.com/feed\n"), "not an http or https URL"),
    (lambda tmp: write_bytes(tmp, "p.txt", b"https://x.test/\xff\xfe\n"), "not UTF-8 text"),
], ids=["a directory", "empty", "comments only", "gopher", "no scheme", "not UTF-8"])
def test_a_bad_providers_file_is_one_line_on_stderr_and_exit_2(tmp_path, capsys, make, message):
    # Defence: load_providers/parse_providers raise ConfigError; main() prints it.
    assert tracker.main(["--once", "--providers", make(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and message in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_as_providers_file_is_refused_not_waited_on(tmp_path, capsys):
    path = str(tmp_path / "fifo")
    os.mkfifo(path)
    assert tracker.main(["--providers", path]) == 2
    assert capsys.readouterr()[1] == "error: %s: not a regular file\n" % path


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads a file whatever its mode")
def test_an_unreadable_providers_file_is_one_line_and_exit_2(tmp_path, capsys):
    path = write(tmp_path, "p.txt", "https://x.test/feed\n")
    os.chmod(path, 0)
    assert tracker.main(["--providers", path]) == 2
    assert capsys.readouterr()[1] == "error: %s: cannot read: Permission denied\n" % path


@pytest.mark.parametrize("args, message", [
    (["--providers", "{dir}"], "not a regular file"),
    (["--providers", "{empty}"], "no feeds listed"),
    (["--interval", "0"], "must be greater than 0, not 0"),
    (["--interval", "-5"], "must be greater than 0, not -5"),
    (["--timeout", "0"], "must be greater than 0, not 0"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_bad_configuration_exits_2_with_the_reason_and_no_traceback(tmp_path, args, message):
    # Defence: main() turns ConfigError into "error: ..." and exit 2; so does
    # the parser's error(), without argparse's usage line.
    empty = write(tmp_path, "empty.txt", "")
    args = [a.replace("{dir}", str(tmp_path)).replace("{empty}", empty) for a in args]
    result = subprocess.run([sys.executable, SCRIPT] + args, timeout=30,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    assert result.returncode == 2 and result.stdout == ""
    assert "Traceback" not in result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_verbose_logs_the_expat_version(server, tmp_path, capsys):
    server.script.set("/oa", openai_feed(OPENAI_NO_COMPONENTS))
    providers = write(tmp_path, "p.txt", "%s/oa OpenAI\n" % server.url)
    assert tracker.main(["--once", "-v", "--providers", providers]) == 0
    assert "expat %s\n" % xml.parsers.expat.EXPAT_VERSION in capsys.readouterr()[1]


# ---------------------------------------------------------------- the real captured feeds

@pytest.mark.parametrize("name, count", [
    ("openai-incidentio-history-20260914.atom", 87),
    ("openai-incidentio-history-20260903-trimmed.atom", 4),
    ("openai-incidentio-history-rss-2026-embedded-excerpt.rss", 1),
    ("github-statuspage-history-20260709-ongoing.atom", 25),
    ("anthropic-claude-statuspage-history-20261008.atom", 25),
])
def test_real_feeds_parse_with_dates_and_labels(name, count):
    entries = tracker.parse_feed(shared(name))
    assert len(entries) == count
    assert all(u.time is not None and u.label and u.message for e in entries for u in e.updates)


def test_real_github_ongoing_then_resolved_prints_only_the_new_blocks():
    events, marks, _ = tracker.diff_entries(
        {}, tracker.parse_feed(shared("github-statuspage-history-20260709-ongoing.atom")), True)
    assert [tracker.state_at(e.entry, e.index) for e in events] == ["investigating"]
    events, _, _ = tracker.diff_entries(
        marks, tracker.parse_feed(shared("github-statuspage-history-20260710.atom")))
    labels = [e.entry.updates[e.index].label for e in events]
    assert labels[-1] == "Resolved" and len(labels) == 11
    times = [e.entry.updates[e.index].time for e in events]
    assert times == sorted(times) and times[0] > at("2026-07-09 06:01")


def test_real_github_maintenance_scheduled_in_progress_completed():
    names = ["github-statuspage-history-20250528-maint-scheduled.atom",
             "github-statuspage-history-20250529-maint-inprogress.atom",
             "github-statuspage-history-20250531-maint-completed.atom"]
    marks, printed = {}, []
    for number, name in enumerate(names):
        events, new, _ = tracker.diff_entries(marks, tracker.parse_feed(shared(name)), number == 0)
        marks.update(new)
        printed += [(e.entry.id, e.entry.title, e.entry.updates[e.index].label) for e in events
                    if tracker.is_maintenance(e.entry)]
    assert ("In progress", "Completed") == tuple(p[2] for p in printed[-2:])
    assert len(printed) == len(set(printed))


def test_real_claude_feed_first_poll_shows_the_open_incident():
    events, _, _ = tracker.diff_entries(
        {}, tracker.parse_feed(shared("anthropic-claude-statuspage-history-20261008.atom")),
        True, 0, "Claude")
    assert [tracker.format_event(e).splitlines()[0] for e in events] == [
        "[2026-10-07 21:44:00] Product: Claude"]


def newest_events(provider, name):
    """An Event for the newest update of each entry of a real capture."""
    return [tracker.Event(provider, "update", entry, 0, tracker.entry_key(entry.id))
            for entry in tracker.parse_feed(shared(name))]


def test_only_skip_and_no_maintenance_choose_events_of_real_feeds_by_field():
    events = (newest_events("OpenAI", "openai-incidentio-history-20260914.atom") +
              newest_events("GitHub", "github-statuspage-history-20250529-maint-inprogress.atom"))

    def kept(*args):
        config = tracker.Config(**args[0]) if args else tracker.Config()
        return [e for e in events if tracker.wanted(e, config)]

    def rules(*texts):
        return tuple(tracker.parse_filter(text) for text in texts)
    assert kept() == events
    conversations = [e for e in events if "Conversations" in e.entry.components]
    assert 0 < len(conversations) < len(events)
    assert kept(dict(only=rules("component:^conversations$"))) == conversations
    assert kept(dict(skip=rules("PROVIDER:openai"))) == [e for e in events if e.provider == "GitHub"]
    maintenance = [e for e in events if tracker.is_maintenance(e.entry)]
    assert maintenance and all(e.provider == "GitHub" for e in maintenance)
    assert kept(dict(maintenance=False)) == [e for e in events if e not in maintenance]
    resolved = [e for e in events if tracker.state_at(e.entry, 0) == "resolved"]
    assert 0 < len(resolved) < len(events)
    assert kept(dict(skip=rules("state:^resolved$"))) == [e for e in events if e not in resolved]
    # no field: anything the event prints, its title and message among it
    codex = [e for e in events if "codex" in (e.entry.title + e.entry.updates[0].message).lower()
             or any("codex" in c.lower() for c in e.entry.components)]
    assert codex and kept(dict(only=rules("Codex"))) == codex
    # several --only: any of them; --skip wins over --only
    both = kept(dict(only=rules("component:^conversations$", "provider:github"),
                     skip=rules("title:.")))
    assert both == []


def test_filters_leave_events_out_for_good_and_say_how_many(server, tmp_path, capsys):
    server.script.set("/gh", shared("github-statuspage-history-20250529-maint-inprogress.atom"))
    server.script.set("/oa", shared("openai-incidentio-history-20260914.atom"))
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n%s/oa OpenAI\n" % (server.url, server.url))
    state = str(tmp_path / "state.json")
    args = ["--once", "--history", "3", "--providers", providers, "--state", state]
    assert tracker.main(args + ["--no-maintenance", "--skip", "provider:^openai$"]) == 0
    out, err = capsys.readouterr()
    products = [line for line in out.splitlines() if "Product:" in line]
    assert products and all("Product: GitHub" in line for line in products)
    assert "maintenance" not in out.lower()
    filtered = int(re.search(r" filtered=(\d+)", err).group(1))
    assert filtered >= 3 + 1      # OpenAI's three, and the maintenance in progress
    assert tracker.main(args) == 0   # no filters now: what was left out stays out
    out, err = capsys.readouterr()
    assert out == "" and "filtered=" not in err


@pytest.mark.parametrize("option", ["--only", "--skip"])
@pytest.mark.parametrize("pattern, why", [
    ("state:(unclosed", "bad regular expression '(unclosed': missing ),"),
    ("a{4294967296}", "bad regular expression 'a{4294967296}': the repetition number is too large"),
    ("(" * 2000 + ")" * 2000, "bad regular expression '" + "(" * 59 + "…': nested too deep"),
    ("compnent:codex", "unknown field 'compnent' (known: provider, product, component, state, "
                       "title; write \\: for a colon)"),
])
def test_a_bad_filter_is_exit_2_naming_the_pattern(option, pattern, why, capsys):
    with pytest.raises(SystemExit) as exit_:
        tracker.main([option, pattern, "--once"])
    assert exit_.value.code == 2
    err = capsys.readouterr()[1]
    assert "argument %s: %s" % (option, why) in err and "Traceback" not in err


def test_a_filter_reads_a_field_as_the_output_writes_it_and_json_as_printed():
    assert tracker.parse_filter("Product: GitHub")[:1] == ("product",)
    assert tracker.parse_filter("Product: GitHub").pattern.pattern == "GitHub"
    assert tracker.parse_filter("components:^codex").field == "component"
    assert tracker.parse_filter("Status\\: In progress").field == ""
    event = newest_events("GitHub", "github-statuspage-history-20250529-maint-inprogress.atom")[0]
    label = event.entry.updates[0].label
    as_json = tracker.Config(json=True, only=(tracker.parse_filter('"label": "%s"' % label),))
    assert tracker.wanted(event, as_json)
    assert not tracker.wanted(event, as_json._replace(json=False))


# Statuspage's API: GitHub's history.atom capture of 2025-05-31 beside an incidents.json
# built from it and from what the real API said of each of its incidents (testdata/)
GITHUB_MAY_31 = "github-statuspage-history-20250531-maint-completed.atom"
IMPACTS = json.loads(shared("github-statuspage-impact-excerpt.json").decode())["items"]


def statuspage_site(server, tmp_path, feed=GITHUB_MAY_31, api=True, robots=None):
    """Serve a GitHub capture at /history.atom, and its incidents.json unless api is
    False (or bytes to serve instead, or an int: that status), robots.txt if given
    (bytes, or an int: that status); return providers.txt."""
    server.script.set("/history.atom", shared(feed))
    if api is True:
        server.script.set("/api/v2/incidents.json",
                          statuspage_incidents_json(shared(feed), IMPACTS))
    elif isinstance(api, int):
        server.script.set("/api/v2/incidents.json", b"down", status=api)
    elif api:
        server.script.set("/api/v2/incidents.json", api)
    if isinstance(robots, int):
        server.script.set("/robots.txt", b"down", status=robots)
    elif robots is not None:
        server.script.set("/robots.txt", robots)
    return write(tmp_path, "p.txt", "%s/history.atom GitHub\n" % server.url)


def printed_products(out):
    """(product, incident link) of each event printed."""
    lines = out.splitlines()
    return [(line[len("[2025-05-28 11:49:00] Product: "):],
             re.search(r"\((https://[^)]+)\)$", lines[number + 2]).group(1))
            for number, line in enumerate(lines) if " Product: " in line]


def test_a_github_event_names_its_components_and_impact_from_the_statuspage_api(
        server, tmp_path, capsys):
    providers = statuspage_site(server, tmp_path)
    assert tracker.main(["--once", "--history", "8", "--providers", providers]) == 0
    products = printed_products(capsys.readouterr()[0])
    assert len(products) == 8
    for product, link in products:
        named = IMPACTS[link]["components"]
        assert product == ("GitHub - " + ", ".join(named) if named else "GitHub"), link
    assert any(product != "GitHub" for product, _ in products)
    assert tracker.main(["--once", "--history", "8", "--json", "--providers", providers]) == 0
    events = [json.loads(line) for line in capsys.readouterr()[0].splitlines()]
    for event in events:
        said = IMPACTS[event["link"]]
        assert event["impact"] == said["impact"]
        assert event["component_status"] == dict.fromkeys(said["components"] or (), "operational")
    asked = [path for path, _ in server.script.requests]
    assert asked.count("/api/v2/incidents.json") == 2 and asked.count("/robots.txt") == 2


def test_robots_txt_and_the_api_keep_no_idle_connection(server, tmp_path):
    # asked once a day, or once per change: an idle socket for each would
    # hold a descriptor and a place in the keep-alive budget for nothing
    statuspage_site(server, tmp_path)
    api = tracker.StatuspageApi(tracker.Fetcher())
    entries, note = api.enrich(server.url + "/history.atom",
                               tracker.parse_feed(shared(GITHUB_MAY_31)))
    assert note == "" and any(entry.components for entry in entries)
    asked = [(path, port) for (path, headers), port in
             zip(server.script.requests, server.script.peers)]
    assert [path for path, _ in asked] == ["/robots.txt", "/api/v2/incidents.json"]
    assert all(headers.get("Connection") == "close" for _, headers in server.script.requests)
    deadline = time.monotonic() + 5
    while not set(port for _, port in asked) <= set(server.script.closed):
        assert time.monotonic() < deadline, (asked, server.script.closed)
        time.sleep(0.01)


def test_the_api_is_asked_with_its_etag_and_a_304_keeps_what_it_said(server, tmp_path):
    statuspage_site(server, tmp_path)
    built = statuspage_incidents_json(shared(GITHUB_MAY_31), IMPACTS)
    server.script.set("/api/v2/incidents.json", built, etag='W/"api-1"')
    api = tracker.StatuspageApi(tracker.Fetcher())
    entries = tracker.parse_feed(shared(GITHUB_MAY_31))
    first, note = api.enrich(server.url + "/history.atom", entries)
    again, second_note = api.enrich(server.url + "/history.atom", entries)
    assert note == second_note == "" and first == again
    assert any(entry.components for entry in again)
    asked = [headers.get("If-None-Match") for path, headers in server.script.requests
             if path == "/api/v2/incidents.json"]
    assert asked == [None, 'W/"api-1"']


def test_the_api_is_asked_once_per_change_never_per_poll(server, tmp_path, capsys):
    providers = statuspage_site(server, tmp_path)
    server.script.set("/history.atom", shared(GITHUB_MAY_31), etag='W/"1"')
    state = str(tmp_path / "state.json")
    for _ in range(3):     # the first poll reads the feed; then 304s
        assert tracker.main(["--once", "--providers", providers, "--state", state]) == 0
    asked = [path for path, _ in server.script.requests]
    assert asked.count("/history.atom") == 3 and asked.count("/api/v2/incidents.json") == 1
    assert capsys.readouterr()[0] == ""    # nothing open in that capture, no --history


@pytest.mark.parametrize("how, note", [
    (dict(api=500), "/api/v2/incidents.json: HTTP 500 Internal Server Error: no components"),
    (dict(api=b'{"page": {}, "incidents": []}'), "incidents.json names none of the feed's"),
    (dict(api=b"<html>Bad gateway</html>"), "/api/v2/incidents.json: not JSON: no components"),
    (dict(api=b'{"incidents": {"id": 1}}'), "not the JSON of Statuspage's API"),
    (dict(robots=b"User-agent: *\nDisallow: /api/\n"), "robots.txt disallows"),
    (dict(robots=503), "robots.txt: HTTP 503 Service Unavailable: no components"),
    # urllib.robotparser takes "\xb2" for a digit, then int() refuses it
    (dict(robots=u"User-agent: *\nCrawl-delay: \xb2\n".encode("utf-8")),
     "robots.txt: not understood (ValueError: invalid literal for int()"),
    (dict(flag="--no-api"), None),
], ids=["API down", "no match", "HTML", "other JSON", "robots.txt disallows",
        "robots.txt down", "robots.txt breaks robotparser", "--no-api"])
def test_without_the_api_events_print_on_time_without_components(
        server, tmp_path, capsys, how, note):
    flag = how.pop("flag", None)
    providers = statuspage_site(server, tmp_path, **how)
    args = ["--once", "-v", "--history", "8", "--providers", providers] + ([flag] if flag else [])
    assert tracker.main(args) == 0
    out, err = capsys.readouterr()
    assert [product for product, _ in printed_products(out)] == ["GitHub"] * 8
    if note:
        assert "GitHub: " in err and note in err
    asked = [path for path, _ in server.script.requests]
    if flag or "robots" in how:
        assert "/api/v2/incidents.json" not in asked
    if flag:
        assert "/robots.txt" not in asked


def test_an_updates_own_affected_components_win_over_the_incidents():
    # incident 0hkbgpcpbkc6 as GitHub's API gave it (GitHub-Incident-History), trimmed:
    # its first update names Codespaces; the incident lists it too, with another.  That
    # update's time is written in a page's own offset, as many pages do: 10:50 UTC.
    api = json.dumps({"incidents": [{
        "id": "0hkbgpcpbkc6", "impact": "minor", "incident_updates": [
            {"status": "resolved", "display_at": "2022-08-15T13:18:46.004Z",
             "affected_components": None},
            {"status": "investigating", "display_at": "2022-08-15T04:50:42.871-06:00",
             "affected_components": [{"code": "h2ftsgbw7kmk", "name": "Codespaces",
                                      "old_status": "operational",
                                      "new_status": "degraded_performance"}]}],
        "components": [{"id": "h2ftsgbw7kmk", "name": "Codespaces", "status": "operational"},
                       {"id": "x", "name": "Actions", "status": "operational"}]}]}).encode()
    [incident] = tracker.parse_incidents(api).values()
    link = "https://www.githubstatus.com/incidents/0hkbgpcpbkc6"
    entry = first_event(github_feed(GITHUB_OPEN)).entry._replace(link=link)
    first = tracker.Update(at("2022-08-15 10:50"), "Investigating", "We are investigating.")
    last = tracker.Update(at("2022-08-15 13:18"), "Resolved", "This incident has been resolved.")
    opened = tracker.with_api_components(entry._replace(updates=(first,)), incident)
    assert (opened.components, opened.statuses, opened.impact) == (
        ("Codespaces",), ("degraded_performance",), "minor")
    closed = tracker.with_api_components(entry._replace(updates=(last, first)), incident)
    assert (closed.components, closed.statuses) == (("Codespaces", "Actions"),
                                                    ("operational", "operational"))


def test_the_api_coming_and_going_never_changes_which_events_print(server, tmp_path, capsys):
    # The same two captures in a row, with the API up then down, and with no API at
    # all: the same updates print, once each; only their products differ.
    runs = {}
    for name, api in (("api", [True, 500]), ("none", [False, False])):
        state = str(tmp_path / ("%s.json" % name))
        printed = []
        for feed, answer in zip(["github-statuspage-history-20250529-maint-inprogress.atom",
                                 GITHUB_MAY_31], api):
            providers = statuspage_site(server, tmp_path, feed, api=answer)
            assert tracker.main(["--once", "--providers", providers, "--state", state]) == 0
            out = capsys.readouterr()[0]
            printed.append([line for line in out.splitlines() if line.startswith("Status: ")])
        runs[name] = printed
    assert runs["api"] == runs["none"] and runs["api"][1]


# ---------------------------------------------------------------- delivery: webhooks and commands

def openai_lines():
    """--json lines of real events: the newest update of each entry of the OpenAI capture."""
    return [tracker.format_json(event)
            for event in newest_events("OpenAI", "openai-incidentio-history-20260914.atom")]


def long_event_line(size):
    """A --json line whose texts are longer than any service takes, with Slack's and
    Discord's special characters in them."""
    item = json.loads(openai_lines()[0])
    item.update(title="T<&>|" * 60, message="@everyone <!channel> " * size,
                product="OpenAI - " + "Component, " * 20)
    return json.dumps(item)


@pytest.mark.parametrize("text, kind, shown", [
    ("https://hooks.slack.com/services/T000/B000/XXXX", "slack", "slack https://hooks.slack.com/…"),
    ("https://discord.com/api/webhooks/123/tok-en", "discord", "discord https://discord.com/…"),
    ("https://discordapp.com/api/webhooks/123/tok", "discord", "discord https://discordapp.com/…"),
    ("https://discord.com/channels/1/2", "webhook", "webhook https://discord.com/…"),
    ("https://prod-01.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/"
     "invoke?api-version=2016-06-01&sig=SECRET", "teams", "teams https://prod-01.westeurope."
     "logic.azure.com:443/…"),
    ("https://default1a2b.3c.environment.api.powerplatform.com:443/powerautomate/automations/"
     "direct/workflows/abc/triggers/manual/paths/invoke?sig=SECRET", "teams",
     "teams https://default1a2b.3c.environment.api.powerplatform.com:443/…"),
    ("https://example.com/hooks/status?token=SECRET", "webhook", "webhook https://example.com/…"),
    ("slack:http://127.0.0.1:8080/hooks/abc", "slack", "slack http://127.0.0.1:8080/…"),
    ("Discord:https://relay.example/x", "discord", "discord https://relay.example/…"),
])
def test_a_notify_url_chooses_its_dialect_by_host_or_prefix_and_is_shown_without_secrets(
        text, kind, shown):
    target = tracker.parse_target(text)
    assert (target.kind, target.shown) == (kind, shown)
    assert "SECRET" not in target.key and target.key.startswith("sha256:")


@pytest.mark.parametrize("text, message", [
    ("ftp://example.com/x", "not an http or https URL"),
    ("hooks.slack.com/services/T/B/X", "not an http or https URL"),
    ("https:///x", "no host"),
])
def test_a_bad_notify_url_is_refused_naming_it_without_its_secret(text, message):
    with pytest.raises(ValueError, match=message):
        tracker.parse_target(text)


def test_slack_gets_text_for_notifications_and_blocks_with_its_characters_escaped():
    line = openai_lines()[0]
    item = json.loads(line)
    message = tracker.slack_message(tracker.event_fields(line))
    assert set(message) == {"text", "blocks"}
    assert message["text"] == tracker.event_text(tracker.event_fields(line))   # no <, & or >
    section, context = message["blocks"]
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert section["text"]["text"] == "*%s*\n<%s|%s>\n*%s* - %s" % (
        item["product"], item["link"], item["title"], item["label"], item["message"])
    assert context["type"] == "context" and context["elements"][0]["type"] == "mrkdwn"
    long = tracker.slack_message(tracker.event_fields(long_event_line(400)))   # 8,400 chars
    text = long["blocks"][0]["text"]["text"]
    assert len(text) <= 3000 and len(long["text"]) <= 3000
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text and "T&lt;&amp;&gt;|" in text
    assert "<!channel>" not in long["text"] and "&lt;!channel&gt;" in long["text"]


def test_discord_gets_one_embed_within_every_limit_and_pings_nobody():
    item = json.loads(openai_lines()[0])
    message = tracker.discord_message(tracker.event_fields(openai_lines()[0]))
    embed, = message["embeds"]
    assert embed["title"] == item["title"] and embed["url"] == item["link"]
    assert embed["timestamp"] == item["time"] and embed["footer"]["text"] == item["product"]
    assert embed["description"].startswith("**%s** - " % item["label"])
    assert message["allowed_mentions"] == {"parse": []}
    long = tracker.discord_message(tracker.event_fields(long_event_line(2000)))
    embed = long["embeds"][0]
    assert len(long["content"]) <= 2000 and len(embed["title"]) <= 256
    assert len(embed["description"]) <= 4096 and len(embed["footer"]["text"]) <= 2048
    assert len(embed["title"]) + len(embed["description"]) + len(embed["footer"]["text"]) <= 6000


def test_teams_gets_a_message_with_an_adaptive_card():
    item = json.loads(openai_lines()[0])
    message = tracker.teams_message(tracker.event_fields(openai_lines()[0]))
    assert message["type"] == "message"
    attachment, = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert [block["type"] for block in card["body"]] == ["TextBlock", "TextBlock", "FactSet"]
    assert card["body"][0]["text"] == item["title"]
    assert {"title": "Product", "value": item["product"]} in card["body"][2]["facts"]
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open", "url": item["link"]}]


SECRET = "whsec_" + base64.b64encode(b"a key only the receiver and the tracker hold").decode()


def verify_standard_webhook(secret, headers, body, now, tolerance=300):
    """The receiver's side of standardwebhooks.com, written from the spec, not from the tracker."""
    message_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    assert abs(now - int(stamp)) <= tolerance
    key = base64.b64decode(secret.split("_", 1)[1])
    expected = base64.b64encode(hmac.new(key, ("%s.%s." % (message_id, stamp)).encode() + body,
                                         hashlib.sha256).digest())
    signatures = [part.split(",", 1)[1].encode() for part in headers["webhook-signature"].split()
                  if part.startswith("v1,")]
    return any(hmac.compare_digest(expected, signature) for signature in signatures)


def test_a_generic_webhook_gets_the_json_event_signed_per_standard_webhooks(server):
    line = openai_lines()[0]
    target = tracker.parse_target(server.url + "/hook?token=abc")
    tracker.deliver(target, line, 5.0, SECRET)
    _, path, headers, body = server.script.posts[-1]
    assert path == "/hook?token=abc" and json.loads(body.decode()) == json.loads(line)
    assert headers["Content-Type"] == "application/json"
    assert headers["webhook-id"] == tracker.split_queued(line)[0]   # a line without its own id
    assert verify_standard_webhook(SECRET, headers, body, time.time())
    assert not verify_standard_webhook(SECRET, headers, body + b" ", time.time())
    other = "whsec_" + base64.b64encode(b"another key").decode()
    assert not verify_standard_webhook(other, headers, body, time.time())
    tracker.deliver(target, line, 5.0)                       # no secret: no signature
    assert "webhook-signature" not in server.script.posts[-1][2]
    assert server.script.posts[-1][2]["webhook-id"] == headers["webhook-id"]   # same on a retry


def recording_courier(target, deliver=None, pace=0.0):
    """A Courier whose retries wait 10 ms; returns (courier, logs, the (tries, retry_after) asked)."""
    logs, delays = [], []

    def delay(tries, retry_after):
        delays.append((tries, retry_after))
        return 0.01
    courier = tracker.Courier(target, deliver or (lambda t, line: tracker.deliver(t, line, 0.3)),
                              logs.append, delay=delay, pace=pace)
    return courier, logs, delays


def test_a_courier_retries_in_order_through_500s_429s_drops_and_a_slow_answer(server):
    lines = openai_lines()[:4]
    path = "/services/T000/B000/SECRETPART"
    server.script.answers[path] = [
        (500, {}, b"oops"), "drop", (429, {"Retry-After": "7"}, b"slow down"),
        (200, {}, b"ok"),                                               # event 1 delivered
        (429, {}, b'{"message": "rate limited", "retry_after": 0.25, "global": false}'),
        0.6,                                    # slower than the 0.3 s deadline: tried again
        (503, {}, b"")]
    target = tracker.parse_target("slack:" + server.url + path)
    courier, logs, delays = recording_courier(target)
    courier.put(lines)
    assert settle(lambda: courier.idle(), 15)
    courier.stop()
    delivered = [json.loads(body.decode())["text"] for _, _, _, body in server.script.posts]
    texts = [tracker.event_text(tracker.event_fields(line)) for line in lines]
    assert delivered == [texts[0]] * 4 + [texts[1]] * 4 + texts[2:]   # in order, none lost
    assert [retry for _, retry in delays] == [None, None, 7.0, 0.25, None, None]
    assert courier.delivered == 4 and courier.refused == 0
    assert logs == ["slack %s/… is failing: HTTP 500 Internal Server Error; retrying with backoff"
                    % server.url,
                    "slack %s/… recovered after 3 failed tries" % server.url,
                    "slack %s/… is failing: HTTP 429 Too Many Requests; retrying with backoff"
                    % server.url,
                    "slack %s/… recovered after 3 failed tries" % server.url]
    assert not any("SECRETPART" in line for line in logs)


def test_a_receiver_that_drips_its_answer_fails_the_delivery_at_its_deadline(server):
    server.script.answers["/hook"] = [dripper(b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n")]
    started = time.monotonic()
    with pytest.raises(tracker.DeliveryError, match="timed out|deadline"):
        tracker.deliver(tracker.parse_target(server.url + "/hook"), openai_lines()[0], 0.3)
    assert time.monotonic() - started < 1.3


def test_a_4xx_refusal_drops_that_event_only_and_says_so(server):
    lines = openai_lines()[:2]
    server.script.answers["/hook"] = [(400, {}, b"invalid_payload")]
    courier, logs, delays = recording_courier(tracker.parse_target(server.url + "/hook"))
    courier.put(lines)
    assert settle(lambda: courier.idle())
    courier.stop()
    assert [json.loads(post[3].decode()) for post in server.script.posts] == \
        [json.loads(line) for line in lines]
    assert (courier.delivered, courier.refused) == (1, 1)
    assert logs == ["webhook %s/… refused an event for good (HTTP 400 Bad Request): dropped"
                    % server.url]


def test_a_courier_paces_its_sends_under_the_service_rate(server):
    target = tracker.parse_target("discord:" + server.url + "/api/webhooks/1/x")
    courier = tracker.Courier(target, lambda t, line: tracker.deliver(t, line, 2.0), [].append)
    courier.put(openai_lines()[:2])
    assert settle(lambda: courier.idle())
    courier.stop()
    times = [post[0] for post in server.script.posts]
    assert len(times) == 2 and times[1] - times[0] >= 0.4 - 0.01


def test_a_full_queue_drops_its_oldest_counted_and_logged():
    release, taken = threading.Event(), []

    def deliver(target, line):
        release.wait(10)
        taken.append(line)
    courier, logs, _ = recording_courier(tracker.parse_target("http://127.0.0.1:9/x"), deliver)
    lines = ["%d" % n for n in range(tracker.NOTIFY_QUEUE + 5)]
    courier.put(lines[:1])
    assert settle(lambda: courier.pending() == lines[:1] and not courier.idle())
    time.sleep(0.05)                               # the courier is in deliver()
    courier.put(lines[1:])
    assert courier.dropped == 5 and logs == [
        "webhook http://127.0.0.1:9/… : 1000 events waiting; dropped the 5 oldest (5 so far)"
        .replace("/… :", "/…:")]
    release.set()
    assert settle(lambda: courier.idle())
    courier.stop()
    assert taken[0] == "0" and taken[1:] == lines[6:]   # the one in flight, then the newest


EXEC_RECORDER = ("import json, os, sys; event = json.load(sys.stdin); "
                 "open(sys.argv[1], 'a').write(json.dumps([event, {k: v for k, v in "
                 "os.environ.items() if k.startswith('TRACKER_')}]) + '\\n'); "
                 "sys.exit(int(sys.argv[2]))")


def exec_target(tmp_path, code=0, script=EXEC_RECORDER):
    record = str(tmp_path / "calls.jsonl")
    command = " ".join(shlex.quote(word) for word in [sys.executable, "-c", script, record,
                                                      str(code)])
    return tracker.parse_target(command, "exec"), record


def test_exec_gets_the_event_as_json_on_stdin_and_tracker_variables(tmp_path):
    line = openai_lines()[0]
    item = json.loads(line)
    target, record = exec_target(tmp_path)
    assert target.shown == "exec %s" % sys.executable
    tracker.deliver(target, line, 10.0)
    (event, environ), = [json.loads(text) for text in open(record)]
    assert event == item
    assert environ == {"TRACKER_PROVIDER": "OpenAI", "TRACKER_PRODUCT": item["product"],
                       "TRACKER_STATE": item["state"], "TRACKER_LABEL": item["label"],
                       "TRACKER_MESSAGE": item["message"], "TRACKER_TITLE": item["title"],
                       "TRACKER_LINK": item["link"], "TRACKER_TIME": item["time"],
                       "TRACKER_ID": item["id"]}


def test_exec_failing_or_too_slow_is_a_failed_delivery(tmp_path):
    target, _ = exec_target(tmp_path, 3)
    with pytest.raises(tracker.DeliveryError, match="^exit status 3$"):
        tracker.deliver(target, openai_lines()[0], 10.0)
    slow, _ = exec_target(tmp_path, script="import time; time.sleep(30)")
    started = time.monotonic()
    with pytest.raises(tracker.DeliveryError, match="still running after 0.2s; killed"):
        tracker.deliver(slow, openai_lines()[0], 0.2)
    assert time.monotonic() - started < 5
    missing = tracker.parse_target("/nonexistent/command --flag", "exec")
    with pytest.raises(tracker.DeliveryError, match="No such file or directory"):
        tracker.deliver(missing, openai_lines()[0], 1.0)


def test_main_once_delivers_to_every_target_before_it_exits(server, tmp_path, capsys):
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    target, record = exec_target(tmp_path)
    code = tracker.main(["--once", "--json", "--providers", providers, "--exec", target.address,
                         "--notify", "slack:%s/slack" % server.url,
                         "--notify", "teams:%s/teams" % server.url,
                         "--notify", "discord:%s/api/webhooks/1/x" % server.url,
                         "--notify", server.url + "/hook"])
    out, err = capsys.readouterr()
    assert code == 0, err
    item = tracker.event_fields(out.strip())
    bodies = dict((path, json.loads(body.decode())) for _, path, _, body in server.script.posts)
    assert bodies == {"/slack": tracker.slack_message(item), "/teams": tracker.teams_message(item),
                      "/api/webhooks/1/x": tracker.discord_message(item),
                      "/hook": json.loads(out)}
    (event, _), = [json.loads(text) for text in open(record)]
    assert event == json.loads(out) and "delivered=5 undelivered=0" in err


def test_main_once_exits_1_when_a_target_stays_down_within_its_timeout(server, tmp_path, capsys):
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    server.script.answers["/down"] = [(500, {}, b"")] * 100
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    started = time.monotonic()
    code = tracker.main(["--once", "--providers", providers, "--timeout", "0.4",
                         "--notify", server.url + "/down"])
    err = capsys.readouterr()[1]
    assert code == 1 and time.monotonic() - started < 5
    assert "webhook %s/… is failing: HTTP 500" % server.url in err
    assert "1 event not delivered (without --state they are lost)" in err


@pytest.mark.parametrize("argv, environ, message", [
    (["--notify", "ftp://x/y"], {}, "error: --notify: not an http or https URL: ftp://x/…"),
    ([], {"TRACKER_NOTIFY": "https://ok.example/a gopher://x/y"}, "not an http or https URL"),
    (["--exec", "  "], {}, "error: --exec needs a command"),
    (["--exec", "'unclosed"], {}, "error: No closing quotation"),
    (["--notify", "https://ok.example/a"], {"TRACKER_WEBHOOK_SECRET": "secret"},
     "error: TRACKER_WEBHOOK_SECRET must start with whsec_"),
    (["--notify", "https://ok.example/a"], {"TRACKER_WEBHOOK_SECRET": "whsec_***"},
     "error: TRACKER_WEBHOOK_SECRET is not whsec_ and base64"),
])
def test_bad_delivery_options_exit_2_before_anything_runs(argv, environ, message, capsys,
                                                          monkeypatch):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert tracker.main(["--once", "--providers", "/nonexistent"] + argv) == 2
    assert message in capsys.readouterr()[1]


def test_events_undelivered_at_a_kill_9_are_delivered_after_the_restart(server, tmp_path):
    # At least once to targets, exactly once to stdout: the outbox is saved
    # with the state, before the event is printed.
    server.script.set("/gh", github_feed(GITHUB_OPEN[1:]))
    server.script.answers["/hook"] = [(503, {}, b"")] * 1000
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    state = str(tmp_path / "state.json")
    args = ("--providers", providers, "--state", state, "--interval", "0.1",
            "--notify", server.url + "/hook")
    run = Running(*args)
    run.wait_for(lambda: run.statuses() and len(server.script.posts) >= 1)
    assert run.finish(signal.SIGKILL) == -signal.SIGKILL
    with open(state) as handle:
        outbox = json.load(handle)["outbox"]
    assert [json.loads(line)["label"] for lines in outbox.values() for line in lines] == \
        ["Identified"]
    server.script.answers["/hook"] = []                  # the receiver is back
    again = Running(*args)
    again.wait_for(lambda: len(server.script.posts) >= 2 and
                   server.script.posts[-1][1] == "/hook" and again.err)
    count = len(server.script.requests)
    again.wait_for(lambda: len(server.script.requests) >= count + 3)
    assert again.finish() == 0
    assert again.statuses() == []                        # stdout: nothing twice
    delivered = json.loads(server.script.posts[-1][3].decode())
    assert delivered["label"] == "Identified"
    with open(state) as handle:
        assert "outbox" not in json.load(handle)         # delivered: gone from the file


def test_a_hand_edited_outbox_costs_its_bad_lines_only(server, tmp_path, capsys):
    server.script.set("/gh", github_feed(GITHUB_OPEN[1:]))
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    state = str(tmp_path / "state.json")
    once(providers, state, capsys)                       # marks saved
    good = openai_lines()[0]
    target = tracker.parse_target(server.url + "/hook")
    with open(state) as handle:
        document = json.load(handle)
    document["outbox"] = {target.key: ["not json", "{}", 7, good], "other": "x"}
    with open(state, "w") as handle:
        json.dump(document, handle)
    code = tracker.main(["--once", "--providers", providers, "--state", state,
                         "--notify", server.url + "/hook"])
    out, err = capsys.readouterr()
    assert code == 0 and out == ""                       # the feeds' marks survived
    assert "4 lines of its outbox not an event: dropped" in err
    assert [json.loads(post[3].decode()) for post in server.script.posts] == [json.loads(good)]


def test_the_outbox_kept_in_the_state_file_is_bounded_oldest_of_the_longest_first():
    outbox = {"a": ["a%d" % n for n in range(10)], "b": ["b0", "b1"]}
    # json.dumps: 6 bytes a line ('"aN", '), 9 a queue ('"a": [], '), 2 for "{}"
    kept, left_out = tracker.bounded_outbox(outbox, 6 * 6 + 2 * 9 + 2)
    assert kept == {"a": ["a6", "a7", "a8", "a9"], "b": ["b0", "b1"]} and left_out == 6
    assert tracker.bounded_outbox(outbox, 10 ** 6) == (outbox, 0)


def test_an_event_too_large_to_keep_is_dropped_counted_and_logged():
    courier, logs, _ = recording_courier(tracker.parse_target("http://127.0.0.1:9/x"),
                                         lambda target, line: None)
    courier.put(["x" * (tracker.NOTIFY_LINE_LIMIT + 1)])
    courier.stop()
    assert courier.dropped == 1 and logs == [
        "webhook http://127.0.0.1:9/…: an event of 16385 bytes dropped (more than 16384)"]


def test_events_stdout_refused_are_withdrawn_from_the_queues_but_the_one_on_its_way():
    release = threading.Event()
    courier, _, _ = recording_courier(tracker.parse_target("http://127.0.0.1:9/x"),
                                      lambda target, line: release.wait(10))
    courier.put(["a", "b", "c", "d"])
    assert settle(lambda: not courier.idle())
    courier.withdraw(["a", "c", "d"])
    assert courier.pending() == ["a", "b"] and courier.changed is False
    release.set()
    assert settle(lambda: courier.idle())
    assert courier.changed is True and courier.pending() == [] and courier.changed is True
    courier.pending(saving=True)
    assert courier.changed is False                      # only a save clears it
    courier.stop()


def test_a_retry_waits_five_minutes_at_most_whatever_the_jitter():
    def retry(tries, retry_after=None, rand=lambda: 0.0):
        return tracker.backoff(tries, tracker.NOTIFY_RETRY_BASE, tracker.NOTIFY_RETRY_CAP,
                               retry_after, rand)
    assert retry(30, rand=lambda: 0.999) == tracker.NOTIFY_RETRY_CAP
    assert retry(1) == 1.0 and retry(3, rand=lambda: 0.5) == 4.0
    assert retry(1, 900.0) == 900.0   # Retry-After wins


def test_a_webhook_url_with_credentials_sends_them_as_basic_auth_and_never_logs_them(server):
    server.script.answers["/hook"] = [(500, {}, b"")]
    target = tracker.parse_target("http://alice:S3cret%40pw@" + server.url[len("http://"):]
                                  + "/hook")
    courier, logs, _ = recording_courier(target)
    courier.put(openai_lines()[:1])
    assert settle(lambda: courier.idle())
    courier.stop()
    assert server.script.posts[-1][2]["Authorization"] == "Basic " + base64.b64encode(
        b"alice:S3cret@pw").decode()
    assert logs and not any("S3cret" in line or "alice" in line for line in logs)
    assert "S3cret" not in target.shown and "S3cret" not in target.key


def test_a_notify_url_with_a_space_is_refused_at_start(capsys):
    assert tracker.main(["--once", "--notify", "https://h.example/tok en SECRET"]) == 2
    err = capsys.readouterr()[1]
    assert "error: --notify: a space or control character in https://h.example/…" in err
    assert "SECRET" not in err


def test_exec_gets_no_secret_and_non_ascii_text_whatever_the_locale(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKER_NOTIFY", "https://hooks.slack.com/services/T/B/SECRET")
    monkeypatch.setenv("TRACKER_WEBHOOK_SECRET", SECRET)
    item = json.loads(openai_lines()[0])
    item["title"] = "Störung in Zürich ✓"
    target, record = exec_target(tmp_path)
    tracker.deliver(target, json.dumps(item, ensure_ascii=False), 10.0)
    (event, environ), = [json.loads(text) for text in open(record)]
    assert environ["TRACKER_TITLE"] == "Störung in Zürich ✓" and event["title"] == item["title"]
    assert "TRACKER_NOTIFY" not in environ and "TRACKER_WEBHOOK_SECRET" not in environ


def test_sigterm_ends_once_waiting_on_a_receiver_and_kills_a_running_command(server, tmp_path):
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    server.script.answers["/hook"] = [20.0]
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    pid_file = str(tmp_path / "pid")
    script = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
    command = " ".join(shlex.quote(word) for word in [sys.executable, "-c", script, pid_file])
    run = Running("--once", "--providers", providers, "--timeout", "30",
                  "--notify", server.url + "/hook", "--exec", command)
    run.wait_for(lambda: server.script.posts and os.path.exists(pid_file) and
                 open(pid_file).read())
    started = time.monotonic()
    assert run.finish(signal.SIGTERM) == 1               # stopped with events undelivered
    assert time.monotonic() - started < 3
    child = int(open(pid_file).read())
    assert settle(lambda: not os.path.exists("/proc/%d" % child) or
                  open("/proc/%d/stat" % child).read().split()[2] == "Z")


@pytest.mark.parametrize("argv, environ, message", [
    (["--exec", "/nonexistent/notify --x"], {}, "error: --exec: no such command: /nonexistent/notify"),
    (["--notify", "https://ok.example/a"], {"TRACKER_WEBHOOK_SECRET": "whsec_AAAA"},
     "error: TRACKER_WEBHOOK_SECRET's key is 3 bytes; at least 16 are needed"),
])
def test_a_missing_command_or_a_weak_secret_exits_2(argv, environ, message, capsys, monkeypatch):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert tracker.main(["--once", "--providers", "/nonexistent"] + argv) == 2
    assert message in capsys.readouterr()[1]


# ---------------------------------------------------------------- restarts, reloads and systemd

class Running(object):
    """The tracker as a subprocess, its stdout and stderr read line by line."""

    def __init__(self, *args, **kwargs):
        self.process = subprocess.Popen(
            [sys.executable, SCRIPT] + list(args), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, universal_newlines=True, **kwargs)
        self.out, self.err = [], []
        self._readers = [self._read(self.process.stdout, self.out),
                         self._read(self.process.stderr, self.err)]

    @staticmethod
    def _read(stream, lines):
        thread = threading.Thread(target=lambda: lines.extend(iter(stream.readline, "")))
        thread.daemon = True
        thread.start()
        return thread

    def wait_for(self, predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert predicate(), (self.out, self.err)

    def send(self, number):
        self.process.send_signal(number)

    def finish(self, number=signal.SIGTERM, timeout=10.0):
        """Send `number` (None: send nothing), wait for the exit code."""
        if number is not None and self.process.poll() is None:
            self.process.send_signal(number)
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return code

    def statuses(self):
        return [line[len("Status: "):].strip() for line in self.out if line.startswith("Status:")]


def once(providers, state, capsys):
    assert tracker.main(["--once", "--providers", providers, "--state", state]) == 0
    out, err = capsys.readouterr()
    return [line[len("Status: "):] for line in out.splitlines() if line.startswith("Status:")], err


def test_state_file_carries_over_restarts_without_repeats_or_misses(server, tmp_path, capsys):
    server.script.set("/gh", github_feed(GITHUB_OPEN[1:]), etag='W/"1"')
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    state = str(tmp_path / "state.json")
    assert once(providers, state, capsys)[0] == ["Identified - We have identified the cause."]
    assert once(providers, state, capsys)[0] == []
    assert server.script.requests[-1][1]["If-None-Match"] == 'W/"1"'   # validators kept too
    # while it was down: three more updates
    server.script.set("/gh", github_feed(GITHUB_RESOLVED, "2026-07-09T13:52:00Z"), etag='W/"2"')
    assert once(providers, state, capsys)[0] == [
        "Update - We are continuing to work on a mitigation.",
        "Update - Actions have recovered.", "Resolved - This incident has been resolved."]
    assert once(providers, state, capsys)[0] == []
    with open(state) as handle:
        saved = json.load(handle)
    assert saved["version"] == 2
    assert len(saved["feeds"][server.url + "/gh"]["seen"]) == 2


def test_a_corrupt_state_file_is_reported_and_set_aside(server, tmp_path, capsys):
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    state = write(tmp_path, "state.json", '{"version": 1, "feeds": {"http://x": [')
    statuses, err = once(providers, state, capsys)
    assert statuses == ["Update - We are continuing to work on a mitigation."]   # a first poll
    assert "state file %s is unusable (not valid JSON" % state in err
    aside = [name for name in os.listdir(str(tmp_path)) if name.startswith("state.json.bad-")]
    assert len(aside) == 1
    assert once(providers, state, capsys)[0] == []    # the new state file works


def format_1_mark(entry):
    """The mark tracker 1.0 saved: crc32 of <updated>, updates seen, crc32 of the text."""
    newest = entry.updates[0]
    text = "\n".join((newest.label, newest.message) + entry.components)
    return (zlib.crc32(entry.updated.encode()) << 48 | len(entry.updates) << 32
            | zlib.crc32(text.encode()))


def test_a_state_file_from_an_older_tracker_keeps_working(server, tmp_path, capsys):
    # the first format: no "version", no validators, no digest, no backoff counters
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    entries = tracker.parse_feed(github_feed(GITHUB_OPEN[1:]))
    seen = {"%016x" % tracker.entry_key(e.id): format_1_mark(e) for e in entries}
    state = write(tmp_path, "state.json", json.dumps(
        {"feeds": {server.url + "/gh": {"seen": seen}}}))
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    assert once(providers, state, capsys)[0] == [
        "Update - We are continuing to work on a mitigation."]


def test_a_crash_while_writing_the_state_leaves_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "state.json")
    old = {"version": 2, "feeds": {"http://x.test/feed": {"seen": {"00000000000000a1": 2}}}}
    tracker.write_atomically(path, json.dumps(old).encode())

    def crash(descriptor):
        raise KeyboardInterrupt("killed while writing")
    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        tracker.write_atomically(path, b'{"version": 1, "feeds": {"http://x.test/fe')
    monkeypatch.undo()
    # a real crash leaves its temporary file behind: loading ignores it
    write(tmp_path, "state.json.tmp-12345", '{"version": 1, "fee')
    logs = []
    [(url, state)] = tracker.StateFile(path, logs.append).load().items()
    assert (url, state.printed.marks, state.printed.gone) == ("http://x.test/feed", {0xa1: 2}, {})
    assert logs == []


def test_sigkill_right_after_printing_then_restart_repeats_nothing(server, tmp_path):
    server.script.set("/gh", github_feed(GITHUB_OPEN[1:]))
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    state = str(tmp_path / "state.json")
    args = ("--providers", providers, "--state", state, "--interval", "0.1")
    run = Running(*args)
    run.wait_for(lambda: run.statuses())
    assert run.finish(signal.SIGKILL) == -signal.SIGKILL
    assert run.statuses() == ["Identified - We have identified the cause."]
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    again = Running(*args)
    again.wait_for(lambda: again.statuses())
    count = len(server.script.requests)
    again.wait_for(lambda: len(server.script.requests) >= count + 3)
    assert again.finish() == 0
    assert again.statuses() == ["Update - We are continuing to work on a mitigation."]
    assert any(line.startswith("summary: feeds=1 polls=") for line in again.err)


def test_sigterm_during_a_poll_stops_at_once_and_restart_repeats_nothing(server, tmp_path):
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    state = str(tmp_path / "state.json")
    args = ("--providers", providers, "--state", state, "--interval", "0.1")
    run = Running(*args)
    run.wait_for(lambda: run.statuses())

    def stall(handler):
        time.sleep(3)
    server.script.set("/gh", stall)
    count = len(server.script.requests)
    run.wait_for(lambda: len(server.script.requests) > count)
    started = time.monotonic()
    assert run.finish() == 0
    assert time.monotonic() - started < 2
    assert not any("Traceback" in line for line in run.err)
    server.script.set("/gh", github_feed(GITHUB_RESOLVED, "2026-07-09T13:52:00Z"))
    again = Running(*args)
    again.wait_for(lambda: len(again.statuses()) >= 2)
    assert again.finish() == 0
    assert again.statuses() == ["Update - Actions have recovered.",
                                "Resolved - This incident has been resolved."]


def test_sighup_reloads_providers_adds_fresh_drops_removed_keeps_the_rest(server, tmp_path):
    server.script.set("/a", github_feed(GITHUB_OPEN))
    server.script.set("/b", openai_feed(OPENAI_RESOLVED))
    server.script.set("/c", openai_feed(OPENAI_RESOLVED.replace("Resolved", "Monitoring")))
    path = write(tmp_path, "p.txt", "%s/a A\n%s/b B\n" % (server.url, server.url))
    run = Running("--providers", path, "--interval", "0.05")
    run.wait_for(lambda: run.statuses() and any(p == "/b" for p, _ in server.script.requests))
    write(tmp_path, "p.txt", "%s/a A\n%s/c C\n" % (server.url, server.url))
    run.send(signal.SIGHUP)
    run.wait_for(lambda: any("reloaded: 2 feeds (1 added, 1 removed)" in l for l in run.err))
    run.wait_for(lambda: len(run.statuses()) >= 2)
    count = len(server.script.requests)
    run.wait_for(lambda: len(server.script.requests) >= count + 6)
    write(tmp_path, "p.txt", "ftp://nope\n")
    run.send(signal.SIGHUP)
    run.wait_for(lambda: any("reload failed, keeping the 2 feeds in force" in l for l in run.err))
    run.send(signal.SIGUSR1)
    run.wait_for(lambda: any(l.startswith("summary: feeds=2 ") for l in run.err))
    count = len(server.script.requests)
    run.wait_for(lambda: len(server.script.requests) >= count + 4)
    assert run.finish() == 0
    assert run.statuses() == ["Update - We are continuing to work on a mitigation.",
                              "Monitoring - All impacted services have now fully recovered."]
    paths = [path for path, _ in server.script.requests]
    last_b = max(i for i, p in enumerate(paths) if p == "/b")
    first_c = min(i for i, p in enumerate(paths) if p == "/c")
    assert last_b < first_c
    assert paths[-4:].count("/a") >= 1 and paths[-4:].count("/c") >= 1


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no unix sockets")
def test_sd_notify_ready_watchdog_and_stopping_reach_a_unix_socket(server, tmp_path):
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    address = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    env = dict(os.environ, NOTIFY_SOCKET=address, WATCHDOG_USEC="200000")
    run = Running("--providers", providers, "--interval", "30", env=env)
    try:
        messages = []
        while messages.count("WATCHDOG=1") < 3:   # pings keep coming, every 0.1 s
            messages.append(sock.recv(256).decode())
        assert messages.count("READY=1") == 1
        assert set(messages) == {"READY=1", "WATCHDOG=1"}
        run.send(signal.SIGTERM)
        while True:
            message = sock.recv(256).decode()
            if message != "WATCHDOG=1":
                break
        assert message == "STOPPING=1"
    finally:
        assert run.finish(None) == 0
        sock.close()


def test_entries_that_leave_and_come_back_are_not_new_until_the_grace_ends():
    both = tracker.parse_feed(openai_feed(OPENAI_RESOLVED, OPENAI_NO_COMPONENTS))
    marks = tracker.diff_entries({}, both, first=True)[1]
    kept = tracker.entry_key(both[0].id)
    printed = tracker.Printed().remembered(marks, now=0.0)
    printed = printed.remembered({kept: marks[kept]}, now=10.0)   # the second one left
    assert tracker.diff_entries(printed.marks, both)[0] == []     # and came back: not new
    printed = printed.remembered({kept: marks[kept]}, now=20.0)
    printed = printed.remembered({kept: marks[kept]}, now=20.0 + tracker.GONE_GRACE + 11)
    assert list(printed.marks) == [kept] and printed.gone == {}


def test_a_state_file_that_cannot_be_written_is_reported_once(tmp_path):
    logs = []
    state = tracker.StateFile(str(tmp_path / "missing-folder" / "state.json"), logs.append)
    feeds = {"http://x.test/feed": tracker.FeedState()}
    assert not state.save(feeds, set(feeds)) and not state.save(feeds, set())
    assert len(logs) == 1 and logs[0].startswith("cannot write state file ")


# ---------------------------------------------------------------- exactly once, whatever the server hands out

GITHUB_ONGOING = "github-statuspage-history-20260709-ongoing.atom"
GITHUB_NEXT_DAY = "github-statuspage-history-20260710.atom"
CLAUDE = "anthropic-claude-statuspage-history-20261008.atom"
OPENAI = "openai-incidentio-history-20260914.atom"
CLAUDE_ETAG = 'W/"7e3e14ea929639ba0df468926ca20ff8"'    # what status.claude.com sent with it


def with_new_entry(feed, entry):
    """A captured Atom feed with one more entry on top."""
    at_ = feed.index(b"<entry>")
    return feed[:at_] + entry.encode("utf-8") + feed[at_:]


def saved_feeds(state):
    with open(state) as handle:
        return json.load(handle)["feeds"]


def test_four_restarts_where_only_some_feeds_change_repeat_nothing_and_miss_nothing(
        server, tmp_path, capsys):
    # Three real captures; between runs only one feed changes (or none).
    script = server.script
    script.set("/gh", shared(GITHUB_ONGOING), etag='W/"gh1"')
    script.set("/claude", shared(CLAUDE), etag=CLAUDE_ETAG)
    script.set("/oa", shared(OPENAI))                       # incident.io: no validators
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n%s/claude Claude\n%s/oa OpenAI\n"
                      % (server.url, server.url, server.url))
    state = str(tmp_path / "state.json")
    statuses, _ = once(providers, state, capsys)             # A: the two open incidents
    assert sorted(status.split(" - ")[0] for status in statuses) == ["Monitoring", "Update"]
    assert len(saved_feeds(state)) == 3
    script.set("/gh", shared(GITHUB_NEXT_DAY), etag='W/"gh2"')
    statuses, _ = once(providers, state, capsys)             # B: GitHub's 11 new blocks
    assert len(statuses) == 11 and statuses[-1].startswith("Resolved - ")
    assert len(saved_feeds(state)) == 3
    assert once(providers, state, capsys)[0] == []           # C: nothing repeated
    assert len(saved_feeds(state)) == 3
    # D: an incident opened and resolved on OpenAI while the tracker was down
    script.set("/oa", with_new_entry(shared(OPENAI), openai_entry(
        "01NEWNEWNEWNEWNEWNEWNEWNEW", "Brief errors", "2026-09-14T05:30:00.000Z",
        "Resolved", "It is over.", ["Chat Completions (Operational)"])))
    assert once(providers, state, capsys)[0] == ["Resolved - It is over."]
    assert len(saved_feeds(state)) == 3
    assert once(providers, state, capsys)[0] == []


STATUSPAGE_3 = GITHUB_OPEN
STATUSPAGE_2 = GITHUB_OPEN[1:]


def test_a_stale_statuspage_copy_between_newer_ones_prints_nothing():
    _, marks = diff({}, github_feed(STATUSPAGE_2), first=True)
    events, marks = diff(marks, github_feed(STATUSPAGE_3))
    assert events == [("Update", "update")]
    for _ in range(3):                                     # 3 -> 2 -> 3 -> 2 ...
        events, marks = diff(marks, github_feed(STATUSPAGE_2))
        assert events == []
        events, marks = diff(marks, github_feed(STATUSPAGE_3))
        assert events == []


def test_a_stale_incidentio_copy_between_newer_ones_prints_nothing():
    older = openai_entry("X1", "Errors", "2026-09-14T03:00:00.000Z", "Investigating", "Looking.")
    newer = openai_entry("X1", "Errors", "2026-09-14T03:30:00.000Z", "Resolved", "Fixed.")
    _, marks = diff({}, openai_feed(older), first=True)
    events, marks = diff(marks, openai_feed(newer))
    assert events == [("Resolved", "update")]
    for _ in range(3):
        assert diff(marks, openai_feed(older))[0] == []
        events, marks = diff(marks, openai_feed(newer))
        assert events == []


def test_a_cdn_alternating_old_and_new_copies_prints_each_update_once_and_logs_stale(server):
    copies = [github_feed(STATUSPAGE_2), github_feed(STATUSPAGE_3)]
    served = []

    def alternate(handler):     # 2, 3, 2, 3, ... blocks, as a CDN with two copies would
        body = copies[len(served) % 2]
        served.append(body)
        reply(handler, body)
    server.script.set("/gh", alternate)
    config = tracker.Config(interval=0.02, history=0, verbose=True)
    lines, logs, _ = run_tracker([tracker.Provider(server.url + "/gh", "GitHub")], config,
                                 lambda lines, logs: len(served) >= 12)
    assert [line.splitlines()[1] for line in lines] == [
        "Status: Identified - We have identified the cause.",           # first poll: open
        "Status: Update - We are continuing to work on a mitigation."]  # then once
    assert any("stale copy: 1 entries older than already seen" in line for line in logs)


def test_a_stale_copy_after_a_restart_does_not_rewind_the_state_file(server, tmp_path, capsys):
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    state = str(tmp_path / "state.json")
    server.script.set("/gh", github_feed(STATUSPAGE_2))
    assert len(once(providers, state, capsys)[0]) == 1
    server.script.set("/gh", github_feed(STATUSPAGE_3))
    assert len(once(providers, state, capsys)[0]) == 1
    marks = saved_feeds(state)[server.url + "/gh"]["seen"]
    server.script.set("/gh", github_feed(STATUSPAGE_2))
    assert once(providers, state, capsys)[0] == []
    assert saved_feeds(state)[server.url + "/gh"]["seen"] == marks
    server.script.set("/gh", github_feed(STATUSPAGE_3))
    assert once(providers, state, capsys)[0] == []


def test_components_listed_in_another_order_are_no_news():
    first = openai_entry("C1", "Errors", "2026-09-14T03:00:00.000Z", "Resolved", "Fixed.",
                         ["Chat Completions (Operational)", "Responses (Operational)"])
    reordered = openai_entry("C1", "Errors", "2026-09-14T03:05:00.000Z", "Resolved", "Fixed.",
                             ["Responses (Operational)", "Chat Completions (Operational)"])
    _, marks = diff({}, openai_feed(first), first=True)
    assert diff(marks, openai_feed(reordered))[0] == []


def test_an_old_block_deleted_and_a_new_one_added_prints_the_new_one():
    _, marks = diff({}, github_feed(GITHUB_OPEN), first=True)
    swapped = [("Jul 9", "06:30", "Monitoring", "A fix is rolling out.")] + GITHUB_OPEN[:2]
    assert diff(marks, github_feed(swapped))[0] == [("Monitoring", "update")]


def test_two_new_blocks_in_the_same_minute_print_one_by_one():
    _, marks = diff({}, github_feed(GITHUB_OPEN), first=True)
    one = [("Jul 9", "06:30", "Monitoring", "A fix is rolling out.")] + GITHUB_OPEN
    events, marks = diff(marks, github_feed(one))
    assert events == [("Monitoring", "update")]
    two = [("Jul 9", "06:30", "Resolved", "Done.")] + one
    assert diff(marks, github_feed(two))[0] == [("Resolved", "update")]


def test_an_undated_item_prints_when_its_state_or_message_changes():
    item = lambda label: rss_item("Database", "urn:db", "", "%s - Replica lag." % label)
    _, marks = diff({}, rss_feed(item("Investigating")), first=True)
    events, marks = diff(marks, rss_feed(item("Resolved")))
    assert events == [("Resolved", "update")]
    assert diff(marks, rss_feed(item("Resolved")))[0] == []


def test_blocks_across_new_year_in_an_entry_with_only_published():
    blocks = statuspage_blocks([("Jan 1", "00:30", "Resolved", "Fixed."),
                                ("Dec 31", "23:50", "Investigating", "Looking.")])
    entry = """<entry><id>tag:x,2005:Incident/1</id><published>2025-12-31T23:50:00Z</published>
      <link href="https://x.test/incidents/1"/><title>T</title>
      <content type="html">%s</content></entry>""" % html.escape(blocks, quote=False)
    feed = ('<feed xmlns="http://www.w3.org/2005/Atom">%s</feed>' % entry).encode()
    [parsed] = tracker.parse_feed(feed)
    assert [u.time for u in parsed.updates] == [at("2026-01-01 00:30"), at("2025-12-31 23:50")]


@pytest.mark.parametrize("written, expected, note", [
    ("Mar 2, 10:00 MSK", "2026-03-02 07:00", ""),
    ("Mar 2, 10:00 -03", "2026-03-02 13:00", ""),
    ("Mar 2, 10:00 +05:30", "2026-03-02 04:30", ""),
    ("Mar 2, 10:00 UTC", "2026-03-02 10:00", ""),
    ("Mar 2, 10:00 XYZT", "2026-03-02 10:00", "XYZT"),
])
def test_block_zones_numeric_named_and_unknown(written, expected, note):
    assert tracker.parse_block_date(written, at("2026-03-02 12:00")) == (at(expected), note)


def test_unknown_block_zone_is_said_at_verbose():
    content = html.escape("<p><small>Mar 2, 10:00 XYZT</small><br><strong>Resolved</strong>"
                          " - Fixed.</p>", quote=False)
    feed = ('<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>i</id><updated>'
            '2026-03-02T10:00:00Z</updated><title>T</title><content type="html">%s</content>'
            '</entry></feed>' % content).encode()
    notes = tracker.diff_entries({}, tracker.parse_feed(feed), True).notes
    assert notes == ["zone 'XYZT' of block date 'Mar 2, 10:00 XYZT' not known; read as UTC"]


def test_a_changed_id_scheme_is_history_not_news_but_a_new_incident_still_prints():
    entries = [openai_entry("A%d" % n, "Old %d" % n, "2026-09-1%dT03:00:00.000Z" % n,
                            "Resolved", "Fixed.") for n in range(1, 5)]
    _, marks = diff({}, openai_feed(*entries), first=True)
    # incident.io fixes its double slash: every id changes; one incident is really new
    moved = [e.replace("//incidents/", "/incidents/") for e in entries]
    new = openai_entry("B1", "New", "2026-09-14T05:00:00.000Z", "Investigating", "Looking.")
    result = tracker.diff_entries(marks, tracker.parse_feed(openai_feed(new, *moved)))
    # The newest old incident is within the hour of the newest news: it prints
    # again (the price of never taking a new incident for history).
    assert [e.entry.title for e in result.events] == ["Old 4", "New"]
    assert result.notes == ["3 entries new to the tracker but older than its newest news by "
                            "over 3600s: remembered as history, not printed"]


def test_one_feed_in_two_spellings_is_one_feed_and_the_dropped_line_is_named(tmp_path, capsys):
    notes = []
    text = ("HTTP://Status.Example.COM:80/x Example\nhttp://status.example.com/x#top Again\n"
            "http://status.example.com/./a/../x Third\nhttps://other.test/feed\tExample  Status\n")
    assert tracker.parse_providers(text, "p.txt", notes) == [
        tracker.Provider("http://status.example.com/x", "Example"),
        tracker.Provider("https://other.test/feed", "Example Status")]
    assert notes == ["p.txt:2: http://status.example.com/x is already listed on line 1; line dropped",
                     "p.txt:3: http://status.example.com/x is already listed on line 1; line dropped"]


# ---------------------------------------------------------------- the state file can never stop it

def deep_nesting(depth):
    return '{"version": 2, "feeds": {"x": %s}}' % ("[" * depth + "]" * depth)


@pytest.mark.parametrize("content, why", [
    ('{"version": "2", "feeds": {}}', "not a tracker state file (format '2')"),
    ('{"version": null, "feeds": {}}', "not a tracker state file (format None)"),
    ('{"version": [1], "feeds": {}}', "not a tracker state file (format [1])"),
    ('{"version": 3, "feeds": {}}', "written by a newer tracker (format 3)"),
    ('{"version": 2, "feeds": {"http://x/": {"gone": {"01": Infinity}}}}',
     "not valid JSON: Infinity is not a number"),
    ('{"version": 2, "feeds": {"http://x/": {"seen": [1, 2]}}}', "'seen' is not an object"),
    ('{"version": 2, "feeds": {"http://x/": {"seen": {"zz": 1}}}}', "bad entry key 'zz'"),
    ('{"version": 2, "feeds": {"http://x/": {"seen": {"01": "1"}}}}', "bad mark '1'"),
    ('{"version": 2, "feeds": {"http://x/": {"failures": true}}}', "'failures' is not a count"),
    ('{"version": 2, "feeds": {"http://x/": []}}', "a feed is not an object"),
    (deep_nesting(200000), "not valid JSON: nested too deep"),
    ('[]', "not a tracker state file"),
], ids=["version str", "version null", "version list", "newer", "Infinity", "seen list",
        "bad key", "mark str", "bool count", "feed list", "deep nesting", "a list"])
def test_any_state_file_content_is_used_or_set_aside_with_one_line(
        server, tmp_path, capsys, content, why):
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    state = write(tmp_path, "state.json", content)
    statuses, err = once(providers, state, capsys)
    assert statuses == ["Update - We are continuing to work on a mitigation."]   # a first poll
    [line] = [line for line in err.splitlines() if "unusable" in line]
    assert line.startswith("state file %s is unusable (%s); moved to %s.bad-" % (state, why, state))
    assert "Traceback" not in err
    assert [n for n in os.listdir(str(tmp_path)) if n.startswith("state.json.bad-")]


def test_an_oversized_state_file_is_set_aside_unread(server, tmp_path, capsys):
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    state = str(tmp_path / "state.json")
    with open(state, "wb") as handle:
        handle.truncate(tracker.MAX_STATE_BYTES + 1)     # sparse: 64 MiB of nothing, instantly
    statuses, err = once(providers, state, capsys)
    assert len(statuses) == 1
    assert "is unusable (larger than %d bytes)" % tracker.MAX_STATE_BYTES in err


def test_a_directory_as_state_file_is_exit_2_and_never_renamed(tmp_path, capsys):
    providers = write(tmp_path, "p.txt", "http://127.0.0.1:9/x\n")
    folder = tmp_path / "state"
    folder.mkdir()
    assert tracker.main(["--once", "--providers", providers, "--state", str(folder)]) == 2
    assert capsys.readouterr()[1] == "error: state file %s: not a regular file\n" % folder
    assert sorted(os.listdir(str(tmp_path))) == ["p.txt", "state"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_the_temporary_state_file_follows_no_planted_link_and_keeps_the_operators_mode(
        tmp_path, monkeypatch):
    path = str(tmp_path / "state.json")
    victim = tmp_path / "victim"
    victim.write_text(u"precious")
    # what the old name scheme (FILE.tmp-<pid>) would have opened
    os.symlink(str(victim), "%s.tmp-%d" % (path, os.getpid()))
    os.mkfifo("%s.tmp-%d" % (path, os.getpid() + 1))
    tracker.write_atomically(path, b'{"version": 2, "feeds": {}}')
    assert victim.read_text() == u"precious"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    os.chmod(path, 0o640)
    tracker.write_atomically(path, b'{"version": 2, "feeds": {}}')
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


# ---------------------------------------------------------------- secrets never shown

def test_a_feed_url_with_secrets_is_redacted_everywhere_and_sent_as_basic_auth(
        server, tmp_path, capsys):
    route = "/gh?token=t0ken"
    server.script.set(route, b"down", status=500)
    url = "http://user:s3cret@%s%s" % (server.url[len("http://"):], route)
    providers = write(tmp_path, "p.txt", url + " GitHub\n")
    state = str(tmp_path / "state.json")
    args = ["--once", "-v", "--providers", providers, "--state", state]
    assert tracker.main(args) == 1
    server.script.set(route, github_feed(GITHUB_OPEN))
    assert tracker.main(args) == 0
    out, err = capsys.readouterr()
    assert "GitHub (http://user:***@%s/gh?token=***) is failing: HTTP 500" % server.url[7:] in err
    with open(state) as handle:
        saved = handle.read()
    for secret in ("s3cret", "t0ken"):
        assert secret not in out + err + saved
    [key] = json.loads(saved)["feeds"]
    assert key.startswith("http://user:***@%s/gh?token=***#sha256=" % server.url[7:])
    authorization = "Basic " + base64.b64encode(b"user:s3cret").decode()
    assert [h.get("Authorization") for path, h in server.script.requests
            if path == route] == [authorization] * 2


def test_basic_auth_follows_a_redirect_to_the_same_origin_only(server):
    other = Server(("127.0.0.1", 0), Handler)
    other.script = Script()
    other.script.set("/feed", b"<rss/>")
    threading.Thread(target=other.serve_forever, kwargs={"poll_interval": SERVER_POLL}).start()
    try:
        server.script.set("/same", b"", status=302, headers={"Location": "/feed"})
        server.script.set("/feed", b"<rss/>")
        server.script.set("/away", b"", status=302, headers={
            "Location": "http://127.0.0.1:%d/feed" % other.server_address[1]})
        base = "http://u:p@" + server.url[len("http://"):]
        fetch = tracker.Fetcher()
        assert fetch(base + "/same").body == fetch(base + "/away").body == b"<rss/>"
        sent = dict((path, h.get("Authorization")) for path, h in server.script.requests)
        assert sent["/feed"] == "Basic " + base64.b64encode(b"u:p").decode()
        assert other.script.requests[0][1].get("Authorization") is None
    finally:
        other.shutdown()
        other.server_close()


# ---------------------------------------------------------------- printing is part of delivery

def test_events_stdout_refuses_stay_unprinted_and_the_next_run_prints_them(server, tmp_path):
    server.script.set("/gh", github_feed(GITHUB_OPEN[2:]))
    providers = [tracker.Provider(server.url + "/gh", "GitHub")]
    path = str(tmp_path / "state.json")

    def run(emit):
        logs = []
        state = tracker.StateFile(path, logs.append)
        poller = tracker.Tracker(providers, tracker.Config(), emit=emit, log=logs.append,
                                 state_file=state, saved=state.load())
        return poller.run(rounds=1), logs

    assert run(lambda text: None) == (0, [])                    # the open incident
    server.script.set("/gh", github_feed(GITHUB_RESOLVED, "2026-07-09T13:52:00Z"))
    taken = []

    def closing_after_one(text):
        if taken:
            raise BrokenPipeError(32, "Broken pipe")
        taken.append(text.splitlines()[1])
    code, logs = run(closing_after_one)
    assert code == 1 and taken == ["Status: Identified - We have identified the cause."]
    assert logs == ["stdout is closed (broken pipe): 3 events not "
                    "printed; the next run with this --state prints them; stopping"]
    lines = []
    assert run(lines.append)[0] == 0
    assert [line.splitlines()[1] for line in lines] == [
        "Status: Update - We are continuing to work on a mitigation.",
        "Status: Update - Actions have recovered.",
        "Status: Resolved - This incident has been resolved."]


def test_a_closed_stdout_is_one_line_exit_1_and_the_next_run_prints_what_it_lost(
        server, tmp_path):
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    args = [sys.executable, SCRIPT, "--once", "--providers", providers,
            "--state", str(tmp_path / "state.json")]
    reader, writer = os.pipe()
    os.close(reader)                  # as after `| head -n 0`, or journald gone
    try:
        done = subprocess.run(args, stdout=writer, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=30)
    finally:
        os.close(writer)
    assert done.returncode == 1
    assert [line for line in done.stderr.splitlines() if "stdout" in line] == [
        "stdout is closed (broken pipe): 1 event not printed; "
        "the next run with this --state prints them; stopping"]
    for noise in ("Traceback", "Exception ignored", "BrokenPipeError"):
        assert noise not in done.stderr
    again = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=30)
    assert again.returncode == 0
    assert again.stdout.splitlines()[1] == \
        "Status: Update - We are continuing to work on a mitigation."


# ---------------------------------------------------------------- HTTP as servers really speak it

TLS_PEM = os.path.join(HERE, "testdata", "tls-localhost.pem")   # self-signed, CN=localhost


def tls_contexts():
    """(server context, client context that trusts it) for 127.0.0.1."""
    import ssl
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(TLS_PEM)
    return served, ssl.create_default_context(cafile=TLS_PEM)


def answering_over_tls(context, answer):
    """A raw-server behaviour: TLS, then `answer` (bytes) to each request."""
    def behaviour(sock):
        tls = context.wrap_socket(sock, server_side=True)
        while True:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = tls.recv(4096)
                if not chunk:
                    return
                request += chunk
            tls.sendall(answer)
    return behaviour


def http_answer(body, status="200 OK", headers=""):
    return ("HTTP/1.1 %s\r\n%sContent-Length: %d\r\n\r\n" % (
        status, headers, len(body))).encode() + body


def answering(answer, close=False):
    """A raw-server behaviour: `answer` (bytes) to each request; keeps its
    connections' peers and the requests' heads."""
    connections, requests = [], []

    def behaviour(sock):
        connections.append(sock.getpeername())
        request = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return
            request += chunk
            while b"\r\n\r\n" in request:
                head, _, request = request.partition(b"\r\n\r\n")
                requests.append(head + b"\r\n\r\n")
                sock.sendall(answer)
                if close:
                    sock.shutdown(socket.SHUT_WR)
                    return
    behaviour.connections, behaviour.requests = connections, requests
    return behaviour


RSS = b"<rss/>"
FRAMINGS = [   # (id, the answer, whether the server closes after it, connections for 2 polls)
    ("chunked, extension, trailer",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5;x=1\r\n<rss/\r\n1\r\n>\r\n0\r\nX-Trailer: 1\r\n\r\n", False, 1),
    ("Content-Length said twice alike",
     b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nContent-Length: 6\r\n\r\n<rss/>", False, 1),
    ("no length: read to the close",
     b"HTTP/1.1 200 OK\r\n\r\n<rss/>", True, 2),
    ("HTTP/1.0 is not kept alive",
     b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\n<rss/>", False, 2),
    ("Connection: close",
     b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 6\r\n\r\n<rss/>",
     False, 2),
    ("bytes beyond the answer",
     b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n<rss/>HTTP/1.1 200 OK\r\n", False, 2),
    ("no reason phrase, a bare LF",
     b"HTTP/1.1 200\nContent-Length: 6\n\n<rss/>", False, 1),
    ("Transfer-Encoding: identity is no coding",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 6\r\n\r\n<rss/>",
     False, 1),
    ("a chunk size of 16 digits, leading zeros",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0000000000000006\r\n<rss/>\r\n0\r\n\r\n", False, 1),
    ("chunked and a Content-Length: in doubt, closed after",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n"
     b"6\r\n<rss/>\r\n0\r\n\r\n", False, 2),
    ("a field said twice keeps its first value",
     b"HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\nContent-Encoding: br\r\n"
     b"Content-Length: 6\r\n\r\n<rss/>", False, 1),
]


@pytest.mark.parametrize("answer, close, connections", [f[1:] for f in FRAMINGS],
                         ids=[f[0] for f in FRAMINGS])
def test_the_fetchers_own_http_reads_every_framing_and_reuses_only_a_clean_connection(
        raw_server, answer, close, connections):
    behaviour = answering(answer, close)
    url = "http://127.0.0.1:%d/feed" % raw_server(behaviour)
    fetch = tracker.Fetcher()
    assert [fetch(url).body for _ in range(2)] == [RSS, RSS]
    assert len(behaviour.connections) == connections


BROKEN_ANSWERS = [   # (id, the answer, the reason logged)
    ("not HTTP", b"ICY 200 OK\r\n\r\n<rss/>", "not an HTTP answer: ICY 200 OK"),
    ("two lengths", b"HTTP/1.1 200 OK\r\nContent-Length: 6, 7\r\n\r\n<rss/>",
     "answer with a bad Content-Length: 6, 7"),
    ("negative length", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
     "answer with a bad Content-Length: -1"),
    ("bad chunk size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
     "answer with a bad chunk"),
    ("chunk without its CRLF",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
     "answer with a bad chunk"),
    ("chunks beyond the cap", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
     b"40\r\n" + b"x" * 64 + b"\r\n" + b"40\r\n" + b"x" * 64 + b"\r\n0\r\n\r\n",
     "answer larger than 100 bytes"),
    ("101 header lines", b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n",
     "answer has more than 100 header lines"),
    ("a line of 70,000 bytes", b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 70000 + b"\r\n\r\n",
     "answer has a line longer than 65536 bytes"),
    ("cut in the head", b"HTTP/1.1 200 OK\r\nContent-Le", "answer cut short in its head"),
    ("a head of 300 KB", b"HTTP/1.1 200 OK\r\n" + (b"X-A: " + b"a" * 60000 + b"\r\n") * 5,
     "answer has a head larger than 262144 bytes"),
    ("101 Switching Protocols", b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
     "HTTP 101 Switching Protocols"),
    ("a transfer coding other than chunked",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n6\r\n<rss/>\r\n0\r\n\r\n",
     "unsupported Transfer-Encoding 'gzip, chunked'"),
    ("an empty chunk size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
     "answer with a bad chunk"),
    ("no length, beyond the cap with the head",
     b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 5000, "answer larger than 100 bytes"),
    ("a head completed beyond its cap", b"HTTP/1.1 200 OK\r\n" + (
        b"X-A: " + b"a" * 50000 + b"\r\n") * 5 + b"X-B: " + b"b" * 13000 + b"\r\n\r\n",
     "answer has a head larger than 262144 bytes"),
]


@pytest.mark.parametrize("answer, reason", [b[1:] for b in BROKEN_ANSWERS],
                         ids=[b[0] for b in BROKEN_ANSWERS])
def test_a_broken_answer_is_one_clear_reason_and_its_connection_is_closed(
        raw_server, answer, reason):
    behaviour = answering(answer, close=True)
    url = "http://127.0.0.1:%d/feed" % raw_server(behaviour)
    fetch = tracker.Fetcher(max_bytes=100)
    for _ in range(2):
        with pytest.raises(tracker.FeedError) as failure:
            fetch(url)
        assert str(failure.value) == reason
    assert len(behaviour.connections) == 2


def test_a_field_said_twice_keeps_its_first_value_retry_after_and_validators_too(raw_server):
    busy = answering(b"HTTP/1.1 503 Busy\r\nRetry-After: 120\r\nRetry-After: 120\r\n"
                     b"Content-Length: 0\r\n\r\n")
    with pytest.raises(tracker.FeedError) as failure:
        tracker.Fetcher()("http://127.0.0.1:%d/feed" % raw_server(busy))
    assert failure.value.retry_after == 120.0
    dated = answering(http_answer(RSS, headers="Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
                                              "Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n"))
    answer = tracker.Fetcher()("http://127.0.0.1:%d/feed" % raw_server(dated))
    assert answer.last_modified == "Mon, 01 Jan 2024 00:00:00 GMT"


@pytest.mark.parametrize("url", [u"http://\ufffd.example/feed", u"http://" + u"\xe4" * 70 + ".example/"])
def test_a_host_name_idna_cannot_encode_is_a_feed_error_not_an_internal_one(url):
    outcome = poll_once(url)
    assert outcome.error.startswith("host name not valid in IDNA: "), outcome.error


def test_keep_alive_over_tls_never_reads_bytes_nobody_asked_for_as_an_answer(raw_server):
    served, client = tls_contexts()
    body = b"<rss/>"
    junk = http_answer(b"J" * 9000)   # more than the reader's 8 KB buffer: the rest stays in TLS
    peers = []

    def behaviour(sock):
        peers.append(sock.getpeername())
        answering_over_tls(served, http_answer(body) + junk)(sock)
    url = "https://127.0.0.1:%d/feed" % raw_server(behaviour)
    fetch = tracker.Fetcher(tls=client)
    assert [fetch(url).body for _ in range(3)] == [body] * 3
    assert len(peers) == 3            # each out-of-step connection was closed


def test_informational_answers_before_the_final_one_are_skipped(raw_server):
    body = github_feed(GITHUB_OPEN)

    def behaviour(sock):
        sock.recv(65536)
        sock.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                     b"HTTP/1.1 102 Processing\r\n\r\n" + http_answer(body))
    outcome = poll_once("http://127.0.0.1:%d/feed" % raw_server(behaviour))
    assert outcome.error is None and len(outcome.entries) == 2


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_every_redirect_status_is_followed_on_every_python(server, status):
    server.script.set("/old", b"", status=status, headers={"Location": "/gh"})
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    assert tracker.Fetcher()(server.url + "/old").body == github_feed(GITHUB_OPEN)


def test_a_redirect_from_https_to_plain_http_is_refused(server, raw_server):
    served, client = tls_contexts()
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    moved = http_answer(b"", "301 Moved", "Location: %s/gh\r\n" % server.url)
    url = "https://127.0.0.1:%d/feed" % raw_server(answering_over_tls(served, moved))
    with pytest.raises(tracker.FeedError, match="redirect from https to plain http refused"):
        tracker.Fetcher(tls=client)(url)
    assert server.script.requests == []


def test_a_tls_failure_names_its_reason(raw_server):
    served, _ = tls_contexts()
    url = "https://127.0.0.1:%d/feed" % raw_server(answering_over_tls(served, b""))
    outcome = poll_once(url)
    if sys.version_info >= (3, 7):     # ssl.SSLCertVerificationError.verify_message
        assert re.match(r"TLS certificate not accepted: self.signed certificate", outcome.error)
    else:
        assert outcome.error.startswith("TLS error: "), outcome.error


@pytest.mark.parametrize("etag", [b'"a\x01b"', b'"' + b"x" * 2000 + b'"'])
def test_a_validator_that_cannot_be_sent_back_is_not_kept(raw_server, etag):
    behaviour = answering(http_answer(RSS, headers="ETag: %s\r\n" % etag.decode("latin-1")))
    url = "http://127.0.0.1:%d/feed" % raw_server(behaviour)
    fetch = tracker.Fetcher()
    first = fetch(url)
    assert first.etag is None
    assert fetch(url, first.etag).status == 200
    assert len(behaviour.requests) == 2
    assert all(b"If-None-Match" not in request for request in behaviour.requests)


def test_a_folded_validator_is_unfolded_and_sent_back_on_one_line(raw_server):
    behaviour = answering(http_answer(RSS, headers='ETag: "a"\r\n\t"folded"\r\n'))
    url = "http://127.0.0.1:%d/feed" % raw_server(behaviour)
    fetch = tracker.Fetcher()
    first = fetch(url)
    assert first.etag == '"a" "folded"'   # RFC 9112 5.2: obs-fold becomes a space
    fetch(url, first.etag)
    assert b'\r\nIf-None-Match: "a" "folded"\r\n' in behaviour.requests[1]


def test_a_bad_validator_in_the_state_file_is_dropped_not_a_failure_forever(
        server, tmp_path, capsys):
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    state = write(tmp_path, "state.json", json.dumps({"version": 2, "feeds": {
        server.url + "/gh": {"seen": None, "etag": u"W/\"\u20ac\"\r\nX-Evil: 1"}}}))
    statuses, _ = once(providers, state, capsys)
    assert len(statuses) == 1
    assert "If-None-Match" not in server.script.requests[-1][1]


@pytest.mark.parametrize("hidden", [u"\u200b", u"\u200c", u"\u200d", u"\u061c", u"\u2060",
                                    u"\u2064", u"\ufeff", u"\U000e0041", u"\U000e007f"])
def test_invisible_format_characters_are_removed_from_printed_text(hidden):
    assert tracker.clean_text(u"Resol%sved" % hidden) == "Resolved"


# ---------------------------------------------------------------- output that reads the same twice

def test_once_prints_in_providers_order_whatever_answers_first(server, tmp_path, capsys):
    bodies = {"/a": github_feed(GITHUB_OPEN), "/b": openai_feed(OPENAI_RESOLVED),
              "/c": github_feed(GITHUB_RESOLVED, "2026-07-09T13:52:00Z")}
    providers = write(tmp_path, "p.txt", "".join(
        "%s%s %s\n" % (server.url, path, path[1:].upper()) for path in sorted(bodies)))
    seen = []
    for delays in ({"/a": 0.3, "/b": 0.15, "/c": 0.0}, {"/a": 0.0, "/b": 0.15, "/c": 0.3}):
        for path, body in bodies.items():
            server.script.set(path, lambda handler, body=body, pause=delays[path]: (
                time.sleep(pause), reply(handler, body)))
        assert tracker.main(["--once", "--history", "2", "--providers", providers]) == 0
        out = capsys.readouterr()[0]
        seen.append(out)
        products = [line.split("Product: ")[1][0] for line in out.splitlines()
                    if "Product: " in line]
        assert products == sorted(products) and set(products) == {"A", "B", "C"}
    assert seen[0] == seen[1]


def test_events_held_for_the_first_round_are_not_saved_as_printed_if_it_is_stopped(
        server, tmp_path):
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    server.script.set("/slow", lambda handler: time.sleep(3))
    providers = [tracker.Provider(server.url + "/gh", "GitHub"),
                 tracker.Provider(server.url + "/slow", "Slow")]
    path = str(tmp_path / "state.json")
    lines = []
    state = tracker.StateFile(path, lines.append)
    poller = tracker.Tracker(providers, tracker.Config(timeout=5), emit=lines.append,
                             state_file=state, saved=state.load())
    thread = threading.Thread(target=poller.run)
    thread.start()
    deadline = time.monotonic() + 5
    while not poller.stats["polls"] and time.monotonic() < deadline:   # GitHub answered
        time.sleep(0.01)
    poller.stop()
    thread.join(5)
    assert lines == []
    state = tracker.StateFile(path, lines.append)
    server.script.set("/slow", b"down", status=500)
    poller = tracker.Tracker(providers, tracker.Config(), emit=lines.append,
                             state_file=state, saved=state.load())
    poller.run(rounds=1)
    assert [line.splitlines()[1] for line in lines] == [
        "Status: Update - We are continuing to work on a mitigation."]


def _python_2():
    found = [path for path in glob.glob("/root/.pyenv/versions/2.*/bin/python")] + \
        [path for path in (shutil.which("python2"),) if path]
    return found[0] if found else None


@pytest.mark.skipif(_python_2() is None, reason="no Python 2 on this machine")
def test_python_2_says_that_it_needs_python_3_6():
    done = subprocess.run([_python_2(), SCRIPT, "--interval", "30"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=30)
    assert done.returncode == 1
    assert "needs Python 3.6 or newer: run it with python3" in done.stderr


# ---------------------------------------------------------------- found by an independent tester

OLD_OPEN = openai_entry("OLD", "Still open", "2026-09-10T03:00:00.000Z", "Monitoring", "Watching.")
NEWER = openai_entry("NEW", "Recent", "2026-09-14T03:00:00.000Z", "Resolved", "Fixed.")


def test_an_unprinted_event_of_an_old_open_incident_is_printed_by_the_next_run(server, tmp_path):
    # One update only, days older than the feed's newest: taken back, it must
    # not be taken for history next time.
    server.script.set("/oa", openai_feed(NEWER, OLD_OPEN))
    providers = [tracker.Provider(server.url + "/oa", "OpenAI")]
    path = str(tmp_path / "state.json")

    def run(emit):
        state = tracker.StateFile(path, lambda text: None)
        return tracker.Tracker(providers, tracker.Config(), emit=emit, log=lambda text: None,
                               state_file=state, saved=state.load()).run(rounds=1)

    def closed(text):
        raise BrokenPipeError(32, "Broken pipe")
    assert run(closed) == 1
    lines = []
    assert run(lines.append) == 0
    assert [line.splitlines()[1] for line in lines] == ["Status: Monitoring - Watching."]
    del lines[:]
    assert run(lines.append) == 0 and lines == []


def test_a_feed_that_answered_empty_first_does_not_print_its_whole_history(server, tmp_path, capsys):
    providers = write(tmp_path, "p.txt", "%s/oa OpenAI\n" % server.url)
    state = str(tmp_path / "state.json")
    server.script.set("/oa", openai_feed())
    assert once(providers, state, capsys)[0] == []
    server.script.set("/oa", shared(OPENAI))          # 87 resolved incidents
    assert once(providers, state, capsys)[0] == []
    server.script.set("/oa", with_new_entry(shared(OPENAI), openai_entry(
        "01NEW", "New", "2026-09-14T05:00:00.000Z", "Investigating", "Looking.")))
    assert once(providers, state, capsys)[0] == ["Investigating - Looking."]


def test_an_entry_dated_in_the_future_does_not_make_real_news_look_old():
    maintenance = rss_item("Planned work", "urn:m", "Mon, 21 Sep 2026 10:00:00 GMT",
                           "Scheduled - Database upgrade.")
    _, marks, _ = tracker.diff_entries({}, tracker.parse_feed(rss_feed(maintenance)), True)
    incident = rss_item("Outage", "urn:o", "Mon, 14 Sep 2026 10:00:00 GMT", "Investigating - Down.")
    now = (at("2026-09-14 10:01") - at("1970-01-01 00:00")).total_seconds()
    events = tracker.diff_entries(marks, tracker.parse_feed(rss_feed(incident, maintenance)),
                                  now=now).events
    assert [e.entry.title for e in events] == ["Outage"]


def test_an_entry_updated_months_later_keeps_its_blocks_in_their_year():
    # a postmortem added in February moves <updated>; the July blocks stay in July
    feed = statuspage_feed(statuspage_entry(
        1, "Outage", "2026-07-09T04:34:43Z", "2027-02-05T10:00:00Z",
        [("Jul 9", "13:52", "Resolved", "Fixed."), ("Jul 9", "04:34", "Investigating", "Down.")]))
    [entry] = tracker.parse_feed(feed)
    assert [u.time for u in entry.updates] == [at("2026-07-09 13:52"), at("2026-07-09 04:34")]


def test_a_password_that_breaks_the_url_is_not_echoed_in_the_error(tmp_path, capsys):
    providers = write(tmp_path, "p.txt", "http://alice:s3/cr3t@127.0.0.1:1/feed\n")
    assert tracker.main(["--once", "--providers", providers]) == 2
    err = capsys.readouterr()[1]
    assert "bad URL http://***@127.0.0.1:1/feed" in err
    assert "s3" not in err.replace(providers, "") and "cr3t" not in err


def test_needless_percent_escapes_are_one_spelling():
    assert tracker.normalise_url("http://h/%6Fa%2Fb%7e?q=%61") == "http://h/oa%2Fb~?q=a"



# ---------------------------------------------------------------- the scheduler

class InlineLane(object):
    """A lane that runs each job at once, in the scheduler's own thread."""

    def __init__(self, workers, work):
        self.work = work

    def submit(self, job):
        self.work(job)

    def pump(self):
        return float("inf")

    def resize(self, workers):
        pass

    def shutdown(self):
        pass


@pytest.fixture
def lane_under_test():
    """Makes real Lanes on a fake clock, (lane, clock list, names of the threads that ran
    jobs), and shuts them down after the test, passed or not."""
    made = []

    def make(workers, work):
        now, threads = [0.0], set()

        def job(item):
            threads.add(threading.current_thread().name)
            work(item)
        made.append(tracker.Lane(workers, job, clock=lambda: now[0]))
        return made[-1], now, threads
    yield make
    for lane in made:
        lane.shutdown()


def settle(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.002)
    return condition()


def test_a_lane_takes_a_burst_of_quick_polls_with_two_threads_not_thirty_two(lane_under_test):
    done = []
    lane, now, threads = lane_under_test(32, done.append)
    for n in range(200):
        lane.submit(n)
        if n % 20 == 0:
            assert lane.pump() in (float("inf"), tracker.LANE_PATIENCE)   # never widens
    assert settle(lambda: len(done) == 200)
    assert sorted(done) == list(range(200)) and lane.width == 2 and len(threads) <= 2


def test_a_lane_widens_while_its_polls_wait_on_slow_servers_and_narrows_after(lane_under_test):
    release, started = threading.Event(), []

    def slow(item):
        started.append(item)
        if item < 100:
            release.wait(10)
    lane, now, threads = lane_under_test(6, slow)
    for n in range(10):
        lane.submit(n)
    assert settle(lambda: len(started) == 2)
    assert lane.pump() == tracker.LANE_PATIENCE - 0.0     # not yet: nothing waited long
    for width in (4, 6):             # all loops held: as many again, each LANE_PATIENCE
        now[0] += tracker.LANE_PATIENCE
        lane.pump()
        assert lane.width == width and settle(lambda: len(started) == width)
    now[0] += tracker.LANE_PATIENCE
    assert lane.pump() == float("inf") and lane.width == 6   # workers: no more
    release.set()
    assert settle(lambda: len(started) == 10)
    for width in (5, 4):                                # then one loop leaves a LANE_SETTLE
        now[0] += tracker.LANE_SETTLE + 0.001
        lane.submit(100 + width)
        assert settle(lambda: lane.width == width)


def test_a_lane_widens_when_quick_polls_queue_faster_than_its_loops_take_them(
        lane_under_test):
    # 30-99 ms round trips: no poll is held LANE_PATIENCE, yet the queue grows
    gates = collections.defaultdict(threading.Event)
    started = []

    def poll(item):
        started.append(item)
        gates[item].wait(10)
    lane, now, _ = lane_under_test(32, poll)
    for n in range(10):
        lane.submit(n)
    assert settle(lambda: len(started) == 2)
    now[0] = 0.1
    gates[0].set()
    gates[1].set()
    assert settle(lambda: len(started) == 4)         # 2 and 3 start at 0.1: not held
    lane.pump()
    assert lane.width == 3                           # the queue waited: one more anyway
    for n in range(10):
        gates[n].set()


def test_a_crash_in_a_job_costs_that_job_not_the_loop(lane_under_test):
    done = []

    def work(item):
        if item < 2:
            raise RuntimeError("a bug")
        done.append(item)
    lane, _, _ = lane_under_test(2, work)
    for n in range(5):
        lane.submit(n)
    assert settle(lambda: done == [2, 3, 4]) and lane.width == 2


def test_a_lane_shut_down_still_runs_what_was_queued(lane_under_test):
    release, done = threading.Event(), []
    lane, now, threads = lane_under_test(4, lambda item: (release.wait(10), done.append(item)))
    for n in range(20):
        lane.submit(n)
    lane.shutdown()
    release.set()
    assert settle(lambda: len(done) == 20)


def test_an_hour_of_schedule_runs_in_milliseconds_on_a_fake_clock():
    now, calls = [0.0], collections.defaultdict(list)
    body = github_feed(GITHUB_OPEN)

    def fetch(url, etag=None, last_modified=None, timeout=None):
        calls[url].append(now[0])
        return tracker.Response(200, body, None, None)   # unchanged after the first: not parsed

    def wait(seconds):
        now[0] += seconds
    providers = [tracker.Provider("http://feed%d.test/x" % n, "F%d" % n) for n in range(3)]
    lines = []
    poller = tracker.Tracker(providers, tracker.Config(interval=10.0), fetch=fetch,
                             emit=lines.append, clock=lambda: now[0],
                             wall=lambda: 1.8e9 + now[0], wait=wait, lane=InlineLane)
    assert poller.run(rounds=360) == 0
    for times in calls.values():
        assert len(times) == 360
        assert {round(later - earlier, 6) for earlier, later in zip(times, times[1:])} == {10.0}
    assert len(lines) == 3 and poller.stats["parsed"] == 3 and poller.stats["unchanged"] == 1077


def test_polls_due_within_half_a_second_start_together_on_their_own_grid():
    # A poll right after another costs less CPU than one after a sleep: the
    # scheduler starts together what is due within LAUNCH_QUANTUM, never
    # sooner than that before its time, and the grid does not drift.
    now, calls = [0.0], collections.defaultdict(list)
    body = github_feed(GITHUB_OPEN)

    def fetch(url, etag=None, last_modified=None, timeout=None):
        calls[url].append(now[0])
        return tracker.Response(200, body, None, None)

    def wait(seconds):
        now[0] += seconds
    providers = [tracker.Provider("http://feed%d.test/x" % n, "F%d" % n) for n in range(100)]
    poller = tracker.Tracker(providers, tracker.Config(interval=60.0), fetch=fetch,
                             clock=lambda: now[0], wall=lambda: 1.8e9 + now[0], wait=wait,
                             lane=InlineLane)
    assert poller.run(rounds=5) == 0
    for number, provider in enumerate(providers):   # first polls 10 ms apart, then every 60 s
        due = [number * 0.01 + round_ * 60.0 for round_ in range(5)]
        early = [when - polled for when, polled in zip(due, calls[provider.url])]
        assert len(early) == 5 and all(-1e-9 < ahead <= tracker.LAUNCH_QUANTUM for ahead in early)
    launches = set(polled for times in calls.values() for polled in times)
    assert len(launches) == 2 * 5     # 100 polls a round in two wake-ups, not twenty


def test_more_dead_servers_than_workers_never_delay_a_healthy_feed(server):
    # Defence: the deadline and the lanes.  Six dead servers (three accept and
    # never answer, three drip a byte at a time), two workers: each dead feed
    # gets fast_timeout in the fast lane, then waits for the other dead ones
    # in the slow lane; the healthy feed never waits.
    polls, silent = [], [listening_silently() for _ in range(3)]

    def healthy(handler):
        polls.append(time.monotonic())
        reply(handler, openai_feed(OPENAI_NO_COMPONENTS))
    server.script.set("/ok", healthy)
    for n in range(3):
        server.script.set("/drip?%d" % n, dripper(b"HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\n"))
    dead = [tracker.Provider("http://127.0.0.1:%d/" % sock.getsockname()[1], "Silent%d" % n)
            for n, sock in enumerate(silent)]
    dead += [tracker.Provider(server.url + "/drip?%d" % n, "Drip%d" % n) for n in range(3)]
    started = time.monotonic()
    config = tracker.Config(interval=0.1, timeout=0.6, workers=2, fast_timeout=0.1)
    lines, logs, poller = run_tracker([tracker.Provider(server.url + "/ok", "Healthy")] + dead,
                                      config, lambda lines, logs: time.monotonic() - started > 1.6)
    for sock in silent:
        sock.close()
    # from its first poll on: the unknown dead ones never held it up, even in
    # the first round (they poll in the new lane, it in the fast one)
    gaps = [later - earlier for earlier, later in zip(polls, polls[1:])]
    assert len(polls) >= 10 and max(gaps) < 0.1 + 0.15, gaps
    expected = ["%s (%s) is failing: timed out; retrying with backoff" % (p.name, p.url)
                for p in dead]
    assert logs and len(set(logs)) == len(logs) and set(logs) <= set(expected)
    assert poller.stats["slow"] == 6


def test_a_feed_removed_by_a_reload_has_its_connection_closed(server):
    server.script.set("/a", github_feed(GITHUB_OPEN))
    server.script.set("/b", openai_feed(OPENAI_RESOLVED))
    providers = [tracker.Provider(server.url + "/a", "A"), tracker.Provider(server.url + "/b", "B")]
    fetch = tracker.Fetcher()
    poller = tracker.Tracker(providers, tracker.Config(), fetch=fetch)
    for provider in providers:       # both kept alive
        fetch(provider.url)
    poller.replace_providers(providers[1:])
    deadline = time.monotonic() + 5
    while not server.script.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.script.closed == [server.script.peers[-2]]         # A's, and only A's
    fetch.close()


def test_a_feed_failing_when_the_tracker_stopped_does_not_hold_up_the_first_round(server):
    silent = listening_silently()
    dead = "http://127.0.0.1:%d/" % silent.getsockname()[1]
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    providers = [tracker.Provider(dead, "Dead"), tracker.Provider(server.url + "/gh", "GitHub")]
    saved = {dead: tracker.FeedState(failures=3, slow=True)}
    lines = []
    poller = tracker.Tracker(providers, tracker.Config(timeout=5.0), emit=lines.append,
                             saved=saved)
    thread = threading.Thread(target=poller.run)
    thread.start()
    deadline = time.monotonic() + 4.0     # the dead feed's poll takes 5 s
    while not lines and time.monotonic() < deadline:
        time.sleep(0.01)
    poller.stop()
    thread.join(5)
    silent.close()
    assert [line.splitlines()[1] for line in lines] == [
        "Status: Update - We are continuing to work on a mitigation."]


def test_a_feed_dropped_while_its_poll_was_in_flight_has_its_connection_closed(server):
    server.script.set("/b", github_feed(GITHUB_OPEN))
    release, forgotten = threading.Event(), []
    a, b = tracker.Provider("http://a.test/x", "A"), tracker.Provider(server.url + "/b", "B")

    def fetch(url, etag=None, last_modified=None, timeout=None):
        if url == a.url:
            release.wait(5)     # A's poll is in flight while the reload drops A
        return tracker.Response(200, github_feed(GITHUB_OPEN), None, None)
    fetch.forget = forgotten.append
    poller = tracker.Tracker([a, b], tracker.Config(interval=60), fetch=fetch,
                             reload=lambda: [b])
    thread = threading.Thread(target=poller.run)
    thread.start()
    poller.request("reload")
    deadline = time.monotonic() + 5
    while forgotten != [a.url] and time.monotonic() < deadline:   # dropped at the reload
        time.sleep(0.01)
    release.set()                                                  # then its poll returns
    while forgotten != [a.url, a.url] and time.monotonic() < deadline:
        time.sleep(0.01)
    poller.stop()
    thread.join(5)
    assert forgotten == [a.url, a.url]   # the second time, once the poll gave its socket back


# ---------------------------------------------------------------- generic feeds: the state their text states

@pytest.mark.parametrize("capture, title, label, state", [
    ("aws-status-rss-excerpt.rss", "Service is operating normally: [RESOLVED] Degraded volume",
     "Resolved", "resolved"),
    ("aws-status-rss-excerpt.rss", "Informational message: Degraded volume",
     "Informational message", "unknown"),
    ("aws-status-rss-excerpt.rss", "Service degradation: ", "Service degradation", "investigating"),
    ("cstate-torproject-excerpt.rss", "[Resolved] routing issues", "Resolved", "resolved"),
    ("cstate-torproject-excerpt.rss", "Network DDoS", "Update", "unknown"),
    ("gcp-status-atom-excerpt.atom", "RESOLVED: Global: Cloud Monitoring", "Resolved", "resolved"),
])
def test_generic_feeds_state_in_words_from_real_shapes(capture, title, label, state):
    [entry] = [e for e in tracker.parse_feed(shared(capture)) if e.title.startswith(title)][:1]
    assert (entry.updates[0].label, tracker.state_at(entry)) == (label, state)


def test_google_clouds_summary_says_resolved_when_its_title_does_not():
    body = shared("gcp-status-atom-excerpt.atom").replace(b"<title>RESOLVED: ", b"<title>")
    [entry] = tracker.parse_feed(body)
    assert entry.updates[0].label == "Resolved"
    assert entry.components == ("Cloud Monitoring", "Operations", "Google Cloud Pub/Sub")


def test_a_first_look_at_a_generic_feed_prints_only_what_its_words_say_is_open():
    events = tracker.diff_entries({}, tracker.parse_feed(shared("aws-status-rss-excerpt.rss")),
                                  True, 0, "AWS").events
    assert [tracker.format_event(e).splitlines()[1][:40] for e in events] == [
        "Status: Service degradation - Recovery i"]


# ---------------------------------------------------------------- issue 17: input boundary

def test_a_lone_surrogate_from_the_api_prints_saves_delivers_and_restarts(server, tmp_path, capsys):
    # json.loads takes "\ud800" (a lone surrogate, no character): text from the
    # network is made encodable where it enters, so printing, the state file
    # and every target take it, and a restart reads what was saved.
    server.script.set("/history.atom", github_feed(GITHUB_OPEN))
    server.script.set("/api/v2/incidents.json", json.dumps({"incidents": [{
        "id": "i30837849", "impact": "minor\udfff", "incident_updates": [],
        "components": [{"name": "API \ud800", "status": "major_outage\ud800"}]}]}).encode())
    providers = write(tmp_path, "p.txt", "%s/history.atom GitHub\n" % server.url)
    args = ["--once", "--json", "--providers", providers, "--state", str(tmp_path / "state.json"),
            "--notify", server.url + "/hook"]
    assert tracker.main(args) == 0, capsys.readouterr()[1]
    out, err = capsys.readouterr()
    event = json.loads(out)
    assert event["component_status"] == {"API \ufffd": "major_outage\ufffd"}
    assert event["impact"] == "minor\ufffd" and "delivered=1 undelivered=0" in err
    [(_, path, _, body)] = server.script.posts
    assert json.loads(body.decode("utf-8")) == event
    assert tracker.main(args) == 0
    assert capsys.readouterr()[0] == "" and len(server.script.posts) == 1


def test_a_line_of_350000_options_is_read_in_linear_time_and_refused_naming_its_line(
        tmp_path, capsys):
    # Each key=value word was put first in its list, one by one: 15 s for this
    # 3.85 MB line (quadratic), all polling stalled on SIGHUP.  Linear, the whole
    # run takes 0.3 s: the bound is generous, and the old code three times over it.
    providers = write(tmp_path, "p.txt", "# feeds\nhttps://example.com/feed Example%s\n"
                      % (" interval=1" * 350000))
    started = time.monotonic()
    assert tracker.main(["--once", "--providers", providers]) == 2
    assert time.monotonic() - started < 5.0
    assert capsys.readouterr()[1] == "error: %s:2: interval= given 350000 times\n" % providers


@pytest.mark.parametrize("option, line, why", [
    (["--interval", "1e10"], "", "must be at most 86400 (a day), not 1e10"),
    (["--timeout", "1e10"], "", "must be at most 86400 (a day), not 1e10"),
    (["--interval", "86400.5"], "", "must be at most 86400 (a day), not 86400.5"),
    (["--timeout", "inf"], "", "must be at most 86400 (a day), not inf"),
    (["--interval", "nan"], "", "must be greater than 0, not nan"),
    ([], " interval=1e10", "must be at most 86400 (a day), not 1e10"),
    ([], " interval=inf", "must be at most 86400 (a day), not inf"),
    ([], " interval=nan", "must be greater than 0, not nan"),
])
def test_seconds_beyond_a_day_nan_or_inf_are_exit_2_naming_the_option_or_line(
        server, tmp_path, capsys, option, line, why):
    # A wait of 1e10 s overflowed time_t after the first poll, in a loop
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    providers = write(tmp_path, "p.txt", "# one\n%s/gh GitHub%s\n" % (server.url, line))
    try:
        code = tracker.main(["--providers", providers, "--once"] + option)
    except SystemExit as exc:   # argparse's own exit
        code = exc.code
    where = "argument %s" % option[0] if option else "%s:2: interval=" % providers
    assert (code, capsys.readouterr()[1]) == (2, "error: %s: %s" % (where, why) + (
        " (see --help)\n" if option else "\n"))


def test_seconds_up_to_a_day_are_taken(server, tmp_path, capsys):
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    providers = write(tmp_path, "p.txt", "%s/gh GitHub interval=86400\n" % server.url)
    assert tracker.main(["--providers", providers, "--once", "--interval", "86400",
                         "--timeout", "86400"]) == 0
    assert "Incident: Delays starting Actions runs" in capsys.readouterr()[0]


def test_a_gzip_body_of_several_members_is_read_whole(server, tmp_path, capsys):
    # RFC 1952 2.2: a gzip file is a series of members (what `cat a.gz b.gz`
    # makes, and gzip.decompress reads); zeros may pad the end.  Only the first
    # was read, the feed cut short: failing forever.
    feed = github_feed(GITHUB_OPEN)
    half = len(feed) // 2
    body = gzip.compress(feed[:half]) + gzip.compress(b"") + gzip.compress(feed[half:]) + b"\0" * 5
    server.script.set("/gh", body, headers={"Content-Encoding": "gzip"})
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    assert tracker.main(["--once", "--providers", providers]) == 0
    assert capsys.readouterr()[0] == (
        "[2026-07-09 06:01:00] Product: GitHub\n"
        "Status: Update - We are continuing to work on a mitigation.\n"
        "Incident: Delays starting Actions runs (https://www.githubstatus.com/incidents/i30837849)\n")


def test_one_feed_with_its_user_and_password_spelt_two_ways_is_one_feed(server, tmp_path, capsys):
    # RFC 3986 6.2.2: u%31 is u1, %2f is %2F, in user:password@ as in the path;
    # as two feeds, every event printed twice
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    port = server.url.rpartition(":")[2]
    providers = write(tmp_path, "p.txt", "http://u%%31:p%%2fw@127.0.0.1:%s/gh GitHub\n"
                      "http://u1:p%%2Fw@127.0.0.1:%s/gh Again\n" % (port, port))
    assert [provider.url for provider in tracker.load_providers(providers)] == [
        "http://u1:p%%2Fw@127.0.0.1:%s/gh" % port]
    assert tracker.main(["--once", "--providers", providers]) == 0
    out, err = capsys.readouterr()
    assert out.count("Status: ") == 1 and "p.txt:2: http://u1:***@127.0.0.1:%s/gh is already" % port in err
    assert server.script.requests[0][1]["Authorization"] == "Basic " + base64.b64encode(
        b"u1:p/w").decode()


# ---------------------------------------------------------------- issue 17: what is remembered

def test_a_start_removes_the_temporary_state_files_a_kill_left_and_nothing_else(
        server, tmp_path, capsys):
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    state = str(tmp_path / "state.json")
    ours = ["state.json.tmp-ab_cd123", "state.json.tmp-0zzzzzzz"]   # mkstemp's names
    theirs = ["state.json.tmp-keep", "state.json.tmp-abcd1234.bak", "other.json.tmp-abcd1234",
              "state.json.tmp-ABCD1234"]
    for name in ours + theirs:
        write(tmp_path, name, "{}")
    os.symlink(str(tmp_path / "p.txt"), str(tmp_path / "state.json.tmp-link0000"))
    assert len(once(providers, state, capsys)[0]) == 1
    assert sorted(os.listdir(str(tmp_path))) == sorted(
        theirs + ["p.txt", "state.json", "state.json.tmp-link0000"])


def test_a_state_path_that_can_never_be_written_is_exit_2_at_start(tmp_path, capsys):
    providers = write(tmp_path, "p.txt", "http://127.0.0.1:9/x\n")
    state = str(tmp_path / "missing" / "state.json")
    assert tracker.main(["--once", "--providers", providers, "--state", state]) == 2
    assert capsys.readouterr()[1] == \
        "error: state file %s: cannot write: No such file or directory\n" % state


def printed_on_a_wall_clock(server, copies, start, interval=600.0):
    """Poll a loopback feed once per copy, `interval` seconds of a fake clock apart from
    wall time `start` (the server answers copy n to the nth request); return the statuses."""
    now, lines = [0.0], []

    def answer(handler):   # in one write: a second small one waits out a delayed ACK
        body = copies[min(len(server.script.requests), len(copies)) - 1]
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    server.script.set("/feed", answer)

    def wait(seconds):
        now[0] += seconds
    poller = tracker.Tracker([tracker.Provider(server.url + "/feed", "P")],
                             tracker.Config(interval=interval), emit=lines.append,
                             clock=lambda: now[0], wall=lambda: start + now[0], wait=wait,
                             lane=InlineLane)
    assert poller.run(rounds=len(copies)) == 0
    return [line.splitlines()[1][len("Status: "):] for line in lines]


SIX_AM = (at("2026-07-09 06:00") - at("1970-01-01 00:00")).total_seconds()
SLIPPED = ("Jul 9", "09:00", "Investigating", "Looking.")          # typed 3 h ahead
IDENTIFIED = ("Jul 9", "06:10", "Identified", "Found it.")          # then true times
RESOLVED = ("Jul 9", "06:40", "Resolved", "Fixed.")


def test_a_statuspage_update_dated_hours_ahead_silences_no_true_update_after_it(server):
    copies = [github_feed(blocks, "2026-07-09T%s:00Z" % blocks[0][1]) for blocks in (
        [SLIPPED], [IDENTIFIED, SLIPPED], [IDENTIFIED, SLIPPED], [IDENTIFIED, SLIPPED],
        [RESOLVED, IDENTIFIED, SLIPPED])]
    assert printed_on_a_wall_clock(server, copies, SIX_AM) == [
        "Investigating - Looking.", "Identified - Found it.", "Resolved - Fixed."]


def test_an_incidentio_update_dated_hours_ahead_silences_no_true_update_after_it(server):
    copies = [openai_feed(openai_entry("01SLIP", "Errors", "2026-07-09T%s:00.000Z" % clock,
                                       label, message))
              for _, clock, label, message in (SLIPPED, IDENTIFIED, IDENTIFIED, IDENTIFIED,
                                                RESOLVED)]
    assert printed_on_a_wall_clock(server, copies, SIX_AM) == [
        "Investigating - Looking.", "Identified - Found it.", "Resolved - Fixed."]


def test_blocks_all_read_hours_ahead_print_once_each_as_the_clock_passes_them(server):
    # a zone read as UTC that is really UTC+3: every block 3 hours ahead, for good
    ahead = [("Jul 9", "%02d:%02d" % (9 + n // 6, n % 6 * 10),
              "Update" if n else "Investigating", "Step %d." % n) for n in range(30)]
    copies = [github_feed(ahead[n::-1], "2026-07-09T06:00:00Z") for n in range(30)] + \
        [github_feed(ahead[::-1], "2026-07-09T06:00:00Z")] * 10
    printed = printed_on_a_wall_clock(server, copies, SIX_AM, interval=1200.0)
    assert printed == ["Investigating - Step 0."] + ["Update - Step %d." % n for n in range(1, 30)]


KNOWN = [openai_entry("01K%d" % n, "Incident %d" % n, "2026-09-%02dT03:00:00.000Z" % (n + 1),
                      "Resolved", "Fixed %d." % n) for n in range(10)]


def test_an_incident_posted_afterwards_with_its_real_earlier_times_prints(server, tmp_path, capsys):
    providers = write(tmp_path, "p.txt", "%s/oa OpenAI\n" % server.url)
    state = str(tmp_path / "state.json")
    server.script.set("/oa", openai_feed(*KNOWN[::-1]))
    assert once(providers, state, capsys)[0] == []
    # one new id among ten known, dated days before the feed's newest news
    backfilled = openai_entry("01BACK", "Outage last week", "2026-09-03T12:00:00.000Z",
                              "Resolved", "It was over in an hour.")
    server.script.set("/oa", openai_feed(*(KNOWN[:1:-1] + [backfilled] + KNOWN[1::-1])))
    assert once(providers, state, capsys)[0] == ["Resolved - It was over in an hour."]
    assert once(providers, state, capsys)[0] == []


def test_a_copy_whose_ids_are_mostly_new_at_once_is_history_coming_into_view(
        server, tmp_path, capsys):
    providers = write(tmp_path, "p.txt", "%s/oa OpenAI\n" % server.url)
    state = str(tmp_path / "state.json")
    server.script.set("/oa", openai_feed(*KNOWN[:2:-1]))
    assert once(providers, state, capsys)[0] == []
    # a new id scheme and a window three incidents wider: 9 ids of 10 new
    renamed = [e.replace("01K", "01X") for e in KNOWN[8::-1]]
    server.script.set("/oa", openai_feed(KNOWN[9], *renamed))
    assert once(providers, state, capsys)[0] == []


def test_a_feed_whose_ids_change_on_every_poll_is_remembered_a_few_times_its_size(server):
    now, shown, polls = [0.0], 101, 60
    latest = openai_entry("01LATEST", "Latest", "2026-09-10T03:00:00.000Z", "Resolved", "Fixed.")

    def answer(handler):   # the latest incident, then 100 old ones under ids never seen before
        body = openai_feed(latest, *[openai_entry("01R%d_%d" % (len(server.script.requests), n),
                                                  "Incident %d" % n, "2026-09-01T03:00:00.000Z",
                                                  "Resolved", "Fixed.") for n in range(shown - 1)])
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    server.script.set("/feed", answer)

    def wait(seconds):
        now[0] += seconds
    lines = []
    poller = tracker.Tracker([tracker.Provider(server.url + "/feed", "P")],
                             tracker.Config(interval=60.0), emit=lines.append,
                             clock=lambda: now[0], wall=lambda: SIX_AM + 67 * 86400 + now[0],
                             wait=wait, lane=InlineLane)      # Sep 14
    assert poller.run(rounds=polls) == 0 and lines == []
    [feed] = poller.feeds.values()
    printed = feed.state.printed
    assert len(server.script.requests) == polls
    assert len(printed.marks) == shown + tracker.GONE_FLOOR + tracker.GONE_PER_ENTRY * shown
    assert set(printed.gone) < set(printed.marks)
    # the entries that left last are the ones still remembered
    assert tracker.entry_key("https://status.openai.com//incidents/01R%d_0" % (polls - 1)) \
        in printed.gone
    assert tracker.entry_key("https://status.openai.com//incidents/01R1_0") not in printed.marks


def saved_and_loaded(path, states, outbox=None):
    """Save with a StateFile, load with another; return (loaded feeds, its outbox, logs, size)."""
    logs = []
    assert tracker.StateFile(path, logs.append).save(states, set(states), outbox)
    size = os.path.getsize(path)
    loader = tracker.StateFile(path, logs.append)
    return loader.load(), loader.outbox, logs, size


def test_an_outbox_of_multibyte_text_is_cut_to_what_the_loader_takes(tmp_path, monkeypatch):
    monkeypatch.setattr(tracker, "MAX_STATE_BYTES", 200000)
    line = lambda n: json.dumps({"provider": "P", "product": "P", "label": "Update", "n": n,
                                 "message": u"\U0001F4A5" * 2000}, ensure_ascii=False)
    outbox = dict(("webhook http://127.0.0.1:%d/x" % port, [line(n) for n in range(40)])
                  for port in (1, 2, 3))    # three dead targets, 8 KB a line in UTF-8
    states = {"http://x.test/feed": tracker.FeedState(tracker.Printed({1: 1 << 40}))}
    feeds, kept, logs, size = saved_and_loaded(str(tmp_path / "state.json"), states, outbox)
    assert size <= tracker.MAX_STATE_BYTES // 4 + 1000
    assert [state.printed.marks for state in feeds.values()] == [{1: 1 << 40}]
    assert sorted(kept) == sorted(outbox)
    for lines in kept.values():                       # the newest of each queue
        assert lines == [line(n) for n in range(40 - len(lines), 40)] and len(lines) == 2
    assert logs == ["state file %s: 114 oldest undelivered events not saved (the outbox "
                    "would pass 50000 bytes)" % (tmp_path / "state.json")]


def test_feeds_larger_than_the_loader_takes_lose_the_entries_gone_longest_ago(
        tmp_path, monkeypatch):
    monkeypatch.setattr(tracker, "MAX_STATE_BYTES", 200000)
    states = dict(("http://x.test/%d" % feed, tracker.FeedState(tracker.Printed(
        dict((feed << 32 | n, 1 << 40) for n in range(5000)),
        dict((feed << 32 | n, 2 * n + feed) for n in range(1, 5000))))) for feed in (0, 1))
    path = str(tmp_path / "state.json")
    feeds, _, logs, size = saved_and_loaded(path, states)
    assert size <= tracker.MAX_STATE_BYTES and len(feeds) == 2
    gone = sorted(since for state in feeds.values() for since in state.printed.gone.values())
    assert gone == list(range(10000 - len(gone), 10000)) and len(gone) > 2000   # the newest
    for url, state in feeds.items():   # the entries still shown are all kept
        assert set(states[url].printed.marks) - set(states[url].printed.gone) <= \
            set(state.printed.marks)
    assert logs == ["state file %s: the marks of entries gone from their feeds longest ago "
                    "not saved (the file would pass 200000 bytes)" % path]


# ---------------------------------------------------------------- issue 17: delivery and stdout

def run_with_fd_closed(fd, args):
    """Run the tracker as a subprocess started with fd 1 or 2 closed (as `>&-`, `2>&-`)."""
    pipes = {1: {"stderr": subprocess.PIPE}, 2: {"stdout": subprocess.PIPE}}[fd]
    return subprocess.run(args, preexec_fn=lambda: os.close(fd), universal_newlines=True,
                          timeout=30, **pipes)


def test_stdout_closed_at_start_loses_no_event_and_stderr_closed_loses_only_logs(
        server, tmp_path):
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    args = [sys.executable, SCRIPT, "--once", "--providers", providers,
            "--state", str(tmp_path / "state.json")]
    closed = run_with_fd_closed(1, args)
    assert closed.returncode == 1 and "Traceback" not in closed.stderr
    assert "stdout is closed (bad file descriptor): 1 event not printed" in closed.stderr
    again = run_with_fd_closed(2, args)            # logs lost, the event printed
    assert again.returncode == 0
    assert again.stdout.splitlines()[1] == \
        "Status: Update - We are continuing to work on a mitigation."


def test_a_429_asking_for_a_400_digit_wait_waits_the_cap_and_keeps_the_event(server):
    huge = "9" * 400
    server.script.answers["/api/webhooks/1/x"] = [
        (429, {}, ('{"message": "rate limited", "retry_after": %s}' % huge).encode()),
        (429, {"Retry-After": huge}, b""), (429, {}, b'{"retry_after": NaN}')]
    courier, logs, delays = recording_courier(
        tracker.parse_target("discord:" + server.url + "/api/webhooks/1/x"))
    courier.put(openai_lines()[:1])
    assert settle(lambda: courier.idle())
    courier.stop()
    assert [retry for _, retry in delays] == [tracker.RETRY_AFTER_CAP] * 2 + [None]
    assert (courier.delivered, courier.refused) == (1, 0) and len(server.script.posts) == 4
    assert not any("internal error" in line for line in logs)


def test_new_events_never_cut_a_retry_after_or_the_pace_short(server):
    server.script.answers["/hook"] = [(429, {"Retry-After": "30"}, b"")]
    courier = tracker.Courier(tracker.parse_target(server.url + "/hook"),
                              lambda t, line: tracker.deliver(t, line, 2.0), [].append)
    lines = openai_lines()
    for line in lines[:5]:                               # a new event every 0.15 s
        courier.put([line])
        time.sleep(0.15)
    courier.stop()
    assert len(server.script.posts) == 1                 # then 30 s of waiting, on purpose
    paced = tracker.Courier(tracker.parse_target("slack:" + server.url + "/slack"),
                            lambda t, line: tracker.deliver(t, line, 2.0), [].append, pace=0.3)
    for line in lines[:3]:
        paced.put([line])
        time.sleep(0.1)
    assert settle(lambda: paced.idle())
    paced.stop()
    times = [post[0] for post in server.script.posts[1:]]
    assert len(times) == 3 and min(b - a for a, b in zip(times, times[1:])) >= 0.3 - 0.01


def flipping_item(label):
    """An undated item (as AWS's and cState's feeds have) whose text says its state."""
    return rss_feed(rss_item("Database", "urn:db", "", "%s - Replica lag." % label))


def test_every_event_has_a_webhook_id_of_its_own_which_a_restart_sends_again(
        server, tmp_path, capsys):
    providers = write(tmp_path, "p.txt", "%s/feed Status\n" % server.url)
    args = ["--once", "--json", "--providers", providers, "--state", str(tmp_path / "s.json"),
            "--notify", server.url + "/hook"]
    printed = []
    for label in ["Investigating", "Resolved", "Investigating", "Resolved", "Investigating"]:
        server.script.set("/feed", flipping_item(label))
        assert tracker.main(args) == 0
        printed.append(capsys.readouterr()[0])
    posts = server.script.posts
    assert [json.loads(body.decode()) for _, _, _, body in posts] == \
        [json.loads(out) for out in printed]             # the bodies are the --json lines
    assert len(set(headers["webhook-id"] for _, _, headers, _ in posts)) == 5
    server.script.set("/feed", flipping_item("Resolved"))
    server.script.answers["/hook"] = [(503, {}, b"")] * 100
    assert tracker.main(args[:-2] + ["--timeout", "0.3"] + args[-2:]) == 1   # left in the outbox
    assert json.loads(capsys.readouterr()[0])["label"] == "Resolved"
    server.script.answers["/hook"] = []
    assert tracker.main(args) == 0 and capsys.readouterr()[0] == ""
    assert posts[-1][3] == posts[-2][3] and posts[-1][2]["webhook-id"] == \
        posts[-2][2]["webhook-id"] not in [headers["webhook-id"] for _, _, headers, _ in posts[:5]]


def test_a_retried_delivery_keeps_its_webhook_id(server):
    event = newest_events("OpenAI", "openai-incidentio-history-20260914.atom")[0]
    server.script.answers["/hook"] = [(500, {}, b"")]
    courier, _, _ = recording_courier(tracker.parse_target(server.url + "/hook"))
    courier.put([tracker.queued_line(event)])
    assert settle(lambda: courier.idle())
    courier.stop()
    first, again = server.script.posts
    assert first[2]["webhook-id"] == again[2]["webhook-id"] and first[3] == again[3]
    assert json.loads(again[3].decode()) == json.loads(tracker.format_json(event))


def test_feed_text_never_becomes_a_disguised_or_relative_link_in_discord_or_teams(
        server, tmp_path, capsys):
    server.script.set("/feed", rss_feed(rss_item(
        "[Status](https://evil.example)", "/incidents/abc", "",
        "Investigating - See [details](https://evil.example/x) or *call* us.")))
    providers = write(tmp_path, "p.txt", "%s/feed Example\n" % server.url)
    assert tracker.main(["--once", "--json", "--providers", providers,
                         "--notify", "discord:%s/api/webhooks/1/x" % server.url,
                         "--notify", "teams:%s/teams" % server.url,
                         "--notify", "slack:%s/slack" % server.url]) == 0
    item = tracker.event_fields(capsys.readouterr()[0])
    assert item["link"] == "/incidents/abc"
    bodies = dict((path, json.loads(body.decode())) for _, path, _, body in server.script.posts)
    embed, = bodies["/api/webhooks/1/x"]["embeds"]
    assert embed["title"] == r"\[Status\](https://evil.example)" and "url" not in embed
    assert embed["description"] == \
        r"**Investigating** - See \[details\](https://evil.example/x) or \*call\* us."
    card = bodies["/teams"]["attachments"][0]["content"]
    assert [block.get("text") for block in card["body"][:2]] == [
        embed["title"], embed["description"].replace("**", "")] and "actions" not in card
    assert "/incidents/abc|" not in bodies["/slack"]["blocks"][0]["text"]["text"]
    item["link"] = "https://status.example.com/incidents/abc"      # an absolute link stays
    assert tracker.discord_message(item)["embeds"][0]["url"] == item["link"]
    assert tracker.teams_message(item)["attachments"][0]["content"]["actions"][0]["url"] == \
        item["link"]


def refusing_to_accept():
    """Sockets, the first one listening with its accept queue full (the others fill it):
    a connect() to it hangs, its SYNs dropped."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)
    sockets = [silent] + [socket.socket() for _ in range(3)]
    for filler in sockets[1:]:
        filler.setblocking(False)
        filler.connect_ex(silent.getsockname())
    return sockets


def test_sigterm_with_stdout_closed_and_a_poll_stuck_exits_0_without_a_traceback(tmp_path):
    sockets = refusing_to_accept()
    providers = write(tmp_path, "p.txt", "http://127.0.0.1:%d/feed X\n"
                      % sockets[0].getsockname()[1])
    process = subprocess.Popen([sys.executable, SCRIPT, "--providers", providers],
                               preexec_fn=lambda: os.close(1), stderr=subprocess.PIPE,
                               universal_newlines=True)
    try:
        assert "watching 1 feed" in process.stderr.readline()
        time.sleep(0.2)                                  # its poll waits on the silent server
        process.send_signal(signal.SIGTERM)
        err = process.communicate(timeout=10)[1]
    finally:
        for sock in sockets:
            sock.close()
    assert process.returncode == 0 and "Traceback" not in err


def test_bad_usage_with_stderr_closed_at_start_is_still_exit_2():
    done = run_with_fd_closed(2, [sys.executable, SCRIPT, "--no-such-option"])
    assert done.returncode == 2 and done.stdout == ""


# ---------------------------------------------------------------- issue 17: scheduler

def eventually(condition, timeout=10.0):
    """Wait until condition() holds (True), or the timeout ends (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def test_a_feed_put_back_while_its_old_poll_is_in_flight_prints_the_next_update(server):
    # issue 17 #3: the old poll's 304 was applied to the feed put back, whose
    # own first poll was then dropped: it kept the ETag but not what it had
    # printed, and "Resolved" was read as a first look, never printed.
    holding, release = threading.Event(), threading.Event()
    server.script.set("/x", github_feed(GITHUB_OPEN), etag='W/"1"')
    feed = tracker.Provider(server.url + "/x", "X")
    watched = [[]]
    lines, logs = [], []
    poller = tracker.Tracker([feed], tracker.Config(interval=0.05), emit=lines.append,
                             log=logs.append, reload=lambda: watched[0])
    thread = threading.Thread(target=poller.run)
    thread.start()
    try:
        assert eventually(lambda: len(lines) == 1)          # the open incident, once

        def held(handler):                                    # the next poll hangs ...
            holding.set()
            release.wait(5)
            reply(handler, b"", 304, [("ETag", 'W/"1"')])     # ... then says "unchanged"
        server.script.set("/x", held)
        assert holding.wait(5)
        poller.request("reload")                              # removed ...
        assert eventually(lambda: "reloaded: 0 feeds (0 added, 1 removed)" in logs)
        watched[0] = [feed]
        poller.request("reload")                              # ... and put back
        assert eventually(lambda: "reloaded: 1 feeds (1 added, 0 removed)" in logs)
        server.script.set("/x", github_feed(GITHUB_RESOLVED, "2026-07-09T13:52:00Z"),
                          etag='W/"2"')
        release.set()
        assert eventually(lambda: len(lines) >= 3, timeout=5)
        time.sleep(0.2)                                       # nothing more comes
    finally:
        release.set()
        poller.stop()
        thread.join(5)
    assert [line.split("\n")[1] for line in lines] == [
        "Status: Update - We are continuing to work on a mitigation.",
        "Status: Update - Actions have recovered.",
        "Status: Resolved - This incident has been resolved."]


def outage_farm(server, now, paths, ends):
    """Answer 500 on each path until the fake clock reaches ends[0], then a feed;
    return {path: [fake times of its polls that were answered]}."""
    answered = collections.defaultdict(list)

    def route(path):
        def answer(handler):
            if now[0] < ends[0]:
                return reply(handler, b"down", 500)
            answered[path].append(now[0])
            reply(handler, github_feed(GITHUB_OPEN))
        return answer
    for path in paths:
        server.script.set(path, route(path))
    return answered


def fake_clock_tracker(providers, now, config, during=lambda moment: None, step=3600.0,
                       **kwargs):
    """A Tracker on a fake clock, polls inline; during(now) runs at every wait,
    which moves the clock `step` seconds at most."""
    def wait(seconds):
        now[0] += min(max(seconds, 0.001), step)
        during(now[0])
    return tracker.Tracker(providers, config, clock=lambda: now[0],
                           wall=lambda: 1.8e9 + now[0], wait=wait, lane=InlineLane, **kwargs)


def test_after_an_outage_every_feed_is_read_within_minutes_and_together(server):
    # issue 17 #9: backoff doubled to an hour, so after a 1,000 s outage a
    # feed polled every 30 s stayed blind ~15 minutes more.  Capped at five
    # minutes (or five intervals), and the first answer anywhere, after all
    # feeds failed, tries the others at once.
    now, paths = [0.0], ["/a", "/b", "/c", "/d"]
    answered = outage_farm(server, now, paths, ends=[1000.0])
    providers = [tracker.Provider(server.url + path, path) for path in paths]
    poller = fake_clock_tracker(providers, now, tracker.Config(interval=30.0))
    poller.run(rounds=9)
    firsts = [answered[path][0] for path in paths]
    assert max(firsts) <= 1000.0 + tracker.BACKOFF_CAP, firsts
    assert max(firsts) - min(firsts) <= tracker.LAUNCH_QUANTUM, firsts


def test_a_reload_tries_a_failing_feed_at_once(server):
    # issue 17 #9: SIGHUP (the operator's "try again now") reset no backoff
    now, reloads, ends = [0.0], [], [float("inf")]
    answered = outage_farm(server, now, ["/a"], ends)
    providers = [tracker.Provider(server.url + "/a", "A")]

    def during(moment):   # the operator fixes it, long before its next try, and reloads
        feed = poller.feeds[providers[0].url]
        if feed.state.failures >= 4 and feed.due - moment > 30.0 and not reloads:
            ends[0] = moment
            reloads.append(moment)
            poller.replace_providers(providers)
    poller = fake_clock_tracker(providers, now, tracker.Config(interval=60.0), during, step=5.0)
    poller.run(rounds=7)
    assert answered["/a"][0] == reloads[0], (answered, reloads)


def test_feeds_added_by_a_reload_are_not_held_up_by_dead_ones_listed_first(server, tmp_path):
    # issue 17 #11: --workers defaulted to the feeds at start (one): ten dead
    # servers put first by a reload held healthy new feeds up for 50 s.
    silent = [listening_silently() for _ in range(10)]
    polled = set()

    def healthy(handler):
        polled.add(handler.path)
        reply(handler, openai_feed(OPENAI_NO_COMPONENTS))
    for n in range(21):
        server.script.set("/ok%d" % n, healthy)
    path = write(tmp_path, "p.txt", "%s/ok0 Ok0\n" % server.url)
    run = Running("--providers", path, "--interval", "60")
    try:
        run.wait_for(lambda: polled == {"/ok0"})
        write(tmp_path, "p.txt", "".join(
            ["http://127.0.0.1:%d/ Dead%d\n" % (sock.getsockname()[1], n)
             for n, sock in enumerate(silent)] +
            ["%s/ok%d Ok%d\n" % (server.url, n, n) for n in range(21)]))
        run.send(signal.SIGHUP)
        # each dead one holds a poll for the fast lane's 5 s: one loop at a
        # time would reach the healthy feeds after 50 s
        run.wait_for(lambda: len(polled) == 21, timeout=4.0)
        assert run.finish() == 0
    finally:
        run.finish(signal.SIGKILL)
        for sock in silent:
            sock.close()


def test_reading_a_long_providers_file_on_sighup_never_stops_the_polls(server):
    # issue 17 #12: the reload read and parsed providers.txt in the
    # scheduler's thread; a 1.2 MB line stalled every poll 16 s
    reading, release, polls = threading.Event(), threading.Event(), []

    def answer(handler):
        polls.append(time.monotonic())
        reply(handler, openai_feed(OPENAI_NO_COMPONENTS))
    server.script.set("/ok", answer)
    feed = tracker.Provider(server.url + "/ok", "Ok")
    logs = []

    def slow_reload():
        reading.set()
        release.wait(10)
        return [feed]
    poller = tracker.Tracker([feed], tracker.Config(interval=0.05), log=logs.append,
                             reload=slow_reload)
    thread = threading.Thread(target=poller.run)
    thread.start()
    try:
        assert eventually(lambda: len(polls) >= 1)
        poller.request("reload")
        assert reading.wait(5)
        before = len(polls)
        assert eventually(lambda: len(polls) >= before + 5, timeout=3.0)
        assert not any(line.startswith("reloaded") for line in logs)   # still reading
        release.set()
        assert eventually(lambda: "reloaded: 1 feeds (0 added, 0 removed)" in logs)
    finally:
        release.set()
        poller.stop()
        thread.join(5)
