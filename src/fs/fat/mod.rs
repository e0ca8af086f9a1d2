//! The EFI System Partition: FAT32 written by the `fatfs` crate into a sparse in-memory device,
//! then streamed into the sink. Volume id, label and every timestamp are fixed by the caller, so
//! the same tree gives the same bytes.

use crate::disk::sparse::SparseImage;
use crate::sink::BlockSink;
use crate::tree::{Kind, NodeId, Time, Tree};
mod dots;

use std::io::{self, Seek, SeekFrom};

#[derive(Debug, Clone)]
pub struct FatOptions {
    /// Partition size in bytes.
    pub size: u64,
    pub volume_id: u32,
    /// Up to 11 bytes; padded with spaces.
    pub label: String,
    /// Every directory entry's timestamp (source_date_epoch).
    pub time: Time,
}

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("a FAT32 filesystem of {size} bytes cannot be made ({source}); an ESP needs at least 33 MiB")]
    Format { size: u64, source: io::Error },
    #[error("a FAT32 filesystem needs at least {min} bytes (33 MiB: 65,525 clusters), not {size}; make the partition larger")]
    TooSmall { size: u64, min: u64 },
    #[error(
        "{path}: FAT cannot hold a {what}; only regular files and directories can go on the ESP"
    )]
    Unsupported { path: String, what: &'static str },
    #[error("{path}: the name is not valid UTF-8 or contains a character FAT forbids (\\ : * ? \" < > |)")]
    BadName { path: String },
    #[error("{a} and {b} differ only in case; FAT is case-insensitive, so they would be one entry (and fatfs would write both into it): rename one")]
    CaseCollision { a: String, b: String },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("the files do not fit on the ESP: {source}")]
    Full { source: io::Error },
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FatReport {
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug)]
struct FixedTime(fatfs::DateTime);

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.0
    }
}

/// Converts Unix time to a FAT date-time in UTC, clamped to FAT's 1980..=2107 range.
fn fat_datetime(t: Time) -> fatfs::DateTime {
    let c = crate::util::civil(t.secs);
    let (year, month, day, hour, min, sec) = if c.year < 1980 {
        (1980, 1, 1, 0, 0, 0)
    } else if c.year > 2107 {
        (2107, 12, 31, 23, 59, 59)
    } else {
        (c.year, c.month, c.day, c.hour, c.min, c.sec)
    };
    fatfs::DateTime {
        date: fatfs::Date {
            year: year as u16,
            month: month as u16,
            day: day as u16,
        },
        time: fatfs::Time {
            hour: hour as u16,
            min: min as u16,
            sec: sec as u16,
            millis: 0,
        },
    }
}

fn label_bytes(label: &str) -> [u8; 11] {
    let mut out = [b' '; 11];
    for (o, b) in out
        .iter_mut()
        .zip(label.bytes().map(|b| b.to_ascii_uppercase()))
    {
        *o = b;
    }
    out
}

/// Checks that every entry of `tree` can go on FAT as it is: regular files and directories
/// only, valid names, and no two names in a directory that FAT would take for one (it compares
/// names upper-cased, as fatfs does with `char::to_uppercase`). Paths are relative to the
/// filesystem's root, prefixed with `prefix` (its mount point) in messages.
pub fn check(tree: &Tree, prefix: &str) -> Result<(), FatError> {
    let mut stack = vec![(Tree::ROOT, prefix.trim_end_matches('/').to_owned())];
    while let Some((id, dir)) = stack.pop() {
        let Some(entries) = tree.children(id) else {
            continue;
        };
        let mut seen: std::collections::HashMap<String, String> = Default::default();
        for (name, &child) in entries {
            let path = format!("{dir}/{}", String::from_utf8_lossy(name));
            let name = valid_name(name).ok_or_else(|| FatError::BadName { path: path.clone() })?;
            if let Some(what) = unsupported(&tree.node(child).kind) {
                return Err(FatError::Unsupported { path, what });
            }
            let folded: String = name.chars().flat_map(char::to_uppercase).collect();
            if let Some(first) = seen.insert(folded, path.clone()) {
                return Err(FatError::CaseCollision { a: first, b: path });
            }
            if tree.node(child).is_dir() {
                stack.push((child, path));
            }
        }
    }
    Ok(())
}

/// The name as FAT stores it, if FAT can.
fn valid_name(name: &[u8]) -> Option<&str> {
    std::str::from_utf8(name)
        .ok()
        .filter(|n| !n.chars().any(|c| "\\:*?\"<>|".contains(c) || c < ' '))
}

fn unsupported(kind: &Kind) -> Option<&'static str> {
    match kind {
        Kind::Dir(_) | Kind::File(_) => None,
        Kind::Symlink(_) => Some("symlink"),
        Kind::CharDev { .. } | Kind::BlockDev { .. } => Some("device node"),
        Kind::Fifo => Some("fifo"),
        Kind::Socket => Some("socket"),
    }
}

/// The smallest FAT32 volume kiln makes: FAT32 needs at least 65,525 clusters (Microsoft's FAT
/// specification), which fatfs reaches with 512-byte clusters at 32.5 MiB.
pub const MIN_SIZE: u64 = 33 << 20;

/// Refuses a volume too small for FAT32 with the size it needs, before anything is written
/// (fatfs would refuse it too, once the image file exists; tiny sizes underflowed kiln's own
/// space estimate).
pub fn check_size(size: u64) -> Result<(), FatError> {
    if size < MIN_SIZE {
        return Err(FatError::TooSmall {
            size,
            min: MIN_SIZE,
        });
    }
    Ok(())
}

/// Formats FAT32 and copies the tree into it; streams the result into `sink` (partition-relative).
pub fn write(
    tree: &Tree,
    opts: &FatOptions,
    sink: &mut dyn BlockSink,
) -> Result<FatReport, FatError> {
    check(tree, "")?;
    check_size(opts.size)?;
    let mut dev = SparseImage::new(opts.size);
    fatfs::format_volume(
        &mut dev,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .volume_id(opts.volume_id)
            .volume_label(label_bytes(&opts.label)),
    )
    .map_err(|source| FatError::Format {
        size: opts.size,
        source,
    })?;
    dots::check_fat32(&mut dev).map_err(|source| FatError::Format {
        size: opts.size,
        source,
    })?;
    dev.seek(SeekFrom::Start(0))
        .map_err(|source| FatError::Full { source })?;

    // fatfs wants a 'static provider; one small leak per ESP written.
    let provider: &'static FixedTime = Box::leak(Box::new(FixedTime(fat_datetime(opts.time))));
    let mut report = FatReport { files: 0, bytes: 0 };
    {
        let fs = fatfs::FileSystem::new(&mut dev, fatfs::FsOptions::new().time_provider(provider))
            .map_err(|source| FatError::Format {
                size: opts.size,
                source,
            })?;
        copy_dir(tree, Tree::ROOT, &fs.root_dir(), "", &mut report)?;
        fs.unmount().map_err(|source| FatError::Full { source })?;
    }
    dots::repair(&mut dev).map_err(|source| FatError::Io {
        path: "/".into(),
        source,
    })?;
    dev.emit(0..opts.size, sink, 0)
        .map_err(|source| FatError::Io {
            path: "/".into(),
            source,
        })?;
    Ok(report)
}

fn copy_dir<T: fatfs::ReadWriteSeek>(
    tree: &Tree,
    id: NodeId,
    dir: &fatfs::Dir<'_, T>,
    prefix: &str,
    report: &mut FatReport,
) -> Result<(), FatError> {
    let Some(entries) = tree.children(id) else {
        return Ok(());
    };
    for (name, &child) in entries {
        let lossy = String::from_utf8_lossy(name);
        let path = format!("{prefix}/{lossy}");
        let Some(name) = valid_name(name) else {
            return Err(FatError::BadName { path });
        };
        let node = tree.node(child);
        let io_err = |source| FatError::Io {
            path: path.clone(),
            source,
        };
        match &node.kind {
            Kind::Dir(_) => {
                let sub = dir.create_dir(name).map_err(io_err)?;
                copy_dir(tree, child, &sub, &path, report)?;
            }
            Kind::File(content) => {
                let mut f = dir.create_file(name).map_err(io_err)?;
                let mut r = content.open().map_err(io_err)?;
                let n = io::copy(&mut r, &mut f).map_err(|source| match source.kind() {
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::WriteZero => {
                        FatError::Full { source }
                    }
                    _ => FatError::Io {
                        path: path.clone(),
                        source,
                    },
                })?;
                report.files += 1;
                report.bytes += n;
            }
            other => {
                return Err(FatError::Unsupported {
                    path,
                    what: unsupported(other).unwrap_or("special file"),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat_datetime_converts_and_clamps() {
        let d = fat_datetime(Time::from_secs(1_700_000_000)); // 2023-11-14T22:13:20Z
        assert_eq!((d.date.year, d.date.month, d.date.day), (2023, 11, 14));
        assert_eq!((d.time.hour, d.time.min, d.time.sec), (22, 13, 20));
        assert_eq!(fat_datetime(Time::from_secs(0)).date.year, 1980);
    }

    #[test]
    fn label_is_padded_upper_case() {
        assert_eq!(&label_bytes("esp"), b"ESP        ");
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;
    use crate::sink::VecSink;

    #[test]
    fn small_partitions_fail_with_a_clear_error_or_succeed() {
        let t = Tree::new(crate::tree::Meta::new(0o755, 0, 0, Time::from_secs(0)));
        for mib in [1u64, 8, 16, 32, 33, 34, 36, 40, 64] {
            let opts = FatOptions {
                size: mib << 20,
                volume_id: 1,
                label: "ESP".into(),
                time: Time::from_secs(0),
            };
            let mut s = VecSink::default();
            match write(&t, &opts, &mut s) {
                Ok(_) => assert!(mib >= 33, "{mib} MiB formatted, below MIN_SIZE"),
                Err(e) => {
                    assert!(mib < 33, "{mib} MiB failed: {e}");
                    assert!(matches!(e, FatError::TooSmall { .. }), "{mib} MiB: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod min_size_tests {
    use super::*;

    /// MIN_SIZE is the smallest size, rounded up to a MiB, at which fatfs formats a volume that
    /// is FAT32 by its cluster count (`dots::check_fat32`, which `write` runs).
    #[test]
    fn min_size_is_where_fat32_starts() {
        let fat32 = |size: u64| {
            let mut dev = SparseImage::new(size);
            fatfs::format_volume(
                &mut dev,
                fatfs::FormatVolumeOptions::new().fat_type(fatfs::FatType::Fat32),
            )
            .is_ok()
                && dots::check_fat32(&mut dev).is_ok()
        };
        let (mut lo, mut hi) = (1u64, MIN_SIZE / 512);
        assert!(fat32(hi * 512) && !fat32(lo * 512));
        while lo + 1 < hi {
            let mid = (lo + hi) / 2;
            if fat32(mid * 512) {
                hi = mid
            } else {
                lo = mid
            }
        }
        assert_eq!(
            (hi * 512).div_ceil(1 << 20) << 20,
            MIN_SIZE,
            "threshold {}",
            hi * 512
        );
    }
}
