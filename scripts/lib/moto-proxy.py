#!/usr/bin/env python3
"""A recording, fault-injecting HTTP proxy on 127.0.0.1 in front of moto_server.

Used by kiln's EBS tests and scripts/bench-upload, because moto accepts requests AWS would
reject (no checksum checks, RegisterImage ignores most fields): the tests assert on the requests
themselves, as this proxy logged them.

Every request becomes one JSON line in --log: method, path, query, headers (lower-case),
service (from the SigV4 scope), op (EBS operation or EC2 Action), params (EC2 form fields),
body_len, body_sha256_b64, status, fault.

Rewrites (moto answers what AWS does not):
  --rewrite-block-size   StartSnapshot's BlockSize becomes 524288, as AWS answers.
  always                 ListSnapshotBlocks' BlockIndex strings become integers.

Faults (deterministic for a --seed, bounded by --max-faults), on --fault-ops only:
  --fault-rate P         share of those requests that get a fault, cycling through
                         throttle (400 ThrottlingException / RequestLimitExceeded), 500, 503,
                         dropped connection, a 1.5 s delay, and "snapshot does not exist"
                         (the race right after StartSnapshot; never on StartSnapshot itself).
  --fail-op OP           answer every OP with a non-retryable 400 (e.g. RegisterImage).
  --delay-op OP:MS       delay every OP by MS milliseconds (to interrupt an upload midway).
  --swallow-op OP        answer every OP with success without forwarding it (to count 2048
                         encrypted PutSnapshotBlock requests without moto holding 1 GiB).
  --fail-region R[:OPS]  answer every request signed for region R (the SigV4 credential scope
                         names it) with a non-retryable 400; with :OP1,OP2 only those ops.

What moto lacks, filled in here (always on):
  EnableImageDeprecation / DisableImageDeprecation are answered by the proxy (moto answers 500)
  and remembered; DescribeImages then reports the image's deprecationTime.
  RegisterImage's BlockDeviceMapping and RootDeviceName (moto invents a 15 GiB /dev/sda1 on a
  snapshot of its own) are remembered per image id, and DescribeImages reports them, as AWS does.
  --state FILE keeps both in FILE, so that a later proxy in front of the same moto knows them.

Prints "PORT <n>" on stdout once listening.
"""

import argparse
import base64
import datetime
import hashlib
import http.client
import http.server
import json
import os
import random
import re
import socket
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET

EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15"
ET.register_namespace("", EC2_NS)

EBS_OPS = [
    ("POST", re.compile(r"^/snapshots$"), "StartSnapshot"),
    ("PUT", re.compile(r"^/snapshots/[^/]+/blocks/\d+$"), "PutSnapshotBlock"),
    ("POST", re.compile(r"^/snapshots/completion/[^/]+$"), "CompleteSnapshot"),
    ("GET", re.compile(r"^/snapshots/[^/]+/blocks$"), "ListSnapshotBlocks"),
    ("GET", re.compile(r"^/snapshots/[^/]+/blocks/\d+$"), "GetSnapshotBlock"),
]
KINDS = ["throttle", "500", "503", "drop", "delay", "notfound"]


def aws_time(t):
    """A DeprecateAt as EC2 reports deprecation times: rounded to the nearest minute, with
    milliseconds shown."""
    try:
        d = datetime.datetime.strptime(t.replace(".000Z", "Z"), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return t
    d = (d + datetime.timedelta(seconds=30)).replace(second=0)
    return d.strftime("%Y-%m-%dT%H:%M:00.000Z")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True, help="host:port of moto_server")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", required=True)
    ap.add_argument("--rewrite-block-size", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--max-faults", type=int, default=40)
    ap.add_argument(
        "--fault-ops",
        default="StartSnapshot,PutSnapshotBlock,CompleteSnapshot,DescribeSnapshots",
    )
    ap.add_argument("--fail-op", action="append", default=[])
    ap.add_argument("--delay-op", action="append", default=[])
    ap.add_argument("--swallow-op", action="append", default=[])
    ap.add_argument("--fail-region", action="append", default=[])
    ap.add_argument("--state", help="JSON file holding what the proxy fills in for moto")
    args = ap.parse_args()

    # region -> set of ops (None: every op)
    fail_regions = {}
    for f in args.fail_region:
        region, _, ops = f.partition(":")
        fail_regions[region] = set(ops.split(",")) if ops else None
    # image id -> deprecation time; image id -> (root device name, [mapping dicts])
    deprecations = {}
    registered = {}
    if args.state:
        try:
            with open(args.state) as f:
                saved = json.load(f)
            deprecations.update(saved.get("deprecations", {}))
            registered.update({k: tuple(v) for k, v in saved.get("registered", {}).items()})
        except FileNotFoundError:
            pass

    def save_state():
        # Called with `lock` held.
        if args.state:
            tmp = args.state + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"deprecations": deprecations, "registered": registered}, f)
            os.replace(tmp, args.state)

    rng = random.Random(args.seed)
    lock = threading.Lock()
    state = {"n": 0, "faults": 0}
    log = open(args.log, "a", buffering=1)
    fault_ops = set(args.fault_ops.split(","))
    delays = {}
    for d in args.delay_op:
        op, ms = d.split(":")
        delays[op] = int(ms) / 1000.0

    def pick_fault(op):
        with lock:
            state["n"] += 1
            if op not in fault_ops or state["faults"] >= args.max_faults:
                return None
            if rng.random() >= args.fault_rate:
                return None
            kind = KINDS[state["faults"] % len(KINDS)]
            if kind == "notfound" and op == "StartSnapshot":
                kind = "500"
            state["faults"] += 1
            return kind

    def remember_registration(data, params):
        image_id = ET.fromstring(data).findtext(f"{{{EC2_NS}}}imageId")
        mappings = []
        n = 1
        while f"BlockDeviceMapping.{n}.DeviceName" in params:
            prefix = f"BlockDeviceMapping.{n}."
            mappings.append({k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)})
            n += 1
        if image_id and mappings:
            with lock:
                registered[image_id] = (params.get("RootDeviceName", "/dev/xvda"), mappings)
                save_state()

    def rewrite_images(data):
        root = ET.fromstring(data)
        images = root.find(f"{{{EC2_NS}}}imagesSet")
        if images is None:
            return data
        q = lambda tag: f"{{{EC2_NS}}}{tag}"
        with lock:
            for item in images.findall(q("item")):
                image_id = item.findtext(q("imageId"))
                if image_id in registered:
                    root_name, mappings = registered[image_id]
                    bdm = item.find(q("blockDeviceMapping"))
                    if bdm is None:
                        bdm = ET.SubElement(item, q("blockDeviceMapping"))
                    for child in list(bdm):
                        bdm.remove(child)
                    for m in mappings:
                        it = ET.SubElement(bdm, q("item"))
                        ET.SubElement(it, q("deviceName")).text = m["DeviceName"]
                        ebs = ET.SubElement(it, q("ebs"))
                        for k, v in m.items():
                            if k.startswith("Ebs."):
                                name = k[4].lower() + k[5:]
                                ET.SubElement(ebs, q(name)).text = v
                    rd = item.find(q("rootDeviceName"))
                    if rd is None:
                        rd = ET.SubElement(item, q("rootDeviceName"))
                    rd.text = root_name
                    rt = item.find(q("rootDeviceType"))
                    if rt is not None:
                        rt.text = "ebs"
                if image_id in deprecations:
                    ET.SubElement(item, q("deprecationTime")).text = deprecations[image_id]
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def handle_any(self):
            url = urllib.parse.urlsplit(self.path)
            n = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(n) if n else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            auth = headers.get("authorization", "")
            m = re.search(r"Credential=[^/]+/\d+/([^/]+)/([^/]+)/", auth)
            region, service = (m.group(1), m.group(2)) if m else ("", "")
            op, params = "", {}
            if service == "ebs":
                for method, rx, name in EBS_OPS:
                    if self.command == method and rx.match(url.path):
                        op = name
            else:
                params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("latin-1")).items()}
                op = params.get("Action", "")
            entry = {
                "method": self.command,
                "path": url.path,
                "query": url.query,
                "headers": headers,
                "service": service,
                "region": region,
                "op": op,
                "params": params,
                "body_len": len(body),
                "body_sha256_b64": base64.b64encode(hashlib.sha256(body).digest()).decode(),
            }
            if service == "ebs" and op != "PutSnapshotBlock" and len(body) < 65536:
                entry["body"] = body.decode("utf-8", "replace")
            fault = pick_fault(op)
            if op in args.fail_op:
                fault = "fail"
            if region in fail_regions and (fail_regions[region] is None or op in fail_regions[region]):
                fault = "fail"
            entry["fault"] = fault
            if op in delays:
                time.sleep(delays[op])
            if fault == "delay":
                time.sleep(1.5)
            if fault == "drop":
                entry["status"] = None
                log.write(json.dumps(entry) + "\n")
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if fault in ("throttle", "500", "503", "fail", "notfound"):
                self.answer_fault(fault, service, entry)
                return
            if op in ("EnableImageDeprecation", "DisableImageDeprecation"):
                with lock:
                    if op == "EnableImageDeprecation":
                        deprecations[params.get("ImageId")] = aws_time(params.get("DeprecateAt", ""))
                    else:
                        deprecations.pop(params.get("ImageId"), None)
                    save_state()
                entry["status"] = 200
                log.write(json.dumps(entry) + "\n")
                data = (
                    f'<?xml version="1.0" encoding="UTF-8"?><{op}Response xmlns="{EC2_NS}">'
                    f"<requestId>proxy</requestId><return>true</return></{op}Response>"
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "text/xml")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            if op in args.swallow_op:
                entry["status"] = 201
                log.write(json.dumps(entry) + "\n")
                data = b"{}"
                self.send_response(201)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            fwd = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
            resp, data = self.forward(body, fwd)
            if op == "StartSnapshot" and args.rewrite_block_size and resp.status in (200, 201):
                j = json.loads(data)
                j["BlockSize"] = 524288
                data = json.dumps(j).encode()
            if op == "ListSnapshotBlocks" and resp.status == 200:
                j = json.loads(data)
                for b in j.get("Blocks", []):
                    b["BlockIndex"] = int(b["BlockIndex"])
                data = json.dumps(j).encode()
            if op == "RegisterImage" and resp.status == 200:
                remember_registration(data, params)
            if op == "DescribeImages" and resp.status == 200:
                data = rewrite_images(data)
            entry["status"] = resp.status
            log.write(json.dumps(entry) + "\n")
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                    self.send_header(k, v)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def forward(self, body, headers):
            """Sends the request to moto on this client connection's own upstream connection
            (kept open, as the client keeps its own), reconnecting once if moto closed it."""
            for attempt in (0, 1):
                conn = getattr(self, "upstream", None)
                if conn is None:
                    conn = self.upstream = http.client.HTTPConnection(args.upstream, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except (http.client.HTTPException, ConnectionError):
                    conn.close()
                    self.upstream = None
                    if attempt:
                        raise
                    continue
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    self.upstream = None
                return resp, data

        def finish(self):
            super().finish()
            if getattr(self, "upstream", None) is not None:
                self.upstream.close()

        def answer_fault(self, fault, service, entry):
            if fault == "throttle":
                status = 400 if service == "ec2" else 429
                code, msg = ("RequestLimitExceeded" if service == "ec2" else "ThrottlingException"), "Rate exceeded"
            elif fault == "notfound":
                status = 400 if service == "ec2" else 404
                code = "InvalidSnapshot.NotFound" if service == "ec2" else "ResourceNotFoundException"
                msg = "The snapshot does not exist."
            elif fault == "fail":
                status, code, msg = 400, "InvalidParameterValue", "injected failure"
            else:
                status, code, msg = int(fault), "InternalError", "injected server error"
            if service == "ec2":
                data = (
                    f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
                    f"<Message>{msg}</Message></Error></Errors><RequestID>x</RequestID></Response>"
                ).encode()
                ctype = "text/xml"
            else:
                data = json.dumps({"message": msg}).encode()
                ctype = "application/json"
            entry["status"] = status
            log.write(json.dumps(entry) + "\n")
            self.send_response(status)
            self.send_header("content-type", ctype)
            if service != "ec2":
                self.send_header("x-amzn-errortype", code)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        # Clients open up to 64 connections at once; socketserver's default backlog of 5
        # overflows, and the kernel then resets connections the client already writes to.
        request_queue_size = 256

        def handle_error(self, request, client_address):
            # Clients that go away mid-request (an interrupted kiln) are expected.
            if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", args.port), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
