//! The guest's network (pure): one virtio-net NIC on QEMU's user-mode network, shaped like an EC2
//! subnet as far as slirp allows.
//!
//! - slirp accepts a `guestfwd` address only inside its own network, so the network is
//!   169.254.0.0/16 and the metadata service's 169.254.169.254 lies in it (checked with QEMU 7.2).
//!   The guest gets 169.254.0.15 by DHCP; the DNS server is 169.254.169.253, the Amazon DNS
//!   server's link-local address. No IPv6 (a default EC2 subnet has none).
//! - `guestfwd=tcp:169.254.169.254:80-cmd:…` starts one command per guest connection, with the
//!   connection as its stdin and stdout: kiln's own binary (`kiln imds-relay SOCKET`), which joins
//!   it to kiln's metadata server. (A `guestfwd` to a chardev carries a single connection, and
//!   cloud-init opens dozens.)
//! - Each guest TCP port a check needs is forwarded from `127.0.0.1` port 0: the host kernel
//!   picks a free port when QEMU binds it, so concurrent runs never race for one, and kiln reads
//!   the port back from QEMU (`info usernet`). Nothing listens beyond 127.0.0.1.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub const NET_CIDR: &str = "169.254.0.0/16";
pub const HOST_IP: &str = "169.254.0.1";
pub const GUEST_IP: &str = "169.254.0.15";
pub const DNS_IP: &str = "169.254.169.253";
pub const IMDS_IP: &str = "169.254.169.254";

/// What the NIC is wired to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network<'a> {
    /// Guest TCP ports reachable from the host's 127.0.0.1 (each on a port the kernel picks).
    pub forward: &'a [u16],
    /// The command QEMU starts for each connection to the metadata service: the program and its
    /// arguments (kiln's binary, `imds-relay`, the socket).
    pub imds_relay: Option<(&'a Path, &'a Path)>,
    /// The NIC's MAC address (the one the metadata service names).
    pub mac: &'a str,
}

/// `-netdev …` and `-device …` for the network.
pub fn args(n: &Network) -> Vec<OsString> {
    let mut netdev: Vec<u8> = format!(
        "user,id=net0,net={NET_CIDR},host={HOST_IP},dhcpstart={GUEST_IP},dns={DNS_IP},ipv6=off"
    )
    .into_bytes();
    for port in n.forward {
        netdev.extend_from_slice(format!(",hostfwd=tcp:127.0.0.1:0-:{port}").as_bytes());
    }
    if let Some((program, socket)) = n.imds_relay {
        // QEMU splits the command with g_shell_parse_argv: quote both paths as a shell would.
        let mut cmd = shell_quote(program.as_os_str().as_bytes());
        cmd.extend_from_slice(b" imds-relay ");
        cmd.extend_from_slice(&shell_quote(socket.as_os_str().as_bytes()));
        netdev.extend_from_slice(format!(",guestfwd=tcp:{IMDS_IP}:80-cmd:").as_bytes());
        netdev.extend_from_slice(&double_commas(&cmd));
    }
    vec![
        "-netdev".into(),
        OsString::from(std::ffi::OsStr::from_bytes(&netdev)),
        "-device".into(),
        // romfile=: no iPXE option ROM, so the firmware does not offer network boot (EC2 has
        // none) and QEMU needs no ipxe-qemu package.
        format!("virtio-net-pci,netdev=net0,mac={},romfile=", n.mac).into(),
    ]
}

/// `'…'` with each `'` written as `'\''`.
fn shell_quote(s: &[u8]) -> Vec<u8> {
    let mut out = vec![b'\''];
    for &b in s {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// QEMU's option syntax: a literal comma is written twice.
fn double_commas(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for &b in s {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    out
}

/// The host port of each forwarded guest TCP port, from `info usernet` (HMP), whose rows read
/// `TCP[HOST_FORWARD]  13  127.0.0.1 39979  169.254.0.15  22  0  0`.
pub fn forwarded_ports(usernet: &str) -> Vec<(u16, u16)> {
    usernet
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() >= 6 && f[0] == "TCP[HOST_FORWARD]" {
                Some((f[5].parse().ok()?, f[3].parse().ok()?))
            } else {
                None
            }
        })
        .collect()
}

/// The states of the connections slirp holds for a forwarded host port (not the listener):
/// `SYN_SENT` while the guest has not answered, `ESTABLISHED` once it accepted.
pub fn connection_states(usernet: &str, host_port: u16) -> Vec<String> {
    usernet
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let state = f.first()?.strip_prefix("TCP[")?.strip_suffix(']')?;
            (state != "HOST_FORWARD" && f.get(3)?.parse::<u16>().ok()? == host_port)
                .then(|| state.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_netdev_forwards_ports_and_quotes_the_relay() {
        let a = args(&Network {
            forward: &[22, 80],
            imds_relay: Some((Path::new("/opt/it's,kiln"), Path::new("/tmp/k/imds.sock"))),
            mac: "0e:01:02:03:04:05",
        });
        let s: Vec<String> = a.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        assert_eq!(s[0], "-netdev");
        assert_eq!(
            s[1],
            "user,id=net0,net=169.254.0.0/16,host=169.254.0.1,dhcpstart=169.254.0.15,dns=169.254.169.253,ipv6=off,\
             hostfwd=tcp:127.0.0.1:0-:22,hostfwd=tcp:127.0.0.1:0-:80,\
             guestfwd=tcp:169.254.169.254:80-cmd:'/opt/it'\\''s,,kiln' imds-relay '/tmp/k/imds.sock'"
        );
        assert_eq!(
            s[3],
            "virtio-net-pci,netdev=net0,mac=0e:01:02:03:04:05,romfile="
        );
    }

    #[test]
    fn usernet_rows_give_ports_and_states() {
        let out = "Hub -1 (net0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n  TCP[ESTABLISHED]   20       127.0.0.1 44927    169.254.0.15    80     0     0\r\n  TCP[SYN_SENT]      21       127.0.0.1 44927    169.254.0.15    80     0     0\r\n  TCP[HOST_FORWARD]  14       127.0.0.1 44927    169.254.0.15    80     0     0\r\n  TCP[HOST_FORWARD]  13       127.0.0.1 39979    169.254.0.15    22     0     0\r\n  UDP[236 sec]       15       169.254.0.15    68    169.254.0.1    67     0     0\r\n";
        assert_eq!(forwarded_ports(out), vec![(80, 44927), (22, 39979)]);
        assert_eq!(
            connection_states(out, 44927),
            vec!["ESTABLISHED", "SYN_SENT"]
        );
        assert!(connection_states(out, 39979).is_empty());
    }
}
