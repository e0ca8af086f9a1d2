//! Every run makes its own snapshot and copies, never an earlier run's: ClientTokens are random
//! per run, earlier work is found by its tags, and StartSnapshot's answer must be a new pending
//! snapshot. The proxy replays ClientTokens as AWS documents (the same token and parameters get
//! the original answer, even once that snapshot is completed or deleted) and refuses blocks for
//! a snapshot that is no longer pending; moto itself ignores tokens and accepts such blocks.

// The SDK's own error types are large; the closures only pass them on to assertions.
#![allow(clippy::result_large_err)]

mod common;

use common::moto::{assert_run_token, snapshot_state, Ec2, Moto, Proxy};
use common::ok;
use serde_json::Value;
use std::path::Path;

/// `web.toml` in `d`, published to `regions` with `extra` in its `[ami]` table; and moto.
fn web(d: &Path, regions: &[&str], extra: &str) -> Moto {
    std::fs::write(
        d.join("web.toml"),
        common::moto::web_recipe("1.0.0", regions, extra),
    )
    .unwrap();
    Moto::start()
}

/// [`web`] published to us-east-1 and copied to eu-west-1, where sharing with an account can
/// be made to fail; and a client for eu-west-1.
fn two_regions(d: &Path) -> (Moto, Ec2) {
    let moto = web(
        d,
        &["us-east-1", "eu-west-1"],
        "share_accounts = [\"111122223333\"]",
    );
    let west = Ec2::new(&moto, "eu-west-1");
    (moto, west)
}

fn tokens(proxy: &Proxy) -> Vec<String> {
    proxy
        .ops("StartSnapshot")
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            body["ClientToken"].as_str().unwrap().to_string()
        })
        .collect()
}

/// `kiln upload` of an image, again, then `kiln publish` of the recipe that makes it: three
/// snapshots, three tokens, and the first two uploads' snapshots untouched by the third.
#[test]
fn upload_twice_then_publish_the_same_image() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = web(d, &["us-east-1"], "");
    let proxy = Proxy::start(&moto, &d.join("cap.jsonl"), &[]);
    ok(&proxy
        .kiln()
        .current_dir(d)
        .args(["build", "web.toml", "-o", "web.raw"])
        .output()
        .unwrap());
    let sha = common::sha256_file(&d.join("web.raw"));
    let first = ok(&proxy
        .kiln()
        .arg("upload")
        .arg(d.join("web.raw"))
        .output()
        .unwrap());
    let second = ok(&proxy
        .kiln()
        .arg("upload")
        .arg(d.join("web.raw"))
        .output()
        .unwrap());
    let (first, second) = (first.trim().to_string(), second.trim().to_string());
    assert_ne!(first, second);
    let out = ok(&proxy.publish(d, &["--json"]));
    let j: Value = serde_json::from_str(out.trim()).unwrap();
    let published = j["images"][0]["snapshot_id"].as_str().unwrap();
    assert!(published != first && published != second, "{j}");
    let blocks =
        common::moto::block_map(&std::fs::read(d.join("web.raw")).unwrap())["sha256"].clone();
    assert_eq!(j["blocks_sha256"], blocks);
    assert!(j.get("image_sha256").is_none(), "{j}");

    let t = tokens(&proxy);
    assert_eq!(t.len(), 3, "{t:?}");
    for x in &t {
        assert_run_token(&Value::from(x.as_str()), &sha);
    }
    assert!(t[0] != t[1] && t[1] != t[2] && t[0] != t[2], "{t:?}");
    // No answer was a replay, nothing was deleted, and every snapshot is complete.
    assert!(proxy.requests().iter().all(|r| r["fault"].is_null()));
    assert!(proxy.ops("DeleteSnapshot").is_empty());
    for s in [first.as_str(), second.as_str(), published] {
        assert_eq!(
            snapshot_state(&moto, s).as_deref(),
            Some("completed"),
            "{s}"
        );
    }
}

/// A publish whose registration failed deleted the snapshot it uploaded; publishing again makes
/// a new snapshot (an earlier run's token would be answered with the deleted one).
#[test]
fn a_publish_retried_after_a_failed_registration() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = web(d, &["us-east-1"], "");
    let failing = Proxy::start(
        &moto,
        &d.join("cap1.jsonl"),
        &["--fail-op", "RegisterImage"],
    );
    let o = failing.publish(d, &["--json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let gone = common::moto::one_deleted_snapshot(&failing, &moto, &err);
    drop(failing);

    let proxy = Proxy::start(&moto, &d.join("cap2.jsonl"), &[]);
    let out = ok(&proxy.publish(d, &["--json"]));
    let j: Value = serde_json::from_str(out.trim()).unwrap();
    let snap = j["images"][0]["snapshot_id"].as_str().unwrap();
    assert_ne!(snap, gone);
    assert_eq!(snapshot_state(&moto, snap).as_deref(), Some("completed"));
    assert_eq!(Ec2::new(&moto, "us-east-1").kiln_images().len(), 1);
    assert!(proxy.requests().iter().all(|r| r["fault"].is_null()));
}

/// `build --upload` twice from the same recipe text, with a `[[tree]]` source changed in
/// between: two disks, two snapshots, the first left as it was.
#[test]
fn build_upload_after_a_tree_source_changed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("site")).unwrap();
    std::fs::write(d.join("site/index.html"), "one\n").unwrap();
    let recipe = common::recipe::image("site", "1.0.0", "64MiB")
        + common::recipe::ROOT
        + "[[tree]]\nsource = \"site\"\ndest = \"/srv/www\"\n";
    std::fs::write(d.join("site.toml"), recipe).unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(&moto, &d.join("cap.jsonl"), &[]);
    let build = |out: &str| -> (String, String) {
        let o = ok(&proxy
            .kiln()
            .current_dir(d)
            .args(["build", "site.toml", "--upload", "--json", "-o", out])
            .output()
            .unwrap());
        let j: Value = serde_json::from_str(o.trim()).unwrap();
        let m: Value = serde_json::from_str(
            &std::fs::read_to_string(d.join(out).with_extension("manifest.json")).unwrap(),
        )
        .unwrap();
        // No whole-disk hash unless asked for: the blocks digest names the disk.
        assert!(m["image"].get("sha256").is_none(), "{m}");
        assert_eq!(j["blocks_sha256"], m["image"]["blocks"]["sha256"]);
        (
            j["snapshot_id"].as_str().unwrap().to_string(),
            m["image"]["blocks"]["sha256"].as_str().unwrap().to_string(),
        )
    };
    let (first, sha1) = build("one.raw");
    std::fs::write(d.join("site/index.html"), "two\n").unwrap();
    let (second, sha2) = build("two.raw");
    assert_ne!(sha1, sha2, "the tree changed, so the disk did");
    assert_ne!(first, second);
    assert!(proxy.ops("DeleteSnapshot").is_empty());
    let ec2 = Ec2::new(&moto, "us-east-1");
    for (s, sha) in [(&first, &sha1), (&second, &sha2)] {
        assert_eq!(snapshot_state(&moto, s).as_deref(), Some("completed"));
        let tags = ec2.snapshot_tags(s).unwrap();
        assert!(
            tags.contains(&("kiln:image-blocks-sha256".into(), sha.clone())),
            "{tags:?}"
        );
        assert!(!tags.iter().any(|(k, _)| k == "kiln:image-sha256"));
    }
    let t = tokens(&proxy);
    assert_eq!(t.len(), 2);
    assert_ne!(t[0], t[1]);
}

/// If StartSnapshot ever answers with a snapshot this run did not start (as a reused token
/// would: here the proxy answers every StartSnapshot with the first one's answer), kiln writes
/// nothing into it and deletes nothing.
#[test]
fn a_snapshot_this_run_did_not_start_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto,
        &dir.path().join("cap.jsonl"),
        &["--replay-first-start"],
    );
    let img = dir.path().join("disk.raw");
    common::moto::make_image(&img, 4 << 20, &[(0, 1 << 20)], 3);
    let first = ok(&proxy.kiln().arg("upload").arg(&img).output().unwrap());
    let first = first.trim();
    let puts = proxy.ops("PutSnapshotBlock").len();
    let o = proxy.kiln().arg("upload").arg(&img).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "StartSnapshot answered with snapshot {first}, but it is completed, not a new pending \
             snapshot: it is not this run's, so kiln left it as it is"
        )),
        "{err}"
    );
    assert_eq!(
        proxy.ops("PutSnapshotBlock").len(),
        puts,
        "no block was sent"
    );
    assert!(proxy.ops("DeleteSnapshot").is_empty());
    assert_eq!(snapshot_state(&moto, first).as_deref(), Some("completed"));
}

/// StartSnapshot reaches AWS but its answer is lost, and the retry fails outright: the snapshot
/// the first attempt made is this run's, and is deleted. kiln learns its id by sending the
/// same request again with the same ClientToken (AWS answers with the original snapshot): the
/// way the Ctrl-C cleanup finds a snapshot whose StartSnapshot had not answered yet.
#[test]
fn a_start_whose_answer_was_lost_is_found_by_its_token_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let before = Ec2::new(&moto, "us-east-1").snapshot_ids();
    let proxy = Proxy::start(
        &moto,
        &dir.path().join("cap.jsonl"),
        &[
            "--lost-answer",
            "StartSnapshot:1",
            "--fail-op",
            "StartSnapshot:1:1",
        ],
    );
    let img = dir.path().join("disk.raw");
    common::moto::make_image(&img, 4 << 20, &[(0, 4096)], 3);
    let o = proxy.kiln().arg("upload").arg(&img).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let starts = proxy.ops("StartSnapshot");
    let faults: Vec<&Value> = starts.iter().map(|r| &r["fault"]).collect();
    assert_eq!(faults, ["lost-answer", "fail", "replayed"], "{err}");
    let t = tokens(&proxy);
    assert!(t[0] == t[1] && t[1] == t[2], "one call, one token: {t:?}");
    let deleted = common::moto::one_deleted_snapshot(&proxy, &moto, &err);
    assert!(
        err.contains(&format!("deleted snapshot {deleted} in us-east-1")),
        "{err}"
    );
    assert_eq!(Ec2::new(&moto, "us-east-1").snapshot_ids(), before);
}

/// The proxy itself keeps AWS's rule for ClientTokens, which moto ignores: the same token with
/// the same parameters gets the original answer (the same snapshot, the same copy), with other
/// parameters an error.
#[test]
fn the_proxy_replays_tokens_as_aws_does() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(&moto, &dir.path().join("cap.jsonl"), &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let creds = aws_sdk_ebs::config::Credentials::new("testing", "testing", None, None, "test");
    let http = aws_smithy_http_client::Builder::new().build_http();
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let ebs = aws_sdk_ebs::Client::from_conf(
        aws_sdk_ebs::Config::builder()
            .behavior_version(aws_sdk_ebs::config::BehaviorVersion::latest())
            .region(aws_sdk_ebs::config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .http_client(http.clone())
            .credentials_provider(creds.clone())
            .build(),
    );
    // The SDK's own error type, as the SDK returns it.
    #[allow(clippy::result_large_err)]
    let start = |size: i64| {
        rt.block_on(
            ebs.start_snapshot()
                .volume_size(size)
                .client_token("kiln-test-token")
                .send(),
        )
        .map_err(Box::new)
    };
    let first = start(1).unwrap().snapshot_id.unwrap();
    assert_eq!(start(1).unwrap().snapshot_id.unwrap(), first);
    let other = start(2).unwrap_err();
    assert_eq!(
        aws_sdk_ebs::error::ProvideErrorMetadata::code(&*other),
        Some("ConflictException")
    );
    let ec2 = aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new("eu-west-1"))
            .endpoint_url(&endpoint)
            .http_client(http)
            .credentials_provider(creds)
            .build(),
    );
    let source = Ec2::new(&moto, "us-east-1");
    let image = source
        .block_on(source.client.register_image().name("src").send())
        .unwrap()
        .image_id
        .unwrap();
    // The SDK's own error type, as the SDK returns it.
    #[allow(clippy::result_large_err)]
    let copy = |name: &str| {
        rt.block_on(
            ec2.copy_image()
                .source_image_id(&image)
                .source_region("us-east-1")
                .name(name)
                .client_token("kiln-copy-token")
                .send(),
        )
        .map_err(Box::new)
    };
    let a = copy("one").unwrap().image_id.unwrap();
    assert_eq!(copy("one").unwrap().image_id.unwrap(), a);
    let other = copy("two").unwrap_err();
    assert_eq!(
        aws_sdk_ec2::error::ProvideErrorMetadata::code(&*other),
        Some("IdempotentParameterMismatch")
    );
    let copies = proxy.ops("CopyImage");
    assert_eq!(copies.len(), 3);
    assert_eq!(copies[1]["fault"], "replayed");
}

/// The ClientToken of each CopyImage a publish sent, in order.
fn copy_tokens(proxy: &Proxy) -> Vec<String> {
    proxy
        .ops("CopyImage")
        .iter()
        .map(|r| r["params"]["ClientToken"].as_str().unwrap().to_string())
        .collect()
}

/// A publish whose copy into one region was made and then failed (sharing it failed) removes
/// that copy; publishing again fills the region with a new copy. CopyImage's token is this run's
/// own: with a token derived from the image, the region and the name, AWS (and the proxy, which
/// replays tokens as AWS does) would answer the second CopyImage with the copy the first run
/// deregistered.
#[test]
fn a_region_refilled_after_its_copy_was_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (moto, west) = two_regions(d);
    let failing = Proxy::start(
        &moto,
        &d.join("cap1.jsonl"),
        &["--fail-region", "eu-west-1:ModifyImageAttribute"],
    );
    let o = failing.publish(d, &["--json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let made: Vec<Value> = failing
        .ops("CopyImage")
        .into_iter()
        .filter(|c| c["status"] == 200)
        .collect();
    assert_eq!(made.len(), 1, "the copy was made: {err}");
    let dereg = failing.ops("DeregisterImage");
    assert_eq!(dereg.len(), 1, "{err}");
    assert_eq!(dereg[0]["region"], "eu-west-1");
    let gone = dereg[0]["params"]["ImageId"].as_str().unwrap().to_string();
    assert!(west.kiln_images().is_empty(), "{err}");
    let first_token = copy_tokens(&failing);
    drop(failing);

    let proxy = Proxy::start(&moto, &d.join("cap2.jsonl"), &[]);
    let out = ok(&proxy.publish(d, &["--json"]));
    let j: Value = serde_json::from_str(out.trim()).unwrap();
    let refilled = j["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["region"] == "eu-west-1")
        .unwrap_or_else(|| panic!("{j}"))["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(refilled, gone);
    let copies = proxy.ops("CopyImage");
    assert_eq!(copies.len(), 1);
    assert!(copies[0]["fault"].is_null(), "{:?}", copies[0]["fault"]);
    let second_token = copy_tokens(&proxy);
    assert_ne!(first_token, second_token);
    let sha = common::sha256_file(&d.join("web.raw"));
    for t in first_token.iter().chain(&second_token) {
        assert_run_token(&Value::from(t.as_str()), &sha);
    }
    let images = west.kiln_images();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].image_id(), Some(refilled.as_str()));
    assert!(
        proxy.ops("StartSnapshot").is_empty(),
        "the source is reused"
    );
}

/// CopyImage's answer is checked before the image counts as this run's copy, as
/// StartSnapshot's is: a proxy answering CopyImage with an image that existed before the run
/// (as a reused ClientToken is answered) makes the publish fail naming it, and that image is
/// neither tagged, shared nor deregistered. Without the check kiln tagged it as its copy and,
/// when sharing then failed, deregistered it. Real copies through the proxy are `pending` in
/// their first DescribeImages, as AWS's are, and pass (the other publish tests).
#[test]
fn a_copy_answer_naming_an_older_image_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (moto, west) = two_regions(d);
    let foreign = west
        .block_on(west.client.register_image().name("someone-elses").send())
        .unwrap()
        .image_id
        .unwrap();
    let proxy = Proxy::start(
        &moto,
        &d.join("cap.jsonl"),
        &[
            "--copy-answer",
            &foreign,
            "--fail-region",
            "eu-west-1:ModifyImageAttribute",
        ],
    );
    let o = proxy.publish(d, &["--json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "the answer names {foreign}, which is available, not a new pending copy"
        )) && err.contains("not a copy this run made"),
        "{err}"
    );
    assert_eq!(proxy.ops("CopyImage")[0]["fault"], "replayed");
    let touched: Vec<Value> = proxy
        .requests()
        .into_iter()
        .filter(|r| common::moto::is_mutating(r["op"].as_str().unwrap_or("")))
        .filter(|r| r["params"].to_string().contains(&foreign))
        .collect();
    assert!(touched.is_empty(), "{touched:?}");
    let still = west
        .block_on(west.client.describe_images().image_ids(&foreign).send())
        .unwrap();
    let image = &still.images()[0];
    assert_eq!(image.state().map(|s| s.as_str()), Some("available"));
    assert!(image.tags().is_empty(), "{:?}", image.tags());
}
