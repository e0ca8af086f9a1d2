//! Upload through a proxy that throttles, answers 5xx and "does not exist", drops connections
//! and delays requests:
//! the upload still completes, reads back identical, and reports its retries.

mod common;

use common::moto::{make_image, nonzero_blocks, Moto, Proxy};
use serde_json::Value;

#[test]
fn upload_survives_faults_and_reports_retries() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto,
        &dir.path().join("cap.jsonl"),
        &["--fault-rate", "0.35", "--seed", "11", "--max-faults", "15"],
    );
    let img = dir.path().join("disk.raw");
    let data = make_image(
        &img,
        20 << 20,
        &[(0, 3 << 20), (8 << 20, 100_000), (15 << 20, 4 << 20)],
        5,
    );
    let o = proxy
        .kiln()
        .args(["upload", "--json", "--workers", "8"])
        .arg(&img)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let j: Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    let id = j["snapshot_id"].as_str().unwrap();

    let faults: Vec<String> = proxy
        .requests()
        .iter()
        .filter_map(|r| r["fault"].as_str().map(str::to_string))
        .collect();
    assert!(faults.len() >= 5, "too few faults injected: {faults:?}");
    for kind in ["throttle", "500", "503", "drop", "delay", "notfound"] {
        assert!(faults.iter().any(|f| f == kind), "no {kind} in {faults:?}");
    }
    // Every fault but a delay costs one retry, and each retry is logged with its cause.
    let retried = faults.iter().filter(|f| *f != "delay").count();
    assert!(err.contains("throttled"), "{err}");
    assert!(err.contains("server error (HTTP 5"), "{err}");
    assert!(err.contains("not found yet"), "{err}");
    assert!(err.contains("connection failed"), "{err}");
    let summary = err
        .lines()
        .find(|l| l.contains("blocks sent"))
        .expect("a summary line");
    // Each injected fault costs at least one retry; a pooled connection that the proxy closed
    // can cost one more, so the count is a lower bound.
    let reported: usize = summary
        .split(" retries")
        .next()
        .and_then(|head| head.rsplit(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no retry count in {summary:?}"));
    assert!(
        reported >= retried,
        "{summary}: {reported} retries for {retried} faults ({faults:?})"
    );
    // The blocks moto accepted are exactly the image's non-zero blocks.
    let accepted: std::collections::BTreeSet<String> = proxy
        .ops("PutSnapshotBlock")
        .iter()
        .filter(|r| r["status"] == 201)
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(accepted.len(), nonzero_blocks(&data).len());
    assert_eq!(j["blocks_sent"], nonzero_blocks(&data).len() as u64);

    let v = common::moto::endpoint_kiln(proxy.port)
        .args(["verify", id])
        .arg(&img)
        .output()
        .unwrap();
    assert!(v.status.success(), "{v:?}");
}

#[test]
fn failed_upload_deletes_its_snapshot_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto,
        &dir.path().join("cap.jsonl"),
        &["--fail-op", "PutSnapshotBlock"],
    );
    let img = dir.path().join("disk.raw");
    make_image(&img, 8 << 20, &[(0, 8 << 20)], 6);
    let o = proxy
        .kiln()
        .args(["upload", "--workers", "4"])
        .arg(&img)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let id = common::moto::one_deleted_snapshot(&proxy, &moto, &err);
    assert!(err.contains("InvalidParameterValue"), "{err}");
    assert!(err.contains(&format!("deleted snapshot {id}")), "{err}");
    assert!(proxy.ops("CompleteSnapshot").is_empty());
}
