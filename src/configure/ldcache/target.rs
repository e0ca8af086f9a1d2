//! What differs between the architectures' `ldconfig` builds (glibc 2.36 as Debian builds it):
//! the library flags, the legacy hwcap subdirectory names, the system directories, and whether
//! C `char` is signed (it decides how `_dl_cache_libcmp` orders non-ASCII names).

/// `FLAG_*` of glibc's `ldconfig.h`.
pub const FLAG_ANY: i32 = -1;
pub const FLAG_LIBC4: i32 = 0x0000;
pub const FLAG_ELF: i32 = 0x0001;
pub const FLAG_ELF_LIBC5: i32 = 0x0002;
pub const FLAG_ELF_LIBC6: i32 = 0x0003;
const FLAG_IA64_LIB64: i32 = 0x0200;
const FLAG_X8664_LIB64: i32 = 0x0300;
const FLAG_X8664_LIBX32: i32 = 0x0800;
const FLAG_ARM_LIBHF: i32 = 0x0900;
const FLAG_AARCH64_LIB64: i32 = 0x0a00;
const FLAG_ARM_LIBSF: i32 = 0x0b00;

const EM_386: u16 = 3;
const EM_IA_64: u16 = 50;
const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

/// One architecture's `ldconfig`.
#[derive(Debug)]
pub struct Target {
    pub arch: Arch,
    /// Debian's multiarch triplet: the system directories are `/lib/<triplet>`,
    /// `/usr/lib/<triplet>`, `/lib` and `/usr/lib`.
    pub triplet: &'static str,
    /// `_dl_string_hwcap`'s names, by bit.
    hwcaps: &'static [&'static str],
    /// `HWCAP_IMPORTANT`: the hwcap names that make a subdirectory worth scanning.
    important: u64,
    /// `_dl_string_platform`'s names and bits.
    platforms: &'static [(&'static str, u32)],
    pub char_signed: bool,
    /// Interpreters that tell a libc6 object (`SYSDEP_KNOWN_INTERPRETER_NAMES`).
    pub interpreters: &'static [&'static str],
}

static X86_64: Target = Target {
    arch: Arch::X86_64,
    triplet: "x86_64-linux-gnu",
    // ldconfig covers i386 and x86-64 alike (HWCAP_START 0, HWCAP_COUNT 3).
    hwcaps: &["sse2", "x86_64", "avx512_1"],
    important: 0b111,
    platforms: &[
        ("i586", 48),
        ("i686", 49),
        ("haswell", 50),
        ("xeon_phi", 51),
    ],
    char_signed: true,
    interpreters: &[
        "/lib/ld-linux-x86-64.so.2",
        "/lib/ld-linux.so.2",
        "/libx32/ld-linux-x32.so.2",
        "/lib64/ld-linux-x86-64.so.2",
    ],
};

static AARCH64: Target = Target {
    arch: Arch::Aarch64,
    triplet: "aarch64-linux-gnu",
    hwcaps: &[
        "fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp",
        "asimdhp", "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4",
        "asimddp", "sha512", "sve", "asimdfhm", "dit", "uscat", "ilrcpc", "flagm", "ssbs", "sb",
        "paca", "pacg",
    ],
    // HWCAP_ATOMICS.
    important: 1 << 8,
    platforms: &[],
    char_signed: false,
    interpreters: &[
        "/lib/ld-linux-aarch64.so.1",
        "/lib/ld-linux-aarch64.so.1",
        "/lib/ld-linux-aarch64_be.so.1",
        "/lib/ld-linux-aarch64_ilp32.so.1",
        "/lib/ld-linux-aarch64_be_ilp32.so.1",
        "/lib/ld-linux.so.3",
        "/lib/ld-linux-armhf.so.3",
    ],
};

impl Target {
    /// The `ldconfig` for a binary of machine `e_machine`, if kiln knows it.
    pub fn for_machine(e_machine: u16) -> Option<&'static Target> {
        match e_machine {
            EM_X86_64 => Some(&X86_64),
            EM_AARCH64 => Some(&AARCH64),
            _ => None,
        }
    }

    fn string_hwcap(&self, name: &[u8]) -> Option<u32> {
        self.hwcaps
            .iter()
            .position(|h| h.as_bytes() == name)
            .map(|i| i as u32)
    }

    fn string_platform(&self, name: &[u8]) -> Option<u32> {
        self.platforms
            .iter()
            .find(|(p, _)| p.as_bytes() == name)
            .map(|&(_, b)| b)
    }

    /// `is_hwcap_platform`: a subdirectory name ldconfig descends into.
    pub fn is_hwcap_platform(&self, name: &[u8]) -> bool {
        if let Some(i) = self.string_hwcap(name) {
            if (1u64 << i) & self.important != 0 {
                return true;
            }
        }
        self.string_platform(name).is_some() || name == b"tls"
    }

    /// `path_hwcap`: the hwcap bits the trailing components of `path` name.
    pub fn path_hwcap(&self, path: &[u8]) -> u64 {
        let mut hwcap: u64 = 0;
        let mut rest = path;
        while let Some(slash) = rest.iter().rposition(|&b| b == b'/') {
            let comp = &rest[slash + 1..];
            let bit = match self
                .string_hwcap(comp)
                .or_else(|| self.string_platform(comp))
            {
                Some(b) => b,
                None if comp == b"tls" => 63,
                None => break,
            };
            hwcap = hwcap.wrapping_add(1u64 << bit);
            rest = &rest[..slash];
        }
        hwcap
    }

    /// The architecture wrapper of `process_elf_file`: whether the object's machine is one this
    /// `ldconfig` takes, and the flag it then forces (`None`: keep what the generic reader
    /// found).
    pub fn machine_flag(&self, is64: bool, machine: u16, e_flags: u32) -> Result<Option<i32>, ()> {
        match self.arch {
            Arch::X86_64 => match (machine, is64) {
                (EM_X86_64, true) => Ok(Some(FLAG_X8664_LIB64 | FLAG_ELF_LIBC6)),
                (EM_X86_64, false) => Ok(Some(FLAG_X8664_LIBX32 | FLAG_ELF_LIBC6)),
                (EM_IA_64, true) => Ok(Some(FLAG_IA64_LIB64 | FLAG_ELF_LIBC6)),
                (EM_386, false) => Ok(None),
                _ => Err(()),
            },
            Arch::Aarch64 => {
                if is64 {
                    // "AArch64 libraries are always libc.so.6+", whatever the machine.
                    return Ok(Some(FLAG_AARCH64_LIB64 | FLAG_ELF_LIBC6));
                }
                const EF_ARM_EABI_VER5: u32 = 0x0500_0000;
                const EF_ARM_ABI_FLOAT_SOFT: u32 = 0x200;
                const EF_ARM_ABI_FLOAT_HARD: u32 = 0x400;
                if e_flags & 0xff00_0000 != EF_ARM_EABI_VER5 {
                    return Ok(None);
                }
                Ok(Some(if e_flags & EF_ARM_ABI_FLOAT_HARD != 0 {
                    FLAG_ARM_LIBHF | FLAG_ELF_LIBC6
                } else if e_flags & EF_ARM_ABI_FLOAT_SOFT != 0 {
                    FLAG_ARM_LIBSF | FLAG_ELF_LIBC6
                } else {
                    FLAG_ELF_LIBC6
                }))
            }
        }
    }

    /// `_dl_cache_libcmp`: runs of digits compare as numbers, other bytes as C `char`.
    pub fn libcmp(&self, p1: &[u8], p2: &[u8]) -> i64 {
        let ch = |b: u8| -> i64 {
            if self.char_signed {
                i64::from(b as i8)
            } else {
                i64::from(b)
            }
        };
        let (mut i, mut j) = (0, 0);
        let at = |s: &[u8], k: usize| s.get(k).copied().unwrap_or(0);
        while at(p1, i) != 0 {
            let (c1, c2) = (at(p1, i), at(p2, j));
            if c1.is_ascii_digit() {
                if !c2.is_ascii_digit() {
                    return 1;
                }
                // C int arithmetic, wrapping as the real one would on absurd lengths.
                let (mut v1, mut v2) = (0i32, 0i32);
                while at(p1, i).is_ascii_digit() {
                    v1 = v1
                        .wrapping_mul(10)
                        .wrapping_add(i32::from(at(p1, i) - b'0'));
                    i += 1;
                }
                while at(p2, j).is_ascii_digit() {
                    v2 = v2
                        .wrapping_mul(10)
                        .wrapping_add(i32::from(at(p2, j) - b'0'));
                    j += 1;
                }
                if v1 != v2 {
                    return i64::from(v1.wrapping_sub(v2));
                }
            } else if c2.is_ascii_digit() {
                return -1;
            } else if c1 != c2 {
                return ch(c1) - ch(c2);
            } else {
                i += 1;
                j += 1;
            }
        }
        ch(at(p1, i)) - ch(at(p2, j))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names_compare_as_versions() {
        let t = &X86_64;
        assert!(t.libcmp(b"libfoo.so.10", b"libfoo.so.9") > 0);
        assert!(t.libcmp(b"libfoo.so.1.2", b"libfoo.so.1.10") < 0);
        assert_eq!(t.libcmp(b"libfoo.so.01", b"libfoo.so.1"), 0);
        assert!(t.libcmp(b"libfoo.so", b"libfoo.so.1") < 0);
        assert!(t.libcmp(b"libfoo.so.1", b"libfoo.so.x") > 0);
    }

    #[test]
    fn hwcap_directories() {
        let t = &X86_64;
        assert!(t.is_hwcap_platform(b"haswell") && t.is_hwcap_platform(b"tls"));
        assert!(!t.is_hwcap_platform(b"x86_64-linux-gnu"));
        assert_eq!(t.path_hwcap(b"/usr/lib/x86_64-linux-gnu"), 0);
        assert_eq!(
            t.path_hwcap(b"/usr/lib/x86_64-linux-gnu/haswell/x86_64"),
            (1 << 50) + (1 << 1)
        );
        assert_eq!(t.path_hwcap(b"/lib/tls"), 1 << 63);
        let a = &AARCH64;
        assert!(a.is_hwcap_platform(b"atomics") && !a.is_hwcap_platform(b"fp"));
        assert_eq!(a.path_hwcap(b"/usr/lib/fp"), 1);
    }
}
