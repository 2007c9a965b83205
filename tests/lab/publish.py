"""Traffic generator of the roll lab: publish sr3 v03 notification messages.

Run through tests/lab/publish (it picks the lab's tools venv, which has amqp).

Each message is what an sr3 poster sends for a file (format v03, as in
sarracenia/postformat/v03.py and moth/amqp.py of sr3 3.2/3.3): a JSON body,
content_type application/json, no application headers, persistent, routing key
= the topic. The body carries pubTime, baseUrl, relPath, identity and size
(what sr3 needs and logs) plus a unique "id" that is also the file name in
relPath, so a subscriber's "accepted:" log line shows it:

  ... [INFO] sarracenia.flowcb.log after_accept accepted: (lag: 0.01 )  exchange: xpublic
      subtopic: lab.pub a file with baseUrl: http://127.0.0.1/roll-lab/ relPath: lab/pub/<id> ...

Messages are paced (message i leaves at start + i/rate). Publisher confirms are
pipelined: the channel is in confirm mode (confirm.select), messages go out
without waiting, and basic.ack / basic.nack (possibly "multiple") and
basic.return arrive through callbacks while the publisher waits for the next
message's turn; after the last one it waits up to --timeout for every
outstanding confirm. The ids file lists exactly the ids the broker confirmed
(acked), in order. A nack stops publishing and fails, naming the ids; so does
a confirm that never comes. Unroutable messages (mandatory flag, basic.return,
which the broker sends before that message's ack) are a failure, naming the
ids, unless --allow-unroutable.
"""
import argparse
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections import OrderedDict

try:
    import amqp
except ImportError:  # pragma: no cover
    sys.exit("publish: python module amqp missing (run tests/lab/up, or use tests/lab/publish)")

STATE = os.environ.get("ROLL_LAB_STATE", "/var/lib/roll-lab")
MAX_IN_FLIGHT = 20000  # unconfirmed messages before publishing waits for confirms
NAMED = 10             # ids named in a failure message


def pubtime(t: float) -> str:
    """sr3's timeflt2str: YYYYMMDDTHHMMSS.ffffff, UTC."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + ".%06d" % int((t % 1) * 1e6)


def positive_float(s):
    v = float(s)
    if not v > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def nonneg_int(s):
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return v


def some(ids) -> str:
    ids = list(ids)
    more = f" (+{len(ids) - NAMED} more)" if len(ids) > NAMED else ""
    return " ".join(ids[:NAMED]) + more


class Confirms:
    """Publisher-confirm bookkeeping of one channel: delivery tag -> id."""

    def __init__(self, ids_out, per_second=None):
        self.pending = OrderedDict()  # tag -> id, tags ascending
        self.next_tag = 1
        self.confirmed = 0
        self.nacked = []
        self.returned = []
        self.ids_out = ids_out
        self.per_second = per_second  # a PerSecond, or None

    def sent(self, mid):
        self.pending[self.next_tag] = mid
        self.next_tag += 1

    def _settle(self, tag, multiple):
        if not multiple:
            mid = self.pending.pop(tag, None)
            return [mid] if mid is not None else []
        done = []
        while self.pending:
            t = next(iter(self.pending))
            if t > tag:
                break
            done.append(self.pending.pop(t))
        return done

    def on_ack(self, tag, multiple):
        done = self._settle(tag, multiple)
        for mid in done:
            self.confirmed += 1
            if self.ids_out:
                self.ids_out.write(mid + "\n")
        if self.per_second is not None and done:
            self.per_second.add(len(done))

    def on_nack(self, tag, multiple):
        self.nacked.extend(self._settle(tag, multiple))

    def on_return(self, exc, exchange, routing_key, message):
        try:
            self.returned.append(json.loads(message.body).get("id", "?"))
        except ValueError:
            self.returned.append("?")


class PerSecond:
    """Confirms received per wall-clock second, written as `<unix second> <confirms>` lines
    (every second from the first to the last, 0 included, so that a gap shows)."""

    def __init__(self, path):
        self.path = path
        self.counts = {}
        self.first = int(time.time())

    def add(self, n):
        sec = int(time.time())
        self.counts[sec] = self.counts.get(sec, 0) + n

    def write(self):
        last = max([int(time.time())] + list(self.counts))
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            for sec in range(self.first, last + 1):
                f.write(f"{sec} {self.counts.get(sec, 0)}\n")
        os.replace(tmp, self.path)

    def longest_gap(self):
        """The longest run of seconds without a confirm, between the first and the last."""
        secs = sorted(s for s, n in self.counts.items() if n)
        return max((b - a - 1 for a, b in zip(secs, secs[1:])), default=0)


def hosts_of(spec):
    """`h:p[,h:p...]` -> the list, tried in order when connecting."""
    hosts = [h.strip() for h in spec.split(",") if h.strip()]
    if not hosts:
        raise argparse.ArgumentTypeError("no host")
    return hosts


def connect_any(hosts, start, make):
    """make(host) for the hosts from index `start` on, wrapping: (index, result) of the
    first that works; raises the last error when none does."""
    err = None
    for k in range(len(hosts)):
        idx = (start + k) % len(hosts)
        try:
            return idx, make(hosts[idx])
        except Exception as e:  # the next host
            err = e
    raise err


def confirm_channel(host, a, password, cf, name):
    """A connection to `host` (as a.user, vhost a.vhost, a.timeout for everything) and a
    channel in confirm mode whose acks, nacks and returns go to `cf` (a Confirms)."""
    c = amqp.Connection(
        host=host, userid=a.user, password=password, virtual_host=a.vhost,
        confirm_publish=False, connect_timeout=a.timeout, read_timeout=a.timeout,
        write_timeout=a.timeout, client_properties={"connection_name": name, "product": name})
    c.connect()
    ch = c.channel()
    ch.events["basic_return"].add(cf.on_return)
    ch.events["basic_ack"].add(cf.on_ack)
    ch.events["basic_nack"].add(cf.on_nack)
    ch.confirm_select()
    return c, ch


def close_quietly(conn):
    """Closes a connection that may be broken already."""
    if conn is not None:
        try:
            conn.close()
        except Exception:
            pass


def pump(conn, timeout):
    """Handle what the broker sends (confirms, returns) for `timeout` seconds;
    with 0, only what is already there. py-amqp keeps a partly read frame in
    its buffer on a timeout, so stopping anywhere is safe."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.drain_events(timeout=max(0.0, deadline - time.monotonic()))
        except socket.timeout:
            return


def wait_confirms(conn, cf, limit, timeout):
    """Pump until at most `limit` confirms are outstanding; False when none
    (ack or nack) arrived for `timeout` seconds."""
    last, t_progress = (cf.confirmed, len(cf.nacked)), time.monotonic()
    while len(cf.pending) > limit:
        pump(conn, 0.05)
        state = (cf.confirmed, len(cf.nacked))
        if state != last:
            last, t_progress = state, time.monotonic()
        elif time.monotonic() - t_progress > timeout:
            return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(prog="publish", description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=positive_float, required=True, help="messages per second")
    ap.add_argument("--count", type=nonneg_int, help="number of messages (required unless "
                    "--until-stopped)")
    ap.add_argument("--until-stopped", action="store_true",
                    help="publish until SIGTERM/SIGINT or --stop-file (a steady load)")
    ap.add_argument("--stop-file", help="stop (cleanly, as on SIGTERM) once this file exists")
    ap.add_argument("--per-second", metavar="FILE",
                    help="write `<unix second> <confirms>` lines there (every second, 0 "
                         "included: a gap in the broker's confirms shows)")
    ap.add_argument("--vhost", default="ops")
    ap.add_argument("--exchange", default="xpublic")
    ap.add_argument("--topic", default="v03.lab.pub",
                    help="routing key (default v03.lab.pub); relPath is its part after the "
                         "first word, then the id")
    ap.add_argument("--ids-file", help="write the published ids there, one a line")
    ap.add_argument("--id-prefix", help="ids are PREFIX-000001...; default lab-<UTC time>-<random>")
    ap.add_argument("--host", default="127.0.0.1:5672", type=hosts_of,
                    help="AMQP host:port, or a comma-separated list tried in order (a "
                         "reconnect goes on from the host that was lost to the next)")
    ap.add_argument("--user", default="roll-lab")
    ap.add_argument("--password-file", default=os.path.join(STATE, "broker-password"))
    ap.add_argument("--timeout", type=positive_float, default=10.0,
                    help="seconds for connecting and for each confirm (default 10)")
    ap.add_argument("--allow-unroutable", action="store_true",
                    help="do not fail when a message reaches no queue")
    ap.add_argument("--quiet", action="store_true", help="only the final line")
    ap.add_argument("--reconnect", type=float, default=0.0, metavar="SECONDS",
                    help="when the connection is lost (a broker restart), connect again for up "
                         "to SECONDS and go on; the messages in flight then are left out of the "
                         "ids file (default 0: fail)")
    a = ap.parse_args()
    if a.count is None and not a.until_stopped:
        ap.error("--count N or --until-stopped")
    if a.until_stopped:
        a.count = sys.maxsize

    try:
        with open(a.password_file) as f:
            password = f.read().strip()
    except OSError as e:
        print(f"publish: cannot read the broker password: {e}", file=sys.stderr)
        return 1

    prefix = a.id_prefix or "lab-%s-%s" % (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
                                           secrets.token_hex(3))
    words = a.topic.split(".")
    reldir = "/".join(words[1:]) if len(words) > 1 else "lab"

    # SIGTERM (or Ctrl-C) ends publishing early but cleanly: the messages in flight get their
    # confirms, the ids file lists every confirmed one, and the exit code says how it went.
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))

    ids_out = open(a.ids_file, "w", buffering=1) if a.ids_file else None
    per_second = PerSecond(a.per_second) if a.per_second else None
    cf = Confirms(ids_out, per_second)
    host_at = [0]  # index in a.host of the current connection
    sent = 0
    dt = 0.0
    t_start = time.monotonic()
    conn = None
    failures = []
    outages = []     # (seconds, messages in flight whose confirm was lost)

    def connect():
        host_at[0], cc = connect_any(a.host, host_at[0], connect_to)
        return cc

    def connect_to(host):
        return confirm_channel(host, a, password, cf, "roll-lab publish")

    def reconnect(err):
        """After a lost connection (--reconnect): the messages in flight are not confirmed
        (they are left out of the ids file: they may or may not be on the broker); connect
        again until --reconnect seconds have passed."""
        nonlocal conn
        cf.pending.clear()
        cf.next_tag = 1
        close_quietly(conn)
        conn = None
        host_at[0] = (host_at[0] + 1) % len(a.host)  # the next host first
        t0 = time.monotonic()
        print(f"publish: connection lost ({type(err).__name__}: {err}); reconnecting",
              file=sys.stderr, flush=True)
        while True:
            try:
                return connect()
            except Exception as again:
                if time.monotonic() - t0 > a.reconnect:
                    raise again
                time.sleep(0.5)

    i = 1
    try:
        conn, ch = connect()
        t_start = time.monotonic()
        while i <= a.count:
            if a.stop_file and i % 10 == 1 and os.path.exists(a.stop_file):
                stopping.append(True)
            if stopping:
                break
            try:
                # wait for this message's turn, handling confirms meanwhile
                due = t_start + (i - 1) / a.rate
                pump(conn, max(0.0, due - time.monotonic()))
                if not wait_confirms(conn, cf, MAX_IN_FLIGHT - 1, a.timeout):
                    failures.append(f"no confirm within {a.timeout:g}s "
                                    f"({len(cf.pending)} outstanding)")
                    break
                if cf.nacked or stopping:
                    break  # nacks fail below
                mid = f"{prefix}-{i:06d}"
                now = time.time()
                body = {
                    "pubTime": pubtime(now),
                    "baseUrl": "http://127.0.0.1/roll-lab/",
                    "relPath": f"{reldir}/{mid}",
                    "id": mid,
                    "identity": {"method": "random", "value": secrets.token_hex(8)},
                    "size": 0,
                }
                msg = amqp.Message(json.dumps(body), content_type="application/json",
                                   application_headers={}, delivery_mode=2)
                ch.basic_publish(msg, exchange=a.exchange, routing_key=a.topic, mandatory=True)
                cf.sent(mid)
                sent += 1
                i += 1
                if not a.quiet and (sent % max(1, int(a.rate) * 5) == 0):
                    print(f"publish: {sent}/{'-' if a.until_stopped else a.count} "
                          f"({cf.confirmed} confirmed)", flush=True)
                if per_second is not None and sent % max(1, int(a.rate)) == 0:
                    per_second.write()
            except (OSError, amqp.exceptions.ConnectionError, amqp.exceptions.RecoverableConnectionError,
                    amqp.exceptions.ConnectionForced) as e:
                if not a.reconnect:
                    raise
                t0 = time.monotonic()
                lost = len(cf.pending)
                conn, ch = reconnect(e)
                outages.append((time.monotonic() - t0, lost))
                # pace on from now: no burst to catch up with the outage
                t_start = time.monotonic() - (i - 1) / a.rate
        dt = time.monotonic() - t_start
        # every outstanding confirm, each within --timeout of the previous one
        if not failures and not wait_confirms(conn, cf, 0, a.timeout):
            failures.append(f"no confirm within {a.timeout:g}s for {len(cf.pending)} messages: "
                            f"{some(cf.pending.values())}")
    except Exception as e:
        print(f"publish: FAILED after {sent}/{a.count} messages ({cf.confirmed} confirmed) to "
              f"{a.vhost}/{a.exchange} ({type(e).__name__}: {e})", file=sys.stderr)
        return 1
    finally:
        if ids_out:
            ids_out.close()
        if per_second is not None:
            per_second.write()
        close_quietly(conn)
    if outages:
        print(f"publish: {len(outages)} connection losses, reconnected after "
              f"{', '.join(f'{s:.1f}s' for s, _ in outages)}; "
              f"{sum(n for _, n in outages)} messages in flight left unconfirmed "
              f"(not in the ids file)", file=sys.stderr)
    rate = (sent - 1) / dt if sent > 1 and dt > 0 else 0.0
    if cf.nacked:
        failures.append(f"the broker nacked {len(cf.nacked)} messages: {some(cf.nacked)}")
    if cf.returned and not a.allow_unroutable:
        failures.append(f"{len(cf.returned)} of {sent} messages reached no queue on "
                        f"{a.vhost}/{a.exchange} topic {a.topic}: {some(cf.returned)}")
    if failures:
        print(f"publish: FAILED after {sent}/{a.count} messages ({cf.confirmed} confirmed) to "
              f"{a.vhost}/{a.exchange}: {'; '.join(failures)}", file=sys.stderr)
        return 1
    gap = f", longest gap without a confirm {per_second.longest_gap()}s" if per_second else ""
    if stopping:
        print(f"published {sent} messages (stopped) to {a.vhost}/{a.exchange} "
              f"topic {a.topic} in {dt:.1f}s ({rate:.1f} msg/s), ids {prefix}-000001.."
              f"{prefix}-{sent:06d}{gap}")
        return 0
    print(f"published {sent}/{a.count} messages to {a.vhost}/{a.exchange} topic {a.topic} "
          f"in {dt:.1f}s ({rate:.1f} msg/s), ids {prefix}-000001.."
          f"{prefix}-{a.count:06d}" + (f", {len(cf.returned)} unroutable" if cf.returned else "")
          + gap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
