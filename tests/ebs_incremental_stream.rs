//! `kiln build RECIPE --upload --parent SNAPSHOT|auto [--parent-blocks FILE]`: the streamed
//! build uploads the next version as a child of the last one's snapshot, sending only the blocks
//! that differ (the parent's map is loaded before the first block); a parent that cannot be one
//! is refused before anything is made. Against moto through the proxy, whose read-through makes
//! a child read as its parent's blocks under its own.
//!
//! The oracle for which blocks differ is the test's own: the same two versions built to raw
//! files (kiln's builds are reproducible, so the streamed disk is the file's, byte for byte) and
//! compared block by block here.

mod common;

use common::incremental::{block_proxy, build, json, puts_to, read_snapshot, write_recipe, B};
use common::moto::{b64, nonzero_blocks, Ec2, Moto, Proxy};
use common::ok;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `kiln build dir/v.toml --upload --json -o dir/out/inc.raw ARGS` through `proxy`.
fn stream(proxy: &Proxy, dir: &Path, v: &str, out: &str, args: &[&str]) -> std::process::Output {
    proxy
        .kiln()
        .arg("build")
        .arg(dir.join(format!("{v}.toml")))
        .args(["--upload", "--json", "--workers", "4", "-o"])
        .arg(dir.join(out).join("inc.raw"))
        .args(args)
        .output()
        .unwrap()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// The blocks a child of `old` must be sent to hold `new`: each block whose bytes differ, with
/// the checksum of its new bytes (zeros where `new` has none).
fn changed(old: &[u8], new: &[u8]) -> BTreeMap<u64, String> {
    let zero = b64(&Sha256::digest(vec![0u8; B]));
    let old: BTreeMap<u64, [u8; 32]> = nonzero_blocks(old).into_iter().collect();
    let new: BTreeMap<u64, [u8; 32]> = nonzero_blocks(new).into_iter().collect();
    old.keys()
        .chain(new.keys())
        .filter(|i| old.get(i) != new.get(i))
        .map(|i| (*i, new.get(i).map(|d| b64(d)).unwrap_or(zero.clone())))
        .collect()
}

#[test]
fn a_streamed_build_with_parent_auto_sends_only_the_changed_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    let proxy = block_proxy(&moto, d);
    // The two versions as files: what the streamed builds must upload.
    let f1 = build(d, "1.0.0", "welcome");
    let f2 = build(d, "1.0.1", "welcome to 1.0.1");
    let (v1, v2) = (read(&f1), read(&f2));
    let want = changed(&v1, &v2);
    assert!(!want.is_empty() && want.len() <= 8, "{want:?}");

    // The first version: no kiln snapshot of `inc` yet, so `auto` uploads in full.
    let o = stream(&proxy, d, "1.0.0", "s1", &["--parent", "auto"]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let first = json(&ok(&o));
    assert_eq!(first["parent"], Value::Null);
    assert!(err.contains("no completed kiln snapshot of inc"), "{err}");
    let pid = first["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(
        puts_to(&proxy, &pid).len(),
        nonzero_blocks(&v1).len(),
        "a full upload sends every non-zero block"
    );

    // The next: a child of the first, found by its tags; its map read back from the parent.
    let gets = proxy.ops("GetSnapshotBlock").len();
    let o = stream(&proxy, d, "1.0.1", "s2", &["--parent", "auto"]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let child = json(&ok(&o));
    assert_eq!(child["parent"], pid.as_str());
    assert!(
        err.contains(&format!(
            "uploading as a child of {pid} (its block map: read from"
        )),
        "{err}"
    );
    assert!(
        proxy.ops("GetSnapshotBlock").len() > gets,
        "the parent was read back"
    );
    let cid = child["snapshot_id"].as_str().unwrap().to_string();
    let start = proxy.ops("StartSnapshot");
    let body: Value =
        serde_json::from_str(start.last().unwrap()["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["ParentSnapshotId"], pid.as_str());
    // Exactly the blocks whose bytes differ, with their new bytes; the rest counted unchanged.
    assert_eq!(puts_to(&proxy, &cid), want);
    assert_eq!(child["blocks_sent"], want.len());
    let unchanged = nonzero_blocks(&v2)
        .iter()
        .filter(|(i, _)| !want.contains_key(i))
        .count();
    assert_eq!(child["blocks_unchanged"], unchanged);
    eprintln!(
        "one /etc file changed: {} of {} blocks sent",
        want.len(),
        nonzero_blocks(&v2).len()
    );
    let complete = proxy.ops("CompleteSnapshot");
    let c = complete
        .iter()
        .find(|c| c["path"].as_str().unwrap().ends_with(&cid))
        .unwrap();
    assert_eq!(
        c["headers"]["x-amz-changedblockscount"],
        want.len().to_string().as_str()
    );

    // The child reads back as the new version (kiln verify, and the test's own reader), not as
    // the old; the manifest and block map it records are the whole new disk's, the same bytes
    // as the file build's: the next version's --parent-blocks.
    let verify = |snap: &str, img: &Path| proxy.kiln().arg("verify").arg(snap).arg(img).output();
    ok(&verify(&cid, &f2).unwrap());
    assert_eq!(verify(&cid, &f1).unwrap().status.code(), Some(1));
    common::incremental::holds(&read_snapshot(&proxy, &cid), &v2).unwrap();
    let s2 = d.join("s2");
    assert_eq!(
        read(&s2.join("inc.blocks")),
        read(&f2.with_extension("blocks"))
    );
    let m: Value = serde_json::from_slice(&read(&s2.join("inc.manifest.json"))).unwrap();
    let mf: Value = serde_json::from_slice(&read(&d.join("1.0.1/inc.manifest.json"))).unwrap();
    assert_eq!(m["image"]["blocks"], mf["image"]["blocks"]);
    assert_eq!(m["snapshot"]["snapshot_id"], cid.as_str());

    // With the parent's map kept (the first streamed build's .blocks), nothing is read from
    // the parent, and the same blocks are sent.
    let gets = proxy.ops("GetSnapshotBlock").len();
    let map1 = d.join("s1/inc.blocks");
    let o = stream(
        &proxy,
        d,
        "1.0.1",
        "s3",
        &["--parent", &pid, "--parent-blocks", map1.to_str().unwrap()],
    );
    let again = json(&ok(&o));
    let aid = again["snapshot_id"].as_str().unwrap();
    assert_eq!(again["parent"], pid.as_str());
    assert_eq!(proxy.ops("GetSnapshotBlock").len(), gets);
    assert_eq!(puts_to(&proxy, aid), want);
    ok(&verify(aid, &f2).unwrap());
}

/// Files a refused build must not have written.
fn nothing_written(out: &Path) {
    let left: Vec<PathBuf> = std::fs::read_dir(out)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_streamed_build_refuses_a_bad_parent_before_anything_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    let proxy = block_proxy(&moto, d);
    let ec2 = Ec2::new(&moto, "us-east-1");
    write_recipe(d, "1.0.0", "welcome");
    write_recipe(d, "1.0.1", "welcome to 1.0.1");
    let pid = json(&ok(&stream(&proxy, d, "1.0.0", "s1", &[])))["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Not kiln's: a snapshot EC2 made of a volume; and one of another image ("other", the
    // stem of a file uploaded without a manifest).
    let foreign = ec2.foreign_snapshot("us-east-1");
    let other_img = d.join("other.raw");
    common::moto::make_image(&other_img, 8 << 20, &[(0, B)], 3);
    let other = ok(&proxy.kiln().arg("upload").arg(&other_img).output().unwrap());
    let other = other.trim().lines().last().unwrap().to_string();

    let snapshots = ec2.snapshot_ids();
    let (starts, puts) = (
        proxy.ops("StartSnapshot").len(),
        proxy.ops("PutSnapshotBlock").len(),
    );
    let refused = |args: &[&str], why: &str| {
        let o = stream(&proxy, d, "1.0.1", "s2", args);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success(), "{err}");
        assert!(err.contains(why), "{why:?} not in {err}");
        assert_eq!(proxy.ops("StartSnapshot").len(), starts, "{err}");
        assert_eq!(proxy.ops("PutSnapshotBlock").len(), puts, "{err}");
        nothing_written(&d.join("s2"));
        assert_eq!(ec2.snapshot_ids(), snapshots);
    };
    refused(
        &["--parent", "snap-0123456789abcdef0"],
        "parent snapshot snap-0123456789abcdef0 cannot be used: it does not exist",
    );
    refused(&["--parent", &foreign], "it is not kiln's");
    refused(
        &["--parent", &other],
        "it holds the image \"other\", not \"inc\"",
    );
    refused(
        &["--parent", &pid, "--encrypted"],
        "an encrypted upload cannot have a parent",
    );
    // A map of another disk (the other image's, made by the reference script), and a file
    // that is no block map.
    let map = d.join("other.blocks");
    ok(&std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/blocks-digest"))
        .arg("--map")
        .arg(&map)
        .arg(&other_img)
        .output()
        .unwrap());
    refused(
        &["--parent", &pid, "--parent-blocks", map.to_str().unwrap()],
        "describes a 8388608-byte disk",
    );
    std::fs::write(&map, b"not a block map").unwrap();
    refused(
        &["--parent", &pid, "--parent-blocks", map.to_str().unwrap()],
        "other.blocks: not a kiln block map",
    );
    // Flags alone: refused before the recipe is even built.
    refused(
        &["--parent-blocks", "x.blocks"],
        "--parent-blocks describes a parent",
    );
    let o = proxy
        .kiln()
        .arg("build")
        .arg(d.join("1.0.1.toml"))
        .args(["--parent", "auto", "-o"])
        .arg(d.join("s2/inc.raw"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("give --upload"), "{err}");
    nothing_written(&d.join("s2"));
    // The parent is still whole: the refusals only read it.
    ok(&proxy
        .kiln()
        .args(["verify", &pid])
        .arg(build(d, "1.0.0", "welcome"))
        .output()
        .unwrap());
}
