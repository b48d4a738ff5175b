"""Status feeds in the real shapes, built from a few values: for test_tracker.py and bench/.

incident.io (status.openai.com) and Atlassian Statuspage (githubstatus.com,
status.claude.com) history.atom, as their servers send them; the real captures
they copy are beside this file (PROVENANCE.md).  Standard library only, Python 3.6+.
Import it with this folder on sys.path: `import samples`.
"""

import html


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


_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def statuspage_incidents_json(atom, impacts, page_id="kctbh9vrtdwd", name="GitHub"):
    """A Statuspage /api/v2/incidents.json for the incidents of a history.atom capture.

    The shape is the real API's (GitHub-Incident-History/GitHub-Incident-History
    keeps GitHub's own answers, incidents/<code>.json); the values come from the
    capture (names, updates, their times and states) and from `impacts`, what
    the API said of each incident (impact, component names; PROVENANCE.md).
    An update names no affected components, as most of the real ones do not;
    an incident `impacts` does not know is left out.
    """
    import json
    import re
    text = atom.decode("utf-8")
    incidents = []
    for entry in re.findall(r"<entry>(.*?)</entry>", text, re.S):
        link = re.search(r'href="([^"]+)"', entry).group(1)
        code = link.rsplit("/", 1)[1]
        year = int(re.search(r"<published>(\d{4})-", entry).group(1))
        title = html.unescape(re.search(r"<title>(.*?)</title>", entry, re.S).group(1))
        content = html.unescape(re.search(r"<content[^>]*>(.*?)</content>", entry, re.S).group(1))
        updates = []
        for month, day, hour, minute, label, body in re.findall(
                r"<small>(\w{3}) <var data-var='date'>\s*(\d+)</var>, <var data-var='time'>"
                r"(\d+):(\d+)</var> UTC</small><br><strong>(.*?)</strong> - (.*?)</p>", content, re.S):
            when = "%04d-%02d-%02dT%s:%s:00.000Z" % (year, _MONTHS.index(month) + 1, int(day),
                                                     hour.zfill(2), minute)
            updates.append({"id": "u%d" % len(updates), "status": label.lower().replace(" ", "_"),
                            "body": re.sub(r"<[^>]+>", "", body), "incident_id": code,
                            "created_at": when, "updated_at": when, "display_at": when,
                            "affected_components": None, "deliver_notifications": True,
                            "custom_tweet": None, "tweet_id": None})
        said = impacts.get("https://www.githubstatus.com/incidents/%s" % code)
        if said is None:
            continue       # nothing known of it: left out rather than made up
        components = [{"id": "c%d" % number, "name": component, "status": "operational",
                       "page_id": page_id, "group": False}
                      for number, component in enumerate(said["components"] or ())]
        incidents.append({"id": code, "name": title, "status": updates[0]["status"],
                          "created_at": updates[-1]["created_at"],
                          "updated_at": updates[0]["updated_at"],
                          "impact": said["impact"], "shortlink": "https://stspg.io/" + code,
                          "started_at": updates[-1]["created_at"], "page_id": page_id,
                          "incident_updates": updates, "components": components})
    return json.dumps({"page": {"id": page_id, "name": name, "time_zone": "Etc/UTC"},
                       "incidents": incidents}, indent=1).encode("utf-8")
