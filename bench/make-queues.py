"""bench/make-queues.py — make (or delete) COUNT durable queues in a vhost, each bound to an
exchange, fast: AMQP declares and binds sent without waiting (nowait) over several connections
at once (the broker spends about 3 ms of CPU on each durable queue and its binding: one
connection keeps one of its cores busy, several keep them all), then one synchronous call per
connection to make sure the broker has done them all. Half the queues belong to light host
b001, half to b002 (sr3's naming: q_<broker user>.subscribe.bench.rb-<host>_localhost_<8
digits>). Queues START .. START+COUNT-1 are made, so that a vhost can grow (20,000, then
100,000). With --delete, those queues are deleted instead (deleting a vhost deletes its queues
one at a time: deleting them first, in parallel, is faster).
The password is read from a file, never taken on the command line.
Run with the lab's tools venv (python `amqp`)."""
import argparse
import threading

import amqp

ap = argparse.ArgumentParser()
ap.add_argument("--vhost", required=True)
ap.add_argument("--count", type=int, required=True)
ap.add_argument("--start", type=int, default=0)
ap.add_argument("--user", required=True)
ap.add_argument("--password-file", required=True)
ap.add_argument("--exchange", default="xpublic")
ap.add_argument("--host", default="127.0.0.1:5672")
ap.add_argument("--connections", type=int, default=4)
ap.add_argument("--delete", action="store_true")
a = ap.parse_args()
with open(a.password_file) as f:
    password = f.read().strip()


def name(i):
    owner = "rb-b001" if i % 2 == 0 else "rb-b002"
    return f"q_{a.user}.subscribe.bench.{owner}_localhost_{i:08d}"


errors = []


def work(first, last):
    try:
        conn = amqp.Connection(host=a.host, userid=a.user, password=password,
                               virtual_host=a.vhost, connect_timeout=60)
        conn.connect()
        ch = conn.channel()
        for n, i in enumerate(range(first, last)):
            q = name(i)
            if a.delete:
                ch.queue_delete(q, nowait=True)
            else:
                ch.queue_declare(q, durable=True, auto_delete=False, nowait=True)
                ch.queue_bind(q, a.exchange, routing_key=f"v03.bench.{i % 100}.#", nowait=True)
            if n % 2000 == 1999:  # a synchronous call now and then: the broker keeps up, errors surface
                ch.exchange_declare(a.exchange, "topic", passive=True)
        ch.exchange_declare(a.exchange, "topic", passive=True)
        ch.close()
        conn.close()
    except Exception as e:  # noqa: BLE001 - reported below, the exit code says it failed
        errors.append(f"queues {first}..{last - 1}: {e!r}")


k = max(1, a.connections)
bounds = [a.start + a.count * j // k for j in range(k + 1)]
threads = [threading.Thread(target=work, args=(bounds[j], bounds[j + 1])) for j in range(k)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    raise SystemExit("make-queues: " + "; ".join(errors))
print(f"{a.count} queues {'deleted from' if a.delete else 'in'} {a.vhost}")
