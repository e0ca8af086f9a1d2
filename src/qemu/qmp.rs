//! A small QMP client (QEMU Machine Protocol, docs/interop/qmp-spec.rst): JSON lines over the
//! Unix socket QEMU listens on in the run's private directory. kiln uses it to read back the
//! host ports the kernel picked for the forwarded guest ports, to see the state of a forwarded
//! connection (`info usernet`), to allow a guest reboot for the reboot check (`set-action`), and
//! to see the guest reset (the `RESET` event).

use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Events seen while waiting for replies, oldest first.
    events: Vec<Value>,
    /// A line cut by a read timeout (kept for the next read).
    partial: Vec<u8>,
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

impl Qmp {
    /// Connects (retrying until `timeout`: QEMU creates the socket while starting) and leaves
    /// capabilities negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<Qmp> {
        let end = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < end => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let writer = stream.try_clone()?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
            partial: Vec::new(),
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            return Err(err(format!("not a QMP greeting: {greeting}")));
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> io::Result<Value> {
        // read_until keeps what it read before an error (a timeout) in `partial`.
        while !self.partial.ends_with(b"\n") {
            if self.reader.read_until(b'\n', &mut self.partial)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "QEMU closed its QMP socket",
                ));
            }
        }
        let line = std::mem::take(&mut self.partial);
        serde_json::from_slice(&line).map_err(|e| {
            err(format!(
                "bad QMP message {:?}: {e}",
                String::from_utf8_lossy(&line)
            ))
        })
    }

    /// Runs a command; returns its `return` value, or its error's description as an error.
    pub fn execute(&mut self, command: &str, arguments: Value) -> io::Result<Value> {
        let mut msg = json!({ "execute": command });
        if arguments.as_object().is_some_and(|o| !o.is_empty()) {
            msg["arguments"] = arguments;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        loop {
            let v = self.read()?;
            if v.get("event").is_some() {
                self.events.push(v);
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(err(format!(
                    "QMP {command}: {}",
                    e.get("desc").and_then(Value::as_str).unwrap_or("failed")
                )));
            }
        }
    }

    /// A human monitor command's output (`info usernet`).
    pub fn human(&mut self, command_line: &str) -> io::Result<String> {
        let r = self.execute(
            "human-monitor-command",
            json!({ "command-line": command_line }),
        )?;
        Ok(r.as_str().unwrap_or_default().to_string())
    }

    /// Waits up to `timeout` for an event named `name` (one already received counts); removes
    /// it and the events before it.
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> io::Result<Option<Value>> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
                let v = self.events[i].clone();
                self.events.drain(..=i);
                return Ok(Some(v));
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left.min(Duration::from_millis(500))))?;
            let got = self.read();
            self.reader
                .get_ref()
                .set_read_timeout(Some(Duration::from_secs(30)))?;
            match got {
                Ok(v) if v.get("event").is_some() => self.events.push(v),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Forgets the events received so far.
    pub fn clear_events(&mut self) {
        self.events.clear();
    }
}
