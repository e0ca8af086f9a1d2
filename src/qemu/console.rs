//! The boot verdict, from the serial console as it streams.
//!
//! Pure: bytes in, a verdict out. The runner feeds every chunk QEMU writes; the watcher splits
//! lines, strips the terminal escapes the firmware sends, keeps the last lines for the report,
//! and decides as early as the console allows: the marker (pass), a kernel panic, or the
//! firmware giving up on the disk (fail). A timeout or QEMU exiting is the runner's to see.

use std::collections::VecDeque;

/// How many console lines a failure report shows.
pub const TAIL_LINES: usize = 40;

/// Why a boot failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    /// The marker did not appear within the timeout (in seconds).
    Timeout { secs: u64 },
    /// The kernel panicked; the console line that said so.
    KernelPanic { line: String },
    /// The UEFI firmware found nothing to boot (it fell into its shell, or said so).
    NoBootloader { line: String },
    /// QEMU exited (the guest powered off or rebooted) before the marker.
    Exited { status: String },
}

impl std::fmt::Display for FailReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailReason::Timeout { secs } => {
                write!(f, "timed out after {secs} s without the marker")
            }
            FailReason::KernelPanic { line } => write!(f, "kernel panic: {line}"),
            FailReason::NoBootloader { line } => {
                write!(f, "the firmware found no bootloader on the disk: {line}")
            }
            FailReason::Exited { status } => write!(
                f,
                "the machine stopped before the marker appeared (QEMU {status})"
            ),
        }
    }
}

/// What the console has shown so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(FailReason),
}

/// Reads the console as it streams.
#[derive(Debug)]
pub struct Watcher {
    expect: String,
    /// The current, unfinished line (escapes already stripped).
    partial: String,
    /// Bytes of an escape sequence or UTF-8 character cut by a chunk boundary.
    carry: Vec<u8>,
    tail: VecDeque<String>,
    seen_any: bool,
}

impl Watcher {
    pub fn new(expect: &str) -> Self {
        Watcher {
            expect: expect.to_string(),
            partial: String::new(),
            carry: Vec::new(),
            tail: VecDeque::with_capacity(TAIL_LINES + 1),
            seen_any: false,
        }
    }

    /// Whether QEMU has written anything at all to the console.
    pub fn seen_any(&self) -> bool {
        self.seen_any
    }

    /// Feeds a chunk of console output; returns a verdict as soon as one is certain.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<Verdict> {
        if chunk.is_empty() {
            return None;
        }
        self.seen_any = true;
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(chunk);
        let (text, rest) = strip_escapes(&bytes);
        // A real escape sequence or character is a few bytes; more is noise, not worth keeping.
        if rest.len() <= 64 {
            self.carry = rest.to_vec();
        }
        let mut verdict = None;
        for c in text.chars() {
            match c {
                '\n' => {
                    let line = std::mem::take(&mut self.partial);
                    if verdict.is_none() {
                        verdict = self.judge(&line);
                    }
                    self.push_tail(line);
                }
                '\r' => {}
                c => self.partial.push(c),
            }
        }
        // The marker may be the last thing the guest prints, with no newline after it.
        if verdict.is_none() && self.partial.contains(&self.expect) {
            verdict = Some(Verdict::Pass);
        }
        verdict
    }

    /// The console ended: the unfinished line joins the tail; returns its verdict if it has one.
    pub fn finish(&mut self) -> Option<Verdict> {
        if self.partial.is_empty() {
            return None;
        }
        let line = std::mem::take(&mut self.partial);
        let v = self.judge(&line);
        self.push_tail(line);
        v
    }

    /// The last [`TAIL_LINES`] lines, with the unfinished one.
    pub fn tail(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tail.iter().cloned().collect();
        if !self.partial.trim().is_empty() {
            v.push(self.partial.clone());
        }
        let skip = v.len().saturating_sub(TAIL_LINES);
        v.split_off(skip)
    }

    fn push_tail(&mut self, line: String) {
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    fn judge(&self, line: &str) -> Option<Verdict> {
        if line.contains(&self.expect) {
            return Some(Verdict::Pass);
        }
        let trimmed = line.trim();
        if line.contains("Kernel panic - not syncing") {
            return Some(Verdict::Fail(FailReason::KernelPanic {
                line: trimmed.to_string(),
            }));
        }
        if firmware_gave_up(line) {
            return Some(Verdict::Fail(FailReason::NoBootloader {
                line: trimmed.to_string(),
            }));
        }
        None
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

    fn run(expect: &str, chunks: &[&[u8]]) -> (Option<Verdict>, Watcher) {
        let mut w = Watcher::new(expect);
        for c in chunks {
            if let Some(v) = w.feed(c) {
                return (Some(v), w);
            }
        }
        let v = w.finish();
        (v, w)
    }

    #[test]
    fn the_marker_passes_even_split_across_chunks_and_escapes() {
        let (v, _) = run(
            "KILN-BOOT-OK",
            &[b"[    1.0] Run /sbin/init\r\nKILN-BO", b"OT-OK\r\n"],
        );
        assert_eq!(v, Some(Verdict::Pass));
        let (v, _) = run("KILN-BOOT-OK", &[b"\x1b[1mKILN-\x1b", b"[0mBOOT-OK"]);
        assert_eq!(
            v,
            Some(Verdict::Pass),
            "marker without newline, escape split"
        );
    }

    #[test]
    fn a_kernel_panic_fails_with_its_line() {
        let (v, w) = run(
            "KILN-BOOT-OK",
            &[b"[    2.1] VFS: Unable to mount root fs\r\n[    2.2] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\r\n"],
        );
        assert_eq!(
            v,
            Some(Verdict::Fail(FailReason::KernelPanic {
                line: "[    2.2] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)".into()
            }))
        );
        assert_eq!(w.tail().len(), 2);
    }

    #[test]
    fn the_firmware_shell_fails_as_no_bootloader() {
        // As OVMF prints it with an empty NVMe disk (escapes included).
        let ovmf = b"\x1b[2J\x1b[01;01H\x1b[=3h\x1b[2J\x1b[01;01HBdsDxe: failed to load Boot0002 \"UEFI QEMU NVMe Ctrl kiln 1\" from PciRoot(0x0)/Pci(0x2,0x0)/NVMe(0x1,00-00-00-00-00-00-00-00): Not Found\r\nBdsDxe: loading Boot0003 \"EFI Internal Shell\" from Fv(7CB8BDC9-F8EB-4F34-AAEA-3EE4AF6516A1)/FvFile(7C04A583-9E3E-4F1C-AD65-E05268D0B4D1)\r\n";
        let (v, _) = run("KILN-BOOT-OK", &[ovmf]);
        match v {
            Some(Verdict::Fail(FailReason::NoBootloader { line })) => {
                assert!(line.starts_with("BdsDxe: loading Boot0003"), "{line}")
            }
            other => panic!("{other:?}"),
        }
        let (v, _) = run(
            "X",
            &[b"BdsDxe: No bootable option or device was found.\r\n"],
        );
        assert!(matches!(
            v,
            Some(Verdict::Fail(FailReason::NoBootloader { .. }))
        ));
        let (v, _) = run("X", &[b"\x1b[08;01H\x1b[1m\x1b[33m\x1b[40mShell> \x1b[0m"]);
        assert!(matches!(
            v,
            Some(Verdict::Fail(FailReason::NoBootloader { .. }))
        ));
    }

    #[test]
    fn a_failed_dvd_attempt_before_a_good_boot_is_not_a_failure() {
        let (v, _) = run(
            "KILN-BOOT-OK",
            &[b"BdsDxe: failed to load Boot0001 \"UEFI QEMU DVD-ROM QM00005 \" from PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x2,0xFFFF,0x0): Not Found\r\nBdsDxe: loading Boot0002 \"UEFI QEMU NVMe Ctrl kiln 1\"\r\n"],
        );
        assert_eq!(v, None);
    }

    #[test]
    fn the_tail_keeps_the_last_forty_lines() {
        let mut w = Watcher::new("never");
        let text: String = (0..100).map(|i| format!("line {i}\r\n")).collect();
        assert_eq!(w.feed(text.as_bytes()), None);
        w.feed(b"partial");
        let t = w.tail();
        assert_eq!(t.len(), TAIL_LINES);
        assert_eq!(t[0], "line 61");
        assert_eq!(t[38], "line 99");
        assert_eq!(t[39], "partial");
    }

    #[test]
    fn utf8_cut_by_a_chunk_boundary_survives() {
        let s = "é marker ✓\n".as_bytes();
        let mut w = Watcher::new("✓");
        assert_eq!(w.feed(&s[..1]), None);
        assert_eq!(w.feed(&s[1..12]), None);
        assert_eq!(w.feed(&s[12..]), Some(Verdict::Pass));
        assert_eq!(w.tail(), vec!["é marker ✓".to_string()]);
    }

    #[test]
    fn escapes_are_stripped() {
        let (t, rest) = strip_escapes(b"\x1b[1m\x1b[33m\x1b[40mShell> \x1b[0m\x1b(Bok\x1b[");
        assert_eq!(t, "Shell> ok");
        assert_eq!(rest, b"\x1b[");
        assert!(!Watcher::new("x").seen_any());
    }
}
