//! The OCI distribution API's requests (distribution-spec v1.1 "push"): the blob existence check,
//! monolithic and chunked uploads (with resumption after a failed chunk), manifest existence
//! and upload, over ureq. Every request is retried on 5xx, 429 and transport errors with a
//! doubling delay; the last failure is reported with what was being done.

use super::auth::{parse_challenge, Challenge, Credentials};
use super::PushError;
use std::io::{self, Read};
use std::time::Duration;

pub struct Client {
    agent: ureq::Agent,
    /// `http://host:port` or `https://host`.
    base: String,
    registry: String,
    repo: String,
    creds: Option<Credentials>,
    /// The Authorization header to send, once the registry asked for one.
    auth: Option<String>,
    pub attempts: u32,
    pub delay: Duration,
    /// Requests retried after a transient failure.
    pub retries: u32,
}

/// A request body, made afresh for each attempt: a reader and its length, or none.
pub type Body = Option<(Box<dyn Read + Send>, u64)>;
type MakeBody<'a> = dyn FnMut() -> io::Result<Body> + 'a;

/// What one attempt of a request gave.
enum Outcome {
    Response(Box<ureq::Response>),
    /// A failure worth another attempt, described.
    Transient(String),
}

impl Client {
    pub fn new(registry: &str, repo: &str, plain_http: bool, creds: Option<Credentials>) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(120))
            .timeout_write(Duration::from_secs(120))
            .redirects(5)
            .build();
        let scheme = if plain_http { "http" } else { "https" };
        Client {
            agent,
            base: format!("{scheme}://{registry}"),
            registry: registry.to_string(),
            repo: repo.to_string(),
            creds,
            auth: None,
            attempts: 4,
            delay: Duration::from_millis(250),
            retries: 0,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An absolute URL from a `Location` header (absolute, or a path on the registry).
    fn resolve(&self, location: &str) -> String {
        match location.starts_with("http://") || location.starts_with("https://") {
            true => location.to_string(),
            false => self.url(location),
        }
    }

    /// One request, with `body` read afresh by `make_body` on every attempt.
    fn once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: &mut MakeBody,
    ) -> Result<Outcome, PushError> {
        let mut req = self.agent.request(method, url);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        if let Some(a) = &self.auth {
            req = req.set("Authorization", a);
        }
        let r = match body().map_err(|e| PushError::Layout(e.to_string()))? {
            Some((reader, len)) => req.set("Content-Length", &len.to_string()).send(reader),
            None => req.call(),
        };
        tracing::debug!("{method} {url}");
        match r {
            Ok(resp) => Ok(Outcome::Response(Box::new(resp))),
            Err(ureq::Error::Status(code, resp)) if code >= 500 || code == 429 => {
                let text = resp.status_text().to_string();
                let body = resp.into_string().unwrap_or_default();
                Ok(Outcome::Transient(format!(
                    "{code} {text}{}",
                    summary(&body)
                )))
            }
            Err(ureq::Error::Status(_, resp)) => Ok(Outcome::Response(Box::new(resp))),
            Err(ureq::Error::Transport(t)) => Ok(Outcome::Transient(t.to_string())),
        }
    }

    /// A request with retries; a 401 is answered once by authenticating.
    pub fn request(
        &mut self,
        what: &str,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: &mut MakeBody,
    ) -> Result<ureq::Response, PushError> {
        let mut delay = self.delay;
        let mut last = String::new();
        let mut authed = false;
        let mut attempt = 0;
        while attempt < self.attempts {
            attempt += 1;
            match self.once(method, url, headers, body)? {
                Outcome::Response(r) if r.status() == 401 && !authed => {
                    authed = true;
                    attempt -= 1;
                    self.authenticate(*r)?;
                }
                Outcome::Response(r) if r.status() == 401 => {
                    return Err(self.unauthorized(*r));
                }
                Outcome::Response(r) => return Ok(*r),
                Outcome::Transient(why) => {
                    tracing::warn!(
                        "{what}: {method} {url}: {why}; attempt {attempt} of {}",
                        self.attempts
                    );
                    last = why;
                    if attempt < self.attempts {
                        self.retries += 1;
                        std::thread::sleep(delay);
                        delay *= 2;
                    }
                }
            }
        }
        Err(PushError::Failed {
            what: what.to_string(),
            registry: self.registry.clone(),
            attempts: self.attempts,
            last,
        })
    }

    fn unauthorized(&self, r: ureq::Response) -> PushError {
        let body = r.into_string().unwrap_or_default();
        PushError::Unauthorized {
            registry: self.registry.clone(),
            detail: match self.creds {
                Some(_) => format!("the registry refused the credentials{}", summary(&body)),
                None => format!(
                    "the registry wants credentials and none were found{}; log in (docker \
                     login), or give --username and --password-stdin",
                    summary(&body)
                ),
            },
        }
    }

    /// Answers a 401's challenge: HTTP Basic with the credentials, or a Bearer token from the
    /// registry's token service (with the credentials, if any) scoped to pushing this
    /// repository.
    fn authenticate(&mut self, r: ureq::Response) -> Result<(), PushError> {
        let header = r.header("www-authenticate").unwrap_or("").to_string();
        match parse_challenge(&header) {
            Some(Challenge::Basic) => match &self.creds {
                Some(c) => {
                    self.auth = Some(c.basic_header());
                    Ok(())
                }
                None => Err(self.unauthorized(r)),
            },
            Some(Challenge::Bearer { realm, service, .. }) => {
                let scope = format!("repository:{}:pull,push", self.repo);
                let mut req = self.agent.get(&realm).query("scope", &scope);
                if let Some(s) = &service {
                    req = req.query("service", s);
                }
                if let Some(c) = &self.creds {
                    req = req.set("Authorization", &c.basic_header());
                }
                let resp = match req.call() {
                    Ok(resp) => resp,
                    Err(ureq::Error::Status(401 | 403, resp)) => {
                        return Err(self.unauthorized(resp))
                    }
                    Err(e) => {
                        return Err(PushError::Http {
                            what: format!("getting a token from {realm}"),
                            detail: e.to_string(),
                        })
                    }
                };
                #[derive(serde::Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let read_err = |detail: String| PushError::Http {
                    what: format!("reading the token from {realm}"),
                    detail,
                };
                let text = resp.into_string().map_err(|e| read_err(e.to_string()))?;
                let t: Token = serde_json::from_str(&text).map_err(|e| read_err(e.to_string()))?;
                let token = t.token.or(t.access_token).ok_or_else(|| PushError::Http {
                    what: format!("reading the token from {realm}"),
                    detail: "the answer holds no token".into(),
                })?;
                self.auth = Some(format!("Bearer {token}"));
                Ok(())
            }
            None => Err(PushError::Http {
                what: format!("authenticating to {}", self.registry),
                detail: format!("401 with a challenge kiln does not understand: {header:?}"),
            }),
        }
    }

    /// `GET /v2/`: is this a registry, and may we talk to it? Sets up authentication first, so
    /// that no upload has to be replayed for a 401.
    pub fn ping(&mut self) -> Result<(), PushError> {
        let url = self.url("/v2/");
        let r = self.request("contacting the registry", "GET", &url, &[], &mut || {
            Ok(None)
        })?;
        match r.status() {
            200 => Ok(()),
            s => Err(status_error(&format!("GET {url}"), s, r)),
        }
    }

    /// Whether the repository already has the blob.
    pub fn blob_exists(&mut self, digest: &str) -> Result<bool, PushError> {
        let url = self.url(&format!("/v2/{}/blobs/{digest}", self.repo));
        let r = self.request(
            &format!("checking blob {digest}"),
            "HEAD",
            &url,
            &[],
            &mut || Ok(None),
        )?;
        match r.status() {
            200 => Ok(true),
            404 => Ok(false),
            s => Err(status_error(&format!("HEAD {url}"), s, r)),
        }
    }

    /// Starts an upload session; returns its URL.
    fn start_upload(&mut self, digest: &str) -> Result<String, PushError> {
        let url = self.url(&format!("/v2/{}/blobs/uploads/", self.repo));
        let r = self.request(
            &format!("starting the upload of {digest}"),
            "POST",
            &url,
            &[("Content-Length", "0".into())],
            &mut || Ok(None),
        )?;
        if r.status() != 202 {
            return Err(status_error(&format!("POST {url}"), r.status(), r));
        }
        let loc = r.header("location").ok_or_else(|| PushError::Http {
            what: format!("POST {url}"),
            detail: "202 without a Location".into(),
        })?;
        Ok(self.resolve(loc))
    }

    /// Uploads a blob: in one PUT if it is at most `chunk` bytes (or `chunk` is 0), else in
    /// PATCHes of `chunk` bytes then a closing PUT. A failed chunk is resumed where the registry
    /// says the upload stands; a failed monolithic PUT starts a new session.
    pub fn upload_blob(
        &mut self,
        digest: &str,
        len: u64,
        open: &dyn Fn() -> io::Result<Box<dyn Read + Send>>,
        chunk: u64,
    ) -> Result<(), PushError> {
        let what = format!("uploading blob {digest} ({len} bytes)");
        let mut last = String::new();
        for session in 0..self.attempts {
            if session > 0 {
                self.retries += 1;
                std::thread::sleep(self.delay * (1 << session.min(6)));
            }
            let loc = self.start_upload(digest)?;
            let r = match chunk == 0 || len <= chunk {
                true => self.put_whole(&loc, digest, len, open),
                false => self.put_chunks(&loc, digest, len, open, chunk),
            };
            match r {
                Ok(()) => return Ok(()),
                Err(PushError::Failed { last: why, .. }) => {
                    // Abandon the session (best effort) and start another.
                    let _ = self.agent.delete(&loc).call();
                    last = why;
                }
                Err(e) => {
                    let _ = self.agent.delete(&loc).call();
                    return Err(e);
                }
            }
        }
        Err(PushError::Failed {
            what,
            registry: self.registry.clone(),
            attempts: self.attempts,
            last,
        })
    }

    fn with_digest(loc: &str, digest: &str) -> String {
        let sep = if loc.contains('?') { '&' } else { '?' };
        format!("{loc}{sep}digest={digest}")
    }

    fn put_whole(
        &mut self,
        loc: &str,
        digest: &str,
        len: u64,
        open: &dyn Fn() -> io::Result<Box<dyn Read + Send>>,
    ) -> Result<(), PushError> {
        let url = Self::with_digest(loc, digest);
        let saved = self.attempts;
        // One attempt per session: a retried PUT needs a new session (the failed one may hold
        // part of the bytes).
        self.attempts = 1;
        let r = self.request(
            &format!("uploading blob {digest}"),
            "PUT",
            &url,
            &[("Content-Type", "application/octet-stream".into())],
            &mut || open().map(|r| Some((r, len))),
        );
        self.attempts = saved;
        let r = r?;
        match r.status() {
            201 | 204 => Ok(()),
            s => Err(status_error(&format!("PUT {loc}"), s, r)),
        }
    }

    fn put_chunks(
        &mut self,
        loc: &str,
        digest: &str,
        len: u64,
        open: &dyn Fn() -> io::Result<Box<dyn Read + Send>>,
        chunk: u64,
    ) -> Result<(), PushError> {
        let mut loc = loc.to_string();
        let mut at = 0u64;
        let mut failures = 0;
        let mut last = String::new();
        while at < len {
            let n = chunk.min(len - at);
            let saved = self.attempts;
            self.attempts = 1;
            let start = at;
            let r = self.request(
                &format!("uploading blob {digest} bytes {start}-{}", start + n - 1),
                "PATCH",
                &loc,
                &[
                    ("Content-Type", "application/octet-stream".into()),
                    ("Content-Range", format!("{start}-{}", start + n - 1)),
                ],
                &mut || {
                    let mut r = open()?;
                    io::copy(&mut (&mut r).take(start), &mut io::sink())?;
                    Ok(Some((Box::new(r.take(n)) as Box<dyn Read + Send>, n)))
                },
            );
            self.attempts = saved;
            match r {
                Ok(resp) if resp.status() == 202 => {
                    if let Some(l) = resp.header("location") {
                        loc = self.resolve(l);
                    }
                    at += n;
                }
                Ok(resp) => return Err(status_error(&format!("PATCH {loc}"), resp.status(), resp)),
                Err(PushError::Failed { last: why, .. }) => {
                    failures += 1;
                    last = why;
                    if failures >= self.attempts {
                        break;
                    }
                    self.retries += 1;
                    std::thread::sleep(self.delay * (1 << failures.min(6)));
                    // Ask where the upload stands and go on from there.
                    match self.upload_status(&loc, at) {
                        Some((l, next)) if next <= at + n => {
                            loc = l;
                            at = next;
                        }
                        _ => break,
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if at < len {
            return Err(PushError::Failed {
                what: format!("uploading blob {digest}"),
                registry: self.registry.clone(),
                attempts: failures,
                last,
            });
        }
        let url = Self::with_digest(&loc, digest);
        let r = self.request(
            &format!("completing blob {digest}"),
            "PUT",
            &url,
            &[("Content-Length", "0".into())],
            &mut || Ok(None),
        )?;
        match r.status() {
            201 | 204 => Ok(()),
            s => Err(status_error(&format!("PUT {loc}"), s, r)),
        }
    }

    /// `GET` on an upload session: its URL and the next byte it expects (from `Range: 0-N`).
    /// The distribution registry answers `0-0` both for no byte and for one byte; `acked`, the
    /// bytes it already confirmed, tells them apart.
    fn upload_status(&mut self, loc: &str, acked: u64) -> Option<(String, u64)> {
        let r = self
            .request("checking an upload", "GET", loc, &[], &mut || Ok(None))
            .ok()?;
        if r.status() != 204 {
            return None;
        }
        let next = match r.header("range") {
            Some(range) => {
                let end: u64 = range.split_once('-')?.1.trim().parse().ok()?;
                match (end, acked) {
                    (0, 0) => 0,
                    _ => end + 1,
                }
            }
            None => 0,
        };
        let l = r
            .header("location")
            .map(|l| self.resolve(l))
            .unwrap_or(loc.to_string());
        Some((l, next))
    }

    /// The digest the registry has under `reference` for this manifest type, if any.
    pub fn manifest_digest(
        &mut self,
        reference: &str,
        media_type: &str,
    ) -> Result<Option<String>, PushError> {
        let url = self.url(&format!("/v2/{}/manifests/{reference}", self.repo));
        let r = self.request(
            &format!("checking manifest {reference}"),
            "HEAD",
            &url,
            &[("Accept", media_type.to_string())],
            &mut || Ok(None),
        )?;
        match r.status() {
            200 => Ok(r.header("docker-content-digest").map(str::to_string)),
            404 => Ok(None),
            s => Err(status_error(&format!("HEAD {url}"), s, r)),
        }
    }

    pub fn put_manifest(
        &mut self,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<(), PushError> {
        let url = self.url(&format!("/v2/{}/manifests/{reference}", self.repo));
        let bytes = body.to_vec();
        let r = self.request(
            &format!("putting manifest {reference}"),
            "PUT",
            &url,
            &[("Content-Type", media_type.to_string())],
            &mut || {
                let b = bytes.clone();
                let len = b.len() as u64;
                Ok(Some((
                    Box::new(io::Cursor::new(b)) as Box<dyn Read + Send>,
                    len,
                )))
            },
        )?;
        match r.status() {
            201 | 200 => Ok(()),
            s => Err(status_error(&format!("PUT {url}"), s, r)),
        }
    }
}

/// The registry's error document, shortened, after ": ".
fn summary(body: &str) -> String {
    let b = body.trim();
    if b.is_empty() {
        return String::new();
    }
    let short: String = b.chars().take(300).collect();
    format!(": {short}")
}

fn status_error(what: &str, status: u16, r: ureq::Response) -> PushError {
    let text = r.status_text().to_string();
    let body = r.into_string().unwrap_or_default();
    PushError::Http {
        what: what.to_string(),
        detail: format!("{status} {text}{}", summary(&body)),
    }
}
