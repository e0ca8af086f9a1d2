//! A child whose disk has shrunk its data at the end (same volume size): the parent's non-zero
//! blocks after the child's last non-zero block must be written to the child as zeros, or the
//! child would read them through from its parent. The sink reaches that tail only in
//! `EbsSink::finish` (the gap after the last block written), or, when the image file holds
//! its zeros as data, block by block: both are tested.

mod common;

use common::incremental::{
    block_proxy, fill, holds, puts_to, read_snapshot, upload, version_path, write_sparse, B, MIB,
};
use common::moto::{b64, Moto};
use common::ok;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

#[test]
fn parent_blocks_past_the_childs_last_block_are_written_as_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = block_proxy(&moto, dir.path());
    // 40 MiB and a page. v1: blocks 0, 3, 50, 70 and 80 (the partial last one). v2: block 0
    // alone as it was, block 3 changed, nothing after it.
    let size = 40 * MIB + 4096;
    let mut v1 = vec![0u8; size];
    fill(&mut v1, 0, B, 1);
    fill(&mut v1, 3 * B + 5, 100, 2);
    fill(&mut v1, 50 * B, B, 3);
    fill(&mut v1, 70 * B + B - 10, 10, 4);
    fill(&mut v1, 40 * MIB, 4096, 5);
    let mut v2 = v1.clone();
    fill(&mut v2, 3 * B + 5, 100, 6);
    v2[4 * B..].fill(0);
    let version = |v: &str| version_path(dir.path(), v);
    let (p1, p2, p2_dense) = (version("1"), version("2"), version("2-dense"));
    write_sparse(&p1, &v1);
    // The new version as a sparse file (its tail a hole: no block is written after block 3)
    // and as a file holding every zero as data.
    write_sparse(&p2, &v2);
    std::fs::write(&p2_dense, &v2).unwrap();

    let up = |args: &[&str], img: &Path| upload(&proxy, args, img);
    let pid = up(&[], &p1)["snapshot_id"].as_str().unwrap().to_string();
    let zero = b64(&Sha256::digest(vec![0u8; B]));
    let mut want = BTreeMap::new();
    want.insert(3, b64(&Sha256::digest(&v2[3 * B..4 * B])));
    for i in [50, 70, 80] {
        want.insert(i, zero.clone());
    }
    for img in [&p2, &p2_dense] {
        let child = up(&["--parent", &pid], img);
        let cid = child["snapshot_id"].as_str().unwrap();
        assert_eq!(child["parent"], pid.as_str());
        // Block 3 (changed) and zeros over the parent's 50, 70 and 80; block 0 unchanged.
        assert_eq!(puts_to(&proxy, cid), want, "{}", img.display());
        assert_eq!(child["blocks_unchanged"], 1);
        // Read back through the parent: the new image byte for byte, by the test's own reader
        // and by kiln verify; the old image no longer.
        let snap = read_snapshot(&proxy, cid);
        holds(&snap, &v2).unwrap();
        assert!(holds(&snap, &v1).is_err());
        ok(&proxy
            .kiln()
            .args(["verify", cid])
            .arg(img)
            .output()
            .unwrap());
    }
    // The parent is still the old image.
    holds(&read_snapshot(&proxy, &pid), &v1).unwrap();
}
