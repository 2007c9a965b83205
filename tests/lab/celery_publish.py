"""Steady Celery task producer of the roll lab (tests/lab/celery_publish runs it with the
lab's tools venv).

Publishes `rolltasks.record` tasks (Celery message protocol 2, JSON, persistent) to the
direct exchange `tasks` with routing key `tasks` of vhost celery on the cluster, each with a
unique task id (uuid4), paced at --rate, with publisher confirms and the mandatory flag, until
SIGTERM/SIGINT, --stop-file exists, or --count tasks. It records:

  IDS_FILE               every task id the broker confirmed (acked and not returned), one a
                         line, written as the confirms arrive
  IDS_FILE.returned      ids the broker returned as unroutable (no queue bound: a lost task
                         the producer knows of; tests/lab/celery_audit counts them as lost)
  IDS_FILE.unconfirmed   ids in flight when a connection was lost (they may or may not be on
                         the broker: the audit does not count them as lost, but an execution
                         twice counts)

A lost connection (a cluster node stopped) is ridden through: it connects again, from the
next host of --host on, for up to --reconnect seconds. Exit 0 when every published task was
confirmed, or only connection losses happened; 1 on a nack, a return, or a failure.
"""
import argparse
import json
import os
import signal
import socket
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from publish import (Confirms, PerSecond, close_quietly, confirm_channel, connect_any,  # noqa: E402
                     hosts_of, positive_float, pump, wait_confirms)

try:
    import amqp
except ImportError:  # pragma: no cover
    sys.exit("celery_publish: python module amqp missing (run tests/lab/up)")

STATE = os.environ.get("ROLL_LAB_STATE", "/var/lib/roll-lab")
MAX_IN_FLIGHT = 2000


class TaskConfirms(Confirms):
    """Confirms whose returned messages (basic.return comes before their ack) stay out of the
    ids file; ids come from the task's headers."""

    def __init__(self, ids_out, returned_out, per_second):
        super().__init__(ids_out, per_second)
        self.returned_set = set()
        self.returned_out = returned_out

    def on_return(self, exc, exchange, routing_key, message):
        tid = (message.headers or {}).get("id", "?")
        self.returned.append(tid)
        self.returned_set.add(tid)
        self.returned_out.write(tid + "\n")
        self.returned_out.flush()

    def on_ack(self, tag, multiple):
        done = self._settle(tag, multiple)
        ok = [t for t in done if t not in self.returned_set]
        for tid in ok:
            self.confirmed += 1
            self.ids_out.write(tid + "\n")
        self.ids_out.flush()
        if self.per_second is not None and ok:
            self.per_second.add(len(ok))


def task_message(task, tid, origin):
    headers = {
        "lang": "py", "task": task, "id": tid, "shadow": None, "eta": None, "expires": None,
        "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
        "root_id": tid, "parent_id": None, "argsrepr": "()", "kwargsrepr": "{}",
        "origin": origin, "ignore_result": True,
    }
    body = json.dumps([[], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    return amqp.Message(body, application_headers=headers, content_type="application/json",
                        content_encoding="utf-8", correlation_id=tid, delivery_mode=2,
                        priority=0)


def main() -> int:
    ap = argparse.ArgumentParser(prog="celery_publish", description=__doc__.split("\n")[0])
    ap.add_argument("--ids-file", required=True, help="confirmed task ids go there")
    ap.add_argument("--rate", type=positive_float, default=20.0, help="tasks per second (20)")
    ap.add_argument("--count", type=int, default=0, help="stop after N tasks (0: until stopped)")
    ap.add_argument("--stop-file", help="stop cleanly once this file exists")
    ap.add_argument("--host", type=hosts_of, default=hosts_of("127.0.0.1:5682,127.0.0.1:5683,127.0.0.1:5681"),
                    help="AMQP host:port list, tried in order (default c2, c3, c1)")
    ap.add_argument("--vhost", default="celery")
    ap.add_argument("--exchange", default="tasks")
    ap.add_argument("--routing-key", default="tasks")
    ap.add_argument("--task", default="rolltasks.record")
    ap.add_argument("--user", default="roll-lab")
    ap.add_argument("--password-file", default=os.path.join(STATE, "broker-password"))
    ap.add_argument("--timeout", type=positive_float, default=10.0,
                    help="seconds for connecting and for each confirm (10)")
    ap.add_argument("--reconnect", type=float, default=120.0, metavar="SECONDS",
                    help="connect again for up to SECONDS after a lost connection (120; 0: fail)")
    ap.add_argument("--per-second", metavar="FILE", help="`<unix second> <confirms>` lines")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    try:
        with open(a.password_file) as f:
            password = f.read().strip()
    except OSError as e:
        print(f"celery_publish: cannot read the broker password: {e}", file=sys.stderr)
        return 1

    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    ids_out = open(a.ids_file, "a")
    returned_out = open(a.ids_file + ".returned", "a")
    unconfirmed_out = open(a.ids_file + ".unconfirmed", "a")
    per_second = PerSecond(a.per_second) if a.per_second else None
    cf = TaskConfirms(ids_out, returned_out, per_second)
    origin = f"celery_publish@{socket.gethostname()}"
    host_at = [0]
    outages = []
    conn = None

    def connect_to(host):
        return confirm_channel(host, a, password, cf, "roll-lab celery_publish")

    def connect():
        host_at[0], cc = connect_any(a.host, host_at[0], connect_to)
        return cc

    def reconnect(err):
        nonlocal conn
        for tid in cf.pending.values():
            unconfirmed_out.write(tid + "\n")
        unconfirmed_out.flush()
        lost = len(cf.pending)
        cf.pending.clear()
        cf.next_tag = 1
        close_quietly(conn)
        conn = None
        print(f"celery_publish: connection to {a.host[host_at[0]]} lost ({type(err).__name__}: "
              f"{err}); {lost} in flight; reconnecting", file=sys.stderr, flush=True)
        host_at[0] = (host_at[0] + 1) % len(a.host)
        t0 = time.monotonic()
        while True:
            try:
                c = connect()
                outages.append((time.monotonic() - t0, lost))
                return c
            except Exception as again:
                if time.monotonic() - t0 > a.reconnect or stopping:
                    raise again
                time.sleep(0.5)

    sent = 0
    failures = []
    t_start = time.monotonic()
    try:
        conn, ch = connect()
        t_start = time.monotonic()
        while not a.count or sent < a.count:
            if a.stop_file and os.path.exists(a.stop_file):
                break
            if stopping or cf.nacked:
                break
            try:
                due = t_start + sent / a.rate
                pump(conn, max(0.0, due - time.monotonic()))
                if not wait_confirms(conn, cf, MAX_IN_FLIGHT - 1, a.timeout):
                    raise socket.timeout(f"no confirm within {a.timeout:g}s")
                tid = str(uuid.uuid4())
                ch.basic_publish(task_message(a.task, tid, origin), exchange=a.exchange,
                                 routing_key=a.routing_key, mandatory=True)
                cf.sent(tid)
                sent += 1
                if per_second is not None and sent % max(1, int(a.rate)) == 0:
                    per_second.write()
                if not a.quiet and sent % max(1, int(a.rate) * 10) == 0:
                    print(f"celery_publish: {sent} sent, {cf.confirmed} confirmed", flush=True)
            except (OSError, amqp.exceptions.ConnectionError,
                    amqp.exceptions.RecoverableConnectionError, amqp.exceptions.ConnectionForced) as e:
                if not a.reconnect:
                    raise
                conn, ch = reconnect(e)
                t_start = time.monotonic() - sent / a.rate  # no burst after an outage
        # the last confirms; a connection lost now leaves them unconfirmed
        try:
            if not wait_confirms(conn, cf, 0, a.timeout):
                failures.append(f"no confirm within {a.timeout:g}s for {len(cf.pending)} tasks")
        except (OSError, amqp.exceptions.ConnectionError,
                amqp.exceptions.RecoverableConnectionError, amqp.exceptions.ConnectionForced):
            pass
        for tid in cf.pending.values():
            unconfirmed_out.write(tid + "\n")
    except Exception as e:
        failures.append(f"{type(e).__name__}: {e}")
    finally:
        for f in (ids_out, returned_out, unconfirmed_out):
            f.close()
        if per_second is not None:
            per_second.write()
        close_quietly(conn)
    dt = time.monotonic() - t_start
    if cf.nacked:
        failures.append(f"{len(cf.nacked)} tasks nacked")
    if cf.returned:
        failures.append(f"{len(cf.returned)} tasks returned unroutable (in {a.ids_file}.returned)")
    lost_conf = sum(n for _, n in outages)
    summary = (f"celery_publish: {sent} tasks sent in {dt:.1f}s, {cf.confirmed} confirmed "
               f"(in {a.ids_file}), {len(outages)} connection losses"
               + (f" (reconnected after {', '.join(f'{s:.1f}s' for s, _ in outages)}; "
                  f"{lost_conf} in flight left unconfirmed)" if outages else "")
               + (f", longest gap without a confirm {per_second.longest_gap()}s" if per_second else ""))
    if failures:
        print(summary + "; FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
