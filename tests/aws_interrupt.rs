//! Ctrl-C at each step from StartSnapshot to an available image: while StartSnapshot is being
//! answered, during the blocks (of `kiln publish` and of the streamed `kiln build --upload`; of
//! a child of an earlier snapshot, by `kiln upload --parent` and `kiln build --upload --parent`),
//! after CompleteSnapshot, while RegisterImage is being answered, and while copies are made.
//! (During the blocks of `kiln upload`: tests/ebs_upload.rs; while the registered image becomes
//! available: tests/publish.rs.) After each, no snapshot or image this run made is left, and
//! what was there before (an image and a snapshot kiln did not make, in every region; a child's
//! parent) is untouched.
//!
//! The proxy holds the answer of the step being interrupted (`--delay-answer`: the call has
//! happened at moto, the client does not know yet), so the interruption lands exactly there.

mod common;

use common::moto::{Ec2, Moto, Proxy};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// What is in one region: image ids and snapshot ids (less the snapshots moto invents for
/// images registered through the proxy, which AWS would not make).
fn contents(moto: &Moto, region: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let ec2 = Ec2::new(moto, region);
    let out = ec2
        .block_on(ec2.client.describe_images().owners("self").send())
        .unwrap();
    let images = out
        .images()
        .iter()
        .filter_map(|i| i.image_id().map(str::to_string))
        .collect();
    let invented: BTreeSet<String> = moto
        .proxy_registered()
        .iter()
        .map(|i| format!("Auto-created snapshot for AMI {i}"))
        .collect();
    let out = ec2
        .block_on(ec2.client.describe_snapshots().owner_ids("self").send())
        .unwrap();
    let snaps = out
        .snapshots()
        .iter()
        .filter(|s| !invented.contains(s.description().unwrap_or("")))
        .filter_map(|s| s.snapshot_id().map(str::to_string))
        .collect();
    (images, snaps)
}

/// An image and a snapshot kiln did not make, in `region`.
fn foreign(moto: &Moto, region: &str) {
    let ec2 = Ec2::new(moto, region);
    ec2.block_on(ec2.client.register_image().name("someone-elses").send())
        .unwrap();
    ec2.foreign_snapshot(region);
}

/// Waits until the proxy has logged `n` requests of `op`, then interrupts `child`; returns
/// its exit code and stderr.
fn interrupt_after(proxy: &Proxy, mut child: Child, op: &str, n: usize) -> (Option<i32>, String) {
    let t0 = Instant::now();
    while proxy.ops(op).len() < n {
        assert!(
            child.try_wait().unwrap().is_none(),
            "kiln ended before {op}: {}",
            rest(&mut child)
        );
        assert!(t0.elapsed() < Duration::from_secs(90), "no {op} was sent");
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    (status.code(), rest(&mut child))
}

fn rest(child: &mut Child) -> String {
    let mut s = String::new();
    child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

fn write_recipe(d: &Path, regions: &[&str]) {
    std::fs::write(
        d.join("web.toml"),
        common::moto::web_recipe("1.0.0", regions, ""),
    )
    .unwrap();
}

/// kiln with `args`, run in `d` through the proxy, its stderr kept for the verdict.
fn spawn_kiln(proxy: &Proxy, d: &Path, args: &[&str]) -> Child {
    proxy
        .kiln()
        .current_dir(d)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

const PUBLISH: &[&str] = &["publish", "web.toml", "--skip-test", "-o", "web.raw"];

/// `kiln upload` of a small image made in `d`.
fn spawn_upload(proxy: &Proxy, d: &Path) -> Child {
    common::moto::make_image(&d.join("disk.raw"), 4 << 20, &[(0, 1 << 20)], 1);
    spawn_kiln(proxy, d, &["upload", "disk.raw"])
}

/// The one snapshot the run deleted, which it says it deleted.
fn deleted_snapshot(proxy: &Proxy, err: &str) -> String {
    let deleted = proxy.ops("DeleteSnapshot");
    assert_eq!(deleted.len(), 1, "{err}");
    let id = deleted[0]["params"]["SnapshotId"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains(&format!("deleted snapshot {id} in us-east-1")),
        "{err}"
    );
    id
}

/// What is in `region` now and was not `before`, and what was and is gone.
fn changes(
    moto: &Moto,
    region: &str,
    before: &(BTreeSet<String>, BTreeSet<String>),
) -> (Vec<String>, Vec<String>) {
    let (images, snaps) = contents(moto, region);
    let new = images
        .difference(&before.0)
        .chain(snaps.difference(&before.1))
        .cloned()
        .collect();
    let gone = before
        .0
        .difference(&images)
        .chain(before.1.difference(&snaps))
        .cloned()
        .collect();
    (new, gone)
}

/// Nothing this run made is left in `region`, and nothing that was there is gone.
fn nothing_left(moto: &Moto, region: &str, before: &(BTreeSet<String>, BTreeSet<String>)) {
    let (new, gone) = changes(moto, region, before);
    assert!(
        new.is_empty() && gone.is_empty(),
        "{region}: left {new:?}, removed {gone:?}"
    );
}

#[test]
fn ctrl_c_while_start_snapshot_is_answered_deletes_the_snapshot_it_made() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    foreign(&moto, "us-east-1");
    let before = contents(&moto, "us-east-1");
    let proxy = Proxy::start(
        &moto,
        &d.join("cap.jsonl"),
        &["--delay-answer", "StartSnapshot:5000"],
    );
    let child = spawn_upload(&proxy, d);
    let (code, err) = interrupt_after(&proxy, child, "StartSnapshot", 1);
    assert_eq!(code, Some(130), "{err}");
    let made = proxy.ops("StartSnapshot");
    assert!(made[0]["fault"] == "answer-delayed");
    deleted_snapshot(&proxy, &err);
    assert!(proxy.ops("PutSnapshotBlock").is_empty());
    nothing_left(&moto, "us-east-1", &before);
}

#[test]
fn ctrl_c_after_complete_snapshot_deletes_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    foreign(&moto, "us-east-1");
    let before = contents(&moto, "us-east-1");
    // The wait for `completed` is slow: interrupted between CompleteSnapshot and `completed`.
    let proxy = Proxy::start(
        &moto,
        &d.join("cap.jsonl"),
        &["--delay-op", "DescribeSnapshots:3000"],
    );
    let child = spawn_upload(&proxy, d);
    let (code, err) = interrupt_after(&proxy, child, "CompleteSnapshot", 1);
    assert_eq!(code, Some(130), "{err}");
    let put = proxy.ops("PutSnapshotBlock")[0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let id = deleted_snapshot(&proxy, &err);
    assert!(put.starts_with(&format!("/snapshots/{id}/")), "{put}");
    nothing_left(&moto, "us-east-1", &before);
}

#[test]
fn ctrl_c_while_register_image_is_answered_removes_image_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_recipe(d, &["us-east-1"]);
    let moto = Moto::start();
    foreign(&moto, "us-east-1");
    let before = contents(&moto, "us-east-1");
    let proxy = Proxy::start(
        &moto,
        &d.join("cap.jsonl"),
        &["--delay-answer", "RegisterImage:4000"],
    );
    let (code, err) = interrupt_after(&proxy, spawn_kiln(&proxy, d, PUBLISH), "RegisterImage", 1);
    assert_eq!(code, Some(130), "{err}");
    // The image RegisterImage made (the answer kiln had not yet heard) is gone, and its snapshot.
    let dereg = proxy.ops("DeregisterImage");
    assert_eq!(dereg.len(), 1, "{err}");
    let image = dereg[0]["params"]["ImageId"].as_str().unwrap();
    let snap = proxy.ops("RegisterImage")[0]["params"]["BlockDeviceMapping.1.Ebs.SnapshotId"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains(&format!(
            "deregistered {image} and deleted snapshot {snap} in us-east-1"
        )),
        "{err}"
    );
    nothing_left(&moto, "us-east-1", &before);
}

#[test]
fn ctrl_c_while_copies_are_made_removes_the_copies_and_keeps_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let regions = ["us-east-1", "eu-west-1", "ap-southeast-2"];
    write_recipe(d, &regions);
    let moto = Moto::start();
    for r in regions {
        foreign(&moto, r);
    }
    let before: Vec<_> = regions.iter().map(|r| contents(&moto, r)).collect();
    let proxy = Proxy::start(
        &moto,
        &d.join("cap.jsonl"),
        &["--delay-answer", "CopyImage:4000"],
    );
    let (code, err) = interrupt_after(&proxy, spawn_kiln(&proxy, d, PUBLISH), "CopyImage", 2);
    assert_eq!(code, Some(130), "{err}");
    // Each copy (made at moto, its answer still held) is deregistered with its snapshots.
    for (r, b) in regions[1..].iter().zip(&before[1..]) {
        assert!(
            err.lines()
                .any(|l| l.contains("deregistered ami-") && l.ends_with(&format!("in {r}"))),
            "{r}: {err}"
        );
        nothing_left(&moto, r, b);
    }
    // The source image was complete (available, tagged) before the copies began: it stays,
    // and a re-publish reuses it.
    let (new, gone) = changes(&moto, "us-east-1", &before[0]);
    assert!(gone.is_empty(), "{gone:?}");
    assert_eq!(
        new.len(),
        2,
        "the source image and its snapshot: {new:?}\n{err}"
    );
    let again = Proxy::start(&moto, &d.join("cap2.jsonl"), &[]);
    let o = spawn_kiln(&again, d, PUBLISH).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(again.ops("StartSnapshot").is_empty());
    assert_eq!(again.ops("CopyImage").len(), 2);
}

/// Ctrl-C while blocks are in flight (the proxy holds their answers): the snapshot is deleted,
/// never completed or registered, and nothing else is touched.
fn ctrl_c_during_the_blocks(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_recipe(d, &["us-east-1"]);
    let moto = Moto::start();
    foreign(&moto, "us-east-1");
    let before = contents(&moto, "us-east-1");
    let proxy = Proxy::start(
        &moto,
        &d.join("cap.jsonl"),
        &["--delay-answer", "PutSnapshotBlock:4000"],
    );
    let child = spawn_kiln(&proxy, d, args);
    let (code, err) = interrupt_after(&proxy, child, "PutSnapshotBlock", 1);
    assert_eq!(code, Some(130), "{err}");
    let id = deleted_snapshot(&proxy, &err);
    let put = proxy.ops("PutSnapshotBlock")[0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        put.starts_with(&format!("/snapshots/{id}/blocks/")),
        "{put}"
    );
    for op in ["CompleteSnapshot", "RegisterImage", "CreateTags"] {
        assert!(proxy.ops(op).is_empty(), "{op}: {err}");
    }
    nothing_left(&moto, "us-east-1", &before);
    // A streamed build records nothing of an upload that did not complete.
    if args[0] == "build" {
        assert!(!d.join("web.manifest.json").exists(), "{err}");
    }
    err
}

#[test]
fn ctrl_c_during_the_blocks_of_a_publish_deletes_the_snapshot() {
    ctrl_c_during_the_blocks(&["publish", "web.toml", "--skip-test", "-o", "web.raw"]);
}

#[test]
fn ctrl_c_during_the_blocks_of_a_streamed_build_deletes_the_snapshot() {
    ctrl_c_during_the_blocks(&["build", "web.toml", "--upload", "-o", "web.raw"]);
}

/// Ctrl-C while the blocks of a child (an incremental upload, `--parent auto`) are in flight:
/// the child is deleted; the parent, found and read, stays `completed` with the same bytes; and
/// nothing else (the parent included) is touched. `child_args` run in `d` once web.toml is
/// version 1.0.1, whose /etc/motd differs from 1.0.0's.
fn ctrl_c_during_a_childs_blocks(child_args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_recipe(d, &["us-east-1"]);
    let moto = Moto::start();
    foreign(&moto, "us-east-1");
    // The parent: version 1.0.0 built to a file and uploaded in full.
    let quiet = Proxy::start(&moto, &d.join("cap0.jsonl"), &[]);
    let run = |args: &[&str]| {
        let o = spawn_kiln(&quiet, d, args).wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run(&["build", "web.toml", "-o", "v1/web.raw"]);
    let o = quiet
        .kiln()
        .current_dir(d)
        .args(["upload", "v1/web.raw"])
        .output()
        .unwrap();
    let parent = common::ok(&o).trim().to_string();
    let before = contents(&moto, "us-east-1");
    assert!(before.1.contains(&parent));
    let parent_blocks = common::incremental::read_snapshot(&quiet, &parent);

    std::fs::write(
        d.join("web.toml"),
        common::moto::web_recipe("1.0.1", &["us-east-1"], ""),
    )
    .unwrap();
    if child_args[0] == "upload" {
        run(&["build", "web.toml", "-o", "v2/web.raw"]);
    }
    let proxy = Proxy::start(
        &moto,
        &d.join("cap.jsonl"),
        &["--delay-answer", "PutSnapshotBlock:4000"],
    );
    let child = spawn_kiln(&proxy, d, child_args);
    let (code, err) = interrupt_after(&proxy, child, "PutSnapshotBlock", 1);
    assert_eq!(code, Some(130), "{err}");
    // It was a child of the parent, and the child alone was written to and deleted.
    let start = proxy.ops("StartSnapshot");
    let body: serde_json::Value = serde_json::from_str(start[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["ParentSnapshotId"], parent.as_str(), "{err}");
    let id = deleted_snapshot(&proxy, &err);
    assert_ne!(id, parent);
    for put in proxy.ops("PutSnapshotBlock") {
        let path = put["path"].as_str().unwrap();
        assert!(
            path.starts_with(&format!("/snapshots/{id}/blocks/")),
            "{path}"
        );
    }
    for op in ["CompleteSnapshot", "CreateTags"] {
        assert!(proxy.ops(op).is_empty(), "{op}: {err}");
    }
    nothing_left(&moto, "us-east-1", &before);
    // The parent: still completed, the same blocks, still version 1.0.0 byte for byte.
    assert_eq!(
        common::moto::snapshot_state(&moto, &parent).as_deref(),
        Some("completed")
    );
    assert!(common::incremental::read_snapshot(&quiet, &parent) == parent_blocks);
    let o = quiet
        .kiln()
        .current_dir(d)
        .args(["verify", &parent, "v1/web.raw"])
        .output()
        .unwrap();
    common::ok(&o);
    if child_args[0] == "build" {
        assert!(!d.join("v2/web.manifest.json").exists(), "{err}");
    }
}

#[test]
fn ctrl_c_during_the_blocks_of_a_child_upload_deletes_the_child_alone() {
    ctrl_c_during_a_childs_blocks(&["upload", "--parent", "auto", "v2/web.raw"]);
}

#[test]
fn ctrl_c_during_the_blocks_of_a_streamed_child_build_deletes_the_child_alone() {
    ctrl_c_during_a_childs_blocks(&[
        "build",
        "web.toml",
        "--upload",
        "--parent",
        "auto",
        "-o",
        "v2/web.raw",
    ]);
}
