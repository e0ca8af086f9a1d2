//! Every command a maintainer script may run, by kind, in one table: what kiln applies, what
//! it answers (queries), and what happens anyway without kiln (with the reason, for the
//! manifest). Anything not in the table is reported as not applied.

/// What kind of command a script runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// kiln applies its effect to the tree ([`super::host::World`] has a handler).
    Apply,
    /// It only looks: kiln answers it from the tree and the databases (or says "unknown").
    Query,
    /// Its effect happens without kiln; the reason says where (for the manifest's `deferred`).
    Deferred(&'static str),
    /// Its effect is missing from the image; the reason says why.
    NotApplied(&'static str),
}

pub const NO_RUNNING_SYSTEM: &str =
    "acts on a running system; an image being built has none (dpkg in a chroot does nothing either)";

const APPLY: &[&str] = &[
    "adduser",
    "addgroup",
    "useradd",
    "groupadd",
    "usermod",
    "gpasswd",
    "update-alternatives",
    "deb-systemd-helper",
    "systemctl",
    "update-rc.d",
    "ucf",
    "ucfr",
    "dpkg-statoverride",
    "systemd-sysusers",
    "ln",
    "mkdir",
    "cp",
    "mv",
    "rm",
    "rmdir",
    "touch",
    "chmod",
    "chown",
    "chgrp",
    "install",
    "mktemp",
    "dpkg-trigger",
    "dpkg-maintscript-helper",
    "update-shells",
    "linux-update-symlinks",
    "db_get",
    "db_set",
    "db_input",
    "db_go",
    "db_version",
    "db_capb",
    "db_title",
    "db_stop",
    "db_purge",
    "db_unregister",
    "db_register",
    "db_reset",
    "db_subst",
    "db_fget",
    "db_fset",
    "db_metaget",
    "db_settitle",
    "db_beginblock",
    "db_endblock",
    "db_x_loadtemplatefile",
    "db_clear",
    "db_info",
    "db_progress",
    "db_data",
    "dpkg-divert",
    "pam-auth-update",
    "setcap",
    "run-parts",
    "locale-gen",
    "update-locale",
];

/// Commands that only read: text tools and lookups (their answer may be unknown).
const QUERY: &[&str] = &[
    "getent",
    "id",
    "dpkg",
    "dpkg-query",
    "readlink",
    "realpath",
    "cat",
    "md5sum",
    "sha256sum",
    "uname",
    "pidof",
    "pgrep",
    "ischroot",
    "stat",
    "ls",
    "awk",
    "mawk",
    "cut",
    "tr",
    "head",
    "tail",
    "sort",
    "uniq",
    "wc",
    "date",
    "seq",
    "expr",
    "env",
    "sleep",
    "dpkg-architecture",
    "runlevel",
    "tty",
    "logger",
    "whoami",
    "hostname",
    "nproc",
    "df",
    "lsb_release",
    "find",
    "getcap",
    "mountpoint",
    "aa-enabled",
    "aa-status",
    "dpkg-realpath",
    "cmp",
    "test",
];

/// Deferred commands and where their effect comes from instead.
const DEFERRED: &[(&str, &str)] = &[
    ("systemd-tmpfiles", "systemd-tmpfiles-setup.service creates these on every boot"),
    ("journalctl", "systemd-journal-catalog-update.service builds the catalog on first boot (ConditionNeedsUpdate=/var)"),
    ("systemd-hwdb", "systemd-hwdb-update.service builds hwdb.bin on first boot (ConditionNeedsUpdate=/etc)"),
    ("systemd-machine-id-setup", "/etc/machine-id is left empty for systemd's first boot (machine-id(5)), so every instance gets its own"),
    ("shadowconfig", "kiln writes /etc/shadow and /etc/gshadow itself"),
    ("pwconv", "kiln writes /etc/shadow itself"),
    ("grpconv", "kiln writes /etc/gshadow itself"),
    ("py3compile", "Python compiles modules into __pycache__ when they are first imported"),
    ("pycompile", "Python compiles modules into __pycache__ when they are first imported"),
    ("pypy3compile", "Python compiles modules into __pycache__ when they are first imported"),
    ("py3clean", "nothing compiled to clean on a first install"),
    ("update-initramfs", "[boot] makes the kernel's initrd (or the kernel needs none)"),
    ("update-grub", "[boot] installs the boot loader"),
    ("grub-install", "[boot] installs the boot loader"),
    ("bootctl", "[boot] installs the boot loader"),
    ("kernel-install", "[boot] installs the kernel"),
    // Left to the steps the kmod helper adds (depmod, update-ca-certificates, ldconfig); at
    // boot, ldconfig.service (ConditionNeedsUpdate=/etc) rebuilds ld.so.cache too.
    ("depmod", "the kernel-modules step writes what depmod does"),
    ("update-ca-certificates", "the CA-certificates step writes the bundle and its hash links"),
    ("ldconfig", "the ld.so.cache step writes it; ldconfig.service also rebuilds it on first boot"),
    ("invoke-rc.d", NO_RUNNING_SYSTEM),
    ("deb-systemd-invoke", NO_RUNNING_SYSTEM),
    ("service", NO_RUNNING_SYSTEM),
    ("start-stop-daemon", NO_RUNNING_SYSTEM),
    ("udevadm", NO_RUNNING_SYSTEM),
    ("dbus-send", NO_RUNNING_SYSTEM),
    ("kill", NO_RUNNING_SYSTEM),
    ("pkill", NO_RUNNING_SYSTEM),
    ("killall", NO_RUNNING_SYSTEM),
    ("telinit", NO_RUNNING_SYSTEM),
    ("sync", "nothing to flush: the image is written once, at the end"),
    ("dbus-uuidgen", "the D-Bus machine id is /etc/machine-id, which systemd makes on first boot"),
    ("update-tirfs", "[boot] makes the kernel's initrd (or the kernel needs none)"),
    ("apparmor_parser", NO_RUNNING_SYSTEM),
    ("ssh-keygen", "SSH host keys are made on each instance's first boot (cloud-init's cc_ssh, or kiln's ssh-hostkeys unit), never baked into the image"),
];

/// Commands kiln knows it does not apply.
const NOT_APPLIED: &[(&str, &str)] = &[
    ("perl", "kiln does not run perl code"),
    ("python3", "kiln does not run Python code"),
    ("python", "kiln does not run Python code"),
    ("dpkg-reconfigure", "kiln does not reconfigure packages"),
    ("xargs", "kiln does not run xargs"),
];

/// The kind of `name` called with `args`.
pub fn classify(name: &str, args: &[&str]) -> Class {
    // Fingerprints only read; making a key is deferred (host keys) or not applied.
    if name == "ssh-keygen" && args.contains(&"-l") {
        return Class::Query;
    }
    if name == "ssh-keygen" && !args.iter().any(|a| a.starts_with("/etc/ssh/ssh_host_")) {
        return Class::NotApplied("kiln does not make keys");
    }
    if name.starts_with("python3") || name.starts_with("pypy") {
        if args.iter().any(|a| {
            a.ends_with("py_compile.py") || *a == "py_compile" || a.ends_with("compileall.py")
        }) {
            return Class::Deferred(
                "Python compiles modules into __pycache__ when they are first imported",
            );
        }
        return Class::NotApplied("kiln does not run Python code");
    }
    // `sed` without -i only reads.
    // find only reads unless it deletes or runs something.
    if name == "find"
        && args
            .iter()
            .any(|a| matches!(*a, "-delete" | "-exec" | "-execdir" | "-ok" | "-fprint"))
    {
        return Class::NotApplied("kiln does not run find with -delete or -exec");
    }
    if name == "sed" {
        if args
            .iter()
            .any(|a| a.starts_with("-i") || *a == "--in-place")
        {
            return Class::Apply;
        }
        return Class::Query;
    }
    // debconf's check that perl runs (perl-base is Essential).
    if name == "perl" && args == ["-e", ""] {
        return Class::Query;
    }
    // `journalctl` is only deferred for --update-catalog; `systemd-hwdb` for update.
    if name == "journalctl" && !args.contains(&"--update-catalog") {
        return Class::Query;
    }
    if name == "udevadm" && args.first() == Some(&"hwdb") {
        return Class::Deferred(
            "systemd-hwdb-update.service builds hwdb.bin on first boot (ConditionNeedsUpdate=/etc)",
        );
    }
    if name == "dpkg"
        && !matches!(
            args.first(),
            Some(
                &"--compare-versions"
                    | &"--print-architecture"
                    | &"-s"
                    | &"--status"
                    | &"-l"
                    | &"--list"
                    | &"-L"
                    | &"--listfiles"
                    | &"-S"
                    | &"--search"
                    | &"--assert-multi-arch"
            )
        )
    {
        return Class::NotApplied("kiln does not run dpkg");
    }
    if APPLY.contains(&name) {
        return Class::Apply;
    }
    if QUERY.contains(&name) {
        return Class::Query;
    }
    if let Some((_, r)) = DEFERRED.iter().find(|(n, _)| *n == name) {
        return Class::Deferred(r);
    }
    if let Some((_, r)) = NOT_APPLIED.iter().find(|(n, _)| *n == name) {
        return Class::NotApplied(r);
    }
    Class::NotApplied(NO_RULE)
}

/// Commands whose operands are file names (relative ones are read against the working
/// directory after `cd`).
pub fn takes_paths(name: &str) -> bool {
    matches!(
        name,
        "ln" | "mkdir"
            | "cp"
            | "mv"
            | "rm"
            | "rmdir"
            | "touch"
            | "chmod"
            | "chown"
            | "chgrp"
            | "install"
            | "sed"
            | "ucf"
            | "ucfr"
            | "setcap"
    )
}

/// Queries whose operands (other than options) are all file names.
pub fn reads_paths(name: &str) -> bool {
    matches!(
        name,
        "cat"
            | "ls"
            | "stat"
            | "md5sum"
            | "sha256sum"
            | "readlink"
            | "realpath"
            | "cmp"
            | "getcap"
            | "dpkg-realpath"
    )
}

pub const NO_RULE: &str = "kiln has no rule for this command";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_consistent() {
        let mut all: Vec<&str> = APPLY.iter().chain(QUERY).copied().collect();
        all.extend(DEFERRED.iter().map(|(n, _)| *n));
        all.extend(NOT_APPLIED.iter().map(|(n, _)| *n));
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(all.len(), sorted.len(), "a command is in two lists");
        assert_eq!(classify("sed", &["-n", "p"]), Class::Query);
        assert_eq!(classify("sed", &["-i", "s/a/b/", "f"]), Class::Apply);
        assert!(matches!(
            classify("journalctl", &["--update-catalog"]),
            Class::Deferred(_)
        ));
        assert!(matches!(classify("frobnicate", &[]), Class::NotApplied(_)));
        assert_eq!(
            classify("dpkg", &["--compare-versions", "1", "lt", "2"]),
            Class::Query
        );
        assert!(matches!(
            classify("dpkg", &["--add-architecture", "i386"]),
            Class::NotApplied(_)
        ));
    }
}
