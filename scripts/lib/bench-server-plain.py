#!/usr/bin/env python3
"""scripts/bench-boot's baseline for the server image: a plain qemu-system-x86_64 command line
(the same machine kiln test makes: q35, OVMF, NVMe, a qcow2 overlay of 4 GiB made by qemu-img,
virtio-net on the user network with the IMDS address forwarded to a small stand-in through
socat, EC2's SMBIOS strings), then the same checks kiln's bench recipe runs, done by hand with
ssh and urllib, each retried until it passes.

  bench-server-plain.py IMAGE PRIVATE_KEY USER_DATA WORKDIR

Prints {"first_ssh_login": s, "seconds": s} (seconds from starting QEMU) on stdout.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

image, key, user_data, work = sys.argv[1:5]
here = os.path.dirname(os.path.abspath(__file__))
MAC = "0e:be:0c:00:00:01"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


ssh_port, http_port, imds_port = free_port(), free_port(), free_port()
overlay = os.path.join(work, "plain-overlay.qcow2")
vars_fd = os.path.join(work, "plain-vars.fd")
for f in (overlay,):
    if os.path.exists(f):
        os.unlink(f)
subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                os.path.abspath(image), overlay, "4G"], check=True)
subprocess.run(["cp", "/usr/share/OVMF/OVMF_VARS_4M.fd", vars_fd], check=True)
os.chmod(vars_fd, 0o600)
imds = subprocess.Popen([sys.executable, os.path.join(here, "imds-standin.py"), str(imds_port),
                         key + ".pub", user_data, MAC])
uuid = "ec2be0c0-0000-4000-8000-000000000001"
accel = os.environ.get("ACCEL", "").split()
cmd = ["qemu-system-x86_64", "-machine", "q35", *accel, "-m", "1024", "-nographic", "-no-reboot",
       "-netdev", "user,id=n0,net=169.254.0.0/16,host=169.254.0.1,dhcpstart=169.254.0.15,"
       "dns=169.254.169.253,ipv6=off,"
       f"hostfwd=tcp:127.0.0.1:{ssh_port}-:22,hostfwd=tcp:127.0.0.1:{http_port}-:80,"
       f"guestfwd=tcp:169.254.169.254:80-cmd:socat STDIO TCP:127.0.0.1:{imds_port}",
       "-device", f"virtio-net-pci,netdev=n0,mac={MAC},romfile=",
       "-smbios", f"type=1,manufacturer=Amazon EC2,product=t3.micro,serial={uuid},uuid={uuid}",
       "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
       "-drive", f"if=pflash,format=raw,unit=1,file={vars_fd}",
       "-drive", f"file={overlay},if=none,id=d0,format=qcow2",
       "-device", "nvme,serial=kiln-disk0,drive=d0,bootindex=1"]
t0 = time.monotonic()
qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT)
console = bytearray()


def read_console():
    with open(os.path.join(work, "plain.console.log"), "wb") as log:
        while True:
            b = qemu.stdout.read1(65536)
            if not b:
                return
            console.extend(b)
            log.write(b)


threading.Thread(target=read_console, daemon=True).start()
SSH = ["ssh", "-F", "/dev/null", "-T", "-p", str(ssh_port), "-i", key, "-o", "IdentitiesOnly=yes",
       "-o", "IdentityAgent=none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
       "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=60", "-o", "LogLevel=ERROR",
       "admin@127.0.0.1", "--"]


def until(what, f, limit=1800):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            if f():
                return
        except Exception:
            pass
        if qemu.poll() is not None:
            sys.exit(f"bench-server-plain: QEMU stopped while waiting for {what}")
        time.sleep(2)
    sys.exit(f"bench-server-plain: {what} never passed")


def ssh(command):
    r = subprocess.run(SSH + [command], capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout.rstrip("\n")


def tcp22():
    s = socket.create_connection(("127.0.0.1", ssh_port), timeout=10)
    s.settimeout(10)
    ok = s.recv(4).startswith(b"SSH-")
    s.close()
    return ok


def http():
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/", timeout=30) as r:
        return r.status == 200 and b"Welcome to the kiln server fixture" in r.read()


first_login = None
try:
    until("the kernel", lambda: b"Linux version" in console)
    until("port 22", tcp22)
    until("a login", lambda: ssh("id -un") == (0, "admin"))
    first_login = time.monotonic() - t0
    until("systemd", lambda: ssh("systemctl is-system-running; systemctl is-active nginx.service "
                                 "ssh.service") == (0, "running\nactive\nactive"))
    until("nginx", http)
    until("the user data", lambda: ssh("cat /var/tmp/kiln-user-data") == (0, "user-data ran"))
    until("the root's growth", lambda: ssh("s=$(df -B1M --output=size / | tail -n 1); "
                                           "test $s -gt 3500")[0] == 0)
    until("ec2-metadata", lambda: ssh("ec2-metadata --instance-id")[1].startswith("instance-id: i-"))
    until("IMDSv2", lambda: ssh("curl -s -o /dev/null -w '%{http_code}' "
                                "http://169.254.169.254/latest/meta-data/instance-id")[1] == "401")
    done = time.monotonic() - t0
    print(json.dumps({"first_ssh_login": round(first_login, 1), "seconds": round(done, 1)}))
finally:
    qemu.kill()
    qemu.wait()
    imds.kill()
    imds.wait()
    for f in (overlay, vars_fd):
        if os.path.exists(f):
            os.unlink(f)
