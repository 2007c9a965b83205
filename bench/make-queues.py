"""bench/make-queues.py — make COUNT durable queues in a vhost, each bound to an exchange,
fast: AMQP declares and binds sent without waiting (nowait), then one synchronous call to
make sure the broker has done them all. Half the queues belong to light host b001, half to
b002 (sr3's naming: q_<broker user>.subscribe.bench.rb-<host>_localhost_<8 digits>).
The password is read from a file, never taken on the command line.
Run with the lab's tools venv (python `amqp`)."""
import argparse
import amqp

ap = argparse.ArgumentParser()
ap.add_argument("--vhost", required=True)
ap.add_argument("--count", type=int, required=True)
ap.add_argument("--user", required=True)
ap.add_argument("--password-file", required=True)
ap.add_argument("--exchange", default="xpublic")
ap.add_argument("--host", default="127.0.0.1:5672")
a = ap.parse_args()
with open(a.password_file) as f:
    password = f.read().strip()

conn = amqp.Connection(host=a.host, userid=a.user, password=password, virtual_host=a.vhost)
conn.connect()
ch = conn.channel()
for i in range(a.count):
    owner = "rb-b001" if i % 2 == 0 else "rb-b002"
    q = f"q_{a.user}.subscribe.bench.{owner}_localhost_{i:08d}"
    ch.queue_declare(q, durable=True, auto_delete=False, nowait=True)
    ch.queue_bind(q, a.exchange, routing_key=f"v03.bench.{i % 100}.#", nowait=True)
    if i % 2000 == 1999:  # a synchronous call now and then: the broker keeps up, errors surface
        ch.queue_declare(q, passive=True)
ch.queue_declare(q, passive=True)
ch.close()
conn.close()
print(f"{a.count} queues in {a.vhost}")
