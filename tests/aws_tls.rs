//! The AWS clients speak TLS through rustls over ring (Cargo.toml drops the SDK's aws-lc-rs
//! client): a request reaches an HTTPS endpoint whose certificate chains to a CA the platform
//! trusts (`SSL_CERT_FILE`, as rustls-native-certs reads it), and a self-signed certificate is
//! refused at once, without retries (no retry makes a certificate valid). The server is Python's
//! `ssl` on 127.0.0.1; the certificates come from `openssl`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl {args:?}");
}

/// A CA, and a certificate for 127.0.0.1 signed by it (or self-signed when `self_signed`).
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=kiln test CA",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// An HTTPS server on 127.0.0.1 that answers every request with an EBS-style error and prints
/// each request line; returns it and its port.
fn server(dir: &Path) -> (Child, u16) {
    let script = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get('Content-Length', 0)))
        print('REQUEST', self.command, self.path, flush=True)
        body = b'{"message":"kiln-tls-test: request arrived"}'
        self.send_response(400)
        self.send_header('Content-Type', 'application/json')
        self.send_header('x-amzn-ErrorType', 'ValidationException')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(('127.0.0.1', 0), H)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
c.load_cert_chain('srv.pem', 'srv.key')
s.socket = c.wrap_socket(s.socket, server_side=True)
print('PORT', s.server_address[1], flush=True)
s.serve_forever()
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().strip_prefix("PORT ").unwrap().parse().unwrap();
    (child, port)
}

fn upload(dir: &Path, port: u16, ca: Option<&Path>) -> String {
    let image = dir.join("img.raw");
    std::fs::write(&image, vec![1u8; 4096]).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.args(["upload", image.to_str().unwrap(), "--region", "us-east-1"])
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_ENDPOINT_URL", format!("https://127.0.0.1:{port}"))
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", dir.join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
        .env("AWS_EC2_METADATA_DISABLED", "true");
    match ca {
        Some(ca) => c.env("SSL_CERT_FILE", ca),
        None => c.env("SSL_CERT_FILE", dir.join("empty.pem")),
    };
    let out = c.output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn requests_reach_an_https_endpoint_the_platform_trusts_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    let (mut child, port) = server(dir.path());
    let trusted = upload(dir.path(), port, Some(&dir.path().join("ca.pem")));
    let t0 = std::time::Instant::now();
    let untrusted = upload(dir.path(), port, None);
    let took = t0.elapsed();
    child.kill().ok();
    child.wait().ok();
    assert!(
        trusted.contains("kiln-tls-test: request arrived"),
        "the server's own answer came back over TLS: {trusted}"
    );
    assert!(
        untrusted.contains("invalid peer certificate") && !untrusted.contains("request arrived"),
        "an unknown CA is refused: {untrusted}"
    );
    // A certificate that fails verification fails the same way every time: not retried.
    assert!(
        untrusted.contains("StartSnapshot") && untrusted.contains("(after 1 attempt(s))"),
        "{untrusted}"
    );
    assert!(!untrusted.contains("; retry "), "{untrusted}");
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
}
