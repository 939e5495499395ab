#!/usr/bin/env python3
"""BitFleet HTTP test fixture: a real threaded HTTP/1.1 server (Python standard library only).

    python3 Ops/testing/http_fixture.py --root DIR [--port 0] [--bind 127.0.0.1] [--ignore-stdin]
                                        [--tls-cert CERT.pem --tls-key KEY.pem]

Prints `PORT <n>` as its first stdout line (flushed), then serves until SIGTERM/SIGINT, or until its stdin
reaches end-of-file when stdin is a pipe (so a test that dies takes the server with it). A background job in a
shell script (stdin a terminal or /dev/null) is not tied to stdin; `--ignore-stdin` forces that.

Routes (GET and HEAD):
  /<path>                    a file under --root (Content-Type from the suffix: .npy, .json, .ndjson, .bin, ...)
  /status/<code>             that status with a short text body (?retry_after=N adds a Retry-After header)
  /stall/<seconds>           200 with Content-Length 1000, sends nothing for <seconds>, then closes
  /slow                      200 with Content-Length 100000, drips one byte every 0.2 s (slowloris)
  /big/<bytes>               <bytes> zero bytes with Content-Length
  /big-chunked/<bytes>       <bytes> zero bytes, chunked (no Content-Length)
  /redirect/<n>              302 chain: /redirect/<n-1> ... /redirect/0 answers 200 "redirect chain done"
  /redirect-loop             302 to itself
  /redirect-to?url=<url>     302 to <url>
  /gzip/<file>               the file gzip-compressed, Content-Encoding: gzip
  /truncated-gzip/<file>     the same, cut in half (Content-Length matches the cut body)
  /empty                     200 with an empty body
  /headers                   200 JSON object of the request headers (to check per-request headers)
  /content-type/<type>/<file> the file with Content-Type <type> ('~' stands for '/': application~x-npy)
"""
import argparse
import gzip
import json
import os
import signal
import socket
import stat
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTENT_TYPES = {
    ".npy": "application/x-npy",
    ".json": "application/json",
    ".ndjson": "application/x-ndjson",
    ".jsonl": "application/x-ndjson",
    ".bin": "application/octet-stream",
    ".txt": "text/plain; charset=utf-8",
}

STOP = threading.Event()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "BitFleetFixture/1"
    root = "."

    def log_message(self, fmt, *args):  # quiet: tests read stdout for PORT only
        if os.environ.get("BITFLEET_FIXTURE_LOG"):
            sys.stderr.write("fixture: " + (fmt % args) + "\n")

    # -- helpers ---------------------------------------------------------------------------------
    def _send(self, code, body=b"", ctype="text/plain; charset=utf-8", extra=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _file(self, rel):
        rel = urllib.parse.unquote(rel).lstrip("/")
        full = os.path.realpath(os.path.join(self.root, rel))
        root = os.path.realpath(self.root)
        if not (full == root or full.startswith(root + os.sep)) or not os.path.isfile(full):
            return None, None
        with open(full, "rb") as f:
            data = f.read()
        ctype = CONTENT_TYPES.get(os.path.splitext(full)[1].lower(), "application/octet-stream")
        return data, ctype

    def _stream_zeros(self, n, chunked):
        chunk = b"\0" * 65536
        left = n
        try:
            while left > 0 and not STOP.is_set():
                part = chunk[: min(left, len(chunk))]
                if chunked:
                    self.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
                else:
                    self.wfile.write(part)
                left -= len(part)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    # -- routes ----------------------------------------------------------------------------------
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        parsed = urllib.parse.urlsplit(self.path)
        path = parsed.path
        parts = [p for p in path.split("/") if p]
        head = parts[0] if parts else ""
        try:
            if head == "status" and len(parts) == 2 and parts[1].isdigit():
                code = int(parts[1])
                extra = {}
                ra = urllib.parse.parse_qs(parsed.query).get("retry_after")
                if ra:
                    extra["Retry-After"] = ra[0]
                self._send(code, ("status %d\n" % code).encode(), extra=extra)
            elif head == "stall" and len(parts) == 2:
                seconds = float(parts[1])
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.flush()
                STOP.wait(seconds)
                self.close_connection = True
            elif head == "slow" and len(parts) == 1:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.flush()
                deadline = time.monotonic() + 120
                try:
                    while time.monotonic() < deadline and not STOP.is_set():
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        STOP.wait(0.2)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True
            elif head in ("big", "big-chunked") and len(parts) == 2 and parts[1].isdigit():
                n = int(parts[1])
                chunked = head == "big-chunked"
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(n))
                self.end_headers()
                if self.command != "HEAD":
                    self._stream_zeros(n, chunked)
            elif head == "redirect" and len(parts) == 2 and parts[1].isdigit():
                n = int(parts[1])
                if n <= 0:
                    self._send(200, b"redirect chain done\n")
                else:
                    self._send(302, b"", extra={"Location": "/redirect/%d" % (n - 1)})
            elif head == "redirect-loop" and len(parts) == 1:
                self._send(302, b"", extra={"Location": "/redirect-loop"})
            elif head == "redirect-to" and len(parts) == 1:
                q = urllib.parse.parse_qs(parsed.query)
                url = q.get("url", [""])[0]
                if not url:
                    self._send(400, b"missing url parameter\n")
                else:
                    self._send(302, b"", extra={"Location": url})
            elif head in ("gzip", "truncated-gzip") and len(parts) >= 2:
                data, ctype = self._file("/".join(parts[1:]))
                if data is None:
                    self._send(404, b"no such file\n")
                    return
                z = gzip.compress(data, mtime=0)
                if head == "truncated-gzip":
                    z = z[: max(1, len(z) // 2)]
                self._send(200, z, ctype, {"Content-Encoding": "gzip"})
            elif head == "empty" and len(parts) == 1:
                self._send(200, b"", "application/octet-stream")
            elif head == "headers" and len(parts) == 1:
                body = json.dumps({k: v for k, v in self.headers.items()}).encode()
                self._send(200, body, "application/json")
            elif head == "content-type" and len(parts) >= 3:
                data, _ = self._file("/".join(parts[2:]))
                if data is None:
                    self._send(404, b"no such file\n")
                    return
                self._send(200, data, parts[1].replace("~", "/"))
            else:
                data, ctype = self._file(path)
                if data is None:
                    self._send(404, b"not found\n")
                else:
                    self._send(200, data, ctype)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # Clients that hang up or reject our TLS certificate are part of the tests, not errors.
        if os.environ.get("BITFLEET_FIXTURE_LOG"):
            super().handle_error(request, client_address)


class Server6(Server):
    address_family = socket.AF_INET6


def main():
    ap = argparse.ArgumentParser(description="BitFleet HTTP test fixture")
    ap.add_argument("--root", required=True, help="directory to serve files from")
    ap.add_argument("--port", type=int, default=0, help="port (0 = any free port)")
    ap.add_argument("--bind", default="127.0.0.1", help="address to bind (127.0.0.1, ::1, ...)")
    ap.add_argument("--ignore-stdin", action="store_true", help="do not exit when stdin closes")
    ap.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (needs --tls-key)")
    ap.add_argument("--tls-key", help="PEM private key for --tls-cert")
    args = ap.parse_args()

    Handler.root = os.path.abspath(args.root)
    cls = Server6 if ":" in args.bind else Server
    httpd = cls((args.bind, args.port), Handler)
    if args.tls_cert:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        # Handshake in the handler thread (first read), so a client that rejects the certificate blocks nothing.
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    port = httpd.server_address[1]
    sys.stdout.write("PORT %d\n" % port)
    sys.stdout.flush()

    def stop(*_):
        STOP.set()
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    watch = not args.ignore_stdin
    if watch:
        try:
            watch = stat.S_ISFIFO(os.fstat(0).st_mode) or stat.S_ISSOCK(os.fstat(0).st_mode)
        except OSError:
            watch = False
    if watch:
        def wait_stdin():
            try:
                while os.read(0, 4096):
                    pass
            except OSError:
                pass
            stop()
        threading.Thread(target=wait_stdin, daemon=True).start()

    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()


if __name__ == "__main__":
    main()
