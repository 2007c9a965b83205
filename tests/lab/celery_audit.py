"""Audit of Celery tasks in the roll lab (tests/lab/celery_audit runs it with the tools venv).

  celery_audit --ids-file F [--ids-file G ...] [--timeout S] [--json]

Reads the task ids tests/lab/celery_publish recorded (F: confirmed by the broker;
F.returned: returned unroutable; F.unconfirmed: in flight at a connection loss), then waits,
at most --timeout seconds, until the group's vhost is drained: every confirmed id executed, or
no message left in any queue of the vhost (ready or unacknowledged, management API) for
--settle seconds with no new execution. Executions are the lines the task `rolltasks.record`
appends (and fsyncs) to ~rl-<host>/executions.log of every celery host:
`<task id> <host> <celery version> <pid> <unix time>`. A queue still holding messages with no
consumer at the end is peeked (basic.get, nothing acknowledged: every message stays) to name
the ids still queued.

Reports published (confirmed), executed, queued (still in a queue), lost (confirmed, neither
executed nor queued), executed_twice (any recorded id executed more than once), returned, and
unconfirmed (executed or not: neither counts as lost), per host and per Celery version.
Exit 0 when nothing is lost, returned or executed twice; 1 otherwise; 2 on a usage error.
"""
import argparse
import glob
import json
import os
import sys
import time
import urllib.parse
import urllib.request
from base64 import b64encode
from collections import Counter, defaultdict

try:
    import amqp
except ImportError:  # pragma: no cover
    sys.exit("celery_audit: python module amqp missing (run tests/lab/up)")

STATE = os.environ.get("ROLL_LAB_STATE", "/var/lib/roll-lab")
NAMED = 10


def read_lines(path, must=True):
    try:
        with open(path) as f:
            return [ln.strip() for ln in f if ln.strip()]
    except FileNotFoundError:
        if must:
            raise
        return []


def executions(pattern):
    """task id -> [(host, version, pid, time)] from every executions.log."""
    runs = defaultdict(list)
    for path in sorted(glob.glob(pattern)):
        for ln in read_lines(path, must=False):
            parts = ln.split()
            if len(parts) >= 5:
                runs[parts[0]].append((parts[1], parts[2], parts[3], parts[4]))
    return runs


class Mgmt:
    def __init__(self, urls, user, password):
        self.urls = urls
        self.auth = "Basic " + b64encode(f"{user}:{password}".encode()).decode()

    def get(self, path):
        err = None
        for url in self.urls:  # the first node that answers
            try:
                req = urllib.request.Request(url + path, headers={"Authorization": self.auth})
                with urllib.request.urlopen(req, timeout=10) as r:
                    return json.load(r)
            except Exception as e:
                err = e
        raise err

    def queues(self, vhost):
        cols = "name,type,node,consumers,messages,messages_ready,messages_unacknowledged"
        return self.get(f"/api/queues/{urllib.parse.quote(vhost, safe='')}?columns={cols}")


def inspect_queues(hosts, user, password, vhost, names):
    """name -> (messages ready, consumers, ids or None) through AMQP (exact, where the
    management API's counts lag): a queue with messages and no consumer is peeked (basic.get,
    nothing acknowledged: the channel closes and every message goes back)."""
    err = None
    for host in hosts:
        try:
            conn = amqp.Connection(host=host, userid=user, password=password, virtual_host=vhost,
                                   connect_timeout=10, read_timeout=30)
            conn.connect()
        except Exception as e:
            err = e
            continue
        try:
            out = {}
            for name in names:
                ch = conn.channel()
                try:
                    _, ready, consumers = ch.queue_declare(name, passive=True)
                except amqp.exceptions.ChannelError:  # gone, or exclusive to another connection
                    continue
                ids = None
                if ready and not consumers:
                    ids = []
                    for _ in range(ready + 100):
                        m = ch.basic_get(name, no_ack=False)
                        if m is None:
                            break
                        ids.append((m.headers or {}).get("id") or m.properties.get("correlation_id"))
                try:
                    ch.close()
                except Exception:
                    pass
                out[name] = (ready, consumers, ids)
            return out
        finally:
            try:
                conn.close()
            except Exception:
                pass
    raise err


def main() -> int:
    ap = argparse.ArgumentParser(prog="celery_audit", description=__doc__.split("\n")[0])
    ap.add_argument("--ids-file", action="append", required=True)
    ap.add_argument("--vhost", default="celery")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds to wait for the vhost to drain (120)")
    ap.add_argument("--settle", type=float, default=6.0,
                    help="seconds with no message queued and no new execution before the "
                         "audit concludes without every id executed (6; the management API's "
                         "counts lag up to 5 s)")
    ap.add_argument("--executions", default="/home/rl-cw*/executions.log",
                    help="glob of the execution logs (/home/rl-cw*/executions.log)")
    ap.add_argument("--mgmt-url", default="http://127.0.0.1:15681,http://127.0.0.1:15682,"
                    "http://127.0.0.1:15683", help="management APIs, the first that answers")
    ap.add_argument("--host", default="127.0.0.1:5682,127.0.0.1:5683,127.0.0.1:5681",
                    help="AMQP host:port list for peeking")
    ap.add_argument("--user", default="roll-lab")
    ap.add_argument("--password-file", default=os.path.join(STATE, "broker-password"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    try:
        with open(a.password_file) as f:
            password = f.read().strip()
        confirmed, returned, unconfirmed = [], set(), set()
        for p in a.ids_file:
            confirmed += read_lines(p)
            returned.update(read_lines(p + ".returned", must=False))
            unconfirmed.update(read_lines(p + ".unconfirmed", must=False))
    except OSError as e:
        print(f"celery_audit: {e}", file=sys.stderr)
        return 2
    published = set(confirmed)
    ours = published | returned | unconfirmed
    mgmt = Mgmt([u.strip() for u in a.mgmt_url.split(",") if u.strip()], a.user, password)

    t0 = time.monotonic()
    deadline = t0 + a.timeout
    quiet_since, last_n, queues, drained = None, -1, [], False
    while True:
        runs = executions(a.executions)
        done = sum(1 for t in published if t in runs)
        try:
            queues = mgmt.queues(a.vhost)
            in_queues = sum((q.get("messages") or 0) for q in queues)
        except Exception as e:  # no API answers: keep waiting
            print(f"celery_audit: management API: {e}", file=sys.stderr)
            queues, in_queues = [], None
        n = sum(len(v) for k, v in runs.items() if k in ours)
        now = time.monotonic()
        if in_queues == 0 and n == last_n:
            quiet_since = quiet_since or now
        else:
            quiet_since = None
        last_n = n
        if in_queues == 0 and (done == len(published)
                               or (quiet_since is not None and now - quiet_since >= a.settle)):
            drained = True
            break
        if now >= deadline:
            break
        time.sleep(0.5)
    waited = time.monotonic() - t0

    # still queued: ids in queues nobody consumes (peeked); the rest is only a count
    queued_ids, queued_unnamed = set(), 0
    names = [q["name"] for q in queues if not q["name"].endswith(".pidbox")]
    try:
        for name, (ready, _, ids) in inspect_queues(a.host.split(","), a.user, password,
                                                     a.vhost, names).items():
            if ids is not None:
                queued_ids.update(t for t in ids if t)
            else:
                queued_unnamed += ready
    except Exception as e:
        print(f"celery_audit: inspecting the queues: {e}", file=sys.stderr)
        queued_unnamed += sum((q.get("messages") or 0) for q in queues)

    executed = {t for t in published if t in runs}
    queued = (published - executed) & queued_ids
    lost = sorted(published - executed - queued)
    twice = {t: [r[0] for r in runs[t]] for t in ours if len(runs.get(t, ())) > 1}
    by_host, by_version = Counter(), Counter()
    for t in ours:
        for host, version, _, _ in runs.get(t, ()):
            by_host[host] += 1
            by_version[version] += 1
    report = {
        "published": len(published),
        "executed": len(executed),
        "queued": len(queued),
        "queued_unidentified": queued_unnamed,
        "lost": len(lost),
        "lost_ids": lost[:NAMED],
        "executed_twice": len(twice),
        "executed_twice_ids": dict(list(sorted(twice.items()))[:NAMED]),
        "returned": len(returned),
        "unconfirmed": len(unconfirmed),
        "unconfirmed_executed": sum(1 for t in unconfirmed if t in runs),
        "executions_by_host": dict(sorted(by_host.items())),
        "executions_by_version": dict(sorted(by_version.items())),
        "queues": [{k: q.get(k) for k in ("name", "type", "node", "consumers", "messages")}
                   for q in queues],
        "drained": drained,
        "waited_seconds": round(waited, 1),
    }
    ok = not lost and not twice and not returned and not queued_unnamed
    report["ok"] = ok
    if a.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"celery audit of vhost {a.vhost}: published {report['published']}, executed "
              f"{report['executed']}, queued {report['queued']}"
              + (f" (+{queued_unnamed} unidentified)" if queued_unnamed else "")
              + f", lost {report['lost']}, executed twice {report['executed_twice']}, returned "
              f"{report['returned']}, unconfirmed {report['unconfirmed']} "
              f"({report['unconfirmed_executed']} executed); by host {report['executions_by_host']}, "
              f"by version {report['executions_by_version']}; "
              f"{'drained' if drained else 'NOT drained'} after {waited:.1f}s")
        if lost:
            print(f"lost: {' '.join(lost[:NAMED])}")
        for t, hosts in list(twice.items())[:NAMED]:
            print(f"executed twice: {t} on {' '.join(hosts)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
