//! Reaching a guest TCP port through QEMU's forward, and HTTP on top of it.
//!
//! A connection to a forwarded port on 127.0.0.1 is accepted by QEMU (slirp) at once, whatever the
//! guest does; slirp then opens the connection to the guest, and closes the host side if the
//! guest refuses it. So "the port is open" is read from slirp's own table (`info usernet`): the
//! connection reached `ESTABLISHED`. A refused one is closed under us; one the guest never
//! answers (no network) stays `SYN_SENT`.

use crate::qemu::{network, Vm};
use std::io::Read;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// How long one probe waits for the guest to answer the connection.
const PROBE: Duration = Duration::from_secs(10);

/// What one connection attempt showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The guest accepted the connection.
    Open,
    /// The guest refused it (nothing listens).
    Refused,
    /// The guest did not answer (not up yet, or no network).
    Silent,
    /// No answer yet when the check's time ran out: says nothing either way.
    CutShort,
}

impl Port {
    pub fn describe(self, port: u16) -> String {
        match self {
            Port::Open => format!("port {port} accepts connections"),
            Port::Refused => {
                format!("nothing listens on port {port} in the guest (connection refused)")
            }
            Port::Silent => {
                format!("the guest does not answer connections to port {port} (no network yet?)")
            }
            Port::CutShort => format!(
                "the guest does not answer connections to port {port} (the check's time ran out \
                 while waiting)"
            ),
        }
    }
}

fn established(vm: &mut Vm, host_port: u16) -> std::io::Result<(usize, bool)> {
    let table = vm.usernet()?;
    let states = network::connection_states(&table, host_port);
    Ok((
        states.iter().filter(|s| *s == "ESTABLISHED").count(),
        states.iter().any(|s| s == "SYN_SENT"),
    ))
}

/// Opens a connection to the guest's `guest_port` and says how the guest answered, waiting at
/// most [`PROBE`], and never past `deadline` (then the answer may be [`Port::CutShort`]).
pub fn tcp(vm: &mut Vm, guest_port: u16, deadline: Instant) -> std::io::Result<Port> {
    let Some(hp) = vm.host_port(guest_port) else {
        return Err(std::io::Error::other(format!(
            "guest port {guest_port} is not forwarded"
        )));
    };
    let full = Instant::now() + PROBE;
    let end = deadline.min(full);
    let (before, _) = established(vm, hp)?;
    let s = TcpStream::connect_timeout(&([127, 0, 0, 1], hp).into(), Duration::from_secs(5))?;
    s.set_nonblocking(true)?;
    let result = loop {
        let mut b = [0u8; 1];
        match s.peek(&mut b) {
            Ok(0) => break Port::Refused,
            // A banner (SSH speaks first): the guest accepted.
            Ok(_) => break Port::Open,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break Port::Refused,
        }
        let (now, pending) = established(vm, hp)?;
        if now > before && !pending {
            break Port::Open;
        }
        if Instant::now() >= end {
            break if end < full {
                Port::CutShort
            } else {
                Port::Silent
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = s.shutdown(Shutdown::Both);
    Ok(result)
}

/// One HTTP GET's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    /// The body's first MiB, as text.
    pub body: String,
}

/// GET `path` from the guest's `guest_port`; `Err` carries why no answer came.
pub fn http_get(
    vm: &Vm,
    guest_port: u16,
    path: &str,
    deadline: Instant,
) -> Result<HttpAnswer, String> {
    let hp = vm
        .host_port(guest_port)
        .ok_or_else(|| format!("guest port {guest_port} is not forwarded"))?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_secs(1), Duration::from_secs(60));
    // No redirects followed (the status is what is checked), no pooled connections (they would
    // linger in slirp's table).
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(left)
        .redirects(0)
        .max_idle_connections(0)
        .build();
    let url = format!("http://127.0.0.1:{hp}{path}");
    let resp = match agent.get(&url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => {
            return Err(format!("no HTTP answer from port {guest_port}: {t}"))
        }
    };
    let status = resp.status();
    let mut body = Vec::new();
    let _ = resp.into_reader().take(1 << 20).read_to_end(&mut body);
    Ok(HttpAnswer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
