//! `kiln push` to a real registry (Debian's docker-registry on 127.0.0.1), through a recording,
//! fault-injecting proxy: with and without basic auth, credentials from the flags and from a
//! Docker config file, pulled back by `skopeo copy` with the same digest, a second push that
//! uploads nothing, a chunked upload resumed after 5xx mid-blob, and the failures (unreachable,
//! wrong credentials, a registry failing every blob write) that must leave no tag behind.

mod common;

use common::registry::{Registry, RegistryProxy};
use common::{run, run_ok};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

/// An OCI image with a layer of a few MiB (so that chunked uploads take several chunks).
fn image(dir: &Path, archive: bool) -> (PathBuf, String) {
    // xorshift: bytes gzip cannot shrink, so the layer is about 3 MiB.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let blob: Vec<u8> = (0..(3u32 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    std::fs::write(dir.join("blob.bin"), blob).unwrap();
    let recipe = dir.join("push.toml");
    std::fs::write(
        &recipe,
        "[image]\nname = \"push\"\nversion = \"3.0\"\narch = \"x86_64\"\nsize = \"64MiB\"\n\
         [[partition]]\nlabel = \"root\"\ntype = \"root\"\nsize = \"rest\"\nfilesystem = \"ext4\"\nmount = \"/\"\n\
         [[file]]\npath = \"/data/blob.bin\"\nsource = \"blob.bin\"\n\
         [container]\ncmd = [\"/bin/true\"]\n",
    )
    .unwrap();
    let mut c = kiln();
    c.arg("build")
        .arg(&recipe)
        .args(["--format", "oci", "-o"])
        .arg(dir.join("push.raw"));
    if archive {
        c.arg("--oci-archive");
    }
    run_ok(&mut c);
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("push.manifest.json")).unwrap())
            .unwrap();
    let layout = dir.join(if archive { "push.oci.tar" } else { "push.oci" });
    (
        layout,
        m["outputs"][0]["digest"].as_str().unwrap().to_string(),
    )
}

fn push(
    layout: &Path,
    reference: &str,
    extra: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &Path)],
) -> Output {
    let mut c = kiln();
    c.arg("push")
        .arg(layout)
        .arg(reference)
        .args(extra)
        .arg("--json");
    c.env("DOCKER_CONFIG", "/nonexistent-kiln-test");
    for (k, v) in env {
        c.env(k, v);
    }
    match stdin {
        Some(s) => {
            c.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
            child.wait_with_output().unwrap()
        }
        None => run(&mut c),
    }
}

fn report(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "push failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Requests that upload blob bytes or open upload sessions.
fn uploads(reqs: &[Value]) -> Vec<&Value> {
    reqs.iter()
        .filter(|r| r["path"].as_str().unwrap().contains("/blobs/uploads/"))
        .collect()
}

fn skopeo_digest(reference: &str, creds: Option<&str>) -> Output {
    let mut c = Command::new("skopeo");
    c.args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"]);
    match creds {
        Some(cr) => c.args(["--creds", cr]),
        None => c.arg("--no-creds"),
    };
    run(c.arg(format!("docker://{reference}")))
}

#[test]
fn push_pull_back_and_push_again_uploading_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, digest) = image(tmp.path(), false);
    let reg = Registry::start(None);
    let proxy = RegistryProxy::start(&reg, &[]);
    let reference = format!("{}/kiln/push", proxy.host());

    // Small chunks: the 3 MiB layer goes up in PATCHes, the config and manifest in one PUT.
    let r = report(&push(
        &layout,
        &reference,
        &["--chunk-size", "1MiB"],
        None,
        &[],
    ));
    assert_eq!(r["digest"], digest.as_str());
    assert_eq!(r["reference"], format!("{reference}:3.0").as_str());
    assert_eq!(r["blobs_uploaded"], 2);
    assert_eq!(r["manifests_put"], 1);
    let reqs = proxy.take_requests();
    let patches: Vec<_> = reqs.iter().filter(|r| r["method"] == "PATCH").collect();
    assert!(patches.len() >= 2, "chunked: {patches:?}");
    assert!(patches
        .iter()
        .all(|p| p["body_len"].as_u64().unwrap() <= 1 << 20));
    assert!(reqs
        .iter()
        .any(|r| r["method"] == "PUT" && r["path"].as_str().unwrap().ends_with("/manifests/3.0")));

    // skopeo sees it under the tag with the same digest, and pulls it back unchanged.
    let o = skopeo_digest(&format!("{reference}:3.0"), None);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), digest);
    let pulled = tmp.path().join("pulled");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}:3.0"))
            .arg(format!("oci:{}:3.0", pulled.display())),
    );
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(pulled.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());

    // Again: every blob is found by HEAD, the manifest too; nothing is uploaded or put.
    let r = report(&push(&layout, &reference, &[], None, &[]));
    assert_eq!(
        (
            r["blobs_uploaded"].as_u64(),
            r["blobs_present"].as_u64(),
            r["manifests_put"].as_u64()
        ),
        (Some(0), Some(2), Some(0))
    );
    let reqs = proxy.take_requests();
    assert!(
        uploads(&reqs).is_empty(),
        "no upload the second time: {reqs:?}"
    );
    assert!(
        reqs.iter()
            .all(|r| r["method"] == "HEAD" || r["method"] == "GET"),
        "{reqs:?}"
    );

    // The archive form pushes the same image (already there: nothing uploaded).
    let t2 = tempfile::tempdir().unwrap();
    let (archive, d2) = image(t2.path(), true);
    assert_eq!(d2, digest, "directory and archive hold the same image");
    let r = report(&push(
        &archive,
        &format!("{reference}:again"),
        &[],
        None,
        &[],
    ));
    assert_eq!(r["blobs_uploaded"], 0);
    assert_eq!(r["manifests_put"], 1, "a new tag for the same manifest");
    let o = skopeo_digest(&format!("{reference}:again"), None);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), digest);
}

#[test]
fn basic_auth_from_flags_and_docker_config() {
    use base64::Engine;
    let tmp = tempfile::tempdir().unwrap();
    let (layout, digest) = image(tmp.path(), false);
    let reg = Registry::start(Some(("kiln", "s3cret pass")));
    let reference = format!("{}/team/app:v1", reg.host());

    // No credentials: a clear error, nothing pushed.
    let o = push(&layout, &reference, &[], None, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("wants credentials") && err.contains("--password-stdin"),
        "{err}"
    );
    // Wrong password.
    let o = push(
        &layout,
        &reference,
        &["--username", "kiln", "--password-stdin"],
        Some("wrong\n"),
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(
        !err.contains("wrong"),
        "the password is never printed: {err}"
    );
    let o = skopeo_digest(&reference, Some("kiln:s3cret pass"));
    assert!(!o.status.success(), "nothing was tagged");

    // The right password on stdin.
    let r = report(&push(
        &layout,
        &reference,
        &["--username", "kiln", "--password-stdin"],
        Some("s3cret pass\n"),
        &[],
    ));
    assert_eq!(r["digest"], digest.as_str());
    let o = skopeo_digest(&reference, Some("kiln:s3cret pass"));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), digest);

    // From a Docker config file (as `docker login` writes it).
    let cfg = tmp.path().join("docker");
    std::fs::create_dir(&cfg).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("kiln:s3cret pass");
    std::fs::write(
        cfg.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host()),
    )
    .unwrap();
    let r = report(&push(
        &layout,
        &format!("{}/team/app:v2", reg.host()),
        &[],
        None,
        &[("DOCKER_CONFIG", &cfg)],
    ));
    assert_eq!(r["blobs_uploaded"], 0, "the blobs are there already");
    let o = skopeo_digest(
        &format!("{}/team/app:v2", reg.host()),
        Some("kiln:s3cret pass"),
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), digest);
}

#[test]
fn failures_mid_blob_are_retried_or_leave_no_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, digest) = image(tmp.path(), false);
    let reg = Registry::start(None);

    // Two blob writes fail with 503: the chunk is resumed where the registry says it stands.
    let flaky = RegistryProxy::start(&reg, &["--fail-blob-writes", "2"]);
    let reference = format!("{}/kiln/flaky:1", flaky.host());
    let r = report(&push(
        &layout,
        &reference,
        &["--chunk-size", "1MiB"],
        None,
        &[],
    ));
    assert_eq!(r["digest"], digest.as_str());
    assert!(r["retries"].as_u64().unwrap() >= 2, "{r}");
    let reqs = flaky.take_requests();
    let faults: Vec<_> = reqs.iter().filter(|r| r["fault"] == "503").collect();
    assert_eq!(faults.len(), 2);
    assert!(
        reqs.iter().any(
            |r| r["method"] == "GET" && r["path"].as_str().unwrap().contains("/blobs/uploads/")
        ),
        "the upload's state was asked for"
    );
    let o = skopeo_digest(&format!("{}/kiln/flaky:1", reg.host()), None);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), digest);

    // Every blob write fails: a clear error after the retries, and no tag.
    let broken = RegistryProxy::start(&reg, &["--fail-blob-writes", "-1"]);
    let reference = format!("{}/kiln/broken:1", broken.host());
    let o = push(&layout, &reference, &[], None, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("503")
            && err.contains("failed 4 time(s)")
            && err.contains("uploading blob sha256:"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let reqs = broken.take_requests();
    assert!(
        !reqs
            .iter()
            .any(|r| r["method"] == "PUT" && r["path"].as_str().unwrap().contains("/manifests/")),
        "no manifest was put"
    );
    let o = skopeo_digest(&format!("{}/kiln/broken:1", reg.host()), None);
    assert!(!o.status.success(), "no tag");

    // Nothing listens: an error naming the registry, quickly.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = push(&layout, &format!("127.0.0.1:{port}/x/y:1"), &[], None, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("contacting the registry"),
        "{err}"
    );

    // Not a layout; a bad reference.
    let o = push(tmp.path(), "127.0.0.1:1/x:1", &[], None, &[]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not an OCI image layout"));
    let o = push(&layout, "127.0.0.1:1/UPPER:1", &[], None, &[]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("repository"));
}

/// podman, when it is installed and can run containers here, runs the image's Cmd (busybox
/// from the boot inputs printing a file). On the project's machine podman's runtime cannot set
/// RLIMIT_NOFILE in the sandbox, so this prints a note (README, "OCI images").
#[test]
fn podman_runs_the_cmd_when_it_can() {
    let Ok(v) = Command::new("podman").arg("--version").output() else {
        println!("note: podman is not installed; the image's Cmd is not run (see README)");
        return;
    };
    assert!(v.status.success());
    let busybox = common::boot::inputs(&["busybox"]).join("busybox");
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("pod.toml");
    std::fs::write(
        &recipe,
        format!(
            "[image]\nname = \"pod\"\nversion = \"1\"\narch = \"x86_64\"\nsize = \"64MiB\"\n\
             [[partition]]\nlabel = \"root\"\ntype = \"root\"\nsize = \"rest\"\nfilesystem = \"ext4\"\nmount = \"/\"\n\
             [[file]]\npath = \"/bin/busybox\"\nsource = \"{}\"\nmode = \"0755\"\n\
             [[file]]\npath = \"/etc/motd\"\ncontent = \"hello from kiln\\n\"\n\
             [container]\ncmd = [\"/bin/busybox\", \"cat\", \"/etc/motd\"]\n",
            busybox.display()
        ),
    )
    .unwrap();
    run_ok(
        kiln()
            .arg("build")
            .arg(&recipe)
            .args([
                "--allow-host-paths",
                "--format",
                "oci",
                "--oci-archive",
                "-o",
            ])
            .arg(tmp.path().join("pod.raw")),
    );
    let o = run(Command::new("podman").args(["run", "--rm"]).arg(format!(
        "oci-archive:{}",
        tmp.path().join("pod.oci.tar").display()
    )));
    if !o.status.success() {
        println!(
            "note: podman cannot run containers here: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return;
    }
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello from kiln\n");
}
