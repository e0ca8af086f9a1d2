#!/usr/bin/env python3
"""A recording, fault-injecting HTTP proxy on 127.0.0.1 in front of a container registry
(Debian's docker-registry), for kiln's push tests and scripts/bench-formats.

Every request becomes one JSON line in --log: method, path, query, content_range, body_len,
status, fault. The tests assert on it (a second push uploads no blob; a failed chunk is resumed).

Faults:
  --fail-blob-writes N   the first N requests that carry blob bytes (PATCH or PUT under
                         /blobs/uploads/ with a body) are read whole and answered 503 without
                         being forwarded: the registry never sees those bytes, as when a
                         registry fails mid-blob. -1: every one.

Prints "PORT <n>" on stdout once listening.
"""

import argparse
import http.client
import http.server
import json
import socketserver
import sys
import threading
import urllib.parse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True, help="host:port of the registry")
    ap.add_argument("--log", required=True)
    ap.add_argument("--fail-blob-writes", type=int, default=0)
    args = ap.parse_args()

    lock = threading.Lock()
    state = {"faults": 0}
    log = open(args.log, "a", buffering=1)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def handle_any(self):
            url = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = self.read_chunked()
            else:
                body = self.rfile.read(length) if length else b""
            entry = {
                "method": self.command,
                "path": url.path,
                "query": url.query,
                "content_range": self.headers.get("Content-Range"),
                "body_len": len(body),
                "fault": None,
            }
            blob_write = (
                self.command in ("PATCH", "PUT")
                and "/blobs/uploads/" in url.path
                and len(body) > 0
            )
            with lock:
                fault = blob_write and (
                    args.fail_blob_writes < 0 or state["faults"] < args.fail_blob_writes
                )
                if fault:
                    state["faults"] += 1
            if fault:
                entry["fault"] = "503"
                entry["status"] = 503
                msg = b'{"errors":[{"code":"UNAVAILABLE","message":"injected by registry-proxy"}]}'
                self.send_response(503, "Service Unavailable")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)
                log.write(json.dumps(entry) + "\n")
                return
            conn = http.client.HTTPConnection(args.upstream, timeout=120)
            # Header by header: a client sends several Accept headers, which a dict would merge.
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", args.upstream)
            for k, v in self.headers.items():
                if k.lower() not in ("host", "transfer-encoding", "content-length"):
                    conn.putheader(k, v)
            if body or self.command in ("PUT", "PATCH", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()
            entry["status"] = resp.status
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                lk = k.lower()
                if lk in ("transfer-encoding", "connection", "content-length"):
                    continue
                if lk == "location":
                    # Keep the client talking to the proxy.
                    v = v.replace("http://" + args.upstream, "http://127.0.0.1:%d" % self.server.server_address[1])
                self.send_header(k, v)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            else:
                cl = resp.getheader("Content-Length")
                if cl is not None:
                    self.send_header("Content-Length", cl)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            conn.close()
            log.write(json.dumps(entry) + "\n")

        def read_chunked(self):
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        request_queue_size = 128

    srv = Server(("127.0.0.1", 0), Handler)
    print("PORT %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
