"""A webhook receiver for the benchmark, as a process of its own (its CPU is not the
deliverer's): reads each POST's body and answers 204. Prints its port, then serves until
stdin closes. ``python -m bench.webhook_receiver``"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receive(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receive)
    print(server.server_port, flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()  # the benchmark closes it when done, or dies
    server.shutdown()


if __name__ == "__main__":
    main()
