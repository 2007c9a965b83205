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

Messages are paced (message i leaves at start + i/rate) and each one waits for
its publisher confirm. Unroutable messages (mandatory flag, basic.return) are a
failure unless --allow-unroutable.
"""
import argparse
import json
import os
import secrets
import sys
import time

try:
    import amqp
except ImportError:  # pragma: no cover
    sys.exit("publish: python module amqp missing (run tests/lab/up, or use tests/lab/publish)")

STATE = os.environ.get("ROLL_LAB_STATE", "/var/lib/roll-lab")


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


def main() -> int:
    ap = argparse.ArgumentParser(prog="publish", description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=positive_float, required=True, help="messages per second")
    ap.add_argument("--count", type=nonneg_int, required=True, help="number of messages")
    ap.add_argument("--vhost", default="ops")
    ap.add_argument("--exchange", default="xpublic")
    ap.add_argument("--topic", default="v03.lab.pub",
                    help="routing key (default v03.lab.pub); relPath is its part after the "
                         "first word, then the id")
    ap.add_argument("--ids-file", help="write the published ids there, one a line")
    ap.add_argument("--id-prefix", help="ids are PREFIX-000001...; default lab-<UTC time>-<random>")
    ap.add_argument("--host", default="127.0.0.1:5672", help="AMQP host:port")
    ap.add_argument("--user", default="roll-lab")
    ap.add_argument("--password-file", default=os.path.join(STATE, "broker-password"))
    ap.add_argument("--timeout", type=positive_float, default=10.0,
                    help="seconds for connecting and for each confirm (default 10)")
    ap.add_argument("--allow-unroutable", action="store_true",
                    help="do not fail when a message reaches no queue")
    ap.add_argument("--quiet", action="store_true", help="only the final line")
    a = ap.parse_args()

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

    ids_out = open(a.ids_file, "w", buffering=1) if a.ids_file else None
    returned = []
    sent = 0
    t_start = time.monotonic()
    conn = None
    try:
        conn = amqp.Connection(
            host=a.host, userid=a.user, password=password, virtual_host=a.vhost,
            confirm_publish=True, connect_timeout=a.timeout, read_timeout=a.timeout,
            write_timeout=a.timeout,
            client_properties={"connection_name": "roll-lab publish",
                               "product": "roll-lab publish"})
        conn.connect()
        ch = conn.channel()
        ch.events["basic_return"].add(
            lambda exc, exchange, routing_key, message: returned.append(
                json.loads(message.body).get("id", "?")))
        t_start = time.monotonic()
        for i in range(1, a.count + 1):
            due = t_start + (i - 1) / a.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
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
            # confirm_publish: returns once the broker acked; raises on nack/timeout
            ch.basic_publish(msg, exchange=a.exchange, routing_key=a.topic, mandatory=True,
                             confirm_timeout=a.timeout)
            sent += 1
            if ids_out:
                ids_out.write(mid + "\n")
            if not a.quiet and (sent % max(1, int(a.rate) * 5) == 0):
                print(f"publish: {sent}/{a.count}", flush=True)
        dt = time.monotonic() - t_start
        # a basic.return precedes its ack, but drain briefly to be sure
        if a.count:
            try:
                conn.drain_events(timeout=0.2)
            except Exception:
                pass
    except Exception as e:
        print(f"publish: FAILED after {sent}/{a.count} messages to {a.vhost}/{a.exchange} "
              f"({type(e).__name__}: {e})", file=sys.stderr)
        return 1
    finally:
        if ids_out:
            ids_out.close()
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
    rate = (sent - 1) / dt if sent > 1 and dt > 0 else 0.0
    if returned and not a.allow_unroutable:
        print(f"publish: FAILED: {len(returned)} of {sent} messages reached no queue "
              f"(first: {returned[0]}) on {a.vhost}/{a.exchange} topic {a.topic}",
              file=sys.stderr)
        return 1
    print(f"published {sent}/{a.count} messages to {a.vhost}/{a.exchange} topic {a.topic} "
          f"in {dt:.1f}s ({rate:.1f} msg/s), ids {prefix}-000001.."
          f"{prefix}-{a.count:06d}" + (f", {len(returned)} unroutable" if returned else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
