//! `kiln upload`, `kiln verify` and `kiln build --upload` against moto, asserting on the requests
//! themselves as the recording proxy saw them (moto checks neither checksums nor counts).

mod common;

use common::ok;

use common::moto::{
    b64, block_map, make_image, nonzero_blocks, nth_deleted_snapshot, one_deleted_snapshot,
    snapshot_state, Moto, Proxy,
};
use common::sha256_file;
use serde_json::Value;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

#[test]
fn upload_sends_only_nonzero_blocks_with_checksums_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto,
        &dir.path().join("cap.jsonl"),
        &["--rewrite-block-size"],
    );
    let img = dir.path().join("disk.raw");
    // 12 MiB + 64 KiB: the last block is partial. One region crosses a block boundary.
    let size = 12 * MIB + 64 * 1024;
    let data = make_image(
        &img,
        size,
        &[
            (0, 4096),
            (3 * MIB - 100, 300),
            (7 * MIB + 5, 70_000),
            (12 * MIB + 10, 1000),
        ],
        7,
    );
    let out = ok(&proxy
        .kiln()
        .args(["upload", "--json", "--workers", "4"])
        .arg(&img)
        .output()
        .unwrap());
    let j: Value = serde_json::from_str(out.trim()).unwrap();
    let id = j["snapshot_id"].as_str().unwrap().to_string();
    let want = nonzero_blocks(&data);
    assert_eq!(j["region"], "us-east-1");
    assert_eq!(j["volume_size_gib"], 1);
    assert_eq!(j["blocks_sent"], want.len() as u64);

    // StartSnapshot: whole GiB, a ClientToken of this run's own, the kiln tags. A file with no
    // manifest has no known digest yet, and is not hashed before the upload.
    let sha = sha256_file(&img);
    let start = proxy.ops("StartSnapshot");
    assert_eq!(start.len(), 1);
    let body: Value = serde_json::from_str(start[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["VolumeSize"], 1);
    common::moto::assert_run_token(&body["ClientToken"], &sha);
    assert_eq!(body["Timeout"], 60);
    let tags = body["Tags"].as_array().unwrap();
    assert!(tags.iter().any(|t| t["Key"] == "kiln:name"), "{tags:?}");
    assert!(
        !tags
            .iter()
            .any(|t| t["Key"].as_str().unwrap().starts_with("kiln:image-")),
        "{tags:?}"
    );
    // The blocks digest of the blocks sent (the definition's, computed here from the bytes) is
    // tagged once they are all sent, after CompleteSnapshot, before the wait for `completed`.
    let blocks = block_map(&data)["sha256"].clone();
    assert_eq!(j["blocks_sha256"], blocks);
    let tagged = proxy.ops("CreateTags");
    assert_eq!(tagged.len(), 1);
    let p = &tagged[0]["params"];
    assert_eq!(p["ResourceId.1"], id.as_str());
    assert_eq!(p["Tag.1.Key"], "kiln:image-blocks-sha256");
    assert_eq!(p["Tag.1.Value"], blocks);
    assert!(p.get("Tag.2.Key").is_none(), "{p}");

    // Only non-zero blocks, each with the checksum of its body.
    let puts = proxy.ops("PutSnapshotBlock");
    assert_eq!(
        puts.len(),
        want.len(),
        "one PutSnapshotBlock per non-zero block"
    );
    for p in &puts {
        let index: u64 = p["path"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let (_, digest) = want
            .iter()
            .find(|(i, _)| *i == index)
            .expect("a non-zero block");
        assert_eq!(p["headers"]["x-amz-checksum"], b64(digest).as_str());
        assert_eq!(p["headers"]["x-amz-checksum"], p["body_sha256_b64"]);
        assert_eq!(p["headers"]["x-amz-checksum-algorithm"], "SHA256");
        assert_eq!(p["headers"]["x-amz-data-length"], "524288");
        assert_eq!(p["body_len"], 524288);
        // Hashed once: SigV4 does not hash the 512 KiB body again.
        assert_eq!(p["headers"]["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
    }

    // CompleteSnapshot: the count and the LINEAR aggregate, recomputed from the image.
    let complete = proxy.ops("CompleteSnapshot");
    assert_eq!(complete.len(), 1);
    let h = &complete[0]["headers"];
    assert_eq!(
        h["x-amz-changedblockscount"],
        want.len().to_string().as_str()
    );
    let mut agg = Sha256::new();
    for (_, d) in &want {
        agg.update(d);
    }
    assert_eq!(h["x-amz-checksum"], b64(&agg.finalize()).as_str());
    assert_eq!(h["x-amz-checksum-aggregation-method"], "LINEAR");
    assert_eq!(h["x-amz-checksum-algorithm"], "SHA256");

    // Read back: identical.
    let o = proxy
        .kiln()
        .args(["verify", &id])
        .arg(&img)
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(snapshot_state(&moto, &id).as_deref(), Some("completed"));

    // A different image: exit 1, naming the first differing block.
    let other = dir.path().join("other.raw");
    let mut changed = data.clone();
    changed[(5 * MIB + 3) as usize] = 0xaa; // block 10, which the snapshot does not hold
    changed[(7 * MIB + 9) as usize] ^= 0xff; // block 14
    std::fs::write(&other, &changed).unwrap();
    let o = proxy
        .kiln()
        .args(["verify", &id])
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("block 10 "), "{text}");
}

/// A small disk with a file in each filesystem.
fn recipe_text() -> String {
    common::recipe::head("ebs-e2e", "2.0", "64MiB", "34MiB") + ENTRIES
}

const ENTRIES: &str = r#"[[file]]
path = "/etc/hostname"
content = "ebs\n"

[[file]]
path = "/boot/efi/EFI/BOOT/hello.txt"
content = "hello from the ESP\n"
"#;

#[test]
fn build_upload_streams_the_same_disk_as_a_file_build() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, recipe_text()).unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(&moto, &dir.path().join("cap.jsonl"), &[]);

    let streamed = dir.path().join("streamed/disk.raw");
    let out = ok(&proxy
        .kiln()
        .args(["build", "--upload", "--sha256", "--json", "-o"])
        .arg(&streamed)
        .arg(&recipe)
        .output()
        .unwrap());
    assert!(!streamed.exists(), "--upload writes no image file");
    let j: Value = serde_json::from_str(out.trim()).unwrap();
    let id = j["snapshot_id"].as_str().unwrap();

    let file = dir.path().join("file/disk.raw");
    ok(&proxy
        .kiln()
        .args(["build", "--sha256", "-o"])
        .arg(&file)
        .arg(&recipe)
        .output()
        .unwrap());
    let streamed_m: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("streamed/disk.manifest.json")).unwrap(),
    )
    .unwrap();
    let file_m: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("file/disk.manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(streamed_m["image"]["sha256"], file_m["image"]["sha256"]);
    assert_eq!(streamed_m["image"]["sha256"], sha256_file(&file).as_str());
    assert_eq!(streamed_m["snapshot"]["snapshot_id"], id);
    assert_eq!(streamed_m["snapshot"]["region"], "us-east-1");
    // The disk's digests, known only at the end, are tagged after CompleteSnapshot and before
    // the wait for `completed`: the blocks digest, and (asked for with --sha256) the sha256.
    let tags = proxy.ops("CreateTags");
    assert_eq!(tags.len(), 1);
    let p = &tags[0]["params"];
    assert_eq!(p["ResourceId.1"], id);
    assert_eq!(p["Tag.1.Key"], "kiln:image-blocks-sha256");
    assert_eq!(
        p["Tag.1.Value"],
        block_map(&std::fs::read(&file).unwrap())["sha256"]
    );
    assert_eq!(p["Tag.2.Key"], "kiln:image-sha256");
    assert_eq!(p["Tag.2.Value"], sha256_file(&file).as_str());
    let order: Vec<String> = proxy
        .requests()
        .iter()
        .map(|e| e["op"].as_str().unwrap_or("").to_string())
        .filter(|op| ["CompleteSnapshot", "CreateTags", "DescribeSnapshots"].contains(&op.as_str()))
        .collect();
    assert_eq!(order[..2], ["CompleteSnapshot", "CreateTags"]);
    assert!(
        order[2..].iter().all(|op| op == "DescribeSnapshots"),
        "{order:?}"
    );

    let data = std::fs::read(&file).unwrap();
    // The streamed build's block map comes from the blocks it sent, the file build's from the
    // disk it wrote; both are the disk's.
    assert_eq!(streamed_m["image"]["blocks"], block_map(&data));
    assert_eq!(file_m["image"]["blocks"], block_map(&data));
    // Both write the map itself beside the manifest, the same bytes, named by the digest.
    let streamed_map = std::fs::read(dir.path().join("streamed/disk.blocks")).unwrap();
    assert_eq!(
        streamed_map,
        std::fs::read(dir.path().join("file/disk.blocks")).unwrap()
    );
    assert_eq!(
        streamed_m["image"]["blocks"]["sha256"],
        kiln::util::hex(&Sha256::digest(&streamed_map)).as_str()
    );
    assert_eq!(j["blocks_sent"], nonzero_blocks(&data).len() as u64);
    assert_eq!(
        proxy.ops("PutSnapshotBlock").len(),
        nonzero_blocks(&data).len()
    );
    let verified = ok(&proxy
        .kiln()
        .args(["verify", id])
        .arg(&file)
        .output()
        .unwrap());
    // verify names the image by its identity.
    let blocks = file_m["image"]["blocks"]["sha256"].as_str().unwrap();
    assert!(
        verified.contains(&format!(
            "is identical to {} (blocks sha256 {blocks}; tagged so: kiln:image-blocks-sha256, \
             kiln:image-sha256)",
            file.display()
        )),
        "{verified}"
    );
}

#[test]
fn interrupted_upload_deletes_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto,
        &dir.path().join("cap.jsonl"),
        &["--delay-op", "PutSnapshotBlock:300"],
    );
    let img = dir.path().join("disk.raw");
    make_image(&img, 24 * MIB, &[(0, 24 * MIB as usize)], 3);
    let child = proxy
        .kiln()
        .args(["upload", "--workers", "2"])
        .arg(&img)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while proxy.ops("PutSnapshotBlock").len() < 2 {
        assert!(t0.elapsed().as_secs() < 60, "no block was sent");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    let id = err
        .split_whitespace()
        .find(|w| w.starts_with("snap-"))
        .expect("stderr names the snapshot")
        .to_string();
    assert!(err.contains(&format!("deleted snapshot {id}")), "{err}");
    assert_eq!(snapshot_state(&moto, &id), None, "the snapshot is gone");
    assert_eq!(proxy.ops("DeleteSnapshot").len(), 1);
}

#[test]
fn encrypted_upload_writes_every_block_of_the_volume() {
    // Unwritten blocks of an encrypted snapshot read back as garbage, so all 2048 blocks of the
    // 1 GiB volume go out, zeros included. The proxy swallows the blocks (moto would hold 1 GiB).
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto,
        &dir.path().join("cap.jsonl"),
        &["--swallow-op", "PutSnapshotBlock"],
    );
    let img = dir.path().join("disk.raw");
    let data = make_image(&img, 2 * MIB, &[(MIB, 10)], 4);
    let arn = "arn:aws:kms:us-east-1:123456789012:key/kiln-test";
    let out = ok(&proxy
        .kiln()
        .args(["upload", "--json", "--workers", "16", "--kms-key-arn", arn])
        .arg(&img)
        .output()
        .unwrap());
    let j: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(j["blocks_sent"], 2048);
    let start = proxy.ops("StartSnapshot");
    let body: Value = serde_json::from_str(start[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["Encrypted"], true);
    assert_eq!(body["KmsKeyArn"], arn);
    assert_ne!(body["ClientToken"], sha256_file(&img).as_str());

    let mut digests = vec![None; 2048];
    for p in proxy.ops("PutSnapshotBlock") {
        let index: usize = p["path"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(p["headers"]["x-amz-checksum"], p["body_sha256_b64"]);
        digests[index] = Some(p["body_sha256_b64"].as_str().unwrap().to_string());
    }
    let zero = b64(&Sha256::digest(vec![0u8; 512 * 1024]));
    let nonzero = nonzero_blocks(&data);
    assert_eq!(nonzero.len(), 1);
    for (i, d) in digests.iter().enumerate() {
        let d = d
            .as_deref()
            .unwrap_or_else(|| panic!("block {i} was not written"));
        if i as u64 == nonzero[0].0 {
            assert_eq!(d, b64(&nonzero[0].1));
        } else {
            assert_eq!(d, zero, "block {i}");
        }
    }
    let complete = proxy.ops("CompleteSnapshot");
    assert_eq!(complete[0]["headers"]["x-amz-changedblockscount"], "2048");
}

/// A manifest beside the image records its block map: the blocks `kiln upload` sends must be the
/// ones it records, or the snapshot is deleted. An older kiln's manifest, without a block map of
/// this format, has the whole image hashed as it streams instead, against its sha256.
#[test]
fn upload_trusts_the_manifest_only_as_far_as_the_bytes_agree() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, recipe_text()).unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(&moto, &dir.path().join("cap.jsonl"), &[]);
    let img = dir.path().join("disk.raw");
    ok(&proxy
        .kiln()
        .args(["build", "-o"])
        .arg(&img)
        .arg(&recipe)
        .output()
        .unwrap());
    let sha = sha256_file(&img);
    let manifest_path = dir.path().join("disk.manifest.json");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    assert_eq!(
        manifest["image"]["blocks"],
        block_map(&std::fs::read(&img).unwrap())
    );
    // A plain build does not hash the whole disk, and neither does the upload: the snapshot is
    // named by the manifest's blocks digest from the start.
    assert_eq!(manifest["image"].get("sha256"), None);
    let blocks = manifest["image"]["blocks"]["sha256"].as_str().unwrap();
    let out = ok(&proxy.kiln().arg("upload").arg(&img).output().unwrap());
    let start = proxy.ops("StartSnapshot");
    let body: Value = serde_json::from_str(start[0]["body"].as_str().unwrap()).unwrap();
    common::moto::assert_run_token(&body["ClientToken"], &sha);
    let tags = body["Tags"].as_array().unwrap();
    for (k, v) in [
        ("kiln:name", "ebs-e2e"),
        ("kiln:version", "2.0"),
        ("kiln:image-blocks-sha256", blocks),
    ] {
        assert!(
            tags.iter().any(|t| t["Key"] == k && t["Value"] == v),
            "{k}={v} in {tags:?}"
        );
    }
    assert!(!tags.iter().any(|t| t["Key"] == "kiln:image-sha256"));
    assert!(proxy.ops("CreateTags").is_empty());
    // --sha256 asks for the whole-disk hash: computed before the upload, tagged at the start.
    let hashed = ok(&proxy
        .kiln()
        .args(["upload", "--sha256"])
        .arg(&img)
        .output()
        .unwrap());
    let start = proxy.ops("StartSnapshot");
    let body: Value = serde_json::from_str(start[1]["body"].as_str().unwrap()).unwrap();
    let tags = body["Tags"].as_array().unwrap();
    for (k, v) in [
        ("kiln:image-blocks-sha256", blocks),
        ("kiln:image-sha256", sha.as_str()),
    ] {
        assert!(
            tags.iter().any(|t| t["Key"] == k && t["Value"] == v),
            "{k}={v} in {tags:?}"
        );
    }
    // verify holds the snapshot to both tags (and reads the sha256 one only where it is).
    let v = ok(&proxy
        .kiln()
        .args(["verify", hashed.trim()])
        .arg(&img)
        .output()
        .unwrap());
    assert!(
        v.contains("tagged so: kiln:image-blocks-sha256, kiln:image-sha256"),
        "{v}"
    );
    // The same bytes under a tag that names another disk fail it.
    let ec2 = common::moto::Ec2::new(&moto, "us-east-1");
    let wrong = "0".repeat(64);
    ec2.block_on(
        ec2.client
            .create_tags()
            .resources(hashed.trim())
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("kiln:image-sha256")
                    .value(&wrong)
                    .build(),
            )
            .send(),
    )
    .unwrap();
    let o = proxy
        .kiln()
        .args(["verify", hashed.trim()])
        .arg(&img)
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{v}");
    assert!(
        v.contains(&format!(
            "but its tags name another image: kiln:image-sha256 is {wrong}, not the image's {sha}"
        )),
        "{v}"
    );
    assert_eq!(
        snapshot_state(&moto, out.trim()).as_deref(),
        Some("completed")
    );
    ok(&proxy
        .kiln()
        .args(["verify", out.trim()])
        .arg(&img)
        .output()
        .unwrap());

    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let stale = |want: &str, n: usize| {
        let o = proxy.kiln().arg("upload").arg(&img).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{err}");
        let id = nth_deleted_snapshot(&proxy, &moto, &err, n);
        assert!(err.contains(&format!("deleted snapshot {id}")), "{err}");
    };
    // Same size, one byte changed in the root filesystem's data.
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, 60 << 20).unwrap();
    f.write_all_at(&[byte[0] ^ 0xff], 60 << 20).unwrap();
    stale("are not the ones its manifest records", 1);
    // verify sees the byte that differs.
    let o = proxy
        .kiln()
        .args(["verify", out.trim()])
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("differs from"));
    f.write_all_at(&byte, 60 << 20).unwrap();
    // A byte where the disk was all zeros: one block more than the manifest knows.
    let data = std::fs::read(&img).unwrap();
    let zero_block = (0u64..)
        .find(|i| {
            let at = (*i * (512 << 10)) as usize;
            data[at..at + (512 << 10)].iter().all(|&b| b == 0)
        })
        .unwrap();
    f.write_all_at(b"X", zero_block * (512 << 10) + 100)
        .unwrap();
    stale("are not the ones its manifest records", 2);
    // A manifest of an older kiln (which always recorded the sha256), whose block map digested
    // the entries without a header: that map cannot be compared, so the whole image is hashed
    // as it streams, against its sha256.
    manifest["image"]["sha256"] = sha.as_str().into();
    let mut old = manifest.clone();
    old["image"]["blocks"]
        .as_object_mut()
        .unwrap()
        .remove("version")
        .unwrap();
    std::fs::write(&manifest_path, old.to_string()).unwrap();
    stale("but its manifest says", 3);
    // A manifest from before block maps: the same.
    manifest["image"]
        .as_object_mut()
        .unwrap()
        .remove("blocks")
        .unwrap();
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    stale("but its manifest says", 4);
    assert_eq!(
        proxy.ops("CompleteSnapshot").len(),
        2,
        "only the good uploads completed"
    );
}

/// `build --upload` (and `kiln upload` of a file without a manifest) tags the snapshot with the
/// blocks digest before waiting for `completed`; a failed CreateTags fails the upload and
/// deletes the snapshot rather than leaving it unnamed.
#[test]
fn build_upload_never_leaves_an_untagged_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, recipe_text()).unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto,
        &dir.path().join("cap.jsonl"),
        &["--fail-op", "CreateTags"],
    );
    let o = proxy
        .kiln()
        .args(["build", "--upload", "-o"])
        .arg(dir.path().join("disk.raw"))
        .arg(&recipe)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("tagging the snapshot"), "{err}");
    one_deleted_snapshot(&proxy, &moto, &err);
    assert!(!dir.path().join("disk.manifest.json").exists());
    // The order: the blocks, CompleteSnapshot, then the tag (the disk's hash finished while the
    // snapshot was being completed), and no wait for `completed` once tagging failed.
    let ops: Vec<String> = proxy
        .requests()
        .iter()
        .map(|e| e["op"].as_str().unwrap_or("").to_string())
        .filter(|op| op != "PutSnapshotBlock")
        .collect();
    assert_eq!(
        ops,
        [
            "StartSnapshot",
            "CompleteSnapshot",
            "CreateTags",
            "DeleteSnapshot"
        ],
        "{err}"
    );
    // `kiln upload` of a file with no manifest tags the blocks digest at the same moment, and
    // fails the same way.
    let img = dir.path().join("plain.raw");
    make_image(&img, 4 * MIB, &[(0, 4096)], 5);
    let o = proxy.kiln().arg("upload").arg(&img).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("tagging the snapshot"), "{err}");
    let id = nth_deleted_snapshot(&proxy, &moto, &err, 2);
    assert!(err.contains(&format!("deleted snapshot {id}")), "{err}");
    assert_eq!(proxy.ops("CreateTags").len(), 2);
}
