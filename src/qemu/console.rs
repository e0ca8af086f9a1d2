//! The serial console as it streams: lines (terminal escapes stripped), kept for the checks that
//! wait on text and for the report's last lines, and the signs that a boot has failed for good
//! (a kernel panic, the firmware giving up on the disk), seen as early as the console allows.

/// How many console lines a failure report shows.
pub const TAIL_LINES: usize = 40;

/// Why a boot failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    /// The awaited text did not appear within the timeout (in seconds).
    Timeout { secs: u64 },
    /// The kernel panicked; the console line that said so.
    KernelPanic { line: String },
    /// The UEFI firmware found nothing to boot (it fell into its shell, or said so).
    NoBootloader { line: String },
    /// QEMU exited: the guest powered off, or rebooted when no reboot was expected.
    Exited { status: String },
}

impl std::fmt::Display for FailReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailReason::Timeout { secs } => {
                write!(f, "timed out after {secs} s")
            }
            FailReason::KernelPanic { line } => write!(f, "kernel panic: {line}"),
            FailReason::NoBootloader { line } => {
                write!(f, "the firmware found no bootloader on the disk: {line}")
            }
            FailReason::Exited { status } => {
                write!(f, "the machine stopped (QEMU {status})")
            }
        }
    }
}

/// Bytes in, complete lines out: terminal escapes stripped, UTF-8 decoded, a character or an
/// escape sequence cut by a chunk boundary carried over to the next chunk.
#[derive(Debug, Default)]
pub struct Splitter {
    /// The current, unfinished line (escapes already stripped).
    partial: String,
    /// Bytes of an escape sequence or UTF-8 character cut by a chunk boundary.
    carry: Vec<u8>,
}

impl Splitter {
    /// Feeds a chunk; returns the lines it completed (without their line ends).
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(chunk);
        let (text, rest) = strip_escapes(&bytes);
        // A real escape sequence or character is a few bytes; more is noise, not worth keeping.
        if rest.len() <= 64 {
            self.carry = rest.to_vec();
        }
        let mut lines = Vec::new();
        for c in text.chars() {
            match c {
                '\n' => lines.push(std::mem::take(&mut self.partial)),
                '\r' => {}
                c => self.partial.push(c),
            }
        }
        lines
    }

    /// The line being written (no line end yet).
    pub fn partial(&self) -> &str {
        &self.partial
    }

    /// The output ended: the unfinished line, if any.
    pub fn finish(&mut self) -> Option<String> {
        let p = std::mem::take(&mut self.partial);
        (!p.is_empty()).then_some(p)
    }
}

/// Whether a console line shows the boot failing for good: a kernel panic, or the firmware
/// finding nothing to boot.
pub fn judge(line: &str) -> Option<FailReason> {
    let trimmed = line.trim();
    if line.contains("Kernel panic - not syncing") {
        return Some(FailReason::KernelPanic {
            line: trimmed.to_string(),
        });
    }
    if firmware_gave_up(line) {
        return Some(FailReason::NoBootloader {
            line: trimmed.to_string(),
        });
    }
    None
}

/// Lines kept in memory: a systemd and cloud-init boot prints a few thousand.
const MAX_LINES: usize = 1_000_000;

/// The serial console as it streams, shared between the thread reading QEMU's output and the
/// checks waiting on it. Every line is kept (terminal escapes removed), with the first fatal
/// line (a kernel panic, the firmware giving up) and whether the output has ended.
#[derive(Default)]
pub struct Console {
    state: std::sync::Mutex<State>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct State {
    lines: Vec<String>,
    /// Lines dropped from the front (beyond [`MAX_LINES`]).
    dropped: usize,
    splitter: Splitter,
    fatal: Option<FailReason>,
    ended: bool,
    seen_any: bool,
}

impl State {
    fn push(&mut self, line: String) {
        if self.fatal.is_none() {
            self.fatal = judge(&line);
        }
        if self.lines.len() == MAX_LINES {
            self.lines.drain(..MAX_LINES / 2);
            self.dropped += MAX_LINES / 2;
        }
        self.lines.push(line);
    }

    /// Lines from absolute index `since`, then the unfinished one.
    fn since(&self, since: usize) -> impl Iterator<Item = &str> {
        let from = since.saturating_sub(self.dropped).min(self.lines.len());
        self.lines[from..]
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(self.splitter.partial()))
    }
}

/// How a wait on the console ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait<T> {
    Got(T),
    /// The boot failed for good (the line that showed it).
    Fatal(FailReason),
    /// The console closed: QEMU is exiting.
    Ended,
    TimedOut,
}

impl Console {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds a chunk of QEMU's output.
    pub fn feed(&self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        let mut st = self.lock();
        st.seen_any = true;
        for line in st.splitter.feed(chunk) {
            st.push(line);
        }
        // A panic line may be the last thing printed, with no line end yet.
        if st.fatal.is_none() {
            st.fatal = judge(st.splitter.partial());
        }
        drop(st);
        self.changed.notify_all();
    }

    /// QEMU's output ended.
    pub fn end(&self) {
        let mut st = self.lock();
        if let Some(l) = st.splitter.finish() {
            st.push(l);
        }
        st.ended = true;
        drop(st);
        self.changed.notify_all();
    }

    pub fn seen_any(&self) -> bool {
        self.lock().seen_any
    }

    pub fn ended(&self) -> bool {
        self.lock().ended
    }

    pub fn fatal(&self) -> Option<FailReason> {
        self.lock().fatal.clone()
    }

    /// The position after the last complete line: what "since" means for later searches.
    pub fn mark(&self) -> usize {
        let st = self.lock();
        st.dropped + st.lines.len()
    }

    /// Whether `text` appears in a line from `since` on (the unfinished line included).
    pub fn contains(&self, text: &str, since: usize) -> bool {
        self.lock().since(since).any(|l| l.contains(text))
    }

    /// The lines from `since` on, the unfinished one included if not empty.
    pub fn lines_since(&self, since: usize) -> Vec<String> {
        self.lock()
            .since(since)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    /// The last `n` lines, with the unfinished one.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let st = self.lock();
        let mut v: Vec<String> = st.lines.iter().rev().take(n).rev().cloned().collect();
        if !st.splitter.partial().trim().is_empty() {
            v.push(st.splitter.partial().to_string());
        }
        let skip = v.len().saturating_sub(n);
        v.split_off(skip)
    }

    /// Waits until `text` appears from line `since` on, the boot fails for good, the output
    /// ends, or `deadline` passes, whichever comes first. Text that appeared before the failure
    /// or the end still counts.
    pub fn wait_for(&self, text: &str, since: usize, deadline: std::time::Instant) -> Wait<()> {
        self.wait(deadline, |st| {
            st.since(since).any(|l| l.contains(text)).then_some(())
        })
    }

    /// Waits for the boot to fail for good, the output to end, or `deadline`.
    pub fn wait_fatal(&self, deadline: std::time::Instant) -> Wait<()> {
        self.wait(deadline, |_| None)
    }

    fn wait<T>(
        &self,
        deadline: std::time::Instant,
        mut found: impl FnMut(&State) -> Option<T>,
    ) -> Wait<T> {
        let mut st = self.lock();
        loop {
            if let Some(v) = found(&st) {
                return Wait::Got(v);
            }
            if let Some(f) = &st.fatal {
                return Wait::Fatal(f.clone());
            }
            if st.ended {
                return Wait::Ended;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Wait::TimedOut;
            }
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// What OVMF and AAVMF (EDK II) print when no boot option loads: with an empty disk both try
/// each device ("BdsDxe: failed to load Boot0001 ... Not Found") and then start their built-in
/// shell ("BdsDxe: loading/starting Boot0003 "EFI Internal Shell""); builds without the shell
/// say "No bootable option or device was found".
fn firmware_gave_up(line: &str) -> bool {
    (line.starts_with("BdsDxe: ") && line.contains("\"EFI Internal Shell\""))
        || line.contains("No bootable option or device was found")
        || line.contains("UEFI Interactive Shell")
        || line.trim_start().starts_with("Shell> ")
}

/// Removes terminal escape sequences (ECMA-48 CSI `ESC [ params final`, and ECMA-35 `ESC x`)
/// and decodes the rest as UTF-8, lossily. Returns the text and the bytes of an incomplete
/// sequence or character at the end, to be prefixed to the next chunk.
pub fn strip_escapes(bytes: &[u8]) -> (String, &[u8]) {
    let mut clean = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != 0x1b {
            clean.push(b);
            i += 1;
            continue;
        }
        let Some(&next) = bytes.get(i + 1) else {
            return (decode(&clean).0, &bytes[i..]);
        };
        if next != b'[' {
            // ECMA-35: ESC, intermediate bytes 0x20..=0x2f, one final byte (e.g. `ESC ( B`).
            let mut j = i + 1;
            while j < bytes.len() && (0x20..=0x2f).contains(&bytes[j]) {
                j += 1;
            }
            if j == bytes.len() {
                return (decode(&clean).0, &bytes[i..]);
            }
            i = j + 1;
            continue;
        }
        // CSI: parameter and intermediate bytes 0x20..=0x3f, then one final byte 0x40..=0x7e.
        let mut j = i + 2;
        while j < bytes.len() && (0x20..=0x3f).contains(&bytes[j]) {
            j += 1;
        }
        if j == bytes.len() {
            return (decode(&clean).0, &bytes[i..]);
        }
        i = j + 1;
    }
    let (text, cut) = decode(&clean);
    if cut == 0 {
        return (text, &[]);
    }
    // An incomplete UTF-8 character at the end: hand its bytes back (they are the input's last).
    (text, &bytes[bytes.len() - cut..])
}

/// Lossy UTF-8, except that an incomplete character at the very end is left out; returns the
/// text and how many bytes were left out.
fn decode(bytes: &[u8]) -> (String, usize) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), 0),
        Err(e) if e.error_len().is_none() => {
            let good = e.valid_up_to();
            (
                String::from_utf8_lossy(&bytes[..good]).into_owned(),
                bytes.len() - good,
            )
        }
        Err(_) => {
            let cut = incomplete_suffix(bytes);
            (
                String::from_utf8_lossy(&bytes[..bytes.len() - cut]).into_owned(),
                cut,
            )
        }
    }
}

/// The length of an incomplete UTF-8 sequence at the end of `bytes` (0 if none).
fn incomplete_suffix(bytes: &[u8]) -> usize {
    for back in 1..=3.min(bytes.len()) {
        let b = bytes[bytes.len() - back];
        if b & 0xc0 == 0x80 {
            continue;
        }
        let need = match b {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => return 0,
        };
        return if need > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn console(chunks: &[&[u8]]) -> Console {
        let c = Console::new();
        for ch in chunks {
            c.feed(ch);
        }
        c
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    #[test]
    fn text_is_found_even_split_across_chunks_and_escapes() {
        let c = console(&[b"[    1.0] Run /sbin/init\r\nKILN-BO", b"OT-OK\r\n"]);
        assert_eq!(c.wait_for("KILN-BOOT-OK", 0, soon()), Wait::Got(()));
        let c = console(&[b"\x1b[1mKILN-\x1b", b"[0mBOOT-OK"]);
        assert!(
            c.contains("KILN-BOOT-OK", 0),
            "text without newline, escape split"
        );
        assert_eq!(c.wait_for("other", 0, soon()), Wait::TimedOut);
    }

    #[test]
    fn since_a_mark_only_later_lines_count() {
        let c = console(&[b"Linux version 6.1\r\nrebooting\r\n"]);
        let m = c.mark();
        assert_eq!(m, 2);
        assert!(!c.contains("Linux version", m));
        c.feed(b"Linux version 6.1 again\r\n");
        assert!(c.contains("Linux version", m));
        assert_eq!(
            c.lines_since(m),
            vec!["Linux version 6.1 again".to_string()]
        );
    }

    #[test]
    fn a_kernel_panic_is_fatal_with_its_line_but_earlier_text_still_counts() {
        let c = console(&[b"[    2.1] VFS: Unable to mount root fs\r\n[    2.2] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\r\n"]);
        let want = FailReason::KernelPanic {
            line: "[    2.2] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)".into(),
        };
        assert_eq!(c.wait_for("never", 0, soon()), Wait::Fatal(want.clone()));
        assert_eq!(c.wait_for("VFS", 0, soon()), Wait::Got(()));
        assert_eq!(c.fatal(), Some(want));
        assert_eq!(c.tail(40).len(), 2);
    }

    #[test]
    fn the_firmware_shell_is_fatal_as_no_bootloader() {
        // As OVMF prints it with an empty NVMe disk (escapes included).
        let ovmf = b"\x1b[2J\x1b[01;01H\x1b[=3h\x1b[2J\x1b[01;01HBdsDxe: failed to load Boot0002 \"UEFI QEMU NVMe Ctrl kiln 1\" from PciRoot(0x0)/Pci(0x2,0x0)/NVMe(0x1,00-00-00-00-00-00-00-00): Not Found\r\nBdsDxe: loading Boot0003 \"EFI Internal Shell\" from Fv(7CB8BDC9-F8EB-4F34-AAEA-3EE4AF6516A1)/FvFile(7C04A583-9E3E-4F1C-AD65-E05268D0B4D1)\r\n";
        match console(&[ovmf]).fatal() {
            Some(FailReason::NoBootloader { line }) => {
                assert!(line.starts_with("BdsDxe: loading Boot0003"), "{line}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            console(&[b"BdsDxe: No bootable option or device was found.\r\n"]).fatal(),
            Some(FailReason::NoBootloader { .. })
        ));
        assert!(matches!(
            console(&[b"\x1b[08;01H\x1b[1m\x1b[33m\x1b[40mShell> \x1b[0m"]).fatal(),
            Some(FailReason::NoBootloader { .. })
        ));
    }

    #[test]
    fn a_failed_dvd_attempt_before_a_good_boot_is_not_fatal() {
        let c = console(&[b"BdsDxe: failed to load Boot0001 \"UEFI QEMU DVD-ROM QM00005 \" from PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x2,0xFFFF,0x0): Not Found\r\nBdsDxe: loading Boot0002 \"UEFI QEMU NVMe Ctrl kiln 1\"\r\n"]);
        assert_eq!(c.fatal(), None);
    }

    #[test]
    fn the_end_of_output_ends_waits_and_keeps_the_last_line() {
        let c = console(&[b"reboot: Power down"]);
        assert!(!c.ended());
        c.end();
        assert_eq!(c.wait_for("never", 0, soon()), Wait::Ended);
        assert_eq!(c.wait_for("Power down", 0, soon()), Wait::Got(()));
        assert_eq!(c.tail(40), vec!["reboot: Power down".to_string()]);
        assert!(c.seen_any());
        assert!(!Console::new().seen_any());
    }

    #[test]
    fn a_waiter_wakes_when_the_text_arrives() {
        let c = std::sync::Arc::new(Console::new());
        let c2 = std::sync::Arc::clone(&c);
        let t = std::thread::spawn(move || {
            c2.wait_for("ready", 0, Instant::now() + Duration::from_secs(30))
        });
        std::thread::sleep(Duration::from_millis(50));
        c.feed(b"system ready\n");
        assert_eq!(t.join().unwrap(), Wait::Got(()));
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let c = Console::new();
        let text: String = (0..100).map(|i| format!("line {i}\r\n")).collect();
        c.feed(text.as_bytes());
        c.feed(b"partial");
        let t = c.tail(TAIL_LINES);
        assert_eq!(t.len(), TAIL_LINES);
        assert_eq!(t[0], "line 61");
        assert_eq!(t[38], "line 99");
        assert_eq!(t[39], "partial");
    }

    #[test]
    fn utf8_cut_by_a_chunk_boundary_survives() {
        let s = "é marker ✓\n".as_bytes();
        let mut sp = Splitter::default();
        assert!(sp.feed(&s[..1]).is_empty());
        assert!(sp.feed(&s[1..12]).is_empty());
        assert_eq!(sp.feed(&s[12..]), vec!["é marker ✓".to_string()]);
    }

    #[test]
    fn escapes_are_stripped() {
        let (t, rest) = strip_escapes(b"\x1b[1m\x1b[33m\x1b[40mShell> \x1b[0m\x1b(Bok\x1b[");
        assert_eq!(t, "Shell> ok");
        assert_eq!(rest, b"\x1b[");
    }
}
