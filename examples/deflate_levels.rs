//! For `scripts/bench-formats`: `deflate_levels IMAGE LEVEL...` deflates each non-zero 64 KiB
//! grain of a raw disk image as the VMDK writer does (zlib format, kiln's flate2 backend), once
//! per level, and prints each level's output size and the CPU seconds the deflating took on its
//! one thread (reading the image is not counted). Holes are skipped with SEEK_DATA.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;

const GRAIN: usize = 64 << 10;

fn thread_cpu() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Calls `f` with each non-zero grain of the file.
fn grains(f: &mut File, mut each: impl FnMut(&[u8])) -> std::io::Result<()> {
    let len = f.metadata()?.len();
    let mut buf = vec![0u8; GRAIN];
    let mut pos = 0u64;
    while pos < len {
        // SAFETY: lseek on an open descriptor.
        let data = unsafe { libc::lseek(f.as_raw_fd(), pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            break; // no data after pos
        }
        pos = data as u64 / GRAIN as u64 * GRAIN as u64;
        f.seek(SeekFrom::Start(pos))?;
        let n = (len - pos).min(GRAIN as u64) as usize;
        buf[n..].fill(0);
        f.read_exact(&mut buf[..n])?;
        if buf.iter().any(|&b| b != 0) {
            each(&buf);
        }
        pos += GRAIN as u64;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: deflate_levels IMAGE LEVEL...".into());
    }
    let mut f = File::open(&args[1])?;
    let mut plain = 0u64;
    grains(&mut f, |g| plain += g.len() as u64)?;
    println!("{:.1} MB in non-zero grains", plain as f64 / 1e6);
    for level in &args[2..] {
        let level: u32 = level.parse()?;
        let (mut size, mut cpu) = (0u64, 0f64);
        grains(&mut f, |g| {
            let t = thread_cpu();
            let mut z = flate2::write::ZlibEncoder::new(
                Vec::with_capacity(GRAIN),
                flate2::Compression::new(level),
            );
            let out = z.write_all(g).and_then(|()| z.finish());
            cpu += thread_cpu() - t;
            size += out.map_or(0, |o| o.len() as u64);
        })?;
        println!(
            "level {level}: {:8.1} MB ({:5.1}% of the data) in {:6.2} s CPU ({:.0} MB/s)",
            size as f64 / 1e6,
            100.0 * size as f64 / plain.max(1) as f64,
            cpu,
            plain as f64 / 1e6 / cpu.max(1e-9)
        );
    }
    Ok(())
}
