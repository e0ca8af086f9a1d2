//! Retries against moto through the proxy, which injects what AWS answers and moto never does:
//! every error code the SDK's classifier (or the EBS documentation) calls retryable, the "does
//! not exist" race for longer than the attempt count, a block write that landed but whose
//! answer was lost (then CONFLICTING_BLOCK_UPDATE while it is applied), deletions whose answers
//! were lost, and a slow uplink.

mod common;

use common::moto::{make_image, nonzero_blocks, snapshot_state, Ec2, Moto, Proxy};
use common::ok;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The codes the hardening issue lists (RequestThrottledException with each of its reasons),
/// and the ones the SDK's lists add.
const CODES: &[&str] = &[
    "RequestThrottledException/ACCOUNT_THROTTLED",
    "RequestThrottledException/DEPENDENCY_REQUEST_THROTTLED",
    "RequestThrottledException/RESOURCE_LEVEL_THROTTLE",
    "ConcurrentLimitExceededException",
    "RequestTimeout",
    "RequestTimeoutException",
    "EC2ThrottledException",
    "PriorRequestNotComplete",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "ValidationException/WRITE_REQUEST_TIMEOUT",
    "ThrottlingException",
    "RequestLimitExceeded",
];

/// Codes that EC2 answers (as XML, where EBS answers JSON with x-amzn-errortype).
const EC2_CODES: &[&str] = &[
    "EC2ThrottledException",
    "PriorRequestNotComplete",
    "RequestLimitExceeded",
    "RequestTimeout",
];

/// Each code once on PutSnapshotBlock (EBS's JSON errors), and EC2's own once each on
/// DescribeSnapshots (XML errors, in the wait for `completed`): the upload completes, reads
/// back identical, and logs a retry for every one.
#[test]
fn each_retryable_code_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto,
        &dir.path().join("cap.jsonl"),
        &[
            "--inject",
            &format!("PutSnapshotBlock={}", CODES.join(",")),
            "--inject",
            &format!("DescribeSnapshots={}", EC2_CODES.join(",")),
        ],
    );
    let img = dir.path().join("disk.raw");
    let data = make_image(&img, 8 << 20, &[(0, 3 << 20), (6 << 20, 1 << 20)], 2);
    let o = proxy
        .kiln()
        .args(["upload", "--json", "--workers", "4"])
        .arg(&img)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let j: Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    let id = j["snapshot_id"].as_str().unwrap();
    for (op, codes) in [
        ("PutSnapshotBlock", CODES),
        ("DescribeSnapshots", EC2_CODES),
    ] {
        let injected: Vec<String> = proxy
            .ops(op)
            .iter()
            .filter_map(|r| {
                r["fault"]
                    .as_str()?
                    .strip_prefix("inject:")
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(injected, codes, "{op}");
        for code in codes {
            let (code, reason) = code.split_once('/').unwrap_or((code, ""));
            let retried = err.lines().any(|l| {
                l.contains(op) && l.contains("; retry ") && l.contains(code) && l.contains(reason)
            });
            assert!(retried, "{op}: {code} {reason} was not retried:\n{err}");
        }
    }
    let blocks = nonzero_blocks(&data).len();
    assert_eq!(j["blocks_sent"], blocks as u64);
    ok(&proxy
        .kiln()
        .args(["verify", id])
        .arg(&img)
        .output()
        .unwrap());
}

/// "The snapshot does not exist" for the first 14 attempts at the only block: more attempts
/// than any other failure gets, but well inside the race's two-minute window.
#[test]
fn the_not_found_race_outlasts_the_attempt_count() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto,
        &dir.path().join("cap.jsonl"),
        &["--inject", "PutSnapshotBlock=ResourceNotFoundException*14"],
    );
    let img = dir.path().join("disk.raw");
    make_image(&img, 4 << 20, &[(100, 5000)], 4);
    let t0 = Instant::now();
    let o = proxy.kiln().arg("upload").arg(&img).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let puts = proxy.ops("PutSnapshotBlock");
    assert_eq!(puts.len(), 15, "{err}");
    assert_eq!(puts[14]["status"], 201);
    assert_eq!(err.matches("not found yet").count(), 14, "{err}");
    // Attempts in the race are at most 2 s apart: 14 of them take well under the window.
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
}

/// The second block reaches moto but its answer is lost; the retries are told
/// CONFLICTING_BLOCK_UPDATE twice while the lost write "is applied", then succeed. The upload
/// completes with the right count and checksum, and reads back identical.
#[test]
fn a_block_whose_answer_was_lost_is_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto,
        &dir.path().join("cap.jsonl"),
        &["--lost-answer", "PutSnapshotBlock:2", "--conflicts", "2"],
    );
    let img = dir.path().join("disk.raw");
    let data = make_image(&img, 4 << 20, &[(0, 2 << 20)], 8);
    let o = proxy
        .kiln()
        .args(["upload", "--json", "--workers", "1"])
        .arg(&img)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let faults: Vec<String> = proxy
        .ops("PutSnapshotBlock")
        .iter()
        .filter_map(|r| r["fault"].as_str().map(str::to_string))
        .collect();
    assert_eq!(faults, ["lost-answer", "conflict", "conflict"], "{err}");
    assert!(err.contains("conflicting write in progress"), "{err}");
    let want = nonzero_blocks(&data);
    let complete = proxy.ops("CompleteSnapshot");
    assert_eq!(
        complete[0]["headers"]["x-amz-changedblockscount"],
        want.len().to_string().as_str()
    );
    let j: Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    let id = j["snapshot_id"].as_str().unwrap();
    ok(&proxy
        .kiln()
        .args(["verify", id])
        .arg(&img)
        .output()
        .unwrap());
}

/// CONFLICTING_BLOCK_UPDATE on a first attempt is someone else's write: not retried.
#[test]
fn a_conflict_without_an_earlier_attempt_fails_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto,
        &dir.path().join("cap.jsonl"),
        &[
            "--inject",
            "PutSnapshotBlock=ValidationException/CONFLICTING_BLOCK_UPDATE",
        ],
    );
    let img = dir.path().join("disk.raw");
    make_image(&img, 4 << 20, &[(0, 4096)], 8);
    let o = proxy.kiln().arg("upload").arg(&img).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("CONFLICTING_BLOCK_UPDATE"), "{err}");
    common::moto::one_deleted_snapshot(&proxy, &moto, &err);
}

/// A deletion that happened but whose answer was lost: the retry hears "does not exist", which
/// means done. For the snapshot of a failed upload, and for `kiln images deregister`.
#[test]
fn deletions_whose_answers_were_lost_are_done() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto,
        &d.join("cap.jsonl"),
        &[
            "--fail-op",
            "CompleteSnapshot",
            "--lost-answer",
            "DeleteSnapshot:1",
            "--lost-answer",
            "DeregisterImage:1",
        ],
    );
    let img = d.join("disk.raw");
    make_image(&img, 4 << 20, &[(0, 4096)], 8);
    let o = proxy.kiln().arg("upload").arg(&img).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let deletes = proxy.ops("DeleteSnapshot");
    assert_eq!(deletes.len(), 2, "{err}");
    assert_eq!(deletes[0]["fault"], "lost-answer");
    let id = deletes[0]["params"]["SnapshotId"].as_str().unwrap();
    assert!(err.contains(&format!("deleted snapshot {id}")), "{err}");
    assert!(!err.contains("by hand"), "{err}");
    assert_eq!(snapshot_state(&moto, id), None);

    // An image published, then deregistered by hand: the lost answer is retried and done.
    std::fs::write(
        d.join("web.toml"),
        common::moto::web_recipe("1.0.0", &["us-east-1"], ""),
    )
    .unwrap();
    let ok_proxy = Proxy::start(&moto, &d.join("cap2.jsonl"), &[]);
    let out = ok(&ok_proxy.publish(d, &["--json"]));
    let j: Value = serde_json::from_str(out.trim()).unwrap();
    let image = j["images"][0]["image_id"].as_str().unwrap();
    let o = proxy
        .kiln()
        .args(["images", "deregister", image])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(proxy.ops("DeregisterImage").len(), 2);
    assert!(Ec2::new(&moto, "us-east-1").kiln_images().is_empty());
}

/// An uplink of 256 KiB/s: one 512 KiB block alone needs 2 s, twice the 1 s --attempt-timeout,
/// and 2 in flight need 4 s. A fixed limit would abandon every attempt; kiln doubles it for a
/// block that timed out and then follows the rate measured, so the upload completes.
#[test]
fn a_slow_uplink_stretches_the_attempt_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto,
        &dir.path().join("cap.jsonl"),
        &["--uplink-bps", "262144"],
    );
    let img = dir.path().join("disk.raw");
    let data = make_image(&img, 4 << 20, &[(0, 1 << 20)], 5);
    let o = proxy
        .kiln()
        .args([
            "upload",
            "--json",
            "--workers",
            "2",
            "--attempt-timeout",
            "1",
        ])
        .arg(&img)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // The first attempts were cut off at the floor, before anything was measured.
    assert!(err.contains("no answer within 1.0s"), "{err}");
    let j: Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!(j["blocks_sent"], nonzero_blocks(&data).len() as u64);
    ok(&proxy
        .kiln()
        .args(["verify", j["snapshot_id"].as_str().unwrap()])
        .arg(&img)
        .output()
        .unwrap());
}
