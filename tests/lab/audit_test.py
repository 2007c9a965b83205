"""A check of audit.py's frame reader (run by tests/integration/lab.rs with the lab's tools
venv): deliveries built byte for byte as RabbitMQ sends them, some flagged redelivered."""
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import audit  # noqa: E402


def frame(kind, payload):
    return struct.pack(">BHI", kind, 1, len(payload)) + payload + b"\xce"


def delivery(tag, mid, redelivered):
    tag_s = b"ctag-1"
    method = (b"\x00\x3c\x00\x3c" + bytes([len(tag_s)]) + tag_s + struct.pack(">Q", tag)
              + bytes([1 if redelivered else 0]) + b"\x07xpublic" + b"\x01k")
    body = ('{"id": "%s", "relPath": "/x/%s"}' % (mid, mid)).encode()
    header = struct.pack(">HHQH", 60, 0, len(body), 0)
    return frame(1, method) + frame(2, header) + frame(3, body)


def main():
    a, b = socket.socketpair()
    stream = (delivery(1, "m1", False) + delivery(2, "m2", True) + delivery(3, "m2", False)
              + delivery(4, "m3", True))
    a.sendall(stream)
    ids, seen, rest, err, redelivered = audit.read_deliveries(b, 4, 2.0)
    assert err is None, err
    assert seen == 4, seen
    assert rest == b"", rest
    assert dict(ids) == {"m1": 1, "m2": 2, "m3": 1}, ids
    assert dict(redelivered) == {"m2": 1, "m3": 1}, redelivered
    print("ok: 4 deliveries, 2 flagged redelivered")


if __name__ == "__main__":
    main()
