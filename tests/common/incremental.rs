//! Incremental uploads' test helpers: sparse images, the blocks a child was sent (as the proxy
//! logged them), the test's own reader of a snapshot, and a small recipe whose versions differ
//! in one /etc file.

use super::moto::{Moto, Proxy};
use super::ok;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const B: usize = 512 * 1024;
pub const MIB: usize = 1 << 20;

/// moto behind the recording proxy, which makes its snapshots' blocks 512 KiB and read through
/// to their parents (`--rewrite-block-size`); its log is `dir/cap.jsonl`.
pub fn block_proxy(moto: &Moto, dir: &Path) -> Proxy {
    Proxy::start(moto, &dir.join("cap.jsonl"), &["--rewrite-block-size"])
}

/// `dir/v/disk.raw`, its directory made: without a manifest an image is named by its file's
/// stem, so every version is "disk".
pub fn version_path(dir: &Path, v: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join(v)).unwrap();
    dir.join(v).join("disk.raw")
}

/// `kiln upload --json --workers 4 ARGS IMAGE` through the proxy: its JSON answer.
pub fn upload(proxy: &Proxy, args: &[&str], img: &Path) -> Value {
    json(&ok(&proxy
        .kiln()
        .args(["upload", "--json", "--workers", "4"])
        .args(args)
        .arg(img)
        .output()
        .unwrap()))
}

/// Writes `data` as a sparse file: only its non-zero 4 KiB pages.
pub fn write_sparse(path: &Path, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(data.len() as u64).unwrap();
    for (i, page) in data.chunks(4096).enumerate() {
        if page.iter().any(|&b| b != 0) {
            f.write_all_at(page, (i * 4096) as u64).unwrap();
        }
    }
}

/// Fills `data[at..at + len]` with xorshift bytes of `seed`, none of them zero.
pub fn fill(data: &mut [u8], at: usize, len: usize, seed: u32) {
    let mut x = seed | 1;
    for b in &mut data[at..at + len] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = (x as u8) | 1;
    }
}

/// The JSON object on the last line of a command's stdout.
pub fn json(out: &str) -> Value {
    serde_json::from_str(out.trim().lines().last().unwrap()).unwrap()
}

/// The blocks written to `snapshot`, by index, with their bodies' checksums.
pub fn puts_to(proxy: &Proxy, snapshot: &str) -> BTreeMap<u64, String> {
    proxy
        .ops("PutSnapshotBlock")
        .iter()
        .filter(|p| p["path"].as_str().unwrap().contains(snapshot) && p["status"] == 201)
        .map(|p| {
            let path = p["path"].as_str().unwrap();
            let i = path.rsplit('/').next().unwrap().parse().unwrap();
            (i, p["body_sha256_b64"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Snapshot `id` as the SDK reads it through `proxy` (a child reads through to its parents):
/// every block ListSnapshotBlocks lists, by index, fetched with GetSnapshotBlock. The test's own
/// reader, independent of `kiln verify`.
pub fn read_snapshot(proxy: &Proxy, id: &str) -> BTreeMap<u64, Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ebs = aws_sdk_ebs::Client::from_conf(
        aws_sdk_ebs::Config::builder()
            .behavior_version(aws_sdk_ebs::config::BehaviorVersion::latest())
            .region(aws_sdk_ebs::config::Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{}", proxy.port))
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .credentials_provider(aws_sdk_ebs::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .build(),
    );
    rt.block_on(async {
        let mut listed = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let out = ebs
                .list_snapshot_blocks()
                .snapshot_id(id)
                .set_next_token(next.clone())
                .send()
                .await
                .unwrap();
            for b in out.blocks() {
                listed.push((
                    b.block_index().unwrap(),
                    b.block_token().unwrap().to_string(),
                ));
            }
            next = out.next_token().map(str::to_string);
            if next.is_none() {
                break;
            }
        }
        let mut blocks = BTreeMap::new();
        for (i, token) in listed {
            let out = ebs
                .get_snapshot_block()
                .snapshot_id(id)
                .block_index(i)
                .block_token(token)
                .send()
                .await
                .unwrap();
            let data = out
                .block_data
                .collect()
                .await
                .unwrap()
                .into_bytes()
                .to_vec();
            assert_eq!(data.len(), B, "block {i} of {id}");
            blocks.insert(i as u64, data);
        }
        blocks
    })
}

/// Whether `snapshot` (as [`read_snapshot`] gives it) holds exactly `disk`: each listed block
/// equals the disk's (zero-padded), and every non-zero block of the disk is listed.
pub fn holds(snapshot: &BTreeMap<u64, Vec<u8>>, disk: &[u8]) -> Result<(), String> {
    for (i, chunk) in disk.chunks(B).enumerate() {
        let mut want = chunk.to_vec();
        want.resize(B, 0);
        match snapshot.get(&(i as u64)) {
            Some(got) if *got != want => return Err(format!("block {i} differs")),
            None if want.iter().any(|&b| b != 0) => return Err(format!("block {i} is missing")),
            _ => {}
        }
    }
    match snapshot
        .keys()
        .find(|&&i| i as usize >= disk.len().div_ceil(B))
    {
        Some(i) => Err(format!("block {i} lies past the disk's end")),
        None => Ok(()),
    }
}

/// A recipe's entries after its head (`super::recipe::head`): an /etc file, the MOTD that
/// versions differ in, and a bigger file (BIG) they share.
const ENTRIES: &str = r#"[[file]]
path = "/etc/motd"
content = "MOTD\n"

[[file]]
path = "/usr/share/big"
content = "BIG"
"#;

/// Writes version `v` of the recipe (`/etc/motd` says `motd`) as `dir/v.toml`.
pub fn write_recipe(dir: &Path, v: &str, motd: &str) -> PathBuf {
    let r = dir.join(format!("{v}.toml"));
    let big = "x".repeat(3 << 20);
    std::fs::write(
        &r,
        super::recipe::head("inc", v, "96MiB", "40MiB")
            + &ENTRIES.replace("MOTD", motd).replace("BIG", &big),
    )
    .unwrap();
    r
}

/// Builds version `v` of the recipe (`/etc/motd` says `motd`) into `dir/v/inc.raw`.
pub fn build(dir: &Path, v: &str, motd: &str) -> PathBuf {
    let r = write_recipe(dir, v, motd);
    let img = dir.join(v).join("inc.raw");
    ok(&std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("build")
        .arg(&r)
        .arg("-o")
        .arg(&img)
        .output()
        .unwrap());
    img
}
