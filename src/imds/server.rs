//! The metadata server (a thread per connection, IMDSv2 session tokens, counters) and the relay
//! QEMU runs for each guest connection.

use super::http::{self, Next, Request, Response};
use super::tree::{self, Node};
use super::Config;
use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// "IMDSv2": the token's TTL header must be between 1 second and 6 hours.
const MAX_TTL: u64 = 21_600;
/// A connection idle this long is closed (the guest's HTTP clients reconnect).
const IDLE: Duration = Duration::from_secs(60);

/// What the guest asked for, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Every request, token requests included.
    pub requests: u64,
    /// `PUT /latest/api/token` answered with a token.
    pub tokens_issued: u64,
    /// GET/HEAD requests without an `X-aws-ec2-metadata-token` header (IMDSv1 style).
    pub tokenless: u64,
    /// Requests refused with 401: no token while IMDSv2 is required, or an unknown or expired
    /// token.
    pub refused: u64,
}

/// Where the server listens: a Unix socket (what `kiln test` uses, in its private directory),
/// or TCP (tests, with an ordinary HTTP client on 127.0.0.1).
pub enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl Listener {
    pub fn unix(path: &Path) -> io::Result<Listener> {
        Ok(Listener::Unix(
            UnixListener::bind(path)?,
            path.to_path_buf(),
        ))
    }

    pub fn tcp_localhost() -> io::Result<Listener> {
        Ok(Listener::Tcp(TcpListener::bind(("127.0.0.1", 0))?))
    }
}

trait Stream: Read + Write + Send {
    fn set_idle(&self, d: Duration) -> io::Result<()>;
}
impl Stream for UnixStream {
    fn set_idle(&self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))
    }
}
impl Stream for TcpStream {
    fn set_idle(&self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))
    }
}

struct Shared {
    config: Config,
    tokens: Mutex<HashMap<String, Instant>>,
    stats: Mutex<Stats>,
}

/// The running server; stopped (listener closed, socket file removed) on drop.
pub struct Server {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    addr: Addr,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum Addr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl Server {
    pub fn start(config: Config, listener: Listener) -> io::Result<Server> {
        let shared = Arc::new(Shared {
            config,
            tokens: Mutex::new(HashMap::new()),
            stats: Mutex::new(Stats::default()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let addr = match &listener {
            Listener::Unix(_, p) => Addr::Unix(p.clone()),
            Listener::Tcp(l) => Addr::Tcp(l.local_addr()?),
        };
        let (sh, st) = (Arc::clone(&shared), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("imds".into())
            .spawn(move || accept_loop(listener, sh, st))?;
        Ok(Server {
            shared,
            stop,
            addr,
            thread: Some(thread),
        })
    }

    /// The TCP address (for a TCP listener).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self.addr {
            Addr::Tcp(a) => Some(a),
            Addr::Unix(_) => None,
        }
    }

    pub fn stats(&self) -> Stats {
        *self.shared.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Addr::Unix(p) = &self.addr {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// How often the accept loop looks at the stop flag.
const POLL_MS: i32 = 100;

/// Waits up to [`POLL_MS`] for a connection on `fd`.
fn readable(fd: std::os::fd::RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut p, 1, POLL_MS) > 0 }
}

fn accept_loop(listener: Listener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    use std::os::fd::AsRawFd;
    let fd = match &listener {
        Listener::Unix(l, _) => l.as_raw_fd(),
        Listener::Tcp(l) => l.as_raw_fd(),
    };
    loop {
        // Polled, not woken by a connection of our own: the socket file may be gone (its
        // directory removed under us) and stopping must not depend on reaching it.
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if !readable(fd) {
            continue;
        }
        let conn: io::Result<Box<dyn Stream>> = match &listener {
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Box::new(s) as Box<dyn Stream>),
            Listener::Tcp(l) => l.accept().map(|(s, _)| Box::new(s) as Box<dyn Stream>),
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else {
            // EMFILE and the like: don't spin.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let sh = Arc::clone(&shared);
        let _ = std::thread::Builder::new()
            .name("imds-conn".into())
            .spawn(move || {
                let _ = serve(conn, &sh);
            });
    }
}

fn serve(conn: Box<dyn Stream>, shared: &Shared) -> io::Result<()> {
    conn.set_idle(IDLE)?;
    let mut r = BufReader::new(conn);
    loop {
        let (resp, keep, head) = match http::read_request(&mut r)? {
            Next::Closed => return Ok(()),
            Next::Bad(status) => (Response::new(status, ""), false, false),
            Next::Request(req) => {
                let resp = answer(shared, &req);
                (resp, req.keep_alive, req.method == "HEAD")
            }
        };
        http::write_response(r.get_mut(), &resp, head, keep)?;
        if !keep {
            return Ok(());
        }
    }
}

fn answer(shared: &Shared, req: &Request) -> Response {
    let mut stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
    stats.requests += 1;
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    if segs == ["latest", "api", "token"] {
        if req.method != "PUT" {
            return Response::new(405, "");
        }
        // EC2 refuses token requests that went through a proxy.
        if req.header("x-forwarded-for").is_some() {
            return Response::new(403, "");
        }
        let ttl = req
            .header("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|t| (1..=MAX_TTL).contains(t));
        let Some(ttl) = ttl else {
            return Response::new(400, "");
        };
        let token = new_token();
        shared
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
        stats.tokens_issued += 1;
        let mut resp = Response::new(200, token);
        resp.headers
            .push(("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", ttl.to_string()));
        return resp;
    }
    if req.method != "GET" && req.method != "HEAD" {
        return Response::new(405, "");
    }
    match req.header("x-aws-ec2-metadata-token") {
        Some(t) => {
            let valid = shared
                .tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(t)
                .is_some_and(|exp| Instant::now() < *exp);
            if !valid {
                stats.refused += 1;
                return Response::new(401, "");
            }
        }
        None => {
            stats.tokenless += 1;
            if shared.config.require_token {
                stats.refused += 1;
                return Response::new(401, "");
            }
        }
    }
    drop(stats);
    let cfg = &shared.config;
    match tree::lookup(&cfg.identity, cfg.user_data.as_deref(), &segs) {
        Some(Node::Dir(entries)) => Response::new(200, entries.join("\n")),
        Some(Node::Leaf(bytes)) => Response::new(200, bytes),
        None => Response::new(404, ""),
    }
}

/// 40 random bytes, URL-safe base64 (EC2's tokens are opaque strings of about this length).
fn new_token() -> String {
    use base64::Engine;
    let mut b = [0u8; 40];
    if getrandom::fill(&mut b).is_err() {
        // No entropy source: a token that is still unique within this process.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        b[..8].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The bridge QEMU starts for each guest connection to 169.254.169.254:80 (user networking's
/// `guestfwd=…-cmd:`, which hands the connection over as stdin and stdout): joins it to the
/// server's Unix socket and returns when either side is done.
pub fn relay(socket: &Path) -> io::Result<()> {
    let up = UnixStream::connect(socket)?;
    let mut down = up.try_clone()?;
    let writer = up.try_clone()?;
    std::thread::spawn(move || {
        let mut w = writer;
        let _ = io::copy(&mut io::stdin().lock(), &mut w);
        // The guest finished sending: let the server see the end of its requests.
        let _ = w.shutdown(std::net::Shutdown::Write);
    });
    let mut out = io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match down.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
    drop(up);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Identity;
    use super::*;

    fn server(require_token: bool) -> Server {
        let config = Config {
            identity: Identity::new(
                [7; 16],
                crate::recipe::Arch::X86_64,
                "us-east-1",
                "ssh-ed25519 AAAAC3 kiln",
            ),
            user_data: Some(b"#!/bin/sh\necho hi\n".to_vec()),
            require_token,
        };
        Server::start(config, Listener::tcp_localhost().unwrap()).unwrap()
    }

    fn url(s: &Server, path: &str) -> String {
        format!("http://{}{path}", s.tcp_addr().unwrap())
    }

    fn status(r: Result<ureq::Response, ureq::Error>) -> (u16, String) {
        match r {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
            Err(e) => panic!("{e}"),
        }
    }

    fn token(s: &Server, ttl: &str) -> (u16, String) {
        status(
            ureq::put(&url(s, "/latest/api/token"))
                .set("X-aws-ec2-metadata-token-ttl-seconds", ttl)
                .call(),
        )
    }

    #[test]
    fn imdsv2_required_refuses_and_counts_tokenless_requests() {
        let s = server(true);
        let (code, _) = status(ureq::get(&url(&s, "/latest/meta-data/instance-id")).call());
        assert_eq!(code, 401);
        let (code, tok) = token(&s, "21600");
        assert_eq!(code, 200);
        assert!(tok.len() >= 40, "{tok}");
        let (code, id) = status(
            ureq::get(&url(&s, "/latest/meta-data/instance-id"))
                .set("X-aws-ec2-metadata-token", &tok)
                .call(),
        );
        assert_eq!((code, id.starts_with("i-0")), (200, true));
        let (code, _) = status(
            ureq::get(&url(&s, "/latest/meta-data/instance-id"))
                .set("X-aws-ec2-metadata-token", "forged")
                .call(),
        );
        assert_eq!(code, 401);
        let (code, ud) = status(
            ureq::get(&url(&s, "/latest/user-data"))
                .set("X-aws-ec2-metadata-token", &tok)
                .call(),
        );
        assert_eq!((code, ud.as_str()), (200, "#!/bin/sh\necho hi\n"));
        assert_eq!(
            s.stats(),
            Stats {
                requests: 5,
                tokens_issued: 1,
                tokenless: 1,
                refused: 2,
            }
        );
    }

    #[test]
    fn imdsv1_allowed_still_counts_tokenless_requests() {
        let s = server(false);
        let (code, body) = status(ureq::get(&url(&s, "/latest/meta-data/")).call());
        assert_eq!(code, 200);
        assert!(body.lines().any(|l| l == "public-keys/"), "{body}");
        let (code, _) = status(ureq::get(&url(&s, "/latest/meta-data/nope")).call());
        assert_eq!(code, 404);
        assert_eq!(s.stats().tokenless, 2);
        assert_eq!(s.stats().refused, 0);
    }

    #[test]
    fn token_requests_follow_ec2s_rules() {
        let s = server(true);
        assert_eq!(token(&s, "0").0, 400);
        assert_eq!(token(&s, "21601").0, 400);
        assert_eq!(token(&s, "soon").0, 400);
        assert_eq!(
            status(ureq::put(&url(&s, "/latest/api/token")).call()).0,
            400,
            "no TTL header"
        );
        let via_proxy = ureq::put(&url(&s, "/latest/api/token"))
            .set("X-aws-ec2-metadata-token-ttl-seconds", "60")
            .set("X-Forwarded-For", "10.0.0.1")
            .call();
        assert_eq!(status(via_proxy).0, 403);
        assert_eq!(
            status(ureq::get(&url(&s, "/latest/api/token")).call()).0,
            405
        );
        let (code, tok) = token(&s, "1");
        assert_eq!(code, 200);
        std::thread::sleep(Duration::from_millis(1100));
        let expired = ureq::get(&url(&s, "/latest/meta-data/"))
            .set("X-aws-ec2-metadata-token", &tok)
            .call();
        assert_eq!(status(expired).0, 401, "an expired token is refused");
    }

    #[test]
    fn keep_alive_connections_and_the_relay_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("imds.sock");
        let s = Server::start(
            Config {
                identity: Identity::new([3; 16], crate::recipe::Arch::Aarch64, "eu-west-1", "k"),
                user_data: None,
                require_token: false,
            },
            Listener::unix(&sock).unwrap(),
        )
        .unwrap();
        // Two requests on one connection, as a keep-alive client sends them.
        let mut c = UnixStream::connect(&sock).unwrap();
        c.write_all(b"GET /latest/meta-data/placement/region HTTP/1.1\r\n\r\nGET /latest/dynamic/instance-identity/document HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        let mut all = String::new();
        c.read_to_string(&mut all).unwrap();
        assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 2, "{all}");
        assert!(all.contains("\r\n\r\neu-west-1HTTP/1.1"), "{all}");
        assert!(all.contains("\"architecture\": \"arm64\""), "{all}");
        drop(s);
        assert!(
            !sock.exists(),
            "the socket file is removed when the server stops"
        );
    }
}
