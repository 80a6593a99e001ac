#!/usr/bin/env python3
"""make-frame-corpus.py: writes the seed corpora for fuzz-frame, fuzz-hello and fuzz-mux (run once)."""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PREFACE = b"\xf0GT\x01"

HELLO, WELCOME, OPEN, DATA, SHUTDOWN, RESET, WINDOW, PING, GOAWAY, ERROR, FORWARD = range(1, 12)
CAPS, ACK = 0x04, 0x01
CAP_FORWARD = 1
HTTP, HTTPS, TCP = 0, 1, 2


def frame(ftype, stream, payload=b"", flags=0):
    return struct.pack(">BBII", ftype, flags, stream, len(payload)) + payload


def hello_payload(ident, secret, services):
    out = bytes([len(ident)]) + ident + bytes([len(secret)]) + secret
    out += struct.pack(">H", len(services))
    for kind, flags, port, prefix in services:
        out += struct.pack(">BBHB", kind, flags, port, len(prefix)) + prefix
    return out


def error_payload(code, msg):
    raw = msg.encode("utf-8")
    return struct.pack(">HH", code, len(raw)) + raw


HELLOS = {
    "http-one": hello_payload(b"client", b"secret", [(HTTP, 0, 0, b"www")]),
    "mixed": hello_payload(b"id-2", b"pw", [(HTTP, 0, 0, b"web"), (HTTPS, 0, 0, b"secure-1"),
                                           (TCP, 1, 0, b""), (TCP, 0, 2222, b"")]),
    "tcp-only": hello_payload(b"t", b"s", [(TCP, 1, 8080, b"")]),
    "long-id": hello_payload(b"i" * 200, b"s" * 200, [(HTTPS, 0, 0, b"p" * 200)]),
    "many-tcp": hello_payload(b"many", b"x", [(TCP, 0, 10000 + i, b"") for i in range(64)]),
}

FRAMES = {
    "handshake": PREFACE + frame(HELLO, 0, HELLOS["mixed"]),
    "welcome": PREFACE + frame(WELCOME, 0, struct.pack(">HHHHH", 2, 2, 40000, 3, 40001)),
    "stream": PREFACE
    + frame(OPEN, 1, struct.pack(">H", 0) + b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
    + frame(WINDOW, 1, struct.pack(">I", 131072))
    + frame(DATA, 1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    + frame(SHUTDOWN, 1)
    + frame(OPEN, 2, struct.pack(">H", 1))
    + frame(RESET, 2, struct.pack(">I", 1)),
    "ping": PREFACE + frame(PING, 0, bytes(range(8))) + frame(PING, 0, bytes(range(8)), flags=1),
    "goaway-error": PREFACE
    + frame(GOAWAY, 0, error_payload(13, "server is shutting down"))
    + frame(ERROR, 0, error_payload(1, "invalid id or secret ✗")),
    "preface-only": PREFACE,
    # docs/protocol.md §6.11: a forward-only client (no service), WELCOME with caps, then a
    # client-opened stream (even id) routed (ACK) and a refused one (RESET NOT_ALLOWED).
    "forward": PREFACE
    + frame(HELLO, 0, hello_payload(b"b", b"s", []) + struct.pack(">I", CAP_FORWARD), flags=CAPS)
    + frame(WELCOME, 0, struct.pack(">HI", 0, CAP_FORWARD), flags=CAPS)
    + frame(FORWARD, 2, bytes([3]) + b"svc" + b"SSH-2.0-x\r\n")
    + frame(FORWARD, 2, flags=ACK)
    + frame(DATA, 2, b"echo")
    + frame(OPEN, 3, struct.pack(">H", 0))
    + frame(FORWARD, 4, bytes([5]) + b"ghost")
    + frame(RESET, 4, struct.pack(">I", 7)),
}


# fuzz-mux: a mode byte (bit 0: the mux is the server, bit 1: the client attaches a socket to
# each opened stream, else resets it), then the frames the peer sends after the handshake.
OPEN_ADDR4 = struct.pack(">HB", 0, 4) + bytes([127, 0, 0, 1]) + struct.pack(">H", 5555) \
    + bytes([127, 0, 0, 1]) + struct.pack(">H", 80)
MUX = {
    "client-relay": bytes([2])
    + frame(OPEN, 1, struct.pack(">H", 0) + b"GET / HTTP/1.1\r\nHost: www\r\n\r\n")
    + frame(DATA, 1, b"more body bytes")
    + frame(WINDOW, 1, struct.pack(">I", 65536))
    + frame(SHUTDOWN, 1)
    + frame(OPEN, 2, struct.pack(">H", 1))
    + frame(DATA, 2, b"x" * 300)
    + frame(RESET, 2, struct.pack(">I", 1))
    + frame(PING, 0, bytes(range(8))),
    "client-reset": bytes([0])
    + frame(OPEN, 1, struct.pack(">H", 3) + b"abc")
    + frame(DATA, 1, b"late data")
    + frame(OPEN, 3, struct.pack(">H", 0))
    + frame(SHUTDOWN, 3),
    "client-addr": bytes([2]) + frame(OPEN, 1, OPEN_ADDR4, flags=2)
    + frame(SHUTDOWN, 1),
    "client-goaway": bytes([2]) + frame(OPEN, 1, struct.pack(">H", 0))
    + frame(GOAWAY, 0, error_payload(13, "server is shutting down"))
    + frame(DATA, 1, b"after goaway") + frame(SHUTDOWN, 1),
    "client-error": bytes([2]) + frame(ERROR, 0, error_payload(1, "bye")),
    "server-window": bytes([1])
    + frame(WINDOW, 1, struct.pack(">I", 4096))
    + frame(PING, 0, bytes(8), flags=1)
    + frame(PING, 0, bytes(8)),
    "server-open-refused": bytes([3]) + frame(OPEN, 1, struct.pack(">H", 0)),
    "server-goaway": bytes([1]) + frame(GOAWAY, 0, error_payload(0, "")),
}


def write(folder, name, data):
    path = os.path.join(HERE, "corpus", folder)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, name), "wb") as f:
        f.write(data)


def main():
    for name, data in FRAMES.items():
        write("frame", name, data)
    for name, data in HELLOS.items():
        write("hello", name, data)
        write("frame", "hello-" + name, PREFACE + frame(HELLO, 0, data))
    for name, data in MUX.items():
        write("mux", name, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
