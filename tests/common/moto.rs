//! moto_server (the third-party AWS implementation) and the recording proxy in front of it.
//!
//! `scripts/test` installs moto into `.venv` and sets `KILN_MOTO_SERVER` to its `moto_server`;
//! the proxy (`scripts/lib/moto-proxy.py`) runs with the python beside it. Both listen on
//! 127.0.0.1 only and are killed on drop.

use serde_json::Value;
use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn moto_server() -> PathBuf {
    match std::env::var_os("KILN_MOTO_SERVER") {
        Some(p) if Path::new(&p).exists() => PathBuf::from(p),
        _ => panic!(
            "KILN_MOTO_SERVER must name a moto_server executable; run scripts/test, which \
             installs moto into .venv (python3 -m venv .venv && .venv/bin/pip install \
             'moto[server]>=5.0,<6')"
        ),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Moto {
    child: Child,
    pub port: u16,
    /// What the proxies fill in for this moto (deprecations, RegisterImage mappings), shared by
    /// every proxy started in front of it.
    state: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        // The port is free when picked, but another test's server (or an outgoing connection)
        // may take it before moto binds it; then this moto exits and a connect would reach
        // someone else. So the listener must be this child's own; otherwise try another port.
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(moto_server())
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server starts");
            let t0 = Instant::now();
            loop {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if listens(child.id(), port) {
                    return Moto {
                        child,
                        port,
                        state: tempfile::tempdir().unwrap(),
                    };
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "moto_server did not listen on {port}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("moto_server could not bind a port in 5 attempts");
    }
}

impl Moto {
    /// The images registered through a proxy in front of this moto. moto gives each a snapshot
    /// of its own invention (AWS's RegisterImage makes none); the proxy reports the mapping
    /// RegisterImage asked for instead, so nobody ever sees, uses or deletes that snapshot.
    pub fn proxy_registered(&self) -> std::collections::BTreeSet<String> {
        std::fs::read_to_string(self.state.path().join("proxy-state.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .and_then(|v| {
                v["registered"]
                    .as_object()
                    .map(|m| m.keys().cloned().collect())
            })
            .unwrap_or_default()
    }
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port`.
fn listens(pid: u32, port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let Some(inode) = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == want && f[3] == "0A").then(|| f[9].to_string())
    }) else {
        return false;
    };
    let socket = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == socket.as_str())
            })
        })
        .unwrap_or(false)
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Proxy {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Proxy {
    /// A proxy to `moto` logging into `log`, with extra flags (faults, rewrites).
    pub fn start(moto: &Moto, log: &Path, flags: &[&str]) -> Proxy {
        let upstream = format!("127.0.0.1:{}", moto.port);
        let state = moto.state.path().join("proxy-state.json");
        let mut args: Vec<&OsStr> = vec![
            "--upstream".as_ref(),
            upstream.as_ref(),
            "--log".as_ref(),
            log.as_os_str(),
            "--state".as_ref(),
            state.as_os_str(),
        ];
        args.extend(flags.iter().map(OsStr::new));
        let (child, port) = super::start_proxy("moto-proxy.py", &args);
        Proxy {
            child,
            port,
            log: log.to_path_buf(),
        }
    }

    /// Every request logged so far.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The logged requests of one operation.
    pub fn ops(&self, op: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["op"] == op)
            .collect()
    }

    /// `kiln` with credentials, region and endpoint pointing at this proxy.
    pub fn kiln(&self) -> Command {
        endpoint_kiln(self.port)
    }

    /// `kiln publish web.toml --skip-test -o web.raw ARGS` in `dir`, through this proxy.
    pub fn publish(&self, dir: &Path, args: &[&str]) -> std::process::Output {
        self.kiln()
            .current_dir(dir)
            .args(["publish", "web.toml", "--skip-test", "-o", "web.raw"])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kiln` configured for an endpoint on 127.0.0.1:`port`.
pub fn endpoint_kiln(port: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    c
}

/// A plain-HTTP client for moto on 127.0.0.1: the SDK crates are built without their default
/// HTTPS client (kiln gives its own in `aws::connect`).
fn plain_http() -> aws_sdk_ec2::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_http()
}

/// The state of a snapshot as moto's DescribeSnapshots reports it, `None` if it is gone.
pub fn snapshot_state(moto: &Moto, id: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conf = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .http_client(kiln::aws::https_client())
            .region(aws_sdk_ec2::config::Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{}", moto.port))
            .http_client(plain_http())
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .build();
        let ec2 = aws_sdk_ec2::Client::from_conf(conf);
        let out = ec2
            .describe_snapshots()
            .owner_ids("self")
            .send()
            .await
            .expect("DescribeSnapshots");
        out.snapshots()
            .iter()
            .find(|s| s.snapshot_id() == Some(id))
            .map(|s| {
                s.state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default()
            })
    })
}

/// A sparse test image (holes on disk) of `size` bytes with `regions` (offset, len) of non-zero bytes.
pub fn make_image(path: &Path, size: u64, regions: &[(u64, usize)], seed: u8) -> Vec<u8> {
    let mut data = vec![0u8; size as usize];
    let mut x = seed as u32 | 1;
    for &(off, len) in regions {
        for b in &mut data[off as usize..off as usize + len] {
            // xorshift: deterministic, never long runs of zeros
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = (x as u8) | 1;
        }
    }
    // Sparse on disk: only the regions are written, the rest stays holes.
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for &(off, len) in regions {
        f.write_all_at(&data[off as usize..off as usize + len], off)
            .unwrap();
    }
    data
}

/// The SHA-256 (raw) of each non-zero 512 KiB block, by index; the last block zero-padded.
pub fn nonzero_blocks(data: &[u8]) -> Vec<(u64, [u8; 32])> {
    use sha2::{Digest, Sha256};
    data.chunks(512 * 1024)
        .enumerate()
        .filter(|(_, c)| c.iter().any(|&b| b != 0))
        .map(|(i, c)| {
            let mut block = c.to_vec();
            block.resize(512 * 1024, 0);
            (i as u64, Sha256::digest(&block).into())
        })
        .collect()
}

/// The manifest's `image.blocks` for a whole disk, by its definition: SHA-256 over the block
/// map's header ("KILNBMAP", version 1, block size, disk size) and each non-zero block's index
/// (u64, big-endian) and digest, in order.
pub fn block_map(data: &[u8]) -> serde_json::Value {
    use sha2::{Digest, Sha256};
    let blocks = nonzero_blocks(data);
    let mut h = Sha256::new();
    h.update(b"KILNBMAP");
    h.update(1u32.to_be_bytes());
    h.update((512u32 * 1024).to_be_bytes());
    h.update((data.len() as u64).to_be_bytes());
    for (i, d) in &blocks {
        h.update(i.to_be_bytes());
        h.update(d);
    }
    serde_json::json!({
        "version": 1,
        "block_size": 512 * 1024,
        "blocks": blocks.len(),
        "sha256": format!("{:x}", h.finalize()),
    })
}

pub fn b64(d: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(d)
}

/// Direct EC2 access to moto in one region (not through the proxy, so nothing is captured and
/// nothing is rewritten): what the server itself holds.
pub struct Ec2 {
    rt: tokio::runtime::Runtime,
    pub client: aws_sdk_ec2::Client,
}

impl Ec2 {
    pub fn new(moto: &Moto, region: &str) -> Ec2 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conf = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .http_client(kiln::aws::https_client())
            .region(aws_sdk_ec2::config::Region::new(region.to_string()))
            .endpoint_url(format!("http://127.0.0.1:{}", moto.port))
            .http_client(plain_http())
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .build();
        Ec2 {
            rt,
            client: aws_sdk_ec2::Client::from_conf(conf),
        }
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A snapshot kiln did not make (no kiln tags): EC2's own, of a new 1 GiB volume in the
    /// region's zone `a`; returns its id.
    pub fn foreign_snapshot(&self, region: &str) -> String {
        self.block_on(async {
            let vol = self
                .client
                .create_volume()
                .availability_zone(format!("{region}a"))
                .size(1)
                .send()
                .await
                .unwrap();
            self.client
                .create_snapshot()
                .volume_id(vol.volume_id().unwrap())
                .send()
                .await
                .unwrap()
                .snapshot_id()
                .unwrap()
                .to_string()
        })
    }

    /// Images owned by the account that carry a kiln digest tag (`kiln:image-blocks-sha256`, or
    /// `kiln:image-sha256` as earlier kiln versions tagged them alone).
    pub fn kiln_images(&self) -> Vec<aws_sdk_ec2::types::Image> {
        let f = aws_sdk_ec2::types::Filter::builder()
            .name("tag-key")
            .values("kiln:name")
            .build();
        let out = self
            .block_on(
                self.client
                    .describe_images()
                    .owners("self")
                    .filters(f)
                    .send(),
            )
            .expect("DescribeImages");
        out.images()
            .iter()
            .filter(|i| {
                i.tags().iter().any(|t| {
                    matches!(
                        t.key(),
                        Some("kiln:image-blocks-sha256" | "kiln:image-sha256")
                    )
                })
            })
            .cloned()
            .collect()
    }

    /// Every snapshot id the account owns in this region.
    pub fn snapshot_ids(&self) -> std::collections::BTreeSet<String> {
        let out = self
            .block_on(self.client.describe_snapshots().owner_ids("self").send())
            .expect("DescribeSnapshots");
        out.snapshots()
            .iter()
            .filter_map(|s| s.snapshot_id().map(str::to_string))
            .collect()
    }

    /// A snapshot's tags, `None` if it does not exist.
    pub fn snapshot_tags(&self, id: &str) -> Option<Vec<(String, String)>> {
        let out = self
            .block_on(self.client.describe_snapshots().owner_ids("self").send())
            .expect("DescribeSnapshots");
        let s = out
            .snapshots()
            .iter()
            .find(|s| s.snapshot_id() == Some(id))?;
        Some(pairs(s.tags()))
    }

    /// (kind, value) of each launch permission: ("user", id), ("org", arn), ("ou", arn),
    /// ("group", "all").
    pub fn launch_permissions(&self, image: &str) -> Vec<(String, String)> {
        let out = self
            .block_on(
                self.client
                    .describe_image_attribute()
                    .image_id(image)
                    .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
                    .send(),
            )
            .expect("DescribeImageAttribute");
        out.launch_permissions()
            .iter()
            .map(|p| {
                if let Some(u) = p.user_id() {
                    ("user".into(), u.into())
                } else if let Some(o) = p.organization_arn() {
                    ("org".into(), o.into())
                } else if let Some(o) = p.organizational_unit_arn() {
                    ("ou".into(), o.into())
                } else {
                    (
                        "group".into(),
                        p.group().map(|g| g.as_str()).unwrap_or("").into(),
                    )
                }
            })
            .collect()
    }

    /// The account ids (and `all`) a snapshot's createVolumePermission names.
    pub fn volume_permissions(&self, snapshot: &str) -> Vec<String> {
        let out = self
            .block_on(
                self.client
                    .describe_snapshot_attribute()
                    .snapshot_id(snapshot)
                    .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
                    .send(),
            )
            .expect("DescribeSnapshotAttribute");
        out.create_volume_permissions()
            .iter()
            .map(|p| {
                p.user_id()
                    .map(str::to_string)
                    .or_else(|| p.group().map(|g| g.as_str().to_string()))
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// Tags as (key, value) pairs.
pub fn pairs(tags: &[aws_sdk_ec2::types::Tag]) -> Vec<(String, String)> {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap_or("").to_string(),
                t.value().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Operations that change something (everything but Describe*/List*/Get*).
pub fn is_mutating(op: &str) -> bool {
    !(op.starts_with("Describe") || op.starts_with("List") || op.starts_with("Get"))
}

/// A tiny recipe, image "web" at `version`, with an `[ami]` for `regions`; `ami_extra` is added
/// to `[ami]` (it starts on the line after `regions`).
pub fn web_recipe(version: &str, regions: &[&str], ami_extra: &str) -> String {
    let regions: Vec<String> = regions.iter().map(|r| format!("{r:?}")).collect();
    let image = super::recipe::image("web", version, "64MiB");
    let root = super::recipe::ROOT;
    format!(
        r#"{image}{root}[[file]]
path = "/etc/motd"
content = "web {version}\n"

[ami]
name = "{{name}}-{{version}}-{{arch}}"
regions = [{regions}]
{ami_extra}
"#,
        regions = regions.join(", ")
    )
}

/// A ClientToken of one run's own: random (`kiln-` and 32 hex digits), never derived from the
/// image (`sha256`) or anything else a later run would derive again.
pub fn assert_run_token(token: &Value, sha256: &str) {
    let t = token
        .as_str()
        .unwrap_or_else(|| panic!("no ClientToken: {token}"));
    let hex = t.strip_prefix("kiln-").unwrap_or_else(|| panic!("{t}"));
    assert!(
        hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{t}"
    );
    assert!(!sha256.contains(hex), "{t} comes from {sha256}");
}

/// The one snapshot a failed command deleted: exactly one DeleteSnapshot went out, and moto no
/// longer has that snapshot. `err` (the command's stderr) is shown when it is not so.
pub fn one_deleted_snapshot(proxy: &Proxy, moto: &Moto, err: &str) -> String {
    nth_deleted_snapshot(proxy, moto, err, 1)
}

/// [`one_deleted_snapshot`] for the `n`th failure a test provokes: the `n`th DeleteSnapshot.
pub fn nth_deleted_snapshot(proxy: &Proxy, moto: &Moto, err: &str, n: usize) -> String {
    let deletes = proxy.ops("DeleteSnapshot");
    assert_eq!(deletes.len(), n, "{err}");
    let id = deletes[n - 1]["params"]["SnapshotId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(snapshot_state(moto, &id), None, "{err}");
    id
}
