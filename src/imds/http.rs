//! One HTTP/1.1 connection of the metadata service: requests parsed with `httparse` (hyper's own
//! parser, already in kiln's dependency tree), responses with a Content-Length, keep-alive as
//! the client asks (RFC 9112 §9.3: HTTP/1.1 persists unless `Connection: close`).

use std::io::{self, BufRead, BufReader, Read, Write};

/// Headers larger than this end the connection with 431.
const MAX_HEAD: usize = 16 * 1024;
/// A request body (IMDS requests have none) larger than this ends the connection with 413.
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without its query string.
    pub path: String,
    /// Header names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    pub keep_alive: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            body: body.into(),
            headers: Vec::new(),
        }
    }
}

/// What reading the next request gave.
#[derive(Debug)]
pub enum Next {
    Request(Request),
    /// The client closed the connection between requests.
    Closed,
    /// A malformed request: answer with this status, then close.
    Bad(u16),
}

/// Reads one request head (and discards its body) from `r`.
pub fn read_request<R: Read>(r: &mut BufReader<R>) -> io::Result<Next> {
    let mut head = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut head)?;
        if n == 0 {
            return Ok(if head.is_empty() {
                Next::Closed
            } else {
                Next::Bad(400)
            });
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
        // Blank lines before a request line are allowed (RFC 9112 §2.2).
        if head == b"\r\n" || head == b"\n" {
            head.clear();
        }
        if head.len() > MAX_HEAD {
            return Ok(Next::Bad(431));
        }
    }
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => return Ok(Next::Bad(400)),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Ok(Next::Bad(400));
    };
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    if find("transfer-encoding").is_some() {
        return Ok(Next::Bad(501));
    }
    let len: usize = match find("content-length") {
        Some(v) => match v.parse() {
            Ok(n) => n,
            Err(_) => return Ok(Next::Bad(400)),
        },
        None => 0,
    };
    if len > MAX_BODY {
        return Ok(Next::Bad(413));
    }
    io::copy(&mut r.by_ref().take(len as u64), &mut io::sink())?;
    let conn = find("connection").unwrap_or_default().to_ascii_lowercase();
    let keep_alive = if version >= 1 {
        !conn.split(',').any(|t| t.trim() == "close")
    } else {
        conn.split(',').any(|t| t.trim() == "keep-alive")
    };
    let path = target.split(['?', '#']).next().unwrap_or("").to_string();
    Ok(Next::Request(Request {
        method: method.to_string(),
        path,
        headers,
        keep_alive,
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        _ => "Error",
    }
}

/// Writes `resp` (without its body for HEAD).
pub fn write_response<W: Write>(
    w: &mut W,
    resp: &Response,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nServer: EC2ws\r\nConnection: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes();
    for (k, v) in &resp.headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&resp.body);
    }
    w.write_all(&out)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Vec<Next> {
        let mut r = BufReader::new(raw);
        let mut v = Vec::new();
        loop {
            match read_request(&mut r).unwrap() {
                Next::Closed => return v,
                n @ Next::Bad(_) => {
                    v.push(n);
                    return v;
                }
                n => v.push(n),
            }
        }
    }

    #[test]
    fn pipelined_requests_headers_and_keep_alive() {
        let got = parse(
            b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 3\r\n\r\nabc\
              GET /latest/meta-data/?x=1 HTTP/1.0\r\n\r\n\
              GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        let reqs: Vec<&Request> = got
            .iter()
            .map(|n| match n {
                Next::Request(r) => r,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[0].method, "PUT");
        assert_eq!(
            reqs[0].header("x-aws-ec2-metadata-token-ttl-seconds"),
            Some("21600")
        );
        assert!(reqs[0].keep_alive);
        assert_eq!(reqs[1].path, "/latest/meta-data/");
        assert!(!reqs[1].keep_alive, "HTTP/1.0 closes by default");
        assert!(!reqs[2].keep_alive);
    }

    #[test]
    fn malformed_input_gets_a_status_not_a_panic() {
        assert!(matches!(parse(b"\x00\x01\r\n\r\n")[..], [Next::Bad(400)]));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost")[..],
            [Next::Bad(400)]
        ));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        assert!(matches!(parse(big.as_bytes())[..], [Next::Bad(431)]));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")[..],
            [Next::Bad(501)]
        ));
        assert!(matches!(
            parse(b"PUT / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")[..],
            [Next::Bad(413)]
        ));
    }

    #[test]
    fn responses_carry_their_length_and_head_has_no_body() {
        let mut out = Vec::new();
        let mut r = Response::new(200, "tok");
        r.headers
            .push(("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", "60".into()));
        write_response(&mut out, &r, false, true).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"), "{s}");
        assert!(
            s.contains("Content-Length: 3\r\n") && s.ends_with("\r\n\r\ntok"),
            "{s}"
        );
        assert!(s.contains("X-Aws-Ec2-Metadata-Token-Ttl-Seconds: 60\r\n"));
        let mut out = Vec::new();
        write_response(&mut out, &Response::new(404, "x"), true, false).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with("Connection: close\r\n\r\n"), "{s}");
    }
}
