//! A stand-in for the EC2 Instance Metadata Service, served by kiln to the machine `kiln test`
//! boots, at 169.254.169.254 (QEMU's user network forwards each guest connection to
//! [`relay`], which joins it to [`Server`] on a Unix socket in the run's private directory).
//!
//! It answers as EC2 does (the Instance Metadata Service documentation, "Use IMDSv2" and
//! "Instance metadata categories"): IMDSv2 session tokens from `PUT /latest/api/token`, the
//! `meta-data/` tree that cloud-init's EC2 datasource crawls and amazon-ec2-utils' `ec2-metadata`
//! reads, `dynamic/instance-identity/document`, and `user-data`. Requests without a token are
//! refused with 401 when the AMI requires IMDSv2 (`[ami] imds_support = "v2.0"`), and counted
//! either way.
//!
//! - `tree`: what each path answers (pure).
//! - `http`: one HTTP/1.1 connection: requests in, responses out.
//! - `server`: the listener, tokens and counters; [`relay`], the per-connection bridge.

mod http;
mod server;
mod tree;

pub use server::{relay, Listener, Server, Stats};
pub use tree::VERSIONS;

/// Who the instance is: everything the metadata tree names. Identifiers have EC2's shapes
/// (`i-` + 17 hex digits, `ami-` + 17, a locally administered MAC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub instance_id: String,
    pub image_id: String,
    pub instance_type: String,
    pub region: String,
    pub availability_zone: String,
    pub account_id: String,
    /// As the identity document spells it: `x86_64` or `arm64`.
    pub architecture: String,
    /// The NIC's MAC address, lower case (`0e:…`); cloud-init matches the interface by it.
    pub mac: String,
    /// The address QEMU's DHCP server gives the guest.
    pub local_ipv4: String,
    /// The network the guest sits in, as CIDR.
    pub subnet_cidr: String,
    pub root_device_name: String,
    pub key_name: String,
    /// The OpenSSH public key line served as `public-keys/0/openssh-key`.
    pub public_key: String,
    /// `pendingTime` in the identity document (seconds since 1970, UTC).
    pub launch_time: i64,
}

impl Identity {
    /// An identity whose identifiers derive from `seed` (16 bytes: kiln draws them fresh for
    /// every run, as every EC2 launch is a new instance).
    pub fn new(seed: [u8; 16], arch: crate::recipe::Arch, region: &str, public_key: &str) -> Self {
        let h = crate::util::hex(&seed);
        let mac = format!(
            "0e:{}:{}:{}:{}:{}",
            &h[0..2],
            &h[2..4],
            &h[4..6],
            &h[6..8],
            &h[8..10]
        );
        Identity {
            instance_id: format!("i-0{}", &h[..16]),
            image_id: format!("ami-0{}", &h[16..32]),
            instance_type: match arch {
                crate::recipe::Arch::X86_64 => "t3.micro",
                crate::recipe::Arch::Aarch64 => "t4g.micro",
            }
            .into(),
            region: region.to_string(),
            availability_zone: format!("{region}a"),
            account_id: "123456789012".into(),
            architecture: match arch {
                crate::recipe::Arch::X86_64 => "x86_64",
                crate::recipe::Arch::Aarch64 => "arm64",
            }
            .into(),
            mac,
            local_ipv4: crate::qemu::network::GUEST_IP.into(),
            subnet_cidr: crate::qemu::network::NET_CIDR.into(),
            root_device_name: "/dev/xvda".into(),
            key_name: "kiln".into(),
            public_key: public_key.trim().to_string(),
            launch_time: 0,
        }
    }

    /// EC2's private DNS name: `ip-a-b-c-d.ec2.internal` in us-east-1, else
    /// `ip-a-b-c-d.<region>.compute.internal`.
    pub fn hostname(&self) -> String {
        let ip = self.local_ipv4.replace('.', "-");
        if self.region == "us-east-1" {
            format!("ip-{ip}.ec2.internal")
        } else {
            format!("ip-{ip}.{}.compute.internal", self.region)
        }
    }

    /// The SMBIOS system UUID (and serial) that cloud-init's ds-identify takes for EC2: it must
    /// start with `ec2`, and serial and UUID must be equal (`ec2_identify_platform`).
    pub fn smbios_uuid(&self) -> String {
        let hex = &self.instance_id[2..]; // 17 hex digits
        let mut s = String::from("ec2");
        s.push_str(&hex[..5]);
        s.push('-');
        s.push_str(&hex[5..9]);
        s.push('-');
        s.push_str(&hex[9..13]);
        s.push('-');
        s.push_str(&hex[13..17]);
        s.push('-');
        s.push_str(&self.image_id[4..16]);
        s
    }
}

/// What the server serves and enforces.
#[derive(Debug, Clone)]
pub struct Config {
    pub identity: Identity,
    /// `--user-data FILE`: served as-is at `user-data` (404 without it, as on EC2).
    pub user_data: Option<Vec<u8>>,
    /// IMDSv2 required (`[ami] imds_support = "v2.0"`): a GET without a valid token gets 401.
    pub require_token: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_have_ec2_shapes_and_the_smbios_uuid_starts_with_ec2() {
        let id = Identity::new(
            [0xab; 16],
            crate::recipe::Arch::X86_64,
            "eu-west-1",
            "ssh-ed25519 AAAA x\n",
        );
        assert_eq!(id.instance_id.len(), 19);
        assert!(id.instance_id.starts_with("i-0"));
        assert_eq!(id.image_id.len(), 21);
        assert_eq!(id.mac, "0e:ab:ab:ab:ab:ab");
        assert_eq!(id.public_key, "ssh-ed25519 AAAA x");
        assert_eq!(id.hostname(), "ip-169-254-0-15.eu-west-1.compute.internal");
        let u = id.smbios_uuid();
        assert!(u.starts_with("ec2"), "{u}");
        assert!(uuid::Uuid::parse_str(&u).is_ok(), "{u}");
        assert_eq!(u.len(), 36);
    }
}
