//! The image's digests. The blocks digest (the image's identity) against its definition as
//! `scripts/blocks-digest` computes it, on files of every shape and on built images; the whole-file
//! sha256 (`kiln hash`, `kiln build --sha256`) against `sha256sum`; the manifest's fields; and a
//! 1 TiB disk that costs its data, not its size, checked by e2fsck, sgdisk and fsck.fat.

mod common;

use common::{run, run_ok};
use serde_json::Value;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const B: u64 = 512 * 1024;

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/blocks-digest")
}

/// The first field of each line of a `sha256sum`-style listing.
fn digests(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

fn by_script(files: &[PathBuf]) -> Vec<String> {
    digests(&run_ok(Command::new("python3").arg(script()).args(files)))
}

fn by_kiln(files: &[PathBuf], blocks: bool) -> Vec<String> {
    let mut c = kiln();
    c.arg("hash");
    if blocks {
        c.arg("--blocks");
    }
    digests(&run_ok(c.args(files)))
}

fn sha256sum(files: &[PathBuf]) -> Vec<String> {
    digests(&run_ok(Command::new("sha256sum").args(files)))
}

/// Deterministic bytes with no zero among them.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as u8) | 1
        })
        .collect()
}

/// A file of `len` bytes (holes where nothing is written) with `writes` in it.
fn file(dir: &Path, name: &str, len: u64, writes: &[(u64, Vec<u8>)]) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(len).unwrap();
    for (at, data) in writes {
        f.write_all_at(data, *at).unwrap();
    }
    p
}

#[test]
fn blocks_digest_and_sha256_agree_with_the_script_and_sha256sum_on_every_shape() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let files = vec![
        file(d, "empty", 0, &[]),
        file(d, "holes-only", 3 * B, &[]),
        // Data in two places, one straddling a block boundary.
        file(
            d,
            "sparse",
            8 * B,
            &[(B - 100, noise(300, 1)), (5 * B + 4096, noise(10, 2))],
        ),
        // Every byte written, none zero, and not a whole number of blocks.
        file(
            d,
            "dense",
            2 * B + 100,
            &[(0, noise(2 * B as usize + 100, 3))],
        ),
        // Data in the last block, which is partial: hashed zero-padded.
        file(
            d,
            "last-block",
            4 * B + 4096 + 17,
            &[(4 * B + 4096 + 10, noise(7, 4))],
        ),
        // Written zeros: a data region that holds no data; only block 1 counts.
        file(
            d,
            "written-zeros",
            4 * B,
            &[(0, vec![0; 2 * B as usize]), (B + 5, noise(1, 5))],
        ),
        // A size that is not even a whole number of sectors.
        file(d, "ragged", 5 * B + 1234, &[(1000, noise(10, 6))]),
    ];
    let want = by_script(&files);
    assert_eq!(by_kiln(&files, true), want);
    assert_eq!(by_kiln(&files, false), sha256sum(&files));
    // The script's digests are all different: no two of these disks are the same.
    let mut unique = want.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), want.len());

    // The same bytes on a larger disk: another disk, another identity. Extending a file with a
    // hole changes no byte that was there.
    let grown = d.join("sparse-grown");
    std::fs::copy(&files[2], &grown).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&grown)
        .unwrap()
        .set_len(9 * B)
        .unwrap();
    let both = [files[2].clone(), grown];
    let got = by_kiln(&both, true);
    assert_eq!(got, by_script(&both));
    assert_ne!(got[0], got[1]);

    // The script's block map has the layout the module documentation gives.
    let map = d.join("sparse.blocks");
    run_ok(
        Command::new("python3")
            .arg(script())
            .arg("--map")
            .arg(&map)
            .arg(&files[2]),
    );
    let m = std::fs::read(&map).unwrap();
    assert_eq!(&m[..8], b"KILNBMAP");
    assert_eq!(m[8..12], 1u32.to_be_bytes());
    assert_eq!(m[12..16], (B as u32).to_be_bytes());
    assert_eq!(m[16..24], (8 * B).to_be_bytes());
    let indices: Vec<u64> = m[24..]
        .chunks(40)
        .map(|e| u64::from_be_bytes(e[..8].try_into().unwrap()))
        .collect();
    assert_eq!(indices, [0, 1, 5]);
    assert_eq!(sha256sum(&[map]), want[2..3]);
}

/// The recipe's entries, after [`common::recipe::head`].
const ENTRIES: &str = r#"[[file]]
path = "/etc/hostname"
content = "digest\n"

[[file]]
path = "/boot/efi/EFI/BOOT/hello.txt"
content = "hello\n"
"#;

fn recipe(dir: &Path, size: &str) -> PathBuf {
    let p = dir.join(format!("r-{size}.toml"));
    let head = common::recipe::head("digest", "1.0.0", size, "40MiB");
    std::fs::write(&p, head + ENTRIES).unwrap();
    p
}

fn build(recipe: &Path, out: &Path, extra: &[&str]) -> Value {
    let o = run(kiln()
        .arg("build")
        .arg(recipe)
        .arg("-o")
        .arg(out)
        .arg("--json")
        .args(extra));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn manifest(json: &Value) -> Value {
    serde_json::from_str(&std::fs::read_to_string(json["manifest"].as_str().unwrap()).unwrap())
        .unwrap()
}

/// Non-zero 512 KiB blocks of a file, by reading all of it.
fn nonzero_blocks(path: &Path) -> u64 {
    let data = std::fs::read(path).unwrap();
    data.chunks(B as usize)
        .filter(|c| c.iter().any(|&b| b != 0))
        .count() as u64
}

#[test]
fn a_build_is_named_by_its_blocks_digest_and_hashed_whole_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let r = recipe(dir.path(), "96MiB");
    let a = dir.path().join("a.raw");
    let j = build(&r, &a, &[]);
    assert_eq!(j.get("sha256"), None, "{j}");
    let m = manifest(&j);
    let blocks = &m["image"]["blocks"];
    assert_eq!(blocks["version"], 1);
    assert_eq!(blocks["block_size"], B);
    assert_eq!(blocks["blocks"], nonzero_blocks(&a));
    let want = by_script(std::slice::from_ref(&a));
    assert_eq!(blocks["sha256"], want[0].as_str());
    assert_eq!(j["blocks_sha256"], want[0].as_str());
    assert_eq!(m["image"]["size"], 96u64 << 20);
    assert_eq!(m["image"].get("sha256"), None, "not computed by default");
    assert_eq!(by_kiln(std::slice::from_ref(&a), true), want);
    // The map itself beside the manifest: the script's map of the image, byte for byte, its
    // SHA-256 the manifest's digest; no temporary file is left beside it.
    let map = std::fs::read(dir.path().join("a.blocks")).unwrap();
    let script_map = dir.path().join("script.map");
    run_ok(
        Command::new("python3")
            .arg(script())
            .arg("--map")
            .arg(&script_map)
            .arg(&a),
    );
    assert_eq!(map, std::fs::read(&script_map).unwrap());
    let sha = run_ok(Command::new("sha256sum").arg(dir.path().join("a.blocks")));
    assert_eq!(blocks["sha256"], digests(&sha)[0].as_str());
    assert_eq!(
        map.len() as u64,
        24 + 40 * blocks["blocks"].as_u64().unwrap()
    );
    let hidden: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");

    // --sha256: the whole disk's hash too, in the output and the manifest; the same disk.
    let b = dir.path().join("b.raw");
    let j = build(&r, &b, &["--sha256"]);
    let sha = sha256sum(std::slice::from_ref(&b));
    assert_eq!(j["sha256"], sha[0].as_str());
    assert_eq!(j["blocks_sha256"], want[0].as_str());
    let m = manifest(&j);
    assert_eq!(m["image"]["sha256"], sha[0].as_str());
    assert_eq!(&m["image"]["blocks"], blocks);
    assert_eq!(by_kiln(std::slice::from_ref(&a), false), sha);

    // A disk of a size that is not a whole number of blocks, whose last (partial) block holds
    // the backup GPT: the build's streamed map is the script's.
    let ragged = dir.path().join("ragged.raw");
    let j = build(&recipe(dir.path(), "98817KiB"), &ragged, &[]);
    let size = std::fs::metadata(&ragged).unwrap().len();
    assert_ne!(size % B, 0);
    let data = std::fs::read(&ragged).unwrap();
    assert!(data[(size - size % B) as usize..].iter().any(|&b| b != 0));
    let m = manifest(&j);
    assert_eq!(m["image"]["blocks"]["blocks"], nonzero_blocks(&ragged));
    assert_eq!(
        m["image"]["blocks"]["sha256"],
        by_script(std::slice::from_ref(&ragged))[0].as_str()
    );

    // The text output names the identity first.
    let o = run_ok(kiln().arg("build").arg(&r).arg("-o").arg(&a));
    assert!(o.contains(&format!("blocks sha256: {}", want[0])), "{o}");
}

fn partition(m: &Value, i: usize) -> (u64, u64) {
    let p = &m["partitions"][i];
    let first = p["first_lba"].as_u64().unwrap();
    let last = p["last_lba"].as_u64().unwrap();
    (first * 512, (last + 1 - first) * 512)
}

/// A 1 TiB disk with the content of a 96 MiB one: its file holds a few MiB, its block map a few
/// dozen blocks, and the real tools find it clean, backup GPT and ext4 flex groups included.
#[test]
fn a_terabyte_disk_costs_its_data_not_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.raw");
    let ms = manifest(&build(&recipe(dir.path(), "96MiB"), &small, &[]));
    let big = dir.path().join("big.raw");
    let t = std::time::Instant::now();
    let mb = manifest(&build(&recipe(dir.path(), "1TiB"), &big, &[]));
    let took = t.elapsed();
    let meta = std::fs::metadata(&big).unwrap();
    assert_eq!(meta.len(), 1 << 40);
    let allocated = meta.blocks() * 512;
    // The GPT, the ESP, ext4's superblocks, descriptors and its 16 flex groups' bitmaps.
    assert!(allocated < 16 << 20, "{allocated} bytes allocated");
    let n = mb["image"]["blocks"]["blocks"].as_u64().unwrap();
    assert!(n < 100, "{n} non-zero blocks");
    assert!(took.as_secs() < 60, "{took:?}");
    let want = by_script(std::slice::from_ref(&big));
    assert_eq!(mb["image"]["blocks"]["sha256"], want[0].as_str());
    assert_ne!(
        mb["image"]["blocks"]["sha256"],
        ms["image"]["blocks"]["sha256"]
    );

    // The backup GPT at the disk's end.
    let v = run_ok(Command::new("sgdisk").arg("-v").arg(&big));
    assert!(v.contains("No problems found"), "{v}");
    // ext4, read in place (e2fsprogs' `?offset=`): flex groups of 512 groups, clean.
    let (off, _) = partition(&mb, 1);
    let dev = format!("{}?offset={off}", big.display());
    let fsck = run(Command::new("e2fsck").arg("-fn").arg(&dev));
    assert!(
        fsck.status.success(),
        "{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let dump = run_ok(Command::new("dumpe2fs").arg("-h").arg(&dev));
    assert!(dump.contains("Flex block group size:    512"), "{dump}");
    let cat = run_ok(
        Command::new("debugfs")
            .args(["-R", "cat /etc/hostname"])
            .arg(&dev),
    );
    assert_eq!(cat, "digest\n");
    // The ESP is the small disk's.
    let (off, len) = partition(&mb, 0);
    let esp = dir.path().join("esp.img");
    common::extract(&big, off, len, &esp);
    run_ok(Command::new("fsck.fat").arg("-n").arg(&esp));
}
