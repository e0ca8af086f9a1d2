//! `kiln register` against moto: every RegisterImage field as the proxy saw it (moto itself keeps
//! only Name and Description), and a failing registration deletes the snapshot.

mod common;

use common::ok;

use common::moto::{make_image, snapshot_state, Moto, Proxy};
use serde_json::Value;

const RECIPE: &str = r#"
[image]
name = "web"
version = "3.1"
arch = "aarch64"
size = "64MiB"
source_date_epoch = 1700000000

[[partition]]
label = "root"
type = "root"
size = "rest"
filesystem = "ext4"
mount = "/"

[ami]
name = "{name}-{version}-{arch}-{date}"
description = "web server image"
boot_mode = "uefi-preferred"
ena_support = true
tpm_support = "v2.0"
uefi_data = "QUJDRA=="
root_device_name = "/dev/xvda"
volume_type = "gp3"
iops = 3000
throughput = 125
volume_size = "8GiB"
delete_on_termination = false
regions = ["us-east-1"]

[ami.tags]
team = "platform"

[[ami.volume]]
device_name = "/dev/xvdb"
size = "20GiB"
volume_type = "st1"
"#;

/// Uploads a small image; returns (dir, recipe path, snapshot id).
fn setup(proxy: &Proxy, dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let recipe = dir.join("r.toml");
    std::fs::write(&recipe, RECIPE).unwrap();
    let img = dir.join("disk.raw");
    make_image(&img, 4 << 20, &[(1000, 5000)], 9);
    let id = ok(&proxy.kiln().arg("upload").arg(&img).output().unwrap());
    (recipe, id.trim().to_string())
}

#[test]
fn register_sends_every_field_from_the_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(&moto, &dir.path().join("cap.jsonl"), &[]);
    let (recipe, snap) = setup(&proxy, dir.path());
    let out = ok(&proxy
        .kiln()
        .args(["register", &snap, "--json", "--recipe"])
        .arg(&recipe)
        .output()
        .unwrap());
    let j: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(j["image_id"].as_str().unwrap().starts_with("ami-"));
    assert_eq!(j["snapshot_id"], snap.as_str());
    assert_eq!(j["region"], "us-east-1");

    let reg = proxy.ops("RegisterImage");
    assert_eq!(reg.len(), 1);
    let p = &reg[0]["params"];
    let want = [
        ("Name", "web-3.1-arm64-20231114"),
        ("Description", "web server image"),
        ("Architecture", "arm64"),
        ("VirtualizationType", "hvm"),
        ("BootMode", "uefi-preferred"),
        ("EnaSupport", "true"),
        ("SriovNetSupport", "simple"),
        ("ImdsSupport", "v2.0"),
        ("TpmSupport", "v2.0"),
        ("UefiData", "QUJDRA=="),
        ("RootDeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.Ebs.SnapshotId", snap.as_str()),
        ("BlockDeviceMapping.1.Ebs.VolumeSize", "8"),
        ("BlockDeviceMapping.1.Ebs.VolumeType", "gp3"),
        ("BlockDeviceMapping.1.Ebs.Iops", "3000"),
        ("BlockDeviceMapping.1.Ebs.Throughput", "125"),
        ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "false"),
        ("BlockDeviceMapping.2.DeviceName", "/dev/xvdb"),
        ("BlockDeviceMapping.2.Ebs.VolumeSize", "20"),
        ("BlockDeviceMapping.2.Ebs.VolumeType", "st1"),
        ("TagSpecification.1.ResourceType", "image"),
        ("TagSpecification.2.ResourceType", "snapshot"),
    ];
    for (k, v) in want {
        assert_eq!(p[k], v, "{k} in {p:#}");
    }
    for spec in 1..=2 {
        let tags: Vec<(String, String)> = (1..20)
            .filter_map(|i| {
                let k = p[format!("TagSpecification.{spec}.Tag.{i}.Key")].as_str()?;
                let v = p[format!("TagSpecification.{spec}.Tag.{i}.Value")].as_str()?;
                Some((k.to_string(), v.to_string()))
            })
            .collect();
        let has = |k: &str| tags.iter().any(|(t, _)| t == k);
        assert!(has("kiln:image-blocks-sha256") && has("kiln:name") && has("kiln:kiln-version"));
        assert!(
            !has("kiln:image-sha256"),
            "no whole-disk hash unless asked: {tags:?}"
        );
        assert!(
            tags.contains(&("team".into(), "platform".into())),
            "{tags:?}"
        );
    }
    // It waited for `available`.
    assert!(!proxy.ops("DescribeImages").is_empty());
    assert_eq!(snapshot_state(&moto, &snap).as_deref(), Some("completed"));
}

/// `kiln register` of a snapshot the user made: a registration that fails (a bad parameter,
/// as a typo in boot_mode would give) leaves the snapshot as it was.
#[test]
fn failing_registration_leaves_the_users_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto,
        &dir.path().join("cap.jsonl"),
        &["--fail-op", "RegisterImage"],
    );
    let (recipe, snap) = setup(&proxy, dir.path());
    let o = proxy
        .kiln()
        .args(["register", &snap, "--recipe"])
        .arg(&recipe)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("InvalidParameterValue"), "{err}");
    assert!(!err.contains("deleted"), "{err}");
    assert!(proxy.ops("DeleteSnapshot").is_empty(), "{err}");
    assert!(proxy.ops("DeregisterImage").is_empty(), "{err}");
    assert_eq!(snapshot_state(&moto, &snap).as_deref(), Some("completed"));
}

#[test]
fn ami_errors_point_into_the_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("bad.toml");
    let text = RECIPE.replace("volume_size = \"8GiB\"", "volume_size = \"0GiB\"");
    std::fs::write(&recipe, &text).unwrap();
    let o = common::moto::endpoint_kiln(9)
        .args(["register", "snap-1", "--recipe"])
        .arg(&recipe)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("bad.toml:27:15:"), "{err}");

    let text = RECIPE.replace("\"{name}-{version}-{arch}-{date}\"", "\"{name}-{time}\"");
    std::fs::write(&recipe, &text).unwrap();
    let o = common::moto::endpoint_kiln(9)
        .args(["register", "snap-1", "--recipe"])
        .arg(&recipe)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.toml:17:8: unknown placeholder {time} in the AMI name; expected only {name}, {version}, {arch} and {date}"),
        "{err}"
    );
}

/// Registered, but the image never shows as available (DescribeImages fails): kiln deregisters
/// the image it made, and leaves the user's snapshot.
#[test]
fn an_image_that_never_becomes_available_is_removed_and_the_snapshot_kept() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto,
        &dir.path().join("cap.jsonl"),
        // The first DescribeImages (is the AMI name free?) answers; every later one fails.
        &["--fail-op", "DescribeImages:1"],
    );
    let (recipe, snap) = setup(&proxy, dir.path());
    let o = proxy
        .kiln()
        .args(["register", &snap, "--wait-timeout", "5", "--recipe"])
        .arg(&recipe)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    let registered = proxy.ops("RegisterImage");
    assert_eq!(registered.len(), 1, "{err}");
    let deregistered = proxy.ops("DeregisterImage");
    assert_eq!(deregistered.len(), 1, "{err}");
    let image = deregistered[0]["params"]["ImageId"].as_str().unwrap();
    assert!(
        err.contains(&format!("deregistered {image} in us-east-1")),
        "{err}"
    );
    assert!(proxy.ops("DeleteSnapshot").is_empty(), "{err}");
    assert_eq!(snapshot_state(&moto, &snap).as_deref(), Some("completed"));
}

/// RegisterImage reaches EC2, but its answer is lost; the retry is told the name is taken
/// (InvalidAMIName.Duplicate). The image holding it uses this snapshot: it is the one the first
/// attempt made, and kiln adopts it instead of failing or making another.
#[test]
fn a_registration_whose_answer_was_lost_is_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto,
        &dir.path().join("cap.jsonl"),
        &["--lost-answer", "RegisterImage:1"],
    );
    let (recipe, snap) = setup(&proxy, dir.path());
    let out = ok(&proxy
        .kiln()
        .args(["register", &snap, "--json", "--recipe"])
        .arg(&recipe)
        .output()
        .unwrap());
    let j: Value = serde_json::from_str(out.trim()).unwrap();
    let faults: Vec<Value> = proxy
        .ops("RegisterImage")
        .iter()
        .map(|r| r["fault"].clone())
        .collect();
    assert_eq!(faults, ["lost-answer", "duplicate"]);
    let ec2 = common::moto::Ec2::new(&moto, "us-east-1");
    let images = ec2.kiln_images();
    assert_eq!(images.len(), 1);
    assert_eq!(j["image_id"], images[0].image_id().unwrap());
    assert!(proxy.ops("DeregisterImage").is_empty());
    assert!(proxy.ops("DeleteSnapshot").is_empty());
}

/// The AMI name is taken by another image: `kiln register` says which, before registering
/// anything, and the snapshot stays. `kiln publish` says so before uploading anything.
#[test]
fn a_taken_name_is_reported_before_anything_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    let proxy = Proxy::start(&moto, &d.join("cap.jsonl"), &[]);
    let (recipe, snap) = setup(&proxy, d);
    let ec2 = common::moto::Ec2::new(&moto, "us-east-1");
    let name = "web-3.1-arm64-20231114";
    let out = ec2
        .block_on(ec2.client.register_image().name(name).send())
        .unwrap();
    let holder = out.image_id().unwrap().to_string();
    let o = proxy
        .kiln()
        .args(["register", &snap, "--recipe"])
        .arg(&recipe)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "the AMI name \"{name}\" is taken in us-east-1 by {holder} (not made by kiln, available)"
        )),
        "{err}"
    );
    assert!(proxy.ops("RegisterImage").is_empty());
    assert!(proxy.ops("DeleteSnapshot").is_empty());
    assert_eq!(snapshot_state(&moto, &snap).as_deref(), Some("completed"));

    // publish: refused before a single block is sent.
    std::fs::write(
        d.join("web.toml"),
        common::moto::web_recipe("1.0.0", &["us-east-1"], ""),
    )
    .unwrap();
    ec2.block_on(ec2.client.register_image().name("web-1.0.0-x86_64").send())
        .unwrap();
    let starts = proxy.ops("StartSnapshot").len();
    let o = proxy.publish(d, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the AMI name \"web-1.0.0-x86_64\" is taken in us-east-1 by ami-"),
        "{err}"
    );
    assert_eq!(proxy.ops("StartSnapshot").len(), starts);
}

/// `kiln register` of the same snapshot again answers with the image it made the first time.
#[test]
fn registering_a_snapshot_again_finds_its_image() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(&moto, &dir.path().join("cap.jsonl"), &[]);
    let (recipe, snap) = setup(&proxy, dir.path());
    let register = || {
        ok(&proxy
            .kiln()
            .args(["register", &snap, "--recipe"])
            .arg(&recipe)
            .output()
            .unwrap())
    };
    let first = register();
    let again = register();
    assert_eq!(first, again);
    assert_eq!(proxy.ops("RegisterImage").len(), 1);
}
