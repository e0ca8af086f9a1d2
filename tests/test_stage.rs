//! `kiln test` as EC2 Image Builder's test stage, on a fast guest: Debian's cloud kernel and a
//! busybox init that loads virtio-net, takes an address by DHCP, serves a page with busybox
//! httpd, and reports what the EC2-like machine shows it on the console: the SMBIOS identity,
//! the disk's size, and the metadata service's answers (token-less, and with an IMDSv2 token,
//! its user data) through the real guest network path (virtio-net, QEMU's user network,
//! guestfwd, kiln's relay). The checks run against it through the `kiln` binary; the server
//! image with systemd, cloud-init and sshd is in tests/server_image.rs.

mod common;

use common::boot::{assert_nothing_left, build_hand, net_module_files, processes_with};
use common::report::{kiln_test, reason, result, text};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The probe's init. `$1`: whether it brings the network up.
fn init(network: bool) -> String {
    let net = r#"for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net; do insmod /m/$m.ko; done
ip link set lo up
ip link set eth0 up
cat >/udhcpc.sh <<'S'
#!/bin/busybox sh
[ "$1" = bound ] || exit 0
ip addr add $ip/$mask dev $interface
ip route add default via $router
echo "DHCP-LEASE $ip/$mask"
S
chmod 755 /udhcpc.sh
udhcpc -i eth0 -s /udhcpc.sh -q -n -t 30 -T 1
echo "Welcome to kiln" > /www/index.html
httpd -p 80 -h /www
imds() { printf "$1 $2 HTTP/1.0\r\n$3\r\n" | nc 169.254.169.254 80; }
echo "TOKENLESS: $(imds GET /latest/meta-data/instance-id '' | head -n 1)"
tok=$(imds PUT /latest/api/token 'X-aws-ec2-metadata-token-ttl-seconds: 60\r\n' | tail -n 1)
echo "USER-DATA: $(imds GET /latest/user-data "X-aws-ec2-metadata-token: $tok\r\n" | tail -n 1)"
mac=$(imds GET /latest/meta-data/mac "X-aws-ec2-metadata-token: $tok\r\n" | tail -n 1)
[ "$mac" = "$(cat /sys/class/net/eth0/address)" ] && echo "MAC-MATCH $mac"
"#;
    format!(
        r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /www
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "EC2-VENDOR=$(cat /sys/class/dmi/id/sys_vendor)"
u=$(cat /sys/class/dmi/id/product_uuid)
case "$u" in ec2*) [ "$u" = "$(cat /sys/class/dmi/id/product_serial)" ] && echo "EC2-UUID-OK $u";; esac
echo "DISK-SECTORS=$(cat /sys/block/nvme0n1/size)"
{}
echo KILN-BOOT-OK
while true; do sleep 1000; done
"#,
        if network { net } else { "" }
    )
}

/// `[[test]]` tables and an `[ami]` requiring IMDSv2 with a 2 GiB volume.
const PASSING: &str = r#"
[ami]
name = "probe-{version}"
imds_support = "v2.0"
volume_size = "2GiB"
[[test]]
name = "EC2's SMBIOS vendor"
console = "EC2-VENDOR=Amazon EC2"
[[test]]
name = "ds-identify's EC2 uuid"
console = "EC2-UUID-OK ec2"
[[test]]
name = "the volume's size"
console = "DISK-SECTORS=4194304"
[[test]]
name = "token-less metadata refused"
console = "TOKENLESS: HTTP/1.1 401 Unauthorized"
[[test]]
name = "user data with a token"
console = "USER-DATA: hello from user-data"
[[test]]
name = "the metadata MAC is the NIC's"
console = "MAC-MATCH 0e:"
[[test]]
name = "httpd listens"
tcp = { port = 80 }
timeout = "120s"
[[test]]
name = "web answers"
http = { port = 80, path = "/", status = 200, body = "^Welcome to kiln$" }
[[test]]
name = "missing page"
http = { port = 80, path = "/missing", status = 404 }
timeout = 30
"#;

/// The same image's recipe with checks that each fail their own way, and two that pass. The
/// timeouts leave a TCG guest on a loaded machine time to answer (a starved guest took more
/// than 8 s to refuse a connection once).
const FAILING: &str = r#"
[[test]]
name = "booted"
console = "KILN-BOOT-OK"
[[test]]
name = "token-less metadata allowed"
console = "TOKENLESS: HTTP/1.1 200 OK"
[[test]]
name = "closed port"
tcp = { port = 81 }
timeout = "30s"
[[test]]
name = "pattern never appears"
http = { port = 80, body = "Goodbye" }
timeout = "20s"
[[test]]
name = "wrong status"
http = { port = 80, path = "/", status = 201 }
timeout = "20s"
[[test]]
name = "never printed"
console = "this text is never printed"
timeout = "5s"
"#;

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

/// `kiln test IMG ARGS --json` (tests/common/report.rs).
fn run_test(img: &Path, args: &[&str]) -> (Output, Value) {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    kiln_test(img, &args)
}

/// The forwarded host ports of a finished run no longer accept connections.
fn assert_ports_closed(j: &Value) {
    for p in j["ports"].as_array().unwrap() {
        let host = p["host"].as_u64().unwrap() as u16;
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", host)).is_err(),
            "port {host} still listens"
        );
    }
}

fn probe_image(dir: &Path, name: &str, network: bool, extra: &str) -> PathBuf {
    let files = if network {
        net_module_files()
    } else {
        String::new()
    };
    build_hand(dir, name, &init(network), true, &format!("{files}{extra}"))
}

#[test]
fn every_check_passes_on_a_good_guest_with_imdsv2_enforced_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let img = probe_image(dir.path(), "probe", true, PASSING);
    let before = common::sha256_file(&img);
    // The build recorded the recipe's tests and the AMI's machine in the manifest.
    let m: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("probe.manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["test"]["tests"].as_array().unwrap().len(), 9, "{m:#}");
    assert_eq!(m["test"]["tests"][7]["http"]["body"], "^Welcome to kiln$");
    assert_eq!(m["test"]["tests"][6]["timeout"], 120);
    assert_eq!(m["test"]["imdsv2_required"], true);
    assert_eq!(m["test"]["volume_size"], 2u64 << 30);
    let ud = dir.path().join("user-data");
    std::fs::write(&ud, "hello from user-data").unwrap();
    let junit = dir.path().join("report.xml");
    // The tests come from the manifest the build wrote beside the image.
    let (o, j) = run_test(
        &img,
        &[
            "--user-data",
            ud.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(j["passed"], true, "{j:#}");
    assert_eq!(j["results"].as_array().unwrap().len(), 9, "{j:#}");
    assert_eq!(j["volume_size"], 2u64 << 30);
    assert_eq!(j["imdsv2_required"], true);
    let imds = &j["imds"];
    assert!(imds["tokenless"].as_u64().unwrap() >= 1, "{j:#}");
    assert!(imds["refused"].as_u64().unwrap() >= 1, "{j:#}");
    assert!(imds["tokens_issued"].as_u64().unwrap() >= 1, "{j:#}");
    assert!(j["instance_id"].as_str().unwrap().starts_with("i-0"));
    assert_ports_closed(&j);
    assert_eq!(common::sha256_file(&img), before, "the image was modified");
    let log = std::fs::read_to_string(dir.path().join("probe.console.log")).unwrap();
    assert!(log.contains("DHCP-LEASE 169.254.0.15/16"), "{log}");

    // JUnit XML, read back with Python's XML parser.
    let py = r#"
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
s = r.find("testsuite")
print(r.get("tests"), r.get("failures"), s.get("tests"), len(s.findall("testcase")), len(s.findall("testcase/failure")))
"#;
    let out = common::run_ok(Command::new("python3").args(["-c", py]).arg(&junit));
    assert_eq!(out.trim(), "9 0 9 9 0");

    // The same run as a table (no --json).
    let tmp = tempfile::tempdir().unwrap();
    let o = kiln()
        .arg("test")
        .arg(&img)
        .args(["--user-data", ud.to_str().unwrap()])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert_nothing_left(tmp.path());
    let t = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(t.starts_with("CHECK "), "{t}");
    assert!(t.contains("web answers"), "{t}");
    assert!(t.contains("PASS: 9 of 9 checks passed in "), "{t}");
    assert!(
        t.contains("without a token (refused: IMDSv2 required)"),
        "{t}"
    );
}

#[test]
fn each_check_fails_with_its_own_reason() {
    let dir = tempfile::tempdir().unwrap();
    let img = probe_image(dir.path(), "probe", true, "");
    // --recipe: another recipe's tests (this one's text, with failing checks).
    let recipe = dir.path().join("failing.toml");
    let base = std::fs::read_to_string(dir.path().join("probe.toml")).unwrap();
    std::fs::write(&recipe, format!("{base}{FAILING}")).unwrap();
    let (o, j) = run_test(
        &img,
        &["--recipe", recipe.to_str().unwrap(), "--allow-host-paths"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(j["passed"], false);
    assert_eq!(result(&j, "booted")["passed"], true, "{j:#}");
    assert_eq!(
        result(&j, "token-less metadata allowed")["passed"],
        true,
        "without [ami] imds_support, IMDSv1 is allowed: {j:#}"
    );
    assert!(
        j["imds"]["tokenless"].as_u64().unwrap() >= 1,
        "counted anyway: {j:#}"
    );
    assert_eq!(j["imds"]["refused"], 0);
    let r = reason(&j, "closed port");
    assert!(
        r.starts_with("nothing listens on port 81 in the guest (connection refused)")
            && r.ends_with("(still so after 30 s)"),
        "{r}"
    );
    let r = reason(&j, "pattern never appears");
    assert!(
        r.contains("answered 200 but the body does not match /Goodbye/: \"Welcome to kiln\""),
        "{r}"
    );
    let r = reason(&j, "wrong status");
    assert!(r.contains("answered 200, expected 201"), "{r}");
    let r = reason(&j, "never printed");
    assert_eq!(
        r,
        "\"this text is never printed\" did not appear on the console within 5 s"
    );
    // A failure carries the console's last lines.
    let tail = result(&j, "never printed")["console_tail"]
        .as_array()
        .unwrap();
    assert!(
        tail.iter()
            .any(|l| l.as_str().unwrap().contains("KILN-BOOT-OK")),
        "{j:#}"
    );
    assert_ports_closed(&j);
}

#[test]
fn a_guest_that_never_gets_network_fails_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let extra = r#"
[[test]]
name = "sshd listens"
tcp = { port = 22 }
timeout = "20s"
[[test]]
name = "web answers"
http = { port = 80 }
timeout = "5s"
"#;
    let img = probe_image(dir.path(), "offline", false, extra);
    let (o, j) = run_test(&img, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    for name in ["sshd listens", "web answers"] {
        let r = reason(&j, name);
        assert!(
            r.contains("the guest does not answer connections to port")
                && r.contains("it has not contacted the metadata service either"),
            "{name}: {r}"
        );
    }
    assert_eq!(j["imds"]["requests"], 0);
}

#[test]
fn recipe_mistakes_and_bad_inputs_exit_2_before_anything_boots() {
    let dir = tempfile::tempdir().unwrap();
    let img = probe_image(dir.path(), "probe", false, "");
    let base = std::fs::read_to_string(dir.path().join("probe.toml")).unwrap();
    let lines = base.lines().count();
    let cases = [
        (
            "[[test]]\nname = \"two kinds\"\ntcp = { port = 22 }\nconsole = \"x\"\n",
            1,
            1,
            "test \"two kinds\" has 2 kinds; expected exactly one of http, ssh, systemd, tcp, console, reboot",
        ),
        (
            "[[test]]\nname = \"no kind\"\n",
            1,
            1,
            "test \"no kind\" has no kind",
        ),
        (
            "[[test]]\nname = \"bad regex\"\nhttp = { port = 80, body = \"(unclosed\" }\n",
            3,
            28,
            "body is not a usable regex",
        ),
        (
            "[[test]]\nname = \"x\"\ntcp = { port = 70000 }\n",
            3,
            16,
            "port 70000 is out of range; expected a TCP port from 1 to 65535",
        ),
        (
            "[[test]]\nname = \"x\"\nconsole = \"a\"\ntimeout = \"soon\"\n",
            4,
            11,
            "the timeout is not a positive duration",
        ),
        (
            "[[test]]\nname = \"x\"\nreboot = true\n[[test]]\nname = \"y\"\nreboot = true\n",
            6,
            10,
            "a second reboot test",
        ),
        (
            "[[test]]\nname = \"x\"\nsystemd = { state = \"happy\" }\n",
            3,
            21,
            "unknown system state \"happy\"",
        ),
        (
            "[[test]]\nname = \"x\"\nssh = { user = \"a b\", command = \"true\" }\n",
            3,
            16,
            "user \"a b\" is not a login name",
        ),
        (
            "[[test]]\nname = \"x\"\nconsole = \"a\"\n[[test]]\nname = \"x\"\nconsole = \"b\"\n",
            5,
            8,
            "two tests are named \"x\"",
        ),
    ];
    for (extra, line, col, want) in cases {
        let recipe = dir.path().join("bad.toml");
        std::fs::write(&recipe, format!("{base}{extra}")).unwrap();
        let o = kiln()
            .arg("test")
            .arg(&img)
            .arg("--recipe")
            .arg(&recipe)
            .arg("--allow-host-paths")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        let pos = format!("bad.toml:{}:{col}: ", lines + line);
        assert!(
            err.contains(&pos) && err.contains(want),
            "want {pos}{want}:\n{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let fails = |args: &[&str], want: &str| {
        let o = kiln().arg("test").arg(&img).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "want {want}: {err}");
    };
    fails(&["--volume-size", "100MiB"], "is smaller than the image");
    fails(
        &["--user-data", "/nonexistent/ud"],
        "cannot read the user data /nonexistent/ud",
    );
    std::fs::write(dir.path().join("k.pub"), "not a key\n").unwrap();
    fails(
        &[
            "--ssh-key",
            dir.path().join("k.pub").to_str().unwrap(),
            "--expect",
            "x",
        ],
        "not an OpenSSH public key",
    );
    assert!(!dir.path().join("probe.console.log").exists());
}

/// Listening TCP ports (127.0.0.1) of process `pid`, from /proc/net/tcp and its open sockets.
fn listening_ports(pid: &str) -> Vec<u16> {
    let mut inodes = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(t) = std::fs::read_link(fd.path()) {
            if let Some(i) = t
                .to_string_lossy()
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
            {
                inodes.push(i.to_string());
            }
        }
    }
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local address 0100007F:PORT, state 0A = LISTEN, inode at 9.
            let (addr, port) = f[1].split_once(':')?;
            (addr == "0100007F" && f[3] == "0A" && inodes.iter().any(|i| i == f[9]))
                .then(|| u16::from_str_radix(port, 16).ok())
                .flatten()
        })
        .collect()
}

#[test]
fn ctrl_c_leaves_no_qemu_relay_overlay_key_or_port() {
    let dir = tempfile::tempdir().unwrap();
    let extra = r#"
[[test]]
name = "waits"
console = "this text is never printed"
[[test]]
name = "sshd"
ssh = { command = "true" }
"#;
    let img = probe_image(dir.path(), "probe", true, extra);
    let tmp = tempfile::tempdir().unwrap();
    let child = common::boot::KillOnDrop(Some(
        kiln()
            .arg("test")
            .arg(&img)
            .env("TMPDIR", tmp.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    // Wait for the guest to have used the metadata service (its console says so), so that
    // relays have run, the key pair exists and the ports are open.
    let needle = tmp.path().to_string_lossy().into_owned();
    let mut ports = Vec::new();
    let mut seen = false;
    for _ in 0..2400 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let logs: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().contains(".probe.console.log."))
            .collect();
        if logs.iter().any(|l| {
            std::fs::read_to_string(l)
                .unwrap_or_default()
                .contains("MAC-MATCH")
        }) {
            seen = true;
            break;
        }
    }
    assert!(seen, "the guest never reached the metadata service");
    let dirs: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    for f in [
        "disk.qcow2",
        "vars.fd",
        "id_ed25519",
        "id_ed25519.pub",
        "qmp.sock",
        "imds.sock",
    ] {
        assert!(dirs[0].join(f).exists(), "{f} missing in {dirs:?}");
    }
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.starts_with("qemu-system") && cmd.contains(&needle) {
            ports = listening_ports(&pid);
        }
    }
    assert_eq!(
        ports.len(),
        1,
        "QEMU forwards the ssh check's port 22: {ports:?}"
    );
    assert!(!processes_with(&needle).is_empty());
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let o = child.take().wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert_nothing_left(tmp.path());
    for p in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", p)).is_err(),
            "port {p} still listens"
        );
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "temp files left: {names:?}");
}
