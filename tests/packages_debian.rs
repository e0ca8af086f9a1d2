//! End to end against this machine's configured Debian mirror (`uri = "host"`): a real package
//! set becomes an image, and debugfs reads back dpkg's database, the accounts and the SBOM.

mod common;

use common::{extract, run_ok};
use std::path::{Path, PathBuf};
use std::process::Command;

fn debugfs(img: &Path, cmd: &str) -> String {
    run_ok(Command::new("debugfs").arg("-R").arg(cmd).arg(img))
}

#[test]
fn debian_base_from_the_host_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("recipes/debian-base.toml");
    let local = dir.path().join("debian-base.toml");
    std::fs::copy(&recipe, &local).unwrap();
    let out = dir.path().join("img.raw");
    let cache = std::env::var_os("KILN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("cache"));
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--json", "-o"])
        .arg(&out)
        .arg(&local)
        .env("KILN_CACHE", &cache)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(v["manifest"].as_str().unwrap()).unwrap())
            .unwrap();
    let pkgs: Vec<&str> = manifest["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for want in [
        "busybox-static",
        "base-files",
        "base-passwd",
        "ca-certificates",
        "openssl",
        "libc6",
    ] {
        assert!(pkgs.contains(&want), "{want} not in {pkgs:?}");
    }
    let root = &manifest["partitions"][1];
    let first = root["first_lba"].as_u64().unwrap();
    let last = root["last_lba"].as_u64().unwrap();
    let part = dir.path().join("root.ext4");
    extract(&out, first * 512, (last - first + 1) * 512, &part);
    run_ok(Command::new("e2fsck").args(["-fn"]).arg(&part));
    let status = debugfs(&part, "cat /var/lib/dpkg/status");
    assert!(
        status.contains("Package: busybox-static\nStatus: install ok installed\n"),
        "{status}"
    );
    assert!(status.contains("Package: ca-certificates\nStatus: install ok installed\n"));
    // base-files' conffiles carry the MD5 of the shipped file, as dpkg records them.
    let bf = status
        .split("\n\n")
        .find(|p| p.starts_with("Package: base-files\n"))
        .unwrap();
    let issue = debugfs(&part, "cat /etc/issue");
    let md5 = {
        use md5::Digest;
        kiln::util::hex(&md5::Md5::digest(issue.as_bytes()))
    };
    assert!(
        bf.contains("Conffiles:\n /etc/") && bf.contains(&format!(" /etc/issue {md5}\n")),
        "{bf}"
    );
    let list = debugfs(&part, "cat /var/lib/dpkg/info/busybox-static.list");
    assert!(
        list.starts_with("/.\n") && list.contains("\n/bin/busybox\n"),
        "{list}"
    );
    let passwd = debugfs(&part, "cat /etc/passwd");
    assert!(
        passwd.starts_with("root:x:0:0:root:/root:/bin/bash\n"),
        "{passwd}"
    );
    assert!(
        passwd.contains("\nadmin:x:1000:1000::/home/admin:/bin/sh\n"),
        "{passwd}"
    );
    let group = debugfs(&part, "cat /etc/group");
    assert!(group.contains("\nsudo:x:27:admin\n"), "{group}");
    let home = debugfs(&part, "stat /home/admin");
    assert!(
        home.contains("Mode:  0700") && home.contains("User:  1000"),
        "{home}"
    );
    let keys = debugfs(&part, "stat /home/admin/.ssh/authorized_keys");
    assert!(
        keys.contains("Mode:  0600")
            && keys.contains("User:  1000")
            && keys.contains("Group:  1000"),
        "{keys}"
    );
    // Merged /usr: busybox-static ships /bin/busybox, found at /usr/bin/busybox.
    let bb = debugfs(&part, "stat /usr/bin/busybox");
    assert!(bb.contains("Mode:  0755"), "{bb}");
    let bin = debugfs(&part, "stat /bin");
    assert!(bin.contains("Type: symlink"), "{bin}");
    let sbom: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("img.spdx.json")).unwrap())
            .unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    let names: Vec<&str> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"busybox-static") && names.contains(&"ca-certificates"));
    // Lock, then a locked rebuild gives the same image.
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("lock")
        .arg(&local)
        .env("KILN_CACHE", &cache)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out2 = dir.path().join("img2.raw");
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--locked", "--json", "-o"])
        .arg(&out2)
        .arg(&local)
        .env("KILN_CACHE", &cache)
        .env("KILN_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v2: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["blocks_sha256"], v2["blocks_sha256"],
        "locked offline rebuild is identical"
    );
}
