//! What each metadata path answers, as EC2's Instance Metadata Service lays it out ("Instance
//! metadata categories"): a directory lists its entries one per line, sub-directories with a
//! trailing `/`; a leaf is its value. `public-keys/` lists `0=<key name>`, the form cloud-init's
//! `MetadataMaterializer` turns into `0/openssh-key`.

use super::Identity;

/// The API versions EC2 answers under (GET `/`); every one serves the same tree here. cloud-init
/// 22.4 probes 2021-03-23, 2018-09-24 and 2016-09-02, then falls back to 2009-04-04.
pub const VERSIONS: &[&str] = &[
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "2011-01-01",
    "2011-05-01",
    "2012-01-12",
    "2014-02-25",
    "2014-11-05",
    "2015-10-20",
    "2016-04-19",
    "2016-06-30",
    "2016-09-02",
    "2018-03-28",
    "2018-08-17",
    "2018-09-24",
    "2019-10-01",
    "2020-10-27",
    "2021-01-03",
    "2021-03-23",
    "2021-07-15",
    "2022-09-24",
    "latest",
];

/// A path's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory: its entries, sub-directories ending in `/`.
    Dir(Vec<String>),
    Leaf(Vec<u8>),
}

/// The answer for `path` (already split on `/`, empty segments removed), or None (404).
pub fn lookup(id: &Identity, user_data: Option<&[u8]>, segs: &[&str]) -> Option<Node> {
    let dir = |v: &[&str]| Some(Node::Dir(v.iter().map(|s| s.to_string()).collect()));
    let leaf = |s: String| Some(Node::Leaf(s.into_bytes()));
    match segs {
        [] => Some(Node::Dir(VERSIONS.iter().map(|v| v.to_string()).collect())),
        [v, rest @ ..] if VERSIONS.contains(v) => match rest {
            [] => {
                let mut e = vec!["dynamic", "meta-data"];
                if user_data.is_some() {
                    e.push("user-data");
                }
                dir(&e)
            }
            ["user-data"] => user_data.map(|u| Node::Leaf(u.to_vec())),
            ["meta-data", rest @ ..] => meta_data(id, rest),
            ["dynamic"] => dir(&["instance-identity/"]),
            ["dynamic", "instance-identity"] => dir(&["document"]),
            ["dynamic", "instance-identity", "document"] => leaf(identity_document(id)),
            _ => None,
        },
        _ => None,
    }
}

fn meta_data(id: &Identity, segs: &[&str]) -> Option<Node> {
    let dir = |v: Vec<String>| Some(Node::Dir(v));
    let leaf = |s: &str| Some(Node::Leaf(s.as_bytes().to_vec()));
    let hostname = id.hostname();
    let root_dev = id.root_device_name.as_str();
    // An instance launched without a key pair has no public-keys/ at all.
    let has_key = !id.public_key.is_empty();
    match segs {
        [] => dir([
            "ami-id",
            "ami-launch-index",
            "ami-manifest-path",
            "block-device-mapping/",
            "hostname",
            "instance-action",
            "instance-id",
            "instance-life-cycle",
            "instance-type",
            "local-hostname",
            "local-ipv4",
            "mac",
            "network/",
            "placement/",
            "profile",
            "public-keys/",
            "reservation-id",
            "security-groups",
            "services/",
        ]
        .into_iter()
        .filter(|e| has_key || *e != "public-keys/")
        .map(String::from)
        .collect()),
        ["ami-id"] => leaf(&id.image_id),
        ["ami-launch-index"] => leaf("0"),
        ["ami-manifest-path"] => leaf("(unknown)"),
        ["block-device-mapping"] => dir(vec!["ami".into(), "root".into()]),
        ["block-device-mapping", "ami"] => leaf(root_dev.trim_start_matches("/dev/")),
        ["block-device-mapping", "root"] => leaf(root_dev),
        ["hostname"] | ["local-hostname"] => leaf(&hostname),
        ["instance-action"] => leaf("none"),
        ["instance-id"] => leaf(&id.instance_id),
        ["instance-life-cycle"] => leaf("on-demand"),
        ["instance-type"] => leaf(&id.instance_type),
        ["local-ipv4"] => leaf(&id.local_ipv4),
        ["mac"] => leaf(&id.mac),
        ["profile"] => leaf("default-hvm"),
        ["reservation-id"] => leaf(&format!("r-0{}", &id.instance_id[3..])),
        ["security-groups"] => leaf("kiln-test"),
        ["services"] => dir(vec!["domain".into(), "partition".into()]),
        ["services", "domain"] => leaf("amazonaws.com"),
        ["services", "partition"] => leaf("aws"),
        ["placement"] => dir(vec![
            "availability-zone".into(),
            "availability-zone-id".into(),
            "region".into(),
        ]),
        ["placement", "availability-zone"] => leaf(&id.availability_zone),
        ["placement", "availability-zone-id"] => leaf(&zone_id(&id.availability_zone)),
        ["placement", "region"] => leaf(&id.region),
        ["public-keys", ..] if !has_key => None,
        ["public-keys"] => dir(vec![format!("0={}", id.key_name)]),
        ["public-keys", "0"] => dir(vec!["openssh-key".into()]),
        ["public-keys", "0", "openssh-key"] => leaf(&format!("{}\n", id.public_key)),
        ["network"] => dir(vec!["interfaces/".into()]),
        ["network", "interfaces"] => dir(vec!["macs/".into()]),
        ["network", "interfaces", "macs"] => dir(vec![format!("{}/", id.mac)]),
        ["network", "interfaces", "macs", mac, rest @ ..] if *mac == id.mac => interface(id, rest),
        _ => None,
    }
}

/// `network/interfaces/macs/<mac>/`: what cloud-init's `convert_ec2_metadata_network_config`
/// reads (device-number, local-ipv4s, subnet-ipv4-cidr-block) and the rest of an ENI's keys.
fn interface(id: &Identity, segs: &[&str]) -> Option<Node> {
    let leaf = |s: &str| Some(Node::Leaf(s.as_bytes().to_vec()));
    let suffix = &id.instance_id[3..];
    match segs {
        [] => Some(Node::Dir(
            [
                "device-number",
                "interface-id",
                "local-hostname",
                "local-ipv4s",
                "mac",
                "owner-id",
                "security-group-ids",
                "security-groups",
                "subnet-id",
                "subnet-ipv4-cidr-block",
                "vpc-id",
                "vpc-ipv4-cidr-block",
                "vpc-ipv4-cidr-blocks",
            ]
            .map(String::from)
            .to_vec(),
        )),
        ["device-number"] => leaf("0"),
        ["interface-id"] => leaf(&format!("eni-0{suffix}")),
        ["local-hostname"] => leaf(&id.hostname()),
        ["local-ipv4s"] => leaf(&id.local_ipv4),
        ["mac"] => leaf(&id.mac),
        ["owner-id"] => leaf(&id.account_id),
        ["security-group-ids"] => leaf(&format!("sg-0{suffix}")),
        ["security-groups"] => leaf("kiln-test"),
        ["subnet-id"] => leaf(&format!("subnet-0{suffix}")),
        ["subnet-ipv4-cidr-block"] | ["vpc-ipv4-cidr-block"] | ["vpc-ipv4-cidr-blocks"] => {
            leaf(&id.subnet_cidr)
        }
        ["vpc-id"] => leaf(&format!("vpc-0{suffix}")),
        _ => None,
    }
}

/// `use1-az1` for `us-east-1a`, `apse2-az1` for `ap-southeast-2a`: EC2's zone ids are per
/// account; a stand-in of the same shape.
fn zone_id(az: &str) -> String {
    let (region, letter) = az.split_at(az.len().saturating_sub(1));
    let parts: Vec<&str> = region.split('-').collect();
    let mut short = parts.first().copied().unwrap_or_default().to_string();
    for p in parts.iter().skip(1) {
        if p.chars().all(|c| c.is_ascii_digit()) {
            short.push_str(p);
            continue;
        }
        let mut rest = *p;
        while !rest.is_empty() {
            let (abbr, len) = [
                ("n", "north"),
                ("s", "south"),
                ("e", "east"),
                ("w", "west"),
                ("c", "central"),
            ]
            .iter()
            .find(|(_, w)| rest.starts_with(*w))
            .map_or((&rest[..1], 1), |(a, w)| (*a, w.len()));
            short.push_str(abbr);
            rest = &rest[len..];
        }
    }
    let n = letter
        .bytes()
        .next()
        .map_or(1, |b| b.saturating_sub(b'a') + 1);
    format!("{short}-az{n}")
}

/// The instance identity document, with the keys and types EC2 documents ("Instance identity
/// documents").
fn identity_document(id: &Identity) -> String {
    let doc = serde_json::json!({
        "accountId": id.account_id,
        "architecture": id.architecture,
        "availabilityZone": id.availability_zone,
        "billingProducts": null,
        "devpayProductCodes": null,
        "marketplaceProductCodes": null,
        "imageId": id.image_id,
        "instanceId": id.instance_id,
        "instanceType": id.instance_type,
        "kernelId": null,
        "pendingTime": crate::recipe::format_utc(id.launch_time),
        "privateIp": id.local_ipv4,
        "ramdiskId": null,
        "region": id.region,
        "version": "2017-09-30",
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity::new(
            [1; 16],
            crate::recipe::Arch::X86_64,
            "us-east-1",
            "ssh-ed25519 AAAAC3 kiln",
        )
    }

    fn get(path: &str, ud: Option<&[u8]>) -> Option<Node> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        lookup(&id(), ud, &segs)
    }

    fn text(n: Option<Node>) -> String {
        match n {
            Some(Node::Leaf(b)) => String::from_utf8(b).unwrap(),
            Some(Node::Dir(v)) => v.join("\n"),
            None => "<404>".into(),
        }
    }

    /// Every entry a directory lists can be fetched, the whole tree down (what cloud-init's
    /// crawler does), under `latest` and under the dated versions cloud-init asks for.
    #[test]
    fn every_listed_entry_resolves() {
        fn walk(path: String, seen: &mut usize) {
            match get(&path, Some(b"#!/bin/sh\n")) {
                Some(Node::Dir(entries)) => {
                    for e in entries {
                        let e = e.split('=').next().unwrap().to_string();
                        walk(format!("{path}/{}", e.trim_end_matches('/')), seen);
                    }
                }
                Some(Node::Leaf(_)) => *seen += 1,
                None => panic!("{path} is listed but answers 404"),
            }
        }
        for v in ["latest", "2021-03-23", "2009-04-04"] {
            let mut n = 0;
            walk(format!("/{v}"), &mut n);
            assert!(n > 30, "{v}: only {n} leaves");
        }
    }

    #[test]
    fn the_values_cloud_init_and_ec2_metadata_read() {
        let i = id();
        assert_eq!(
            text(get("/latest/meta-data/instance-id", None)),
            i.instance_id
        );
        assert_eq!(
            text(get("/2021-03-23/meta-data/public-keys/", None)),
            "0=kiln"
        );
        assert_eq!(
            text(get("/latest/meta-data/public-keys/0/openssh-key", None)),
            "ssh-ed25519 AAAAC3 kiln\n"
        );
        assert_eq!(
            text(get("/latest/meta-data/placement/availability-zone", None)),
            "us-east-1a"
        );
        assert_eq!(
            text(get(
                "/latest/meta-data/placement/availability-zone-id",
                None
            )),
            "use1-az1"
        );
        assert_eq!(zone_id("ap-southeast-2b"), "apse2-az2");
        assert_eq!(zone_id("eu-central-1a"), "euc1-az1");
        assert_eq!(
            text(get(
                &format!(
                    "/latest/meta-data/network/interfaces/macs/{}/local-ipv4s",
                    i.mac
                ),
                None
            )),
            i.local_ipv4
        );
        assert_eq!(
            text(get(
                "/latest/meta-data/network/interfaces/macs/0e:00:00:00:00:00/mac",
                None
            )),
            "<404>"
        );
        let doc: serde_json::Value = serde_json::from_str(&text(get(
            "/latest/dynamic/instance-identity/document",
            None,
        )))
        .unwrap();
        assert_eq!(doc["instanceId"], i.instance_id.as_str());
        assert_eq!(doc["architecture"], "x86_64");
        assert_eq!(doc["pendingTime"], "1970-01-01T00:00:00Z");
        assert_eq!(text(get("/latest/user-data", None)), "<404>");
        assert_eq!(text(get("/latest/user-data", Some(b"hi"))), "hi");
        assert!(!text(get("/latest", None)).contains("user-data"));
        assert_eq!(text(get("/latest/meta-data/nonexistent", None)), "<404>");
        assert_eq!(text(get("/2099-01-01/meta-data/", None)), "<404>");
        assert!(text(get("/", None)).ends_with("2021-03-23\n2021-07-15\n2022-09-24\nlatest"));
    }

    #[test]
    fn without_a_key_pair_there_is_no_public_keys_directory() {
        let mut i = id();
        i.public_key = String::new();
        let segs = |p: &'static str| p.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>();
        assert_eq!(
            lookup(&i, None, &segs("/latest/meta-data/public-keys/")),
            None
        );
        assert!(!text(lookup(&i, None, &segs("/latest/meta-data/"))).contains("public-keys"));
    }
}
