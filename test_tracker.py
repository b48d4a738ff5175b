"""Specification of openai_status_tracker, as tests.

Order: real-shaped sample feeds; the pure functions (parse, extract, diff,
format, providers); a real http.server on 127.0.0.1 and the fetcher and the
tracker against it; the command line through main(); a subprocess or two.
No test touches the internet.
"""

import ast
import gzip
import html
import http.server
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest

import openai_status_tracker as tracker

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED_FEEDS = os.path.join(HERE, "..", "shared", "feeds")
SCRIPT = os.path.join(HERE, "openai_status_tracker.py")


# ---------------------------------------------------------------- samples, in the real shapes

def openai_feed(*entries, updated="2026-09-14T04:56:53.404Z"):
    """status.openai.com/history.atom (incident.io), as served."""
    return ("""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
    <id>https://status.openai.com/</id>
    <title>OpenAI status</title>
    <updated>%s</updated>
    <generator>incident.io</generator>
    <link rel="alternate" href="https://status.openai.com/"/>
    <subtitle>OpenAI status page updates</subtitle>%s
</feed>""" % (updated, "".join(entries))).encode("utf-8")


def openai_entry(code, title, updated, label, message, components=()):
    body = "<b>Status: %s</b><br/><br/>%s" % (label, message)
    if components:
        body += ("<br/><br/><b>Affected components</b>\n          <ul>\n          "
                 + "\n".join("<li>%s</li>" % c for c in components) + "\n          </ul>")
    link = "https://status.openai.com//incidents/%s" % code
    return """
    <entry>
        <title type="html"><![CDATA[%s]]></title>
        <id>%s</id>
        <link href="%s"/>
        <updated>%s</updated>
        <summary type="html"><![CDATA[%s]]></summary>
        <content type="html"><![CDATA[%s]]></content>
    </entry>""" % (title, link, link, updated, body, body)


def statuspage_feed(*entries, host="www.githubstatus.com", name="GitHub"):
    """githubstatus.com / status.claude.com history.atom (Atlassian Statuspage)."""
    return ("""<?xml version="1.0" encoding="UTF-8"?>
<feed xml:lang="en-US" xmlns="http://www.w3.org/2005/Atom">
  <id>tag:%s,2005:/history</id>
  <link rel="alternate" type="text/html" href="https://%s"/>
  <link rel="self" type="application/atom+xml" href="https://%s/history.atom"/>
  <title>%s Status - Incident History</title>
  <updated>2026-07-09T07:04:08Z</updated>
  <author>
    <name>%s</name>
  </author>%s
</feed>""" % (host, host, host, name, name, "".join(entries))).encode("utf-8")


def statuspage_blocks(blocks, banner=""):
    """The HTML of Statuspage <content>: blocks are (date, time, label, message), newest first."""
    out = banner
    for day, clock, label, message in blocks:
        month, date = day.split()
        out += ("<p><small>%s <var data-var='date'>%2s</var>, <var data-var='time'>%s</var>"
                " UTC</small><br><strong>%s</strong> - %s</p>" % (month, date, clock, label, message))
    return out


def statuspage_entry(number, title, published, updated, blocks, banner="",
                     host="www.githubstatus.com"):
    return """
  <entry>
    <id>tag:%s,2005:Incident/%s</id>
    <published>%s</published>
    <updated>%s</updated>
    <link rel="alternate" type="text/html" href="https://%s/incidents/i%s"/>
    <title>%s</title>
    <content type="html">%s</content>
  </entry>""" % (host, number, published, updated, host, number, title,
                  html.escape(statuspage_blocks(blocks, banner), quote=False))


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
    path = os.path.join(SHARED_FEEDS, name)
    if not os.path.exists(path):
        pytest.skip("../shared/feeds is not here")
    with open(path, "rb") as handle:
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
    assert not first.history
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
    assert entry.history
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
    assert entry.history


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
    events, marks = tracker.diff_entries(seen, tracker.parse_feed(body), first, history, "P")
    return [(e.entry.updates[e.index].label, e.kind) for e in events], marks


def test_first_poll_prints_open_incidents_only_and_history_on_request():
    events, marks = diff({}, github_feed(GITHUB_OPEN), first=True)
    assert events == [("Update", "new")]
    assert len(marks) == 2
    events, _ = diff({}, github_feed(GITHUB_OPEN), first=True, history=3)
    assert events == [("Identified", "new"), ("Update", "new")] \
        or events == [("Investigating", "new"), ("Identified", "new"), ("Update", "new")]
    assert len(events) == 3 and events[-1] == ("Update", "new")


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
    events, _ = tracker.diff_entries({}, tracker.parse_feed(openai_feed(late, early)))
    assert [e.entry.title for e in events] == ["a", "b"]


# ---------------------------------------------------------------- formatting

def first_event(body, provider="OpenAI", history=1):
    events, _ = tracker.diff_entries({}, tracker.parse_feed(body), True, history, provider)
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
        "kind": "new", "maintenance": False}


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
    ("https://a.test/x\nftp://a.test/feed\n", "providers.txt:2: only http and https"),
    ("https://a.test/x A\n\nhttps://a.test/x B\n", "providers.txt:3: https://a.test/x is already listed on line 1"),
    ("https:///history.atom\n", "providers.txt:1: URL 'https:///history.atom' has no host name"),
    ("https://a.test:99999/x\n", "providers.txt:1: bad URL"),
    ("# nothing\n\n", "providers.txt: no feeds listed"),
])
def test_parse_providers_rejects_bad_lines_with_file_and_line(text, message):
    with pytest.raises(tracker.ConfigError) as raised:
        tracker.parse_providers(text, "providers.txt")
    assert str(raised.value).startswith(message)


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

    def set(self, path, body=b"", status=200, headers=None, etag=None):
        self.routes[path] = (status, body, dict(headers or {}), etag)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        script = self.server.script
        script.requests.append((self.path, dict(self.headers)))
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

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


@pytest.fixture
def server():
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.script = Script()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
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


def test_fetcher_decodes_gzip(server):
    body = openai_feed(OPENAI_RESOLVED)
    server.script.set("/gz", gzip.compress(body), headers={"Content-Encoding": "gzip"})
    assert tracker.Fetcher()(server.url + "/gz").body == body


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
        return len(server.script.requests) >= 12

    _, _, poller = run_tracker([tracker.Provider(server.url + "/oa", "OpenAI"),
                                tracker.Provider(server.url + "/gh", "GitHub")],
                               tracker.Config(interval=0.02), rewrite_feed_updated)
    assert len(parsed) == 2
    assert poller.stats["unchanged"] >= 4 and poller.stats["not_modified"] >= 4
    gh_requests = [h for path, h in server.script.requests if path == "/gh"]
    assert "If-None-Match" not in gh_requests[0]
    assert all(h["If-None-Match"] == 'W/"x"' for h in gh_requests[1:])


def test_failing_feed_is_logged_once_then_recovery_once_and_others_go_on(server, monkeypatch):
    monkeypatch.setattr(tracker, "backoff_delay", lambda failures, interval, retry=None: interval)
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


@pytest.mark.parametrize("failures, expected", [(1, 60.0), (2, 120.0), (3, 240.0), (30, 3600.0)])
def test_backoff_doubles_up_to_the_cap(failures, expected):
    assert tracker.backoff_delay(failures, 60.0, rand=lambda: 0.5) == expected
    assert tracker.backoff_delay(1, 60.0, retry_after=600.0, rand=lambda: 0.5) == 600.0


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
    assert "watching 1 feed" in err


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
        "error: %s:2: only http and https URLs can be polled, not 'file:///etc/passwd'\n" % path
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
    events, marks = tracker.diff_entries(
        {}, tracker.parse_feed(shared("github-statuspage-history-20260709-ongoing.atom")), True)
    assert [tracker.state_at(e.entry, e.index) for e in events] == ["investigating"]
    events, _ = tracker.diff_entries(
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
        events, new = tracker.diff_entries(marks, tracker.parse_feed(shared(name)), number == 0)
        marks.update(new)
        printed += [(e.entry.id, e.entry.title, e.entry.updates[e.index].label) for e in events
                    if tracker.is_maintenance(e.entry)]
    assert ("In progress", "Completed") == tuple(p[2] for p in printed[-2:])
    assert len(printed) == len(set(printed))


def test_real_claude_feed_first_poll_shows_the_open_incident():
    events, _ = tracker.diff_entries(
        {}, tracker.parse_feed(shared("anthropic-claude-statuspage-history-20261008.atom")),
        True, 0, "Claude")
    assert [tracker.format_event(e).splitlines()[0] for e in events] == [
        "[2026-10-07 21:44:00] Product: Claude"]


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
    assert saved["version"] == 1
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


def test_a_state_file_from_an_older_tracker_keeps_working(server, tmp_path, capsys):
    # the first format: no "version", no validators, no digest, no backoff counters
    server.script.set("/gh", github_feed(GITHUB_OPEN))
    entries = tracker.parse_feed(github_feed(GITHUB_OPEN[1:]))
    seen = {e.id: list(tracker.mark_of(e)) for e in entries}
    state = write(tmp_path, "state.json", json.dumps(
        {"feeds": {server.url + "/gh": {"seen": seen}}}))
    providers = write(tmp_path, "p.txt", "%s/gh GitHub\n" % server.url)
    assert once(providers, state, capsys)[0] == [
        "Update - We are continuing to work on a mitigation."]


def test_a_crash_while_writing_the_state_leaves_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "state.json")
    old = {"version": 1, "feeds": {"http://x.test/feed": {"seen": {"a": ["t", 1, 2]}}}}
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
    assert tracker.StateFile(path, logs.append).load() == old["feeds"]
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
    feed = tracker.Feed(tracker.Provider("http://x.test/feed", "X"))
    both = tracker.parse_feed(openai_feed(OPENAI_RESOLVED, OPENAI_NO_COMPONENTS))
    marks = tracker.diff_entries({}, both, first=True)[1]
    feed.remember(marks, now=0.0)
    feed.remember({both[0].id: marks[both[0].id]}, now=10.0)     # the second one left
    assert tracker.diff_entries(feed.seen, both)[0] == []        # and came back: not new
    feed.remember({both[0].id: marks[both[0].id]}, now=20.0)
    feed.remember({both[0].id: marks[both[0].id]}, now=20.0 + tracker.GONE_GRACE + 11)
    assert list(feed.seen) == [both[0].id] and feed.gone == {}


def test_a_state_file_that_cannot_be_written_is_reported_once(tmp_path):
    logs = []
    state = tracker.StateFile(str(tmp_path / "missing-folder" / "state.json"), logs.append)
    feeds = {"http://x.test/feed": tracker.Feed(tracker.Provider("http://x.test/feed", "X"))}
    assert not state.save(feeds, set(feeds)) and not state.save(feeds, set())
    assert len(logs) == 1 and logs[0].startswith("cannot write state file ")
