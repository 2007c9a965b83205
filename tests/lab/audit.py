"""Audit of the roll lab: was every published id received, or is it still queued?

Run through tests/lab/audit (it picks the lab's tools venv, which has amqp).

  audit --ids-file F [--ids-file G ...] [--queue-ids WORD=FILE ...] [--vhost ops] [--settle SECONDS] [--json]

Only reads: the broker's management API, the subscribers' sr3 logs, and the
messages of idle queues, which it peeks at without removing them.

The ids are those of the files (written by tests/lab/publish --ids-file, one a
line); every subscriber queue of the vhost should have had a copy of each. For
each queue of the vhost (management API, user roll-lab, password read from the
lab's password file, never shown):

- its subscribers: the sr3 configs (OS user, config) whose
  ~/.cache/sr3/subscribe/<cfg>/*.qname or ~/.config/sr3/subscribe/<cfg>.conf
  (queueName) names it; failing that, its name: q_<user>.subscribe.<cfg>.<os
  user>_<host>_<digits> (a host's own queue). The shared cluster queue has the
  cluster config of every ops host. Queues of no subscriber are "unmapped";
  q_anonymous.* (foreign), roll.lock.* (roll's group lock: a run is going on)
  and roll.hold.* (roll's holding queues: leftovers after a run) are listed
  apart, with their message counts.
- received: the ids in its subscribers' logs,
  ~<user>/.cache/sr3/log/subscribe_<cfg>_NN.log and rotated .log.* files, lines
  "... after_accept accepted: ... relPath: <dir>/<id> ..." (the id is the last
  element of relPath; the "id:" field of those lines is sr3's checksum, not
  ours). Each file is read once; ids not in the files are ignored.
- still queued: what it holds now. sr3 fetches with basic.get, so a running
  subscriber shows no consumer: a queue is "active" when it has consumers or one
  of its subscribers runs (a process whose command line has subscribe/<cfg>,
  owned by the user). An active queue is waited for (--settle, default 60 s)
  until the management API shows 0 ready and 0 unacknowledged messages in two
  polls 5 s or more apart (its statistics lag by up to 5 s); then nothing of it
  is queued. One that never settles is "unsettled": its check is inconclusive.
  An idle queue (no consumer, no subscriber running) is peeked: a consumer with
  unlimited prefetch and manual ack takes every message, unacked, then its
  channel closes without an ack so the broker puts them all back (message
  count checked before and after; messages come back flagged "redelivered").
  Not while roll holds a roll.lock.* queue of the vhost (a run could delete the
  queue while we hold its messages): such a queue is "not peeked"
  (inconclusive).
- missing: neither received nor queued; received_twice: ids received more than
  once, or received and also queued (or queued twice); of those, refetched: the
  subscriber that had received it lost its connection or stopped afterwards
  (sr3's "lost connection to broker", "stop_signal", or a new connection's
  "getSetup connecting to" / "_queueDeclare queue declared"): the broker gives
  back what a consumer had fetched and not yet acknowledged, to it or to another
  subscriber of a shared queue, AMQP's at-least-once delivery; also an id received
  and still queued whose queued copy the peek got flagged redelivered (a subscriber
  had fetched it and not acknowledged it, e.g. when the audit stopped it);
  duplicates: the others, copies that were in the queue twice.

Table by default, --json for a JSON document. Exit 0 when nothing is missing
and no check was inconclusive, 1 otherwise, 2 on usage errors.
"""
import argparse
import base64
import calendar
import glob
import gzip
import json
import multiprocessing
import os
import pwd
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter

try:
    import amqp
except ImportError:  # pragma: no cover
    sys.exit("audit: python module amqp missing (run tests/lab/up, or use tests/lab/audit)")

STATE = os.environ.get("ROLL_LAB_STATE", "/var/lib/roll-lab")
POLL_S = 5.0        # management statistics refresh every 5 s
LIST_IDS = 10       # missing ids listed per queue
PEEK_IDLE_S = 5.0   # a peek gives up when no message came for this long
ACCEPTED = re.compile(rb"after_accept accepted: [^\n]*? relPath: (\S+)")
# A subscriber's connection ended or began, or its process stopped or started (sr3's own log
# lines): what it had fetched and not yet acknowledged comes back from the broker, to it or
# to another subscriber of the queue, which logs it again.
RECONNECTED = (rb"lost connection to broker|getSetup connecting to|stop_signal signal|"
               rb"_queueDeclare queue declared")
LOG_EVENTS = re.compile(rb"after_accept accepted: [^\n]*? relPath: (\S+)|(" + RECONNECTED + rb")")


class UsageError(Exception):
    pass


# ------------------------------------------------------------------ inputs
def read_ids(paths):
    ids = set()
    for p in paths:
        try:
            with open(p) as f:
                ids.update(i for i in (line.strip() for line in f) if i)
        except OSError as e:
            raise UsageError(f"cannot read ids file {p}: {e.strerror or e}")
    return ids


class Mgmt:
    """GET on the management API as the lab's broker user."""

    def __init__(self, url, user, password):
        self.url = url.rstrip("/")
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def get(self, path):
        req = urllib.request.Request(self.url + path, headers={"Authorization": self.auth})
        with urllib.request.urlopen(req, timeout=15) as r:
            return json.load(r)

    def queues(self, vhost):
        cols = "name,type,messages,messages_ready,messages_unacknowledged,consumers"
        return {q["name"]: q for q in
                self.get(f"/api/queues/{urllib.parse.quote(vhost, safe='')}?columns={cols}")}


# ------------------------------------------------------------------ subscribers
def sr3_users():
    """(user, home) of every account that has sr3 state or configs."""
    out = []
    for pw in pwd.getpwall():
        if os.path.isdir(os.path.join(pw.pw_dir, ".config/sr3")) or \
           os.path.isdir(os.path.join(pw.pw_dir, ".cache/sr3")):
            out.append((pw.pw_name, pw.pw_dir))
    return out


def conf_value(path, key):
    try:
        with open(path) as f:
            for line in f:
                w = line.split(None, 1)
                if len(w) == 2 and w[0] == key:
                    return w[1].strip()
    except OSError:
        pass
    return None


def queue_subscribers(users):
    """queue name -> set of (user, cfg) from qname files and queueName settings."""
    m = {}
    for user, home in users:
        for f in glob.glob(os.path.join(home, ".cache/sr3/subscribe/*/*.qname")):
            cfg = os.path.basename(os.path.dirname(f))
            try:
                q = open(f).read().strip()
            except OSError:
                continue
            if q:
                m.setdefault(q, set()).add((user, cfg))
        for f in glob.glob(os.path.join(home, ".config/sr3/subscribe/*.conf")):
            q = conf_value(f, "queueName")
            if q:
                m.setdefault(q, set()).add((user, os.path.basename(f)[:-5]))
    return m


OWN_QUEUE = re.compile(r"^q_[^.]+\.subscribe\.([^.]+)\.([^_]+)_[^_]+_\d+$")


def running_subscribers():
    """(user, cfg) of every sr3 subscribe instance running now."""
    run = set()
    uname = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue
        if not any(b"sarracenia" in a or a.endswith(b"sr3") for a in args):
            continue
        for a in args:
            if a.startswith(b"subscribe/"):
                cfg = a[len(b"subscribe/"):].decode(errors="replace")
                if cfg.endswith(".conf"):
                    cfg = cfg[:-5]
                if uid not in uname:
                    try:
                        uname[uid] = pwd.getpwuid(uid).pw_name
                    except KeyError:
                        uname[uid] = str(uid)
                run.add((uname[uid], cfg))
    return run


# ------------------------------------------------------------------ logs
def log_files(home, cfg):
    return sorted(glob.glob(os.path.join(home, f".cache/sr3/log/subscribe_{cfg}_[0-9][0-9].log*")))


def line_time(data, at):
    """Seconds since the epoch of the log line around byte `at` (sr3 writes UTC stamps,
    `2026-12-01 22:45:41,474`), or None."""
    start = data.rfind(b"\n", 0, at) + 1
    stamp = data[start:start + 23].decode(errors="replace")
    try:
        t = time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")
        return calendar.timegm(t) + int(stamp[20:23]) / 1000
    except (ValueError, IndexError):
        return None


def read_log(job):
    """The ids (last element of relPath) of the accepted lines of one file: a Counter, and
    for each id how many of its receptions came again after the subscriber's connection
    ended (refetched: the broker gave back what it had not acknowledged) and whether the
    connection ended after its last one (a copy still queued is then the same message).
    Connections that ended at or after `ignore_after` (the audit's own stop of the
    subscribers) explain nothing."""
    path, ignore_after = job
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return path, None, str(e)
    c, refetched, era = Counter(), Counter(), {}
    epoch = 0
    for m in LOG_EVENTS.finditer(data):
        if m.group(2):
            if ignore_after is not None:
                t = line_time(data, m.start())
                if t is not None and t >= ignore_after:
                    continue
            epoch += 1
            continue
        i = m.group(1).rsplit(b"/", 1)[-1]
        if i in era and era[i] != epoch:
            refetched[i] += 1
        era[i] = epoch
        c[i] += 1
    dec = lambda b: b.decode(errors="replace")
    after_last = {dec(i) for i, e in era.items() if e != epoch}
    return path, ({dec(k): v for k, v in c.items()},
                  {dec(k): v for k, v in refetched.items()}, after_last), None


# ------------------------------------------------------------------ peek
ID_IN_BODY = re.compile(rb'"id"\s*:\s*"([^"\\]*)"')
REL_IN_BODY = re.compile(rb'"relPath"\s*:\s*"([^"\\]*)"')


def body_id(body):
    m = ID_IN_BODY.search(body) or REL_IN_BODY.search(body)
    return m.group(1).rsplit(b"/", 1)[-1].decode(errors="replace") if m else None


def read_deliveries(sock, want, idle):
    """Read frames straight from the socket until `want` messages came: py-amqp
    builds a Message object per delivery (~25k/s); this only splits frames and
    finds the id in each body (~150k/s). Returns (Counter of ids, count,
    bytes read past the last whole message, error or None, Counter of the ids
    whose delivery was flagged redelivered: the broker had given that message to a
    consumer before, which did not acknowledge it)."""
    ids, seen, buf, pos = Counter(), 0, b"", 0
    body_left, parts = None, []
    redelivered, flagged = Counter(), False
    sock.settimeout(idle)
    while seen < want:
        if len(buf) - pos < 8 or len(buf) - pos < 8 + int.from_bytes(buf[pos + 3:pos + 7], "big"):
            try:
                chunk = sock.recv(1 << 20)
            except socket.timeout:
                return ids, seen, buf[pos:], f"only {seen} of {want} messages came", redelivered
            if not chunk:
                return ids, seen, b"", "connection closed by the broker", redelivered
            buf = buf[pos:] + chunk
            pos = 0
            continue
        ftype = buf[pos]
        size = int.from_bytes(buf[pos + 3:pos + 7], "big")
        payload = buf[pos + 7:pos + 7 + size]
        pos += 8 + size
        if ftype == 1:       # method: only basic.deliver is expected
            if payload[:4] != b"\x00\x3c\x00\x3c":
                # hand it back to py-amqp (e.g. a channel.close with the reason)
                return ids, seen, buf[pos - 8 - size:], "unexpected method frame", redelivered
            # basic.deliver: consumer-tag (shortstr), delivery-tag (8), redelivered (bit)
            at = 4 + 1 + payload[4] + 8
            flagged = len(payload) > at and bool(payload[at] & 1)
        elif ftype == 2:     # content header: class, weight, body size
            body_left = int.from_bytes(payload[4:12], "big")
            parts = []
        elif ftype == 3:     # body
            parts.append(payload)
            body_left -= size
        if body_left == 0:
            mid = body_id(b"".join(parts))
            if mid:
                ids[mid] += 1
                if flagged:
                    redelivered[mid] += 1
            seen += 1
            body_left = None
    return ids, seen, buf[pos:], None, redelivered


def peek(args):
    """Every message of an idle queue, left in place: ids Counter + counts."""
    qname, amqp_host, user, password, vhost = args
    res = {"queue": qname, "ids": None, "before": None, "after": None, "seen": 0, "error": None,
           "redelivered": {}}
    conn = None
    try:
        conn = amqp.Connection(host=amqp_host, userid=user, password=password,
                               virtual_host=vhost, connect_timeout=10, read_timeout=30,
                               write_timeout=30, heartbeat=0,
                               client_properties={"connection_name": "roll-lab audit (peek)",
                                                  "product": "roll-lab audit"})
        conn.connect()
        ch = conn.channel()
        _, before, consumers = ch.queue_declare(qname, passive=True)
        res["before"] = before
        if consumers:
            res["error"] = f"{consumers} consumer(s) now"
            return res
        ids, seen, redelivered = Counter(), 0, Counter()
        if before:
            ch.basic_qos(0, 0, False)  # no prefetch limit: the broker sends them all
            # messages past `before` (published meanwhile) reach this callback
            ch.basic_consume(qname, callback=lambda m: None, no_ack=False)
            # py-amqp read exactly up to consume-ok: the socket is at a frame start
            t = conn.transport
            ids, seen, rest, err, redelivered = read_deliveries(t.sock, before, PEEK_IDLE_S)
            t.sock.settimeout(30)
            t._read_buffer = rest + t._read_buffer  # the rest goes back to py-amqp
            if err:
                res["error"] = err
        ch.close()  # nothing acked: the broker requeues every message
        ch2 = conn.channel()
        _, after, _ = ch2.queue_declare(qname, passive=True)
        ch2.close()
        res.update(ids=dict(ids), after=after, seen=seen, redelivered=dict(redelivered))
    except Exception as e:  # reported per queue
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
    return res


# ------------------------------------------------------------------ audit
def classify(queues, submap, users):
    """-> audited {queue: set((user, cfg))}, and the other queues by kind."""
    homes = dict(users)
    audited, other = {}, {"foreign": [], "unmapped": [], "lock": [], "holding": []}
    for name in sorted(queues):
        if name.startswith("roll.lock."):
            other["lock"].append(name)
        elif name.startswith("roll.hold."):
            other["holding"].append(name)
        elif name in submap:
            audited[name] = {s for s in submap[name] if s[0] in homes}
            if not audited[name]:
                del audited[name]
                other["unmapped"].append(name)
        elif name.startswith("q_anonymous."):
            other["foreign"].append(name)
        else:
            m = OWN_QUEUE.match(name)
            if m and m.group(2) in homes:
                audited[name] = {(m.group(2), m.group(1))}
            else:
                other["unmapped"].append(name)
    return audited, other


def label(name, subs):
    users = sorted(u for u, _ in subs)
    cfgs = sorted({c for _, c in subs})
    hosts = [u.split("-", 1)[1] if "-" in u else u for u in users]
    if len(subs) == 1:
        return f"{cfgs[0]} {hosts[0]}"
    return f"{'/'.join(cfgs)} ({len(subs)} hosts)"


def is_zero(q):
    return q.get("messages_ready") == 0 and q.get("messages_unacknowledged") == 0


def audit(a, ids, password, only=()):
    """`only`: (word, ids) pairs: those ids are expected in the queues whose name has word."""
    t0 = time.monotonic()
    everywhere = ids
    ids = set(ids).union(*(extra for _, extra in only))

    def wanted(name):
        return everywhere.union(*(extra for word, extra in only if word in name))
    mgmt = Mgmt(a.mgmt_url, a.user, password)
    try:
        queues = mgmt.queues(a.vhost)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise UsageError(f"no vhost {a.vhost!r} on {a.mgmt_url}")
        raise
    users = sr3_users()
    homes = dict(users)
    audited, other = classify(queues, queue_subscribers(users), users)
    problems, notes = [], []

    # 1. active queues: wait until they are empty (two polls at 0, 5 s apart)
    running = running_subscribers()

    def active(name):
        return bool(queues[name].get("consumers")) or bool(audited[name] & running)

    state = {}       # queue -> settled | unsettled | idle
    zero_since = {}
    t_poll = time.monotonic()
    deadline = t_poll + max(a.settle, POLL_S)
    while True:
        waiting = []
        for name in audited:
            if state.get(name) == "settled":
                continue
            if not active(name):
                state[name] = "idle"
                continue
            state[name] = "unsettled"
            if is_zero(queues[name]):
                zero_since.setdefault(name, t_poll)
                if t_poll - zero_since[name] >= POLL_S:
                    state[name] = "settled"
                    continue
            else:
                zero_since.pop(name, None)
            waiting.append(name)
        if not waiting or time.monotonic() + POLL_S > deadline + 0.5:
            break
        time.sleep(max(0.0, t_poll + POLL_S + 0.05 - time.monotonic()))
        t_poll = time.monotonic()
        queues.update(mgmt.queues(a.vhost))
        running = running_subscribers()

    # 2. idle queues: peek (not while roll runs on this vhost)
    locks = [q for q in queues if q.startswith("roll.lock.")]
    idle = [n for n in audited if state[n] == "idle"]
    running = running_subscribers()
    peeks = {}
    if idle and locks:
        for n in idle:
            state[n] = "not peeked"
        problems.append(f"roll holds {', '.join(locks)} (a run is going on): "
                        f"{len(idle)} idle queue(s) not peeked")
    if idle and not locks:
        jobs = [(n, a.host, a.user, password, a.vhost) for n in idle if not active(n)]
        for n in idle:
            if active(n):
                state[n] = "unsettled"  # a subscriber started meanwhile
        with multiprocessing.Pool(max(1, min(len(jobs), os.cpu_count() or 2))) as pool:
            for r in pool.imap_unordered(peek, jobs):
                peeks[r["queue"]] = r
                n = r["queue"]
                if r["error"] or r["ids"] is None:
                    state[n] = "peek failed"
                    problems.append(f"{n}: peek failed: {r['error']}")
                else:
                    state[n] = "peeked"
                if r["after"] is not None and r["before"] is not None and r["after"] < r["before"]:
                    problems.append(f"{n}: {r['before']} messages before the peek, "
                                    f"{r['after']} after")

    # 3. logs: every file of every subscriber, once
    files = sorted({f for subs in audited.values() for (u, c) in subs
                    for f in log_files(homes[u], c)})
    counts, refetches, unacked = {}, {}, {}
    with multiprocessing.Pool(max(1, min(len(files), os.cpu_count() or 2))) as pool:
        jobs = [(f, a.ignore_after) for f in files]
        for path, found, err in pool.imap_unordered(read_log, jobs, chunksize=1):
            if err:
                problems.append(f"cannot read {path}: {err}")
                found = ({}, {}, set())
            got_ids, again, later = found
            counts[path] = Counter({k: v for k, v in got_ids.items() if k in ids})
            refetches[path] = Counter({k: v for k, v in again.items() if k in ids})
            unacked[path] = {k for k in later if k in ids}
    log_bytes = sum(os.path.getsize(f) for f in files if os.path.exists(f))

    # a subscriber that started after its queue was peeked may have logged ids
    # that the peek saw too: duplicates may then be too many
    now_running = running_subscribers()
    for n in audited:
        if state[n] == "peeked" and audited[n] & now_running:
            notes.append(f"{n}: a subscriber started during the audit; "
                         f"its duplicate count may be too high")

    # 4. per queue
    rows = []
    tot = Counter()
    for n, subs in audited.items():
        got, refetched, after_last = Counter(), Counter(), Counter()
        for (u, c) in subs:
            for f in log_files(homes[u], c):
                got.update(counts.get(f, ()))
                refetched.update(refetches.get(f, ()))
                after_last.update(unacked.get(f, set()))
        want = wanted(n)
        got = Counter({k: v for k, v in got.items() if k in want})
        st = state[n]
        q = queues[n]
        row = {"queue": n, "label": label(n, subs),
               "subscribers": sorted(f"{u}:{c}" for u, c in subs),
               "running": sorted(f"{u}:{c}" for u, c in subs & now_running),
               "state": st, "messages": q.get("messages"),
               "messages_ready": q.get("messages_ready"),
               "messages_unacknowledged": q.get("messages_unacknowledged"),
               "published": len(want), "received": len(got)}
        redelivered = Counter()
        if st == "settled":
            queued = Counter()
        elif st == "peeked":
            redelivered = Counter({k: v for k, v in (peeks[n].get("redelivered") or {}).items()
                                   if k in want})
            queued = Counter({k: v for k, v in peeks[n]["ids"].items() if k in want})
            row["peek"] = {k: peeks[n][k] for k in ("before", "after", "seen")}
        else:
            queued = None
        row["received_total"] = sum(got.values())
        queued_c = queued or Counter()
        twice = [i for i in (got.keys() | queued_c.keys()) if got[i] + queued_c[i] > 1]
        # An extra copy is a refetch when the connection of a subscriber that had received it
        # ended afterwards (the broker gives back what a consumer had not acknowledged, to it
        # again or, on a shared queue, to another subscriber, or keeps it queued), and when a
        # queued copy came to the peek flagged redelivered (a subscriber had fetched it and
        # not acknowledged it: the audit's own stop of the subscribers gives such a batch
        # back). Any other extra copy was in the queue twice.
        def extra(i):
            return max(got[i] + queued_c[i] - 1 - refetched[i] - after_last[i]
                       - redelivered[i], 0)
        row["received_twice"] = len(twice)
        row["refetched"] = sum(1 for i in twice if extra(i) == 0)
        row["duplicates"] = sum(1 for i in twice if extra(i) > 0)
        if queued is None:
            not_received = sorted(want - got.keys())
            row.update(queued=None, missing=None, not_received=len(not_received),
                       missing_ids=not_received[:LIST_IDS])
            problems.append(f"{n}: {st}: {len(not_received)} ids not received, "
                            "queue contents unknown")
            tot["inconclusive"] += 1
        else:
            missing = sorted(want - got.keys() - queued.keys())
            row.update(queued=len(queued), missing=len(missing), missing_ids=missing[:LIST_IDS])
            if missing:
                problems.append(f"{n}: {len(missing)} ids missing")
        for k in ("received", "queued", "missing", "duplicates", "received_twice", "refetched"):
            tot[k] += row.get(k) or 0
        tot["published"] += len(want)
        rows.append(row)

    def listing(names):
        return [{"queue": n, "messages": queues[n].get("messages"),
                 "consumers": queues[n].get("consumers")} for n in names]

    return {
        "vhost": a.vhost,
        "ids_files": a.ids_file,
        "ids": len(ids),
        "queues": rows,
        "totals": dict(tot),
        "foreign_queues": listing(other["foreign"]),
        "unmapped_queues": listing(other["unmapped"]),
        "roll_locks": listing(other["lock"]),
        "leftover_holding_queues": listing(other["holding"]),
        "log_files": len(files),
        "log_bytes": log_bytes,
        "problems": problems,
        "notes": notes,
        "ok": not problems,
        "elapsed_s": round(time.monotonic() - t0, 2),
    }


# ------------------------------------------------------------------ output
def show(r):
    def v(x):
        return "-" if x is None else str(x)

    print(f"audit of vhost {r['vhost']}: {r['ids']} ids from {', '.join(r['ids_files'])}")
    head = ("queue", "running", "state", "in queue", "published", "received", "queued",
            "missing", "dup")
    lines = [head]
    for q in r["queues"]:
        lines.append((q["label"], f"{len(q['running'])}/{len(q['subscribers'])}", q["state"],
                      v(q["messages"]), str(q["published"]), str(q["received"]),
                      v(q["queued"]), v(q["missing"]) if q["missing"] is not None
                      else f"?{q['not_received']}", str(q["duplicates"])))
    t = r["totals"]
    lines.append(("total", "", "", "", v(t.get("published", 0)), v(t.get("received", 0)),
                  v(t.get("queued", 0)),
                  v(t.get("missing", 0)) + ("+?" if t.get("inconclusive") else ""),
                  v(t.get("duplicates", 0))))
    w = [max(len(l[i]) for l in lines) for i in range(len(head))]
    for k, l in enumerate(lines):
        if k == len(lines) - 1:
            print("  ".join("-" * x for x in w))
        print("  ".join(c.ljust(w[i]) if i < 3 else c.rjust(w[i]) for i, c in enumerate(l)))
    for q in r["queues"]:
        if q["missing_ids"] and (q["missing"] or q["missing"] is None):
            what = "missing" if q["missing"] is not None else "not received (inconclusive)"
            n = q["missing"] if q["missing"] is not None else q["not_received"]
            more = f" (+{n - len(q['missing_ids'])} more)" if n > len(q["missing_ids"]) else ""
            print(f"{q['label']}: {what}: {' '.join(q['missing_ids'])}{more}")
    print(f"queues: {', '.join(q['queue'] for q in r['queues'])}")
    for key, title in (("foreign_queues", "foreign queues"), ("unmapped_queues", "unmapped queues"),
                       ("roll_locks", "roll locks"),
                       ("leftover_holding_queues", "leftover holding queues")):
        for q in r[key]:
            print(f"{title}: {q['queue']}: {v(q['messages'])} messages, "
                  f"{v(q['consumers'])} consumers")
    for n in r["notes"]:
        print(f"note: {n}")
    for p in r["problems"]:
        print(f"PROBLEM: {p}")
    print(f"audit: {'OK' if r['ok'] else 'FAILED'} ({r['log_files']} log files, "
          f"{r['log_bytes'] / 1e6:.1f} MB, {r['elapsed_s']:.1f}s)")


def main() -> int:
    ap = argparse.ArgumentParser(prog="audit", description=__doc__.split("\n")[0])
    ap.add_argument("--ids-file", action="append", required=True,
                    help="ids published (one a line); may be repeated")
    ap.add_argument("--queue-ids", action="append", default=[], metavar="WORD=FILE",
                    help="ids published to the queues whose name contains WORD only "
                         "(e.g. straight into one queue); may be repeated")
    ap.add_argument("--vhost", default="ops")
    ap.add_argument("--settle", type=float, default=60.0,
                    help="seconds to wait for active queues to empty (default 60; "
                         "two polls 5 s apart at least)")
    ap.add_argument("--json", action="store_true", help="a JSON document instead of a table")
    ap.add_argument("--ignore-after", type=float, metavar="UNIX_TIME",
                    help="subscriber stops and reconnections from then on (the subscribers "
                         "stopped for the audit) explain no id received twice")
    ap.add_argument("--mgmt-url", default="http://127.0.0.1:15672")
    ap.add_argument("--host", default="127.0.0.1:5672", help="AMQP host:port")
    ap.add_argument("--user", default="roll-lab")
    ap.add_argument("--password-file", default=os.path.join(STATE, "broker-password"))
    a = ap.parse_args()
    if a.settle < 0:
        ap.error("--settle must be >= 0")
    try:
        ids = read_ids(a.ids_file)
        only = []
        for spec in a.queue_ids:
            word, sep, path = spec.partition("=")
            if not sep or not word or not path:
                raise UsageError(f"--queue-ids {spec!r}: WORD=FILE expected")
            only.append((word, read_ids([path])))
    except UsageError as e:
        print(f"audit: {e}", file=sys.stderr)
        return 2
    try:
        with open(a.password_file) as f:
            password = f.read().strip()
    except OSError as e:
        print(f"audit: cannot read the broker password: {e}", file=sys.stderr)
        return 1
    try:
        r = audit(a, ids, password, only)
    except UsageError as e:
        print(f"audit: {e}", file=sys.stderr)
        return 2
    except (OSError, urllib.error.URLError, ValueError) as e:
        print(f"audit: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if a.json:
        json.dump(r, sys.stdout, indent=1)
        print()
    else:
        show(r)
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
