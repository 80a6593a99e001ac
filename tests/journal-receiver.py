#!/usr/bin/env python3
# journal-receiver.py DIR OUT: a stand-in for journald for check-journal.sh. DIR/socket is the
# native socket: every datagram (KEY=value lines, or KEY, a little-endian 64-bit length and the
# value) goes to OUT as one JSON object per line; large entries come as a memfd (SCM_RIGHTS).
# DIR/stdout is the stream socket of services' stdout/stderr: what arrives there goes to
# OUT.stream. GLib sends structured entries to the native socket when stderr is connected to a
# socket under /run/systemd/journal/.
# journal-receiver.py --run DIR COMMAND...: runs COMMAND with stderr connected to DIR/stdout.
import array
import json
import os
import socket
import struct
import sys
import threading


def parse(data):
    entry, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = nl + 1
        else:
            key = line
            (n,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            value = data[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        entry[key.decode()] = value.decode("utf-8", "replace")
    return entry


if sys.argv[1] == "--run":
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stream.connect(os.path.join(sys.argv[2], "stdout"))
    # journald's stream protocol starts with a header (identifier, unit, priority, flags).
    stream.sendall(b"gt\n\n6\n0\n0\n0\n0\n")
    os.dup2(stream.fileno(), 2)
    os.execvp(sys.argv[3], sys.argv[3:])


def serve_stream(listener, path):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=copy_stream, args=(conn, path), daemon=True).start()


def copy_stream(conn, path):
    with open(path, "ab") as f:
        while True:
            chunk = conn.recv(1 << 16)
            if not chunk:
                return
            f.write(chunk)
            f.flush()


listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(os.path.join(sys.argv[1], "stdout"))
listener.listen(16)
threading.Thread(target=serve_stream, args=(listener, sys.argv[2] + ".stream"),
                 daemon=True).start()
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(os.path.join(sys.argv[1], "socket"))
with open(sys.argv[2], "a") as out:
    while True:
        data, ancdata, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(4 * array.array("i").itemsize))
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(cdata[:len(cdata) - len(cdata) % fds.itemsize])
                for fd in fds:
                    os.lseek(fd, 0, os.SEEK_SET)
                    chunks = []
                    while True:
                        chunk = os.read(fd, 1 << 16)
                        if not chunk:
                            break
                        chunks.append(chunk)
                    os.close(fd)
                    data = b"".join(chunks)
        try:
            out.write(json.dumps(parse(data)) + "\n")
        except (ValueError, struct.error) as e:
            out.write(json.dumps({"_BAD": str(e)}) + "\n")
        out.flush()
