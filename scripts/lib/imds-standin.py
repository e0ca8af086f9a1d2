#!/usr/bin/env python3
"""A small IMDSv2 stand-in for scripts/bench-boot's plain QEMU baseline (not used by kiln).

  imds-standin.py PORT PUBLIC_KEY_FILE USER_DATA_FILE MAC

Serves on 127.0.0.1:PORT what cloud-init's EC2 datasource and ec2-metadata read: session tokens
(PUT /latest/api/token), 401 without one, a minimal meta-data tree under every version, the
identity document and the user data. QEMU reaches it through `guestfwd=...-cmd:socat`.
"""
import http.server
import json
import secrets
import socketserver
import sys

port, key_file, ud_file, mac = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
KEY = open(key_file).read().strip()
UD = open(ud_file, "rb").read()
IP = "169.254.0.15"
MD = {
    "ami-id": "ami-0bench0000000000",
    "instance-id": "i-0bench00000000000",
    "instance-type": "t3.micro",
    "hostname": "ip-169-254-0-15.ec2.internal",
    "local-hostname": "ip-169-254-0-15.ec2.internal",
    "local-ipv4": IP,
    "mac": mac,
    "placement/": {"availability-zone": "us-east-1a", "region": "us-east-1"},
    "public-keys/": {"0=bench": None},
    "network/": {"interfaces/": {"macs/": {mac + "/": {
        "device-number": "0", "local-ipv4s": IP, "mac": mac,
        "subnet-ipv4-cidr-block": "169.254.0.0/16"}}}},
}
DOC = json.dumps({"accountId": "123456789012", "architecture": "x86_64",
                  "availabilityZone": "us-east-1a", "imageId": MD["ami-id"],
                  "instanceId": MD["instance-id"], "instanceType": "t3.micro",
                  "privateIp": IP, "region": "us-east-1", "version": "2017-09-30"})
TOKENS = set()


def lookup(parts):
    if parts == []:
        return b"dynamic\nmeta-data\nuser-data"
    if parts[:1] == ["user-data"]:
        return UD
    if parts == ["dynamic"]:
        return b"instance-identity/"
    if parts == ["dynamic", "instance-identity"]:
        return b"document"
    if parts[:3] == ["dynamic", "instance-identity", "document"]:
        return DOC.encode()
    if parts[:1] != ["meta-data"]:
        return None
    parts = parts[1:]
    if parts[:2] == ["public-keys", "0"]:
        return b"openssh-key" if len(parts) == 2 else KEY.encode()
    node = MD
    for p in parts:
        if not isinstance(node, dict):
            return None
        node = node.get(p + "/", node.get(p))
        if node is None and p not in ("",):
            return None
    if isinstance(node, dict):
        return "\n".join(k.split("=")[0] + "=bench" if "=" in k else k for k in node).encode()
    return node.encode() if node else None


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, code, body=b""):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        if self.path.rstrip("/") != "/latest/api/token":
            return self.reply(405)
        tok = secrets.token_urlsafe(40)
        TOKENS.add(tok)
        self.reply(200, tok.encode())

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") not in TOKENS:
            return self.reply(401)
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        body = lookup(parts[1:]) if parts else b"latest"
        self.reply(404 if body is None else 200, body or b"")

    def log_message(self, *a):
        pass


socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
socketserver.ThreadingTCPServer(("127.0.0.1", port), H).serve_forever()
