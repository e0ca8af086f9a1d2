//! `kiln images` against moto on 127.0.0.1, through the recording proxy: list, share/unshare,
//! deprecate, copy, deregister (and its dry run), and prune after version bumps. Images kiln did
//! not make are never touched.

mod common;

use common::moto::{is_mutating, pairs, Ec2, Moto, Proxy};
use common::ok;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

const ORG: &str = "arn:aws:organizations::111122223333:organization/o-abcdefghij";

/// Publishes `version`; returns (region, image id, snapshot id) per region.
fn publish(
    proxy: &Proxy,
    dir: &Path,
    version: &str,
    regions: &[&str],
) -> Vec<(String, String, String)> {
    std::fs::write(
        dir.join("web.toml"),
        common::moto::web_recipe(version, regions, ""),
    )
    .unwrap();
    let out = ok(&proxy.publish(dir, &["--json"]));
    let j: Value = serde_json::from_str(out.trim()).unwrap();
    j["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let s = |k: &str| i[k].as_str().unwrap().to_string();
            (s("region"), s("image_id"), s("snapshot_id"))
        })
        .collect()
}

fn images(proxy: &Proxy, args: &[&str]) -> Output {
    proxy.kiln().arg("images").args(args).output().unwrap()
}

/// The operations captured from request `from` on.
fn ops_since(proxy: &Proxy, from: usize) -> Vec<String> {
    proxy.requests()[from..]
        .iter()
        .map(|r| r["op"].as_str().unwrap().to_string())
        .collect()
}

fn assert_read_only(ops: &[String]) {
    let changed: Vec<&String> = ops.iter().filter(|o| is_mutating(o)).collect();
    assert!(changed.is_empty(), "a dry run sent {changed:?}");
    assert!(!ops.is_empty());
}

/// Registers an image in moto directly: not kiln's (no kiln digest tag).
fn foreign_image(ec2: &Ec2, name: &str, tags: &[(&str, &str)]) -> String {
    let out = ec2
        .block_on(ec2.client.register_image().name(name).send())
        .unwrap();
    let id = out.image_id().unwrap().to_string();
    if !tags.is_empty() {
        let tags: Vec<_> = tags
            .iter()
            .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build())
            .collect();
        ec2.block_on(
            ec2.client
                .create_tags()
                .resources(&id)
                .set_tags(Some(tags))
                .send(),
        )
        .unwrap();
    }
    id
}

fn image_exists(ec2: &Ec2, id: &str) -> bool {
    let out = ec2.block_on(ec2.client.describe_images().image_ids(id).send());
    out.map(|o| o.images().iter().any(|i| i.image_id() == Some(id)))
        .unwrap_or(false)
}

#[test]
fn prune_keeps_the_newest_version_in_every_region() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let regions = ["us-east-1", "eu-west-1"];
    let moto = Moto::start();
    let proxy = Proxy::start(&moto, &d.join("cap.jsonl"), &[]);
    // Published out of order: 1.10.0 is the newest version though 1.9.0 is the newest image.
    let mut published = std::collections::BTreeMap::new();
    for v in ["1.2.0", "1.10.0", "1.9.0"] {
        published.insert(v, publish(&proxy, d, v, &regions));
    }
    // Each later version is uploaded as a child of an earlier one (publish's --parent auto),
    // sending only the blocks its one changed file (/etc/motd) touched.
    let east_snap = |v: &str| published[v][0].2.clone();
    let starts = proxy.ops("StartSnapshot");
    assert_eq!(starts.len(), 3);
    let parent = |i: usize| {
        let b: Value = serde_json::from_str(starts[i]["body"].as_str().unwrap()).unwrap();
        b["ParentSnapshotId"].as_str().map(str::to_string)
    };
    assert_eq!(parent(0), None);
    assert_eq!(parent(1), Some(east_snap("1.2.0")));
    let p2 = parent(2).unwrap();
    assert!(
        p2 == east_snap("1.2.0") || p2 == east_snap("1.10.0"),
        "{p2}"
    );
    for v in ["1.10.0", "1.9.0"] {
        let sent = proxy
            .ops("PutSnapshotBlock")
            .iter()
            .filter(|p| p["path"].as_str().unwrap().contains(&east_snap(v)))
            .count();
        assert!((1..=8).contains(&sent), "{v} sent {sent} blocks");
    }
    let (east, west) = (Ec2::new(&moto, "us-east-1"), Ec2::new(&moto, "eu-west-1"));
    let not_kiln = foreign_image(&east, "web-0.1.0-x86_64", &[]);
    let half_tagged = foreign_image(
        &east,
        "web-0.2.0-x86_64",
        &[("kiln:name", "web"), ("kiln:version", "0.2.0")],
    );

    let out = ok(&images(
        &proxy,
        &[
            "list",
            "--name",
            "web",
            "--json",
            "--region",
            "us-east-1",
            "--region",
            "eu-west-1",
        ],
    ));
    let list: Vec<Value> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(list.len(), 6, "{out}");
    for (v, per_region) in &published {
        for (region, image, snap) in per_region {
            let e = list
                .iter()
                .find(|e| e["image_id"] == image.as_str())
                .unwrap_or_else(|| panic!("{image} not listed: {out}"));
            assert_eq!(e["region"], region.as_str());
            assert_eq!(e["version"], *v);
            assert_eq!(e["name"], "web");
            assert_eq!(e["ami_name"], format!("web-{v}-x86_64"));
            assert_eq!(e["state"], "available");
            assert_eq!(e["snapshot_ids"][0], snap.as_str());
            assert_eq!(e["shared_with"]["public"], false);
        }
    }
    assert!(!out.contains(&not_kiln) && !out.contains(&half_tagged));
    let table = ok(&images(&proxy, &["list", "--name", "web"]));
    assert!(table.starts_with("REGION"), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");

    // Dry run: says what it would do, sends nothing that changes anything.
    let from = proxy.requests().len();
    let args = [
        "prune",
        "--name",
        "web",
        "--keep",
        "1",
        "--region",
        "us-east-1",
        "--region",
        "eu-west-1",
    ];
    let plan = ok(&images(&proxy, &[&args[..], &["--dry-run"]].concat()));
    assert_read_only(&ops_since(&proxy, from));
    assert_eq!(plan.matches("would deregister").count(), 4, "{plan}");
    assert_eq!(plan.matches("would delete snapshot").count(), 4, "{plan}");
    assert_eq!(east.kiln_images().len(), 3);
    assert_eq!(west.kiln_images().len(), 3);

    let done = ok(&images(&proxy, &args));
    assert!(!done.contains("would"), "{done}");
    for (ec2, i) in [(&east, 0), (&west, 1)] {
        let left = ec2.kiln_images();
        assert_eq!(left.len(), 1);
        let newest = &published["1.10.0"][i];
        assert_eq!(left[0].image_id(), Some(newest.1.as_str()));
        assert!(pairs(left[0].tags()).contains(&("kiln:version".into(), "1.10.0".into())));
        assert!(
            ec2.snapshot_tags(&newest.2).is_some(),
            "the kept snapshot stays"
        );
        for v in ["1.2.0", "1.9.0"] {
            let (region, image, snap) = &published[v][i];
            assert!(
                ec2.snapshot_tags(snap).is_none(),
                "{v}'s snapshot {snap} in {region} is gone"
            );
            assert!(
                !image_exists(ec2, image),
                "{v}'s image {image} in {region} is gone"
            );
        }
    }
    // Not kiln's: untouched.
    assert!(image_exists(&east, &not_kiln));
    assert!(image_exists(&east, &half_tagged));
    assert!(proxy
        .ops("DeregisterImage")
        .iter()
        .all(|r| r["params"]["ImageId"] != not_kiln.as_str()
            && r["params"]["ImageId"] != half_tagged.as_str()));
}

#[test]
fn share_deprecate_copy_and_deregister_one_image() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    let proxy = Proxy::start(&moto, &d.join("cap.jsonl"), &[]);
    let (_, image, snap) = publish(&proxy, d, "1.0.0", &["us-east-1"]).remove(0);
    let east = Ec2::new(&moto, "us-east-1");
    let west = Ec2::new(&moto, "eu-west-1");

    // Share with an account and an organization: the account also gets the snapshot.
    ok(&images(
        &proxy,
        &[
            "share",
            &image,
            "--account",
            "111122223333",
            "--organization",
            ORG,
        ],
    ));
    let mut lp = east.launch_permissions(&image);
    lp.sort();
    assert_eq!(
        lp,
        [
            ("org".to_string(), ORG.to_string()),
            ("user".into(), "111122223333".into())
        ]
    );
    assert_eq!(east.volume_permissions(&snap), ["111122223333"]);
    let from = proxy.requests().len();
    let again = ok(&images(
        &proxy,
        &["share", &image, "--account", "111122223333"],
    ));
    assert!(again.contains("nothing to change"), "{again}");
    assert_read_only(&ops_since(&proxy, from));
    ok(&images(
        &proxy,
        &["unshare", &image, "--account", "111122223333"],
    ));
    assert_eq!(
        east.launch_permissions(&image),
        [("org".to_string(), ORG.to_string())]
    );
    assert!(east.volume_permissions(&snap).is_empty());
    let bad = images(&proxy, &["share", &image, "--account", "12345"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--account \"12345\" is malformed"));

    // Deprecation: at a time, in a while, cancelled; EC2's answer shows in `list`.
    ok(&images(
        &proxy,
        &["deprecate", &image, "--at", "2035-01-01T00:00:00Z"],
    ));
    let dep = proxy.ops("EnableImageDeprecation");
    assert_eq!(
        dep.last().unwrap()["params"]["DeprecateAt"],
        "2035-01-01T00:00:00Z"
    );
    assert_eq!(dep.last().unwrap()["params"]["ImageId"], image.as_str());
    let list: Vec<Value> =
        serde_json::from_str(ok(&images(&proxy, &["list", "--json"])).trim()).unwrap();
    assert_eq!(list[0]["deprecation_time"], "2035-01-01T00:00:00.000Z");
    let t0 = now();
    ok(&images(&proxy, &["deprecate", &image, "--in", "90d"]));
    let at = proxy.ops("EnableImageDeprecation").last().unwrap()["params"]["DeprecateAt"]
        .as_str()
        .unwrap()
        .to_string();
    let at = kiln::recipe::parse_utc(&at).unwrap();
    assert!(
        at % 60 == 0 && at > t0 + 90 * 86_400 - 61 && at <= now() + 90 * 86_400,
        "{at}"
    );
    ok(&images(&proxy, &["deprecate", &image, "--cancel"]));
    assert_eq!(proxy.ops("DisableImageDeprecation").len(), 1);
    let list: Vec<Value> =
        serde_json::from_str(ok(&images(&proxy, &["list", "--json"])).trim()).unwrap();
    assert_eq!(list[0]["deprecation_time"], Value::Null);
    let past = images(
        &proxy,
        &["deprecate", &image, "--at", "2001-01-01T00:00:00Z"],
    );
    assert!(String::from_utf8_lossy(&past.stderr).contains("is in the past"));

    // Copy into another region, with the tags; a second copy finds the first.
    let out = ok(&images(&proxy, &["copy", &image, "--to", "eu-west-1"]));
    assert!(
        out.starts_with("eu-west-1  ami-") && out.contains("copied"),
        "{out}"
    );
    let copies = west.kiln_images();
    assert_eq!(copies.len(), 1);
    let copy_id = copies[0].image_id().unwrap().to_string();
    let tags = pairs(copies[0].tags());
    assert!(
        tags.contains(&("kiln:name".into(), "web".into())),
        "{tags:?}"
    );
    assert!(
        tags.iter().any(|(k, _)| k == "kiln:image-blocks-sha256"),
        "{tags:?}"
    );
    let copy_snaps: Vec<String> = copies[0]
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_string))
        .collect();
    assert!(!copy_snaps.is_empty());
    let again = ok(&images(&proxy, &["copy", &image, "--to", "eu-west-1"]));
    assert!(
        again.contains(&copy_id) && again.contains("already there"),
        "{again}"
    );
    assert_eq!(proxy.ops("CopyImage").len(), 1);

    // A foreign image is refused by every command that changes something.
    let foreign = foreign_image(&east, "web-9.9.9-x86_64", &[]);
    for args in [
        vec!["deregister", &foreign],
        vec!["share", &foreign, "--account", "111122223333"],
        vec!["deprecate", &foreign, "--cancel"],
    ] {
        let o = images(&proxy, &args);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("has no kiln tags"), "{err}");
    }
    assert!(image_exists(&east, &foreign));

    // Deregister in both regions: first a dry run that changes nothing, then for real.
    let args = [
        "deregister",
        &image,
        "--region",
        "us-east-1",
        "--region",
        "eu-west-1",
    ];
    let from = proxy.requests().len();
    let plan = ok(&images(&proxy, &[&args[..], &["--dry-run"]].concat()));
    assert_read_only(&ops_since(&proxy, from));
    assert!(
        plan.contains(&format!("would deregister {image} in us-east-1")),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("would deregister {copy_id} in eu-west-1")),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("would delete snapshot {snap} in us-east-1")),
        "{plan}"
    );
    assert_eq!(east.kiln_images().len(), 1);
    assert!(east.snapshot_tags(&snap).is_some());

    ok(&images(&proxy, &args));
    assert!(east.kiln_images().is_empty());
    assert!(west.kiln_images().is_empty());
    assert!(east.snapshot_tags(&snap).is_none());
    for s in &copy_snaps {
        assert!(west.snapshot_tags(s).is_none(), "{s}");
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn share_public_needs_allow_public() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    let proxy = Proxy::start(&moto, &d.join("cap.jsonl"), &[]);
    let (_, image, _) = publish(&proxy, d, "1.0.0", &["us-east-1"]).remove(0);
    let from = proxy.requests().len();
    let o = images(&proxy, &["share", &image, "--public"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(&format!(
            "--public makes {image} launchable by every AWS account; add --allow-public"
        )),
        "{err}"
    );
    assert!(ops_since(&proxy, from).iter().all(|o| !is_mutating(o)));
    let east = Ec2::new(&moto, "us-east-1");
    assert!(east.launch_permissions(&image).is_empty());
    ok(&images(
        &proxy,
        &["share", &image, "--public", "--allow-public"],
    ));
    assert_eq!(
        east.launch_permissions(&image),
        [("group".to_string(), "all".to_string())]
    );
    // Taking it back needs no confirmation.
    ok(&images(&proxy, &["unshare", &image, "--public"]));
    assert!(east.launch_permissions(&image).is_empty());
}

/// A failed image (here the newest version) never counts toward --keep: keeping it would keep
/// nothing anyone can launch. `--keep 0` needs `--all`.
#[test]
fn prune_never_keeps_a_failed_image() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    let proxy = Proxy::start(&moto, &d.join("cap.jsonl"), &[]);
    let old = publish(&proxy, d, "1.0.0", &["us-east-1"]).remove(0);
    let new = publish(&proxy, d, "2.0.0", &["us-east-1"]).remove(0);
    let failing = Proxy::start(
        &moto,
        &d.join("cap2.jsonl"),
        &["--failed-image", "web-2.0.0-x86_64"],
    );
    let out = ok(&images(
        &failing,
        &["prune", "--name", "web", "--keep", "1"],
    ));
    assert!(
        out.contains(&format!("us-east-1: keep {} (web 1.0.0)", old.1)),
        "{out}"
    );
    assert!(
        out.contains(&format!("deregister {} in us-east-1", new.1)),
        "{out}"
    );
    let east = Ec2::new(&moto, "us-east-1");
    let left: Vec<_> = east
        .kiln_images()
        .iter()
        .map(|i| i.image_id().unwrap().to_string())
        .collect();
    assert_eq!(left, std::slice::from_ref(&old.1));

    let from = failing.requests().len();
    let o = images(&failing, &["prune", "--name", "web", "--keep", "0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("--keep 0 deregisters every image of the name"),
        "{err}"
    );
    assert_eq!(failing.requests().len(), from, "nothing was sent");
    ok(&images(
        &failing,
        &["prune", "--name", "web", "--keep", "0", "--all"],
    ));
    assert!(east.kiln_images().is_empty());
}

/// `--recipe FILE` acts in every region of its `[ami] regions`: prune, deprecate, deregister.
/// Without --region or --recipe, prune prunes the default region and names the regions that
/// still hold images of the name.
#[test]
fn recipe_regions_reach_every_copy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let regions = ["us-east-1", "eu-west-1"];
    let moto = Moto::start();
    let proxy = Proxy::start(&moto, &d.join("cap.jsonl"), &[]);
    let v1 = publish(&proxy, d, "1.0.0", &regions);
    let v2 = publish(&proxy, d, "1.1.0", &regions);
    let v3 = publish(&proxy, d, "1.2.0", &regions);
    let (east, west) = (Ec2::new(&moto, "us-east-1"), Ec2::new(&moto, "eu-west-1"));
    let recipe = d.join("web.toml");
    let recipe = recipe.to_str().unwrap();

    // The default region only: eu-west-1 is named, and left alone.
    let o = images(&proxy, &["prune", "--name", "web", "--keep", "2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("pruned us-east-1 only (no --region or --recipe given); web images in eu-west-1 (3) were left as they are"),
        "{err}"
    );
    assert_eq!(east.kiln_images().len(), 2);
    assert_eq!(west.kiln_images().len(), 3);

    // --recipe: both regions.
    ok(&images(
        &proxy,
        &["prune", "--recipe", recipe, "--keep", "2"],
    ));
    assert_eq!(west.kiln_images().len(), 2);
    assert!(!image_exists(&west, &v1[1].1));

    ok(&images(
        &proxy,
        &["deprecate", &v2[0].1, "--recipe", recipe, "--in", "30d"],
    ));
    let dep: Vec<(String, String)> = proxy
        .ops("EnableImageDeprecation")
        .iter()
        .map(|r| {
            (
                r["region"].as_str().unwrap().to_string(),
                r["params"]["ImageId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        dep.contains(&("us-east-1".into(), v2[0].1.clone())),
        "{dep:?}"
    );
    assert!(
        dep.contains(&("eu-west-1".into(), v2[1].1.clone())),
        "{dep:?}"
    );

    ok(&images(
        &proxy,
        &["deregister", &v3[0].1, "--recipe", recipe],
    ));
    assert!(!image_exists(&east, &v3[0].1) && !image_exists(&west, &v3[1].1));
    assert!(west.snapshot_tags(&v3[1].2).is_none());
    assert_eq!(east.kiln_images().len(), 1);
    assert_eq!(west.kiln_images().len(), 1);
}
