//! `kiln publish` against moto on 127.0.0.1, through the recording proxy: two regions, shares on
//! image and snapshots, tags everywhere, the deprecation request, an idempotent re-publish that
//! uploads nothing, `public = true` refused without `--allow-public`, and one region failing
//! while the others succeed.
//!
//! moto keeps launch permissions, create-volume permissions and tags, so those are read back
//! from moto itself. What moto lacks (EnableImageDeprecation, CopyImage's TagSpecifications) is
//! asserted on the requests the proxy captured.

mod common;

use common::moto::{is_mutating, pairs, Ec2, Moto, Proxy};
use common::ok;
use serde_json::Value;
use std::path::{Path, PathBuf};

const ACCOUNT: &str = "111122223333";
const ORG: &str = "arn:aws:organizations::111122223333:organization/o-abcdefghij";
const OU: &str = "arn:aws:organizations::111122223333:ou/o-abcdefghij/ou-abcd-12345678";

/// The shared "web" recipe with a description, `extra` in `[ami]` (on the same line as before
/// the recipe was shared, so error positions hold) and an `[ami.tags]` table.
fn recipe(version: &str, regions: &[&str], extra: &str) -> String {
    let ami = format!("description = \"web server\"\n{extra}\n\n[ami.tags]\nteam = \"platform\"");
    common::moto::web_recipe(version, regions, &ami)
}

const SHARES: &str = r#"share_accounts = ["111122223333"]
share_organizations = ["arn:aws:organizations::111122223333:organization/o-abcdefghij"]
share_organizational_units = ["arn:aws:organizations::111122223333:ou/o-abcdefghij/ou-abcd-12345678"]
deprecate_after = "365d""#;

/// The blocks digest of an image file, by the definition (tests/common/moto.rs).
fn blocks_digest(image: &Path) -> String {
    common::moto::block_map(&std::fs::read(image).unwrap())["sha256"]
        .as_str()
        .unwrap()
        .to_string()
}

fn write_recipe(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("web.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// region → (image id, snapshot id) from `--json`.
fn images(j: &Value) -> Vec<(String, String, String)> {
    j["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["region"].as_str().unwrap().to_string(),
                i["image_id"].as_str().unwrap().to_string(),
                i["snapshot_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The tags of TagSpecification `n` in a captured EC2 request.
fn tag_spec(p: &Value, n: usize) -> Vec<(String, String)> {
    (1..40)
        .filter_map(|i| {
            let k = p[format!("TagSpecification.{n}.Tag.{i}.Key")].as_str()?;
            let v = p[format!("TagSpecification.{n}.Tag.{i}.Value")].as_str()?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// kiln's tags, naming the image by its blocks digest `blocks` (and by nothing else: the whole
/// disk's sha256 is not computed unless asked for), and `[ami.tags]`.
fn has_all(tags: &[(String, String)], blocks: &str) {
    assert!(
        !tags.iter().any(|(k, _)| k == "kiln:image-sha256"),
        "{tags:?}"
    );
    for (k, v) in [
        ("kiln:name", "web"),
        ("kiln:version", "1.0.0"),
        ("kiln:image-blocks-sha256", blocks),
        ("kiln:kiln-version", env!("CARGO_PKG_VERSION")),
        ("team", "platform"),
    ] {
        assert!(
            tags.contains(&(k.to_string(), v.to_string())),
            "{k}={v} missing from {tags:?}"
        );
    }
}

#[test]
fn publishes_to_two_regions_then_again_without_uploading() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_recipe(d, &recipe("1.0.0", &["us-east-1", "eu-west-1"], SHARES));
    let moto = Moto::start();
    let proxy = Proxy::start(&moto, &d.join("cap.jsonl"), &[]);

    let out = ok(&proxy.publish(d, &["--json"]));
    let j: Value = serde_json::from_str(out.trim()).unwrap();
    let sha = common::sha256_file(&d.join("web.raw"));
    let blocks = blocks_digest(&d.join("web.raw"));
    assert_eq!(j["blocks_sha256"], blocks.as_str());
    let got = images(&j);
    assert_eq!(
        got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        ["us-east-1", "eu-west-1"]
    );
    assert_eq!(j.as_object().unwrap().len(), 2, "{j}");
    let (east, west) = (&got[0], &got[1]);

    // One upload and one registration, in the first region; the registration names the snapshot
    // the JSON reports.
    assert_eq!(proxy.ops("StartSnapshot").len(), 1);
    let reg = proxy.ops("RegisterImage");
    assert_eq!(reg.len(), 1);
    assert_eq!(reg[0]["region"], "us-east-1");
    assert_eq!(
        reg[0]["params"]["BlockDeviceMapping.1.Ebs.SnapshotId"],
        east.2.as_str()
    );
    assert_eq!(reg[0]["params"]["Name"], "web-1.0.0-x86_64");

    // The copy: from the first region, tagged on creation (moto ignores the tags; kiln re-applies
    // them with CreateTags, checked below), with a ClientToken.
    let copies = proxy.ops("CopyImage");
    assert_eq!(copies.len(), 1);
    let c = &copies[0];
    assert_eq!(c["region"], "eu-west-1");
    assert_eq!(c["params"]["SourceRegion"], "us-east-1");
    assert_eq!(c["params"]["SourceImageId"], east.1.as_str());
    assert_eq!(c["params"]["Name"], "web-1.0.0-x86_64");
    common::moto::assert_run_token(&c["params"]["ClientToken"], &sha);
    assert_eq!(c["params"]["TagSpecification.1.ResourceType"], "image");
    assert_eq!(c["params"]["TagSpecification.2.ResourceType"], "snapshot");
    has_all(&tag_spec(&c["params"], 1), &blocks);
    has_all(&tag_spec(&c["params"], 2), &blocks);

    // What moto holds, region by region: tags on image and snapshot, launch permissions for the
    // account, the organization and the OU, create-volume permission for the account only.
    for (region, image, snap) in [east, west] {
        let ec2 = Ec2::new(&moto, region);
        let imgs = ec2.kiln_images();
        assert_eq!(imgs.len(), 1, "{region}");
        assert_eq!(imgs[0].image_id(), Some(image.as_str()));
        has_all(&pairs(imgs[0].tags()), &blocks);
        has_all(
            &ec2.snapshot_tags(snap).expect("the snapshot exists"),
            &blocks,
        );
        let mut lp = ec2.launch_permissions(image);
        lp.sort();
        let want = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            lp,
            [want("org", ORG), want("ou", OU), want("user", ACCOUNT)],
            "{region}"
        );
        assert_eq!(ec2.volume_permissions(snap), [ACCOUNT], "{region}");
    }
    // ModifySnapshotAttribute takes no organization or OU: none was sent.
    for m in proxy.ops("ModifySnapshotAttribute") {
        let p = m["params"].to_string();
        assert!(!p.contains("organization"), "{p}");
    }

    // Deprecation: 365 days after the source image's creation, in whole minutes, in both regions.
    let created = Ec2::new(&moto, "us-east-1")
        .kiln_images()
        .first()
        .and_then(|i| i.creation_date().map(str::to_string))
        .unwrap();
    let t = kiln::recipe::parse_utc(&created).unwrap() + 365 * 86_400;
    let want = kiln::recipe::format_utc(t - t % 60);
    let dep = proxy.ops("EnableImageDeprecation");
    let mut dep_images: Vec<(&str, &str, &str)> = dep
        .iter()
        .map(|d| {
            (
                d["region"].as_str().unwrap(),
                d["params"]["ImageId"].as_str().unwrap(),
                d["params"]["DeprecateAt"].as_str().unwrap(),
            )
        })
        .collect();
    dep_images.sort();
    assert_eq!(
        dep_images,
        [
            ("eu-west-1", west.1.as_str(), want.as_str()),
            ("us-east-1", east.1.as_str(), want.as_str())
        ]
    );

    // Again: everything is found by its tags; nothing is uploaded, registered, copied, shared,
    // tagged or deprecated a second time.
    let before = proxy.requests().len();
    let again = ok(&proxy.publish(d, &["--json"]));
    assert_eq!(serde_json::from_str::<Value>(again.trim()).unwrap(), j);
    let second: Vec<String> = proxy.requests()[before..]
        .iter()
        .map(|r| r["op"].as_str().unwrap().to_string())
        .collect();
    assert!(second.iter().any(|o| o == "DescribeImages"), "{second:?}");
    let changed: Vec<&String> = second.iter().filter(|o| is_mutating(o)).collect();
    assert!(changed.is_empty(), "the second publish changed {changed:?}");
    assert_eq!(proxy.ops("StartSnapshot").len(), 1);

    // The table names both regions as existing.
    let table = ok(&proxy.publish(d, &[]));
    for (region, image, snap) in [east, west] {
        let line = table
            .lines()
            .find(|l| l.starts_with(region.as_str()))
            .unwrap();
        assert!(
            line.contains(image.as_str()) && line.contains(snap.as_str()),
            "{table}"
        );
        assert!(line.contains("available (existing)"), "{table}");
    }
}

#[test]
fn public_needs_allow_public_and_nothing_is_uploaded_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = recipe("1.0.0", &["us-east-1"], "public = true");
    write_recipe(d, &text);
    let moto = Moto::start();
    let proxy = Proxy::start(&moto, &d.join("cap.jsonl"), &[]);

    let o = proxy.publish(d, &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let line = text.lines().position(|l| l == "public = true").unwrap() + 1;
    let want = format!(
        "web.toml:{line}:10: public = true makes the AMI launchable by every AWS account; expected --allow-public"
    );
    assert!(err.contains(&want), "{err}");
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
    assert!(!d.join("web.raw").exists(), "nothing is even built");

    // Confirmed: the image is public; its snapshot is not.
    let out = ok(&proxy.publish(d, &["--allow-public", "--json"]));
    let j: Value = serde_json::from_str(out.trim()).unwrap();
    let (_, image, snap) = images(&j).remove(0);
    let ec2 = Ec2::new(&moto, "us-east-1");
    assert_eq!(
        ec2.launch_permissions(&image),
        [("group".to_string(), "all".to_string())]
    );
    assert!(ec2.volume_permissions(&snap).is_empty());
}

#[test]
fn one_region_failing_leaves_nothing_there_and_the_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let regions = ["us-east-1", "eu-west-1", "ap-southeast-2"];
    write_recipe(d, &recipe("1.0.0", &regions, SHARES));
    let moto = Moto::start();
    let before: Vec<_> = regions[1..]
        .iter()
        .map(|r| Ec2::new(&moto, r).snapshot_ids())
        .collect();
    // eu-west-1: the copy is made and becomes available, then sharing it fails.
    // ap-southeast-2: every request fails.
    let proxy = Proxy::start(
        &moto,
        &d.join("cap.jsonl"),
        &[
            "--fail-region",
            "eu-west-1:ModifyImageAttribute",
            "--fail-region",
            "ap-southeast-2",
        ],
    );
    let o = proxy.publish(d, &["--json"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let j: Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    let got = images(&j);
    assert_eq!(got.len(), 1, "{j}");
    assert_eq!(got[0].0, "us-east-1");

    // Each failure is reported with its cause, and the cleanup is named.
    assert!(
        proxy
            .ops("CopyImage")
            .iter()
            .any(|c| c["region"] == "eu-west-1" && c["status"] == 200),
        "the copy into eu-west-1 was made"
    );
    let west_line = err
        .lines()
        .find(|l| l.starts_with("eu-west-1: ModifyImageAttribute"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(west_line.contains("injected failure"), "{west_line}");
    assert!(west_line.contains("deregistered ami-"), "{west_line}");
    assert!(
        west_line.contains("deleted snapshot(s) snap-"),
        "{west_line}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("ap-southeast-2: DescribeImages")
                && l.contains("injected failure")),
        "{err}"
    );
    assert!(
        err.contains("published to 1 of 3 region(s); failed: eu-west-1, ap-southeast-2"),
        "{err}"
    );

    // Nothing is left in the failed regions: no image, no new snapshot.
    for (r, snaps) in regions[1..].iter().zip(&before) {
        let ec2 = Ec2::new(&moto, r);
        assert!(ec2.kiln_images().is_empty(), "{r}");
        assert_eq!(&ec2.snapshot_ids(), snaps, "{r}");
    }
    let dereg = proxy.ops("DeregisterImage");
    assert_eq!(dereg.len(), 1);
    assert_eq!(dereg[0]["region"], "eu-west-1");

    // The source region is complete: shared and tagged.
    let east = Ec2::new(&moto, "us-east-1");
    assert_eq!(east.kiln_images().len(), 1);
    assert_eq!(east.launch_permissions(&got[0].1).len(), 3);

    // Without the faults, a re-publish fills in the two missing regions and uploads nothing.
    let proxy2 = Proxy::start(&moto, &d.join("cap2.jsonl"), &[]);
    let out = ok(&proxy2.publish(d, &["--json"]));
    let j2: Value = serde_json::from_str(out.trim()).unwrap();
    let got2 = images(&j2);
    assert_eq!(
        got2.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        regions
    );
    assert_eq!(got2[0], got[0], "the source image is reused");
    assert!(proxy2.ops("StartSnapshot").is_empty());
    assert!(proxy2.ops("RegisterImage").is_empty());
    assert_eq!(proxy2.ops("CopyImage").len(), 2);
    for r in &regions[1..] {
        assert_eq!(Ec2::new(&moto, r).kiln_images().len(), 1, "{r}");
    }
}

/// A recipe that boots under OVMF to a busybox init printing kiln test's marker (the layout
/// tests/qemu_test.rs uses), with an [ami] for one region. The loader entry names the root's
/// PARTUUID, which derives from the seed alone: a first `kiln build` reads it from the manifest.
fn bootable_recipe(dir: &Path) -> String {
    std::fs::write(
        dir.join("init"),
        "#!/bin/busybox sh\necho KILN-BOOT-OK\n/bin/busybox poweroff -f\n",
    )
    .unwrap();
    let hand = common::boot::HandMade {
        name: "web",
        version: "1.0.0",
        seed: None,
        init: "init",
        bootloader: true,
    };
    let ami = "[ami]\nname = \"{name}-{version}-{arch}\"\nregions = [\"us-east-1\"]\n";
    let text = |partuuid: &str| format!("{}{ami}", hand.recipe(partuuid));
    write_recipe(dir, &text("00000000-0000-0000-0000-000000000000"));
    common::run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .current_dir(dir)
            .args(["build", "web.toml", "-o", "probe.raw", "--allow-host-paths"]),
    );
    text(&common::boot::root_partuuid(
        &dir.join("probe.manifest.json"),
    ))
}

#[test]
fn the_boot_test_gates_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    let proxy = Proxy::start(&moto, &d.join("cap.jsonl"), &[]);

    // No bootloader on the disk: the firmware gives up, and nothing reaches AWS.
    write_recipe(d, &recipe("1.0.0", &["us-east-1"], ""));
    let o = proxy
        .kiln()
        .current_dir(d)
        .args([
            "publish",
            "web.toml",
            "-o",
            "web.raw",
            "--test-timeout",
            "120",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "the tests failed, so nothing was published: 1 of 1 check(s) failed: console shows \"KILN-BOOT-OK\": the firmware found no bootloader"
        ),
        "{err}"
    );
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());

    // A disk that boots, but one of the recipe's [[test]]s fails: nothing is published either.
    let failing = "[[test]]\nname = \"booted\"\nconsole = \"KILN-BOOT-OK\"\n[[test]]\nname = \"web\"\ntcp = { port = 80 }\ntimeout = \"5s\"\n";
    let bootable = bootable_recipe(d);
    write_recipe(d, &format!("{bootable}{failing}"));
    let junit = d.join("tests.xml");
    let o = proxy
        .kiln()
        .current_dir(d)
        .args([
            "publish",
            "web.toml",
            "-o",
            "web.raw",
            "--allow-host-paths",
            "--junit",
        ])
        .arg(&junit)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        // The init powers off after its marker: the machine stops under the tcp check.
        err.contains("the tests failed, so nothing was published: 1 of 2 check(s) failed: web: the machine stopped (QEMU exit status 0)"),
        "{err}"
    );
    assert!(std::fs::read_to_string(&junit)
        .unwrap()
        .contains("<failure message="));
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());

    // A disk that boots to the marker and passes its [[test]] is published.
    let passing = "[[test]]\nname = \"booted\"\nconsole = \"KILN-BOOT-OK\"\n";
    write_recipe(d, &format!("{bootable}{passing}"));
    let o = proxy
        .kiln()
        .current_dir(d)
        .args(["publish", "web.toml", "-o", "web.raw", "--json"])
        .arg("--allow-host-paths")
        .output()
        .unwrap();
    let out = ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("PASS: 1 of 1 checks passed"), "{err}");
    assert!(d.join("web.console.log").is_file());
    let j: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(images(&j).len(), 1);
    assert_eq!(
        j["blocks_sha256"],
        blocks_digest(&d.join("web.raw")).as_str()
    );
    assert_eq!(proxy.ops("StartSnapshot").len(), 1);
    assert_eq!(proxy.ops("RegisterImage").len(), 1);
}

#[test]
fn sharing_and_deprecation_mistakes_point_into_the_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        (
            r#"share_accounts = ["11112222333"]"#,
            r#":19: "11112222333" in share_accounts is malformed; expected 12-digit AWS account ids"#,
        ),
        (
            r#"share_organizations = ["arn:aws:organizations::111122223333:organization/o-x"]"#,
            r#":24: "arn:aws:organizations::111122223333:organization/o-x" in share_organizations is malformed; expected ARNs like"#,
        ),
        (
            r#"share_organizational_units = ["arn:aws:organizations::111122223333:ou/o-abcdefghij"]"#,
            r#":31: "arn:aws:organizations::111122223333:ou/o-abcdefghij" in share_organizational_units is malformed"#,
        ),
        (
            "deprecate_after = \"365d\"\ndeprecate_at = \"2030-01-01T00:00:00Z\"",
            ":16: deprecate_at and deprecate_after are both set; expected only one of them",
        ),
        (
            r#"deprecate_after = "1y""#,
            r#":19: "1y" has no unit; expected a duration like "365d""#,
        ),
        (
            r#"deprecate_at = "2030-01-01 00:00""#,
            r#":16: "2030-01-01 00:00" is not a UTC time like "2027-12-31T00:00:00Z"; expected an RFC 3339 UTC time"#,
        ),
        (
            "public = true\ndeprecate_after = \"800d\"",
            r#":19: a public AMI may be deprecated at most 2 years after its creation; expected at most "730d""#,
        ),
        (
            "encrypted = true\npublic = true",
            ":10: an encrypted AMI cannot be made public; expected public = false",
        ),
    ];
    for (extra, want) in cases {
        let text = recipe("1.0.0", &["us-east-1"], extra);
        write_recipe(d, &text);
        let o = common::moto::endpoint_kiln(9)
            .current_dir(d)
            .args(["publish", "web.toml", "--skip-test", "--allow-public"])
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        // Each mistake is on the extra's last line.
        let last = extra.lines().last().unwrap();
        let line = text.lines().position(|l| l == last).unwrap() + 1;
        let want = format!("web.toml:{line}{want}");
        assert!(err.contains(&want), "{extra}:\n{err}\nwanted {want}");
        assert!(!d.join("web.raw").exists());
    }
}

#[test]
fn ctrl_c_while_the_image_becomes_available_removes_image_and_snapshot() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_recipe(d, &recipe("1.0.0", &["us-east-1"], ""));
    let moto = Moto::start();
    // Every DescribeImages takes 2 s: the wait after RegisterImage is long enough to interrupt.
    let proxy = Proxy::start(
        &moto,
        &d.join("cap.jsonl"),
        &["--delay-op", "DescribeImages:2000"],
    );
    let mut child = proxy
        .kiln()
        .current_dir(d)
        .args(["publish", "web.toml", "--skip-test", "-o", "web.raw"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let (image, snap) = loop {
        let mut line = String::new();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "kiln ended early:\n{seen}"
        );
        seen.push_str(&line);
        if let Some(rest) = line.trim().strip_prefix("us-east-1: registered ") {
            let (i, s) = rest.split_once(" from ").unwrap();
            break (i.to_string(), s.to_string());
        }
    };
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(
        rest.contains(&format!(
            "deregistered {image} and deleted snapshot {snap} in us-east-1"
        )),
        "{seen}{rest}"
    );
    let ec2 = Ec2::new(&moto, "us-east-1");
    assert!(ec2.snapshot_tags(&snap).is_none(), "the snapshot is gone");
    let out = ec2
        .block_on(ec2.client.describe_images().owners("self").send())
        .unwrap();
    assert!(out
        .images()
        .iter()
        .all(|i| i.image_id() != Some(image.as_str())));
}

/// Sets `tags` on `id` and removes the tags named in `remove`, in moto directly.
fn retag(ec2: &Ec2, id: &str, tags: &[(&str, &str)], remove: &[&str]) {
    use aws_sdk_ec2::types::Tag;
    let tag = |k: &str, v: Option<&str>| {
        Tag::builder()
            .key(k)
            .set_value(v.map(str::to_string))
            .build()
    };
    if !remove.is_empty() {
        let gone: Vec<Tag> = remove.iter().map(|k| tag(k, None)).collect();
        ec2.block_on(
            ec2.client
                .delete_tags()
                .resources(id)
                .set_tags(Some(gone))
                .send(),
        )
        .unwrap();
    }
    let set: Vec<Tag> = tags.iter().map(|(k, v)| tag(k, Some(v))).collect();
    ec2.block_on(
        ec2.client
            .create_tags()
            .resources(id)
            .set_tags(Some(set))
            .send(),
    )
    .unwrap();
}

const EARLIER: &str = "was published by an earlier kiln, which named images by the whole disk's \
                       sha256 alone: hashing the image to compare";

/// Images and snapshots published by an earlier kiln carry `kiln:image-sha256` (the whole disk's
/// sha256) and no blocks digest. Publishing the same image with this kiln finds them: the disk is
/// hashed then, and only then (once for all regions), nothing is uploaded or copied, and they get
/// the blocks tag, keeping the kiln version that made them. A later publish finds them by the
/// blocks tag without hashing, and an earlier kiln's image of other bytes under the AMI name is
/// reported, not taken.
#[test]
fn an_earlier_kilns_images_are_found_by_their_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let regions = ["us-east-1", "eu-west-1"];
    write_recipe(d, &recipe("1.0.0", &regions, ""));
    let moto = Moto::start();
    let proxy = Proxy::start(&moto, &d.join("cap.jsonl"), &[]);
    let o = proxy.publish(d, &["--json"]);
    let first: Value = serde_json::from_str(ok(&o).trim()).unwrap();
    assert!(!String::from_utf8_lossy(&o.stderr).contains(EARLIER));
    let got = images(&first);
    assert_eq!(got.len(), 2);
    drop(proxy);

    // As an earlier kiln left them: the sha256 tag, no blocks tag, its own version.
    let sha = common::sha256_file(&d.join("web.raw"));
    let blocks = blocks_digest(&d.join("web.raw"));
    for (region, image, snap) in &got {
        let ec2 = Ec2::new(&moto, region);
        for id in [image, snap] {
            retag(
                &ec2,
                id,
                &[("kiln:image-sha256", &sha), ("kiln:kiln-version", "0.0.9")],
                &["kiln:image-blocks-sha256"],
            );
        }
    }
    assert!(Ec2::new(&moto, "us-east-1")
        .snapshot_tags(&got[0].2)
        .unwrap()
        .iter()
        .all(|(k, _)| k != "kiln:image-blocks-sha256"));

    let proxy = Proxy::start(&moto, &d.join("cap2.jsonl"), &[]);
    let o = proxy.publish(d, &["--json"]);
    let again: Value = serde_json::from_str(ok(&o).trim()).unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(images(&again), got, "{err}");
    assert_eq!(err.matches(EARLIER).count(), 1, "hashed once: {err}");
    assert_eq!(again["image_sha256"], sha.as_str());
    assert_eq!(again["blocks_sha256"], blocks.as_str());
    for op in ["StartSnapshot", "RegisterImage", "CopyImage"] {
        assert!(proxy.ops(op).is_empty(), "{op}: {err}");
    }
    for (region, image, snap) in &got {
        let ec2 = Ec2::new(&moto, region);
        let imgs = ec2.kiln_images();
        assert_eq!(imgs.len(), 1, "{region}");
        assert_eq!(imgs[0].image_id(), Some(image.as_str()));
        for tags in [pairs(imgs[0].tags()), ec2.snapshot_tags(snap).unwrap()] {
            for (k, v) in [
                ("kiln:image-blocks-sha256", blocks.as_str()),
                ("kiln:image-sha256", sha.as_str()),
                ("kiln:kiln-version", "0.0.9"),
            ] {
                assert!(tags.contains(&(k.into(), v.into())), "{region}: {tags:?}");
            }
        }
    }
    drop(proxy);

    // Now found by the blocks tag: no hashing, nothing changed.
    let proxy = Proxy::start(&moto, &d.join("cap3.jsonl"), &[]);
    let o = proxy.publish(d, &["--json"]);
    let third: Value = serde_json::from_str(ok(&o).trim()).unwrap();
    assert!(!String::from_utf8_lossy(&o.stderr).contains(EARLIER));
    assert_eq!(images(&third), got);
    assert!(third.get("image_sha256").is_none(), "{third}");
    let changed: Vec<String> = proxy
        .requests()
        .iter()
        .map(|r| r["op"].as_str().unwrap().to_string())
        .filter(|o| is_mutating(o))
        .collect();
    assert!(changed.is_empty(), "{changed:?}");
    drop(proxy);

    // An earlier kiln's image of other bytes holds the name: reported, not taken, nothing sent.
    let east = Ec2::new(&moto, "us-east-1");
    let other = "0".repeat(64);
    retag(
        &east,
        &got[0].1,
        &[("kiln:image-sha256", &other)],
        &["kiln:image-blocks-sha256"],
    );
    let proxy = Proxy::start(&moto, &d.join("cap4.jsonl"), &[]);
    let o = proxy.publish(d, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(EARLIER), "{err}");
    assert!(
        err.contains(&format!(
            "is taken in us-east-1 by {} (kiln's web 1.0.0, sha256 {other}, available)",
            got[0].1
        )),
        "{err}"
    );
    let changed: Vec<String> = proxy
        .requests()
        .iter()
        .map(|r| r["op"].as_str().unwrap().to_string())
        .filter(|o| is_mutating(o))
        .collect();
    assert!(changed.is_empty(), "{changed:?}");
}
