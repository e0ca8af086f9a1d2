#!/usr/bin/env python3
"""A recording, fault-injecting HTTP proxy on 127.0.0.1 in front of moto_server.

Used by kiln's EBS tests and scripts/bench-upload, because moto accepts requests AWS would
reject (no checksum checks, RegisterImage ignores most fields, ClientTokens are ignored): the
tests assert on the requests themselves, as this proxy logged them, and the proxy enforces what
AWS documents where moto does not.

Every request becomes one JSON line in --log: method, path, query, headers (lower-case),
service (from the SigV4 scope), op (EBS operation or EC2 Action), params (EC2 form fields),
body_len, body_sha256_b64, status, fault.

Rewrites (moto answers what AWS does not):
  --rewrite-block-size   StartSnapshot's BlockSize becomes 524288, as AWS answers.
  always                 ListSnapshotBlocks' BlockIndex strings become integers.

What AWS enforces and moto does not (always on):
  ClientToken replay (StartSnapshot, CopyImage): a request with a token already answered with
    success gets that original answer again, unforwarded, even if the snapshot or image has
    since completed or gone ("Ensure idempotency in StartSnapshot API requests", EBS user guide;
    "Ensuring idempotency in Amazon EC2 API requests"); only the state may differ ("The only
    information that might vary in the response is the state"): a replayed StartSnapshot says
    `completed` once the snapshot is. The same token with other parameters gets
    ConflictException (EBS, HTTP 409) or IdempotentParameterMismatch (EC2).
  Snapshot states: PutSnapshotBlock and CompleteSnapshot on a snapshot that is no longer
    pending (completed or deleted through a proxy) are refused, as AWS refuses them; and
    DescribeSnapshots says `pending` until CompleteSnapshot (moto says `completed` at once).
  Incremental snapshots (moto ignores ParentSnapshotId): StartSnapshot with a ParentSnapshotId
    is refused unless the parent is completed (ResourceNotFoundException for one that does not
    exist or was deleted, ValidationException for one not completed), and refused together with
    Encrypted (ValidationException, as the StartSnapshot reference says). The child reads
    through to its parent: ListSnapshotBlocks lists the parent's blocks (recursively) under the
    child's own, and GetSnapshotBlock of a block the child was not written reads the parent's.
  AMI names are unique per account and region: RegisterImage and CopyImage with a name an
    existing image has get InvalidAMIName.Duplicate.
  A copy is `pending` at first: the first DescribeImages that lists an image CopyImage made
    through a proxy says `pending` (moto's copies are `available` at once; AWS's stay `pending`
    while the snapshots copy).

Faults (deterministic for a --seed, bounded by --max-faults), on --fault-ops only:
  --fault-rate P         share of those requests that get a fault, cycling through
                         throttle (400 ThrottlingException / RequestLimitExceeded), 500, 503,
                         dropped connection, a 1.5 s delay, and "snapshot does not exist"
                         (the race right after StartSnapshot; never on StartSnapshot itself).
  --fail-op OP[:N[:K]]   answer every OP (after the first N; only K of them, if given) with a
                         non-retryable 400.
  --delay-op OP:MS       delay every OP by MS milliseconds before it reaches moto.
  --delay-answer OP:MS   forward every OP to moto, log it, then hold the answer for MS
                         milliseconds (the call has happened; the client does not know yet).
  --swallow-op OP        answer every OP with success without forwarding it (to count 2048
                         encrypted PutSnapshotBlock requests without moto holding 1 GiB).
  --fail-region R[:OPS]  answer every request signed for region R (the SigV4 credential scope
                         names it) with a non-retryable 400; with :OP1,OP2 only those ops.
  --inject OP=SPEC,...   the first requests of OP get these errors, one each, in order. SPEC is
                         CODE[/REASON][*COUNT]; EBS answers carry x-amzn-errortype and a JSON
                         Message/Reason, EC2 answers an XML error; HTTP 400 (404 for
                         ResourceNotFoundException). Repeatable.
  --lost-answer OP[:N]   the Nth (default 1st) OP reaches moto, then the connection is dropped
                         before the answer: the call happened, the client never hears of it.
  --conflicts K          after a lost PutSnapshotBlock answer, the next K writes to that block
                         get ValidationException CONFLICTING_BLOCK_UPDATE (the lost write is
                         still being applied).
  --uplink-bps N         PutSnapshotBlock bodies are read at N bytes/s in all, shared by every
                         connection (a slow uplink).
  --replay-first-start   every StartSnapshot after the first gets the first one's answer, as a
                         reused ClientToken would.
  --copy-answer ID       every CopyImage is answered with image ID, unforwarded, as a reused
                         ClientToken is answered with the image it made before.
  --failed-image NAME    DescribeImages says the images named NAME are `failed` (moto's images
                         are all available at once).

What moto lacks, filled in here (always on):
  EnableImageDeprecation / DisableImageDeprecation are answered by the proxy (moto answers 500)
  and remembered; DescribeImages then reports the image's deprecationTime.
  RegisterImage's BlockDeviceMapping and RootDeviceName (moto invents a 15 GiB /dev/sda1 on a
  snapshot of its own) are remembered per image id, and DescribeImages reports them, as AWS does.
  --state FILE keeps all of the above (and the tokens and snapshot states) in FILE, so that a
  later proxy in front of the same moto knows them.

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
import select
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
    ("PUT", re.compile(r"^/snapshots/([^/]+)/blocks/\d+$"), "PutSnapshotBlock"),
    ("POST", re.compile(r"^/snapshots/completion/([^/]+)$"), "CompleteSnapshot"),
    ("GET", re.compile(r"^/snapshots/([^/]+)/blocks$"), "ListSnapshotBlocks"),
    ("GET", re.compile(r"^/snapshots/([^/]+)/blocks/\d+$"), "GetSnapshotBlock"),
]
KINDS = ["throttle", "500", "503", "drop", "delay", "notfound"]
TOKEN_OPS = ("StartSnapshot", "CopyImage")


def aws_time(t):
    """A DeprecateAt as EC2 reports deprecation times: rounded to the nearest minute, with
    milliseconds shown."""
    try:
        d = datetime.datetime.strptime(t.replace(".000Z", "Z"), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return t
    d = (d + datetime.timedelta(seconds=30)).replace(second=0)
    return d.strftime("%Y-%m-%dT%H:%M:00.000Z")


def q(tag):
    return f"{{{EC2_NS}}}{tag}"


def parse_injections(specs):
    """op -> list of (code, reason) answered to its first requests, in order."""
    out = {}
    for spec in specs:
        op, _, rest = spec.partition("=")
        for item in rest.split(","):
            code, _, count = item.partition("*")
            code, _, reason = code.partition("/")
            out.setdefault(op, []).extend([(code, reason)] * int(count or 1))
    return out


class Bucket:
    """A token bucket shared by every connection: at most `rate` bytes per second."""

    def __init__(self, rate):
        self.rate = rate
        self.lock = threading.Lock()
        self.next_free = time.monotonic()

    def take(self, n):
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_free)
            self.next_free = start + n / self.rate
            wait = self.next_free - now
        if wait > 0:
            time.sleep(wait)


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
    ap.add_argument("--delay-answer", action="append", default=[])
    ap.add_argument("--swallow-op", action="append", default=[])
    ap.add_argument("--fail-region", action="append", default=[])
    ap.add_argument("--inject", action="append", default=[])
    ap.add_argument("--lost-answer", action="append", default=[])
    ap.add_argument("--conflicts", type=int, default=0)
    ap.add_argument("--uplink-bps", type=int, default=0)
    ap.add_argument("--replay-first-start", action="store_true")
    ap.add_argument("--copy-answer")
    ap.add_argument("--failed-image", action="append", default=[])
    ap.add_argument("--state", help="JSON file holding what the proxy fills in for moto")
    args = ap.parse_args()

    # region -> set of ops (None: every op)
    fail_regions = {}
    for f in args.fail_region:
        region, _, ops = f.partition(":")
        fail_regions[region] = set(ops.split(",")) if ops else None
    fail_ops = {}  # op -> (requests let through first, how many fail then or None: all)
    for f in args.fail_op:
        op, _, rest = f.partition(":")
        skip, _, count = rest.partition(":")
        fail_ops[op] = (int(skip or 0), int(count) if count else None)
    injections = parse_injections(args.inject)
    lost = {}
    for spec in args.lost_answer:
        op, _, n = spec.partition(":")
        lost.setdefault(op, set()).add(int(n or 1))
    uplink = Bucket(args.uplink_bps) if args.uplink_bps else None

    # What is remembered across proxies in front of one moto (see --state):
    # image id -> deprecation time; image id -> [root device name, [mapping dicts]];
    # snapshot id -> pending | completed | deleted; "op region token" -> the first success.
    # child snapshot id -> parent snapshot id; copied image id -> "new" until first described.
    st = {"deprecations": {}, "registered": {}, "snapshots": {}, "tokens": {}, "parents": {},
          "copies": {}}
    if args.state:
        try:
            with open(args.state) as f:
                saved = json.load(f)
            for k in st:
                st[k].update(saved.get(k, {}))
        except FileNotFoundError:
            pass

    def save_state():
        # Called with `lock` held.
        if args.state:
            tmp = args.state + ".tmp"
            with open(tmp, "w") as f:
                json.dump(st, f)
            os.replace(tmp, args.state)

    rng = random.Random(args.seed)
    lock = threading.Lock()
    counts = {"n": 0, "faults": 0, "ops": {}, "first_start": None}
    conflicts = {}  # block path -> CONFLICTING_BLOCK_UPDATE answers left
    tokens_in_flight = {}  # token key -> Event set when its request has been answered
    log = open(args.log, "a", buffering=1)
    fault_ops = set(args.fault_ops.split(","))
    delays, answer_delays = {}, {}
    for src, dst in ((args.delay_op, delays), (args.delay_answer, answer_delays)):
        for d in src:
            op, ms = d.split(":")
            dst[op] = int(ms) / 1000.0

    def pick_fault(op):
        with lock:
            counts["n"] += 1
            if op not in fault_ops or counts["faults"] >= args.max_faults:
                return None
            if rng.random() >= args.fault_rate:
                return None
            kind = KINDS[counts["faults"] % len(KINDS)]
            if kind == "notfound" and op == "StartSnapshot":
                kind = "500"
            counts["faults"] += 1
            return kind

    def remember_registration(data, params):
        image_id = ET.fromstring(data).findtext(q("imageId"))
        mappings = []
        n = 1
        while f"BlockDeviceMapping.{n}.DeviceName" in params:
            prefix = f"BlockDeviceMapping.{n}."
            mappings.append({k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)})
            n += 1
        if image_id and mappings:
            with lock:
                st["registered"][image_id] = [params.get("RootDeviceName", "/dev/xvda"), mappings]
                save_state()

    def rewrite_images(data):
        root = ET.fromstring(data)
        images = root.find(q("imagesSet"))
        if images is None:
            return data
        with lock:
            for item in images.findall(q("item")):
                image_id = item.findtext(q("imageId"))
                if image_id in st["registered"]:
                    root_name, mappings = st["registered"][image_id]
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
                if image_id in st["deprecations"]:
                    ET.SubElement(item, q("deprecationTime")).text = st["deprecations"][image_id]
                if st["copies"].get(image_id) == "new":
                    st["copies"][image_id] = "described"
                    state = item.find(q("imageState"))
                    if state is not None:
                        state.text = "pending"
                if item.findtext(q("name")) in args.failed_image:
                    state = item.find(q("imageState"))
                    if state is not None:
                        state.text = "failed"
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)

    def rewrite_snapshots(data):
        root = ET.fromstring(data)
        snaps = root.find(q("snapshotSet"))
        if snaps is None:
            return data
        with lock:
            for item in snaps.findall(q("item")):
                if st["snapshots"].get(item.findtext(q("snapshotId"))) == "pending":
                    status = item.find(q("status"))
                    if status is not None:
                        status.text = "pending"
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)

    def token_key(op, region, service, params, body):
        """(store key, canonical parameters) of a request carrying a ClientToken, or None."""
        if op == "StartSnapshot":
            try:
                j = json.loads(body or b"{}")
            except ValueError:
                return None
            token = j.pop("ClientToken", None)
            canon = json.dumps(j, sort_keys=True)
        elif op == "CopyImage" and service == "ec2":
            p = dict(params)
            token = p.pop("ClientToken", None)
            canon = json.dumps(p, sort_keys=True)
        else:
            return None
        return (f"{op} {region} {token}", canon) if token else None

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def read_body(self, n, op):
            if not (uplink and op == "PutSnapshotBlock"):
                return self.rfile.read(n) if n else b""
            # A client that gave up has closed its end: what it had sent is still buffered
            # here, but on a real uplink those bytes would not be crossing any more.
            gone = select.poll()
            gone.register(self.connection, select.POLLRDHUP | select.POLLHUP)
            parts = []
            while n > 0:
                if gone.poll(0):
                    raise ConnectionError("the client went away")
                chunk = self.rfile.read(min(n, 16384))
                if not chunk:
                    break
                uplink.take(len(chunk))
                parts.append(chunk)
                n -= len(chunk)
            return b"".join(parts)

        def handle_any(self):
            url = urllib.parse.urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            auth = headers.get("authorization", "")
            m = re.search(r"Credential=[^/]+/\d+/([^/]+)/([^/]+)/", auth)
            region, service = (m.group(1), m.group(2)) if m else ("", "")
            op, snap = "", None
            if service == "ebs":
                for method, rx, name in EBS_OPS:
                    mm = rx.match(url.path)
                    if self.command == method and mm:
                        op = name
                        snap = mm.group(1) if mm.groups() else None
            n = int(self.headers.get("content-length") or 0)
            try:
                body = self.read_body(n, op)
            except (ConnectionError, socket.timeout):
                self.close_connection = True
                return
            params = {}
            if service != "ebs":
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
            with lock:
                nth = counts["ops"][op] = counts["ops"].get(op, 0) + 1
            self.op, self.region, self.service = op, region, service

            # A reused ClientToken (the emulated collision first, then AWS's own replay rule).
            if op == "StartSnapshot" and args.replay_first_start:
                with lock:
                    first = counts["first_start"]
                if first is not None:
                    entry["fault"] = "replayed"
                    return self.answer_stored(first, entry)
            if op == "CopyImage" and args.copy_answer:
                entry["fault"] = "replayed"
                data = (f'<?xml version="1.0" encoding="UTF-8"?><CopyImageResponse xmlns="{EC2_NS}">'
                        f'<requestId>r-{nth}</requestId><imageId>{args.copy_answer}</imageId>'
                        '</CopyImageResponse>').encode()
                return self.answer(entry, 200, [("content-type", "text/xml")], data)
            with lock:
                queue = injections.get(op)
                injected = queue.pop(0) if queue else None
                left = conflicts.get(url.path, 0) if op == "PutSnapshotBlock" else 0
                if left:
                    conflicts[url.path] = left - 1
            if injected:
                code, reason = injected
                entry["fault"] = f"inject:{code}" + (f"/{reason}" if reason else "")
                status = 404 if code == "ResourceNotFoundException" else 400
                return self.answer_error(entry, status, code, f"injected {code}", reason)
            if left:
                entry["fault"] = "conflict"
                return self.answer_error(entry, 400, "ValidationException",
                                         "A write to this block is in progress.",
                                         "CONFLICTING_BLOCK_UPDATE")

            fault = pick_fault(op)
            if op in fail_ops:
                skip, count = fail_ops[op]
                if nth > skip and (count is None or nth <= skip + count):
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
                return self.drop()
            if fault in ("throttle", "500", "503", "fail", "notfound"):
                return self.answer_fault(fault, service, entry)

            # Faults stand for answers that come before the service looks at the request; a
            # request that gets past them is idempotent by its token.
            key = token_key(op, region, service, params, body)
            if key:
                # A retry while the first request with its token is still being served waits
                # for it, then gets its answer: AWS makes one snapshot (or copy) per token.
                while True:
                    with lock:
                        busy = tokens_in_flight.get(key[0])
                        if busy is None:
                            tokens_in_flight[key[0]] = self.token_done = threading.Event()
                            break
                    busy.wait(120)
                with lock:
                    stored = st["tokens"].get(key[0])
                if stored is not None:
                    if stored["params"] == key[1]:
                        entry["fault"] = "replayed"
                        return self.answer_stored(stored, entry)
                    entry["fault"] = "token-mismatch"
                    if service == "ebs":
                        return self.answer_error(entry, 409, "ConflictException",
                                                 "The client token was used with other parameters.")
                    return self.answer_error(
                        entry, 400, "IdempotentParameterMismatch",
                        "Arguments on this idempotent request are inconsistent with arguments "
                        "used in previous request(s).")

            # What AWS refuses and moto accepts.
            if op in ("PutSnapshotBlock", "CompleteSnapshot") and snap:
                with lock:
                    state = st["snapshots"].get(snap)
                if state == "deleted":
                    entry["fault"] = "refused"
                    return self.answer_error(entry, 404, "ResourceNotFoundException",
                                             "The snapshot does not exist.", "SNAPSHOT_NOT_FOUND")
                if state == "completed":
                    entry["fault"] = "refused"
                    return self.answer_error(entry, 400, "ValidationException",
                                             "The snapshot is not in the pending state.",
                                             "INVALID_SNAPSHOT_ID")
            parent = None
            if op == "StartSnapshot":
                try:
                    parent = json.loads(body or b"{}").get("ParentSnapshotId")
                    encrypted = json.loads(body or b"{}").get("Encrypted")
                except ValueError:
                    parent = encrypted = None
                if parent:
                    with lock:
                        pstate = st["snapshots"].get(parent)
                    if encrypted:
                        entry["fault"] = "refused"
                        return self.answer_error(entry, 400, "ValidationException",
                                                 "You can't specify ParentSnapshotId and Encrypted in the same request.",
                                                 "INVALID_PARAMETER_VALUE")
                    if pstate in (None, "deleted"):
                        entry["fault"] = "refused"
                        return self.answer_error(entry, 404, "ResourceNotFoundException",
                                                 f"The parent snapshot {parent} does not exist.",
                                                 "SNAPSHOT_NOT_FOUND")
                    if pstate != "completed":
                        entry["fault"] = "refused"
                        return self.answer_error(entry, 400, "ValidationException",
                                                 f"The parent snapshot {parent} is not completed.",
                                                 "INVALID_PARENT_SNAPSHOT_ID")
            if op in ("RegisterImage", "CopyImage") and params.get("Name"):
                holder = self.image_named(params["Name"])
                if holder:
                    entry["fault"] = "duplicate"
                    return self.answer_error(
                        entry, 400, "InvalidAMIName.Duplicate",
                        f"AMI name {params['Name']} is already in use by AMI {holder}")

            if op in ("EnableImageDeprecation", "DisableImageDeprecation"):
                with lock:
                    if op == "EnableImageDeprecation":
                        st["deprecations"][params.get("ImageId")] = aws_time(params.get("DeprecateAt", ""))
                    else:
                        st["deprecations"].pop(params.get("ImageId"), None)
                    save_state()
                data = (
                    f'<?xml version="1.0" encoding="UTF-8"?><{op}Response xmlns="{EC2_NS}">'
                    f"<requestId>proxy</requestId><return>true</return></{op}Response>"
                ).encode()
                return self.answer(entry, 200, [("content-type", "text/xml")], data)
            if op in args.swallow_op:
                return self.answer(entry, 201, [("content-type", "application/json")], b"{}")

            fwd = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
            resp, data = self.forward(self.command, self.path, body, fwd)
            if op == "GetSnapshotBlock" and resp.status != 200:
                # A block the child was not written: its parent's (moto ignores BlockToken).
                with lock:
                    up = st["parents"].get(snap)
                while up and resp.status != 200:
                    path = f"/snapshots/{up}/blocks/" + url.path.rsplit("/", 1)[1]
                    resp, data = self.forward("GET", path + ("?" + url.query if url.query else ""), b"", fwd)
                    with lock:
                        up = st["parents"].get(up)
            ok = 200 <= resp.status < 300
            if op == "StartSnapshot" and parent and ok:
                with lock:
                    sid = json.loads(data).get("SnapshotId")
                    if sid:
                        st["parents"][sid] = parent
                        save_state()
            if op == "StartSnapshot" and args.rewrite_block_size and ok:
                j = json.loads(data)
                j["BlockSize"] = 524288
                data = json.dumps(j).encode()
            if op == "ListSnapshotBlocks" and resp.status == 200:
                j = json.loads(data)
                for b in j.get("Blocks", []):
                    b["BlockIndex"] = int(b["BlockIndex"])
                with lock:
                    up = st["parents"].get(snap)
                if up:
                    # The child's view: its own blocks over its ancestors', in one page.
                    own = {b["BlockIndex"] for b in j.get("Blocks", [])}
                    while up:
                        r2, d2 = self.forward("GET", f"/snapshots/{up}/blocks", b"", fwd)
                        for b in json.loads(d2).get("Blocks", []) if r2.status == 200 else []:
                            i = int(b["BlockIndex"])
                            if i not in own:
                                own.add(i)
                                j["Blocks"].append({"BlockIndex": i, "BlockToken": b["BlockToken"]})
                        with lock:
                            up = st["parents"].get(up)
                    j["Blocks"].sort(key=lambda b: b["BlockIndex"])
                    j.pop("NextToken", None)
                data = json.dumps(j).encode()
            if op == "RegisterImage" and ok:
                remember_registration(data, params)
            if op == "DescribeImages" and ok:
                data = rewrite_images(data)
            if op == "DescribeSnapshots" and ok:
                data = rewrite_snapshots(data)
            out_headers = [
                (k, v)
                for k, v in resp.getheaders()
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date")
            ]
            if ok:
                self.note_success(op, snap, params, data, key, resp.status, out_headers)
            if nth in lost.get(op, ()):
                # It happened at moto; the answer is lost on the way back.
                entry["status"] = resp.status
                entry["fault"] = "lost-answer"
                log.write(json.dumps(entry) + "\n")
                if op == "PutSnapshotBlock" and args.conflicts:
                    with lock:
                        conflicts[url.path] = args.conflicts
                return self.drop()
            if op in answer_delays:
                entry["status"] = resp.status
                entry["fault"] = "answer-delayed"
                log.write(json.dumps(entry) + "\n")
                time.sleep(answer_delays[op])
                return self.send(resp.status, out_headers, data)
            return self.answer(entry, resp.status, out_headers, data)

        def note_success(self, op, snap, params, data, key, status, headers):
            with lock:
                if op == "StartSnapshot":
                    try:
                        sid = json.loads(data).get("SnapshotId")
                    except ValueError:
                        sid = None
                    if sid:
                        st["snapshots"][sid] = "pending"
                elif op == "CopyImage":
                    try:
                        image_id = ET.fromstring(data).findtext(q("imageId"))
                    except ET.ParseError:
                        image_id = None
                    if image_id:
                        st["copies"][image_id] = "new"
                elif op == "CompleteSnapshot" and snap:
                    st["snapshots"][snap] = "completed"
                elif op == "DeleteSnapshot" and params.get("SnapshotId") in st["snapshots"]:
                    st["snapshots"][params["SnapshotId"]] = "deleted"
                stored = {
                    "params": key[1] if key else "",
                    "status": status,
                    "headers": headers,
                    "body": base64.b64encode(data).decode(),
                }
                if key:
                    st["tokens"][key[0]] = stored
                if op == "StartSnapshot" and counts["first_start"] is None:
                    counts["first_start"] = stored
                save_state()

        def image_named(self, name):
            """The id of a live image this account owns in the request's region under `name`:
            asked of moto itself, with the request's own credentials (and so its region)."""
            query = urllib.parse.urlencode({
                "Action": "DescribeImages", "Version": "2016-11-15", "Owner.1": "self",
                "Filter.1.Name": "name", "Filter.1.Value.1": name,
            }).encode()
            headers = {
                "Authorization": self.headers.get("authorization", ""),
                "X-Amz-Date": self.headers.get("x-amz-date", ""),
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            }
            conn = http.client.HTTPConnection(args.upstream, timeout=60)
            try:
                conn.request("POST", "/", body=query, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            finally:
                conn.close()
            if resp.status != 200:
                return None
            for item in ET.fromstring(data).iter(q("item")):
                if item.findtext(q("name")) == name and item.findtext(q("imageState")) != "deregistered":
                    image_id = item.findtext(q("imageId"))
                    if image_id:
                        return image_id
            return None

        def forward(self, method, path, body, headers):
            """Sends the request to moto on this client connection's own upstream connection
            (kept open, as the client keeps its own), reconnecting once if moto closed it."""
            for attempt in (0, 1):
                conn = getattr(self, "upstream", None)
                if conn is None:
                    conn = self.upstream = http.client.HTTPConnection(args.upstream, timeout=120)
                try:
                    conn.request(method, path, body=body, headers=headers)
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

        def drop(self):
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def send(self, status, headers, data):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def answer(self, entry, status, headers, data):
            entry["status"] = status
            log.write(json.dumps(entry) + "\n")
            self.send(status, headers, data)

        def answer_stored(self, stored, entry):
            headers = [tuple(h) for h in stored["headers"]]
            data = base64.b64decode(stored["body"])
            if entry["op"] == "StartSnapshot":
                j = json.loads(data)
                with lock:
                    if st["snapshots"].get(j.get("SnapshotId")) == "completed":
                        j["Status"] = "completed"
                data = json.dumps(j).encode()
            self.answer(entry, stored["status"], headers, data)

        def answer_error(self, entry, status, code, msg, reason=""):
            if self.service == "ec2":
                data = (
                    f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
                    f"<Message>{msg}</Message></Error></Errors><RequestID>x</RequestID></Response>"
                ).encode()
                headers = [("content-type", "text/xml")]
            else:
                j = {"Message": msg}
                if reason:
                    j["Reason"] = reason
                data = json.dumps(j).encode()
                headers = [("content-type", "application/json"), ("x-amzn-errortype", code)]
            self.answer(entry, status, headers, data)

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
            self.answer_error(entry, status, code, msg)

        def handle_one(self):
            self.token_done = None
            try:
                self.handle_any()
            finally:
                if self.token_done is not None:
                    with lock:
                        for k, ev in list(tokens_in_flight.items()):
                            if ev is self.token_done:
                                del tokens_in_flight[k]
                    self.token_done.set()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one

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
