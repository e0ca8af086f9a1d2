//! Incremental uploads (`kiln upload --parent`): the child snapshot is sent only the blocks that
//! differ from its parent's, reads back as the new image byte for byte (through the proxy, which
//! makes moto's snapshots read through to their parents), and a parent that cannot be one is
//! refused with the reason, or, under `auto`, gives a full upload.

mod common;

use common::incremental::{
    block_proxy, build, fill, json, puts_to, upload, version_path, write_sparse, B, MIB,
};
use common::moto::{b64, nonzero_blocks, one_deleted_snapshot, snapshot_state, Moto, Proxy};
use common::ok;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

fn blocks_script(image: &Path, map: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/blocks-digest");
    let o = std::process::Command::new("python3")
        .arg(script)
        .arg("--map")
        .arg(map)
        .arg(image)
        .output()
        .unwrap();
    ok(&o);
}

#[test]
fn a_child_is_sent_exactly_the_changed_blocks_and_reads_back_as_the_new_image() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = block_proxy(&moto, dir.path());
    // 40 MiB and a page: blocks 0-1, 5, 10, 20 and 80 (the partial last one). v2 changes block 5, zeroes block 10 and
    // one page of block 1 (still non-zero), writes block 30, and leaves 0 and 20 alone.
    let size = 40 * MIB + 4096;
    let mut v1 = vec![0u8; size];
    fill(&mut v1, 0, 2 * B, 1);
    fill(&mut v1, 5 * B + 100, 1000, 2);
    fill(&mut v1, 10 * B, B, 3);
    fill(&mut v1, 20 * B + 7, 50, 4);
    fill(&mut v1, 40 * MIB, 4096, 5);
    let mut v2 = v1.clone();
    fill(&mut v2, 5 * B + 200, 10, 6);
    v2[10 * B..11 * B].fill(0);
    v2[B + 4096..B + 8192].fill(0);
    fill(&mut v2, 30 * B + 9, 9, 7);
    // Without a manifest an image is named by its file's stem: "disk" in each version's directory.
    let version = |v: &str| version_path(dir.path(), v);
    let (p1, p2) = (version("1"), version("2"));
    write_sparse(&p1, &v1);
    write_sparse(&p2, &v2);

    let up = |args: &[&str], img: &Path| upload(&proxy, args, img);
    let parent = up(&[], &p1);
    let pid = parent["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(parent["parent"], Value::Null);

    let child = up(&["--parent", &pid], &p2);
    let cid = child["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(child["parent"], pid.as_str());

    // StartSnapshot names the parent, unencrypted.
    let start = proxy.ops("StartSnapshot");
    let body: Value =
        serde_json::from_str(start.last().unwrap()["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["ParentSnapshotId"], pid.as_str());
    assert_eq!(body.get("Encrypted"), None);

    // Exactly the blocks whose bytes differ from the parent's: 1 (a page zeroed), 5 (changed),
    // 10 (zero now: written as zeros) and 30 (new); none of 0, 20 and 80 (the partial last one).
    let zero = b64(&Sha256::digest(vec![0u8; B]));
    let old: BTreeMap<u64, [u8; 32]> = nonzero_blocks(&v1).into_iter().collect();
    let new: BTreeMap<u64, [u8; 32]> = nonzero_blocks(&v2).into_iter().collect();
    let mut want = BTreeMap::new();
    for i in old.keys().chain(new.keys()) {
        if old.get(i) != new.get(i) {
            want.insert(*i, new.get(i).map(|d| b64(d)).unwrap_or(zero.clone()));
        }
    }
    assert_eq!(want.keys().copied().collect::<Vec<_>>(), [1, 5, 10, 30]);
    assert_eq!(puts_to(&proxy, &cid), want);
    assert_eq!(child["blocks_sent"], 4);
    assert_eq!(child["blocks_unchanged"], 3, "blocks 0, 20 and 80");
    assert_eq!(child["bytes_sent"], 4 * B as u64);

    // CompleteSnapshot: the count and the LINEAR checksum of the blocks written to the child.
    let complete = proxy.ops("CompleteSnapshot");
    let c = complete
        .iter()
        .find(|c| c["path"].as_str().unwrap().ends_with(&cid))
        .unwrap();
    assert_eq!(c["headers"]["x-amz-changedblockscount"], "4");
    let mut agg = Sha256::new();
    for i in want.keys() {
        agg.update(
            new.get(i)
                .copied()
                .unwrap_or_else(|| Sha256::digest(vec![0u8; B]).into()),
        );
    }
    assert_eq!(
        c["headers"]["x-amz-checksum"],
        b64(&agg.finalize()).as_str()
    );

    // Read back through the parent: the new image, byte for byte; the parent still the old one.
    ok(&proxy
        .kiln()
        .args(["verify", &cid])
        .arg(&p2)
        .output()
        .unwrap());
    ok(&proxy
        .kiln()
        .args(["verify", &pid])
        .arg(&p1)
        .output()
        .unwrap());
    let o = proxy
        .kiln()
        .args(["verify", &cid])
        .arg(&p1)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "the child is not the old image");

    // With the parent's block map kept (`--parent-blocks`), nothing is read from the parent,
    // and the same blocks are sent.
    let map1 = dir.path().join("v1.blocks");
    blocks_script(&p1, &map1);
    let gets = proxy.ops("GetSnapshotBlock").len();
    let again = up(
        &["--parent", &pid, "--parent-blocks", map1.to_str().unwrap()],
        &p2,
    );
    let aid = again["snapshot_id"].as_str().unwrap();
    assert_eq!(proxy.ops("GetSnapshotBlock").len(), gets);
    assert_eq!(puts_to(&proxy, aid), want);
    ok(&proxy
        .kiln()
        .args(["verify", aid])
        .arg(&p2)
        .output()
        .unwrap());

    // A grandchild: a child of the child, which reads through two generations.
    let mut v3 = v2.clone();
    fill(&mut v3, 0, 10, 8);
    let p3 = version("3");
    write_sparse(&p3, &v3);
    let g = up(&["--parent", &cid], &p3);
    let gid = g["snapshot_id"].as_str().unwrap();
    assert_eq!(
        puts_to(&proxy, gid).keys().copied().collect::<Vec<_>>(),
        [0]
    );
    ok(&proxy
        .kiln()
        .args(["verify", gid])
        .arg(&p3)
        .output()
        .unwrap());

    // A map of another disk is refused: v2's map names block 30, which the parent lacks.
    let map2 = dir.path().join("v2.blocks");
    blocks_script(&p2, &map2);
    let o = proxy
        .kiln()
        .args(["upload", "--parent", &pid, "--parent-blocks"])
        .arg(&map2)
        .arg(&p2)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("names block 30, which the snapshot does not hold"),
        "{err}"
    );
}

#[test]
fn a_parent_that_cannot_be_one_is_refused_or_auto_uploads_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = block_proxy(&moto, dir.path());
    let mut v1 = vec![0u8; 8 * MIB];
    fill(&mut v1, 0, 3 * B, 1);
    let p1 = dir.path().join("v1.raw");
    write_sparse(&p1, &v1);
    let run = |args: &[&str], img: &Path| {
        proxy
            .kiln()
            .args(["upload", "--json"])
            .args(args)
            .arg(img)
            .output()
            .unwrap()
    };
    let refused = |args: &[&str], img: &Path, why: &str| {
        let starts = proxy.ops("StartSnapshot").len();
        let o = run(args, img);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success(), "{err}");
        assert!(err.contains(why), "{why:?} not in {err}");
        assert_eq!(
            proxy.ops("StartSnapshot").len(),
            starts,
            "refused before StartSnapshot"
        );
    };
    let pid = json(&ok(&run(&[], &p1)))["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();

    refused(
        &["--parent", "snap-0123456789abcdef0"],
        &p1,
        "parent snapshot snap-0123456789abcdef0 cannot be used: it does not exist",
    );
    // Another size: a 2 GiB volume.
    std::fs::create_dir_all(dir.path().join("big")).unwrap();
    let big = dir.path().join("big/v1.raw");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&big).unwrap();
        f.set_len((1 << 30) + 4096).unwrap();
        f.write_all_at(b"data", 0).unwrap();
    }
    refused(
        &["--parent", &pid],
        &big,
        "it holds a 1 GiB volume, this disk needs 2 GiB",
    );
    // Not this image's: the kiln:name tag names another.
    let other = dir.path().join("other.raw");
    std::fs::copy(&p1, &other).unwrap();
    refused(
        &["--parent", &pid],
        &other,
        "it holds the image \"v1\", not \"other\"",
    );
    // Encrypted uploads have no parent.
    refused(
        &["--parent", &pid, "--encrypted"],
        &p1,
        "an encrypted upload cannot have a parent",
    );
    // Not kiln's: a snapshot without the kiln tags (made by EC2 itself).
    let ec2 = common::moto::Ec2::new(&moto, "us-east-1");
    let foreign = ec2.foreign_snapshot("us-east-1");
    refused(&["--parent", &foreign], &p1, "it is not kiln's");
    // --parent-blocks alone names no parent.
    refused(
        &["--parent-blocks", "x.blocks"],
        &p1,
        "--parent-blocks describes a parent",
    );

    // auto without a manifest: the architecture is unknown, so a full upload.
    let o = ok(&run(&["--parent", "auto"], &p1));
    assert_eq!(json(&o)["parent"], Value::Null);

    // A deleted parent: refused when named; `auto` finds no other and uploads in full.
    ec2.block_on(ec2.client.delete_snapshot().snapshot_id(&pid).send())
        .unwrap();
    refused(&["--parent", &pid], &p1, "it does not exist");
    assert_eq!(snapshot_state(&moto, &pid), None);
}

#[test]
fn auto_finds_the_last_version_and_a_one_file_change_sends_a_few_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = block_proxy(&moto, dir.path());
    let v1 = build(dir.path(), "1.0.0", "welcome");
    let v2 = build(dir.path(), "1.0.1", "welcome to 1.0.1");
    let up = |args: &[&str], img: &Path| -> Value {
        json(&ok(&proxy
            .kiln()
            .args(["upload", "--json", "--parent", "auto"])
            .args(args)
            .arg(img)
            .output()
            .unwrap()))
    };
    // The first version: no kiln snapshot of it yet, a full upload, tagged with its arch.
    let first = up(&[], &v1);
    assert_eq!(first["parent"], Value::Null);
    let pid = first["snapshot_id"].as_str().unwrap();
    let start = proxy.ops("StartSnapshot");
    let body: Value = serde_json::from_str(start[0]["body"].as_str().unwrap()).unwrap();
    assert!(body["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["Key"] == "kiln:arch" && t["Value"] == "x86_64"));

    // The next: a child of the first, its map from the first build's .blocks.
    let blocks = v1.with_extension("blocks");
    let child = up(&["--parent-blocks", blocks.to_str().unwrap()], &v2);
    assert_eq!(child["parent"], pid);
    let sent = child["blocks_sent"].as_u64().unwrap();
    let full = first["blocks_sent"].as_u64().unwrap();
    eprintln!("one /etc file changed: {sent} of {full} blocks sent");
    assert!(sent <= 8, "a one-file change in /etc sent {sent} blocks");
    let cid = child["snapshot_id"].as_str().unwrap();
    ok(&proxy
        .kiln()
        .args(["verify", cid])
        .arg(&v2)
        .output()
        .unwrap());

    // A failed child upload deletes the child alone; the parent stays completed.
    let failing = Proxy::start(
        &moto,
        &dir.path().join("cap2.jsonl"),
        &["--rewrite-block-size", "--fail-op", "PutSnapshotBlock"],
    );
    let o = failing
        .kiln()
        .args(["upload", "--parent", pid])
        .arg(&v2)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    let deleted = one_deleted_snapshot(&failing, &moto, &err);
    assert_ne!(deleted, pid);
    assert_eq!(snapshot_state(&moto, pid).as_deref(), Some("completed"));
}
