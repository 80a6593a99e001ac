#!/usr/bin/env python3
"""abuse-http.py: the local origin and a slow auth API for bench/abuse (standard library only).

  abuse-http.py origin PORT
      HTTP/1.1 origin on 127.0.0.1:PORT: every GET answers 200 with a short body (keep-alive works)
  abuse-http.py authapi PORT DELAY_MS ID:SECRET...
      GT-style auth API on 127.0.0.1:PORT: a POST with {"networkClientId", "networkSecretKey",
      "appletTokens"} is answered after DELAY_MS with {"result": true, "appletTokens": [...]} when
      the id and secret are one of the pairs given, {"result": false} otherwise
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b"hello from the origin\n"


class Quiet(BaseHTTPRequestHandler):
    """HTTP/1.1 (keep-alive) handler that logs nothing and answers 200 with a body."""

    protocol_version = "HTTP/1.1"

    def reply(self, content_type, body):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Origin(Quiet):
    def do_GET(self):
        self.reply("text/plain", BODY)


class AuthApi(Quiet):
    delay = 0.0
    pairs = set()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, 65536))
        time.sleep(self.delay)
        try:
            req = json.loads(raw)
            ok = (req.get("networkClientId"), req.get("networkSecretKey")) in self.pairs
            tokens = req.get("appletTokens") or []
        except (ValueError, AttributeError):
            ok, tokens = False, []
        answer = {"result": True, "appletTokens": tokens} if ok else {"result": False}
        self.reply("application/json", json.dumps(answer).encode())


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("origin", "authapi"):
        sys.exit(__doc__)
    port = int(sys.argv[2])
    if sys.argv[1] == "origin":
        handler = Origin
    else:
        handler = AuthApi
        handler.delay = int(sys.argv[3]) / 1000.0
        handler.pairs = {tuple(p.split(":", 1)) for p in sys.argv[4:]}
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
