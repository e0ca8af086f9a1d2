//! The world a maintainer script runs in at build time: the image's tree, its account
//! databases and debconf answers. Every command a script runs arrives here ([`World::run`]):
//! [`commands::classify`] says what kind of command it is, and commands kiln applies are
//! dispatched to their effect's module. Whatever is not applied is written to the report with
//! its reason.

use super::accounts::{self, Accounts};
use super::commands::{self, Class};
use super::debconf::Debconf;
use super::report::{Entry, Report};
use super::script::{Call, Host, Output, Status, Tri, Val};
use super::{
    alternatives, divert, dsh, fileutil, fsops, pam, sysusers, sysv, textutil, ucf, units,
};
use crate::tree::{Kind, Meta, Time, Tree};

pub struct World<'t> {
    pub tree: &'t mut Tree,
    pub sde: Time,
    pub arch: String,
    pub accounts: Accounts,
    pub debconf: Debconf,
    pub report: Report,
    /// The package and script being run.
    pub package: String,
    pub script: String,
    /// Triggers activated by `dpkg-trigger` calls.
    pub activated: Vec<String>,
    /// Temporary files `mktemp` made, removed when the script ends.
    pub temps: Vec<String>,
    temp_count: u32,
    /// Installed package versions, for `dpkg-query`.
    pub versions: Vec<(String, String)>,
    /// How deeply helper scripts from the tree are being read (see [`World::helper`]).
    helper_depth: usize,
    /// The current package's prefix under /var/lib/dpkg/info.
    pub pkg_key: String,
    /// Packages whose debconf `config` script has run.
    configs_run: std::collections::BTreeSet<String>,
}

impl<'t> World<'t> {
    pub fn new(tree: &'t mut Tree, sde: Time, arch: &str, accounts: Accounts) -> Self {
        World {
            tree,
            sde,
            arch: arch.to_owned(),
            accounts,
            debconf: Debconf::default(),
            report: Report::default(),
            package: String::new(),
            script: String::new(),
            activated: Vec::new(),
            temps: Vec::new(),
            temp_count: 0,
            versions: Vec::new(),
            helper_depth: 0,
            pkg_key: String::new(),
            configs_run: Default::default(),
        }
    }

    fn entry(&self, call: &Call, reason: String) -> Entry {
        Entry {
            package: self.package.clone(),
            script: self.script.clone(),
            line: call.line,
            command: call.show(),
            reason,
        }
    }

    /// Records `call` as not applied.
    fn not_applied(&mut self, call: &Call, reason: impl Into<String>) {
        let e = self.entry(call, reason.into());
        self.report.not_applied.push(e);
    }

    fn deferred(&mut self, call: &Call, reason: impl Into<String>) {
        let e = self.entry(call, reason.into());
        self.report.deferred.push(e);
    }

    /// Removes what `mktemp` made during the script (its `trap cleanup EXIT` would).
    pub fn end_script(&mut self) {
        for t in std::mem::take(&mut self.temps) {
            fsops::remove(self.tree, &t);
        }
    }

    /// A user or group name (or `#N`, or a number) as its id.
    fn id_of(accounts: &Accounts, name: &str, user: bool) -> Option<u32> {
        if let Some(n) = name.strip_prefix('#') {
            return n.parse().ok();
        }
        if let Ok(n) = name.parse() {
            return Some(n);
        }
        if user {
            accounts.user(name).map(|u| u.uid)
        } else {
            accounts.group(name).map(|g| g.gid)
        }
    }

    fn apply(&mut self, name: &str, args: &[&str], call: &Call) -> Result<Output, String> {
        let sde = self.sde;
        let accts = self.accounts.clone();
        let ids = move |n: &str, user: bool| Self::id_of(&accts, n, user);
        let code = |r: Result<i32, String>| r.map(Output::code);
        match name {
            "adduser" | "addgroup" | "useradd" | "groupadd" | "usermod" | "gpasswd" => {
                let mut argv = vec![name];
                argv.extend_from_slice(args);
                let req = accounts::parse_command(&argv)?;
                match accounts::apply(&mut self.accounts, &req) {
                    Ok(Some((home, uid, gid))) => {
                        if fsops::lookup(self.tree, &home, true).is_none() {
                            let id = fsops::mkdir_p(self.tree, &home, &Meta::new(0o755, 0, 0, sde))
                                .map_err(|e| e.to_string())?;
                            let m = &mut self.tree.node_mut(id).meta;
                            m.uid = uid;
                            m.gid = gid;
                        }
                        Ok(Output::ok())
                    }
                    Ok(None) => Ok(Output::ok()),
                    // It fails on a real install too, changing nothing: the same exit status
                    // (a script under `set -e` then stops, and that is reported).
                    Err(_) => Ok(Output::code(1)),
                }
            }
            "update-alternatives" => {
                let op = alternatives::parse_command(args)?;
                // A refusal (a bad name, a missing path) is update-alternatives' own error.
                Ok(match alternatives::apply(self.tree, &op, sde) {
                    Ok(()) => Output::ok(),
                    Err(_) => Output::code(2),
                })
            }
            "dpkg-divert" => {
                let (rc, out) = divert::run(self.tree, args, sde)?;
                Ok(Output::text(rc, out))
            }
            "pam-auth-update" => pam::run(self.tree, args, sde).map(|()| Output::ok()),
            "setcap" => match args {
                ["-r", f] => {
                    let id = fsops::lookup(self.tree, f, true)
                        .ok_or_else(|| format!("{f} does not exist"))?;
                    let had = self
                        .tree
                        .node_mut(id)
                        .meta
                        .xattrs
                        .remove(b"security.capability".as_slice());
                    Ok(Output::code(if had.is_some() { 0 } else { 1 }))
                }
                _ => Err("kiln does not set file capabilities".into()),
            },
            "run-parts" => self.run_parts(args, call),
            "sed" => code(textutil::sed_in_place(self.tree, args, sde)),
            "deb-systemd-helper" => code(dsh::run(self.tree, args, sde)),
            "systemctl" => self.systemctl(args, call),
            "update-rc.d" => sysv::run(self.tree, args, sde).map(|()| Output::ok()),
            "ucf" => ucf::ucf(self.tree, args, sde).map(|()| Output::ok()),
            "ucfr" => ucf::ucfr(self.tree, args, sde).map(|()| Output::ok()),
            "dpkg-statoverride" => {
                let (rc, out) = ucf::statoverride(self.tree, args, &ids, sde)?;
                Ok(Output::text(rc, out))
            }
            "systemd-sysusers" => {
                let mut texts = Vec::new();
                for f in args {
                    if f.starts_with('-') {
                        return Err(format!("option {f} is not handled"));
                    }
                    let p = sysusers::find(self.tree, f)
                        .ok_or_else(|| format!("{f} is not in any sysusers.d directory"))?;
                    texts.push((
                        p.clone(),
                        fsops::read_text(self.tree, &p).unwrap_or_default(),
                    ));
                }
                if args.is_empty() {
                    for (_, p) in sysusers::files(self.tree) {
                        texts.push((
                            p.clone(),
                            fsops::read_text(self.tree, &p).unwrap_or_default(),
                        ));
                    }
                }
                let problems = sysusers::apply(&mut self.accounts, self.tree, &texts);
                if !problems.is_empty() {
                    self.not_applied(call, problems.join("; "));
                }
                Ok(Output::ok())
            }
            "ln" => code(fileutil::ln(self.tree, args, sde)),
            "mkdir" => code(fileutil::mkdir(self.tree, args, sde)),
            "cp" => code(fileutil::cp(self.tree, args, sde)),
            "mv" => code(fileutil::mv(self.tree, args, sde)),
            "rm" => code(fileutil::rm(self.tree, args)),
            "rmdir" => code(fileutil::rmdir(self.tree, args)),
            "touch" => code(fileutil::touch(self.tree, args, sde)),
            "chmod" => code(fileutil::chmod(self.tree, args)),
            "chown" => code(fileutil::chown(self.tree, args, &ids, false)),
            "chgrp" => code(fileutil::chown(self.tree, args, &ids, true)),
            "install" => code(fileutil::install(self.tree, args, &ids, sde)),
            "mktemp" => self.mktemp(args),
            "dpkg-trigger" => {
                let names: Vec<&str> = args
                    .iter()
                    .copied()
                    .filter(|a| !a.starts_with('-'))
                    .collect();
                for n in names {
                    self.activated.push(n.to_owned());
                }
                Ok(Output::ok())
            }
            "dpkg-maintscript-helper" => self.maintscript_helper(args),
            "update-shells" => {
                super::generated::update_shells(self.tree, sde).map(|()| Output::ok())
            }
            "locale-gen" => super::generated::locale_gen(self.tree, args).map(|()| Output::ok()),
            "update-locale" => {
                super::generated::update_locale(self.tree, args, sde).map(|()| Output::ok())
            }
            "linux-update-symlinks" => {
                super::generated::linux_update_symlinks(self.tree, args, sde).map(|()| Output::ok())
            }
            n if n.starts_with("db_") => {
                let (rc, ret) = self.debconf.run(n, args);
                let mut o = Output::code(rc);
                o.set.push(("RET".into(), Val::Known(ret)));
                Ok(o)
            }
            other => Err(format!("kiln has no handler for {other}")),
        }
    }

    /// `run-parts DIR`: kernel hooks that make an initrd or install a boot loader are what
    /// `[boot]` does; any other hook is reported.
    fn run_parts(&mut self, args: &[&str], call: &Call) -> Result<Output, String> {
        let dirs: Vec<&str> = args
            .iter()
            .copied()
            .filter(|a| !a.starts_with('-'))
            .collect();
        let [dir] = dirs[..] else {
            return Err("run-parts needs one directory".into());
        };
        let Some(id) = fsops::lookup(self.tree, dir, true) else {
            return Ok(Output::code(1));
        };
        let names: Vec<String> = self
            .tree
            .children(id)
            .map(|e| {
                e.keys()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        const BOOT_HOOKS: &[&str] = &[
            "initramfs-tools",
            "tiny-initramfs",
            "dracut",
            "zz-systemd-boot",
            "zz-update-grub",
        ];
        let kernel_dir = dir.starts_with("/etc/kernel/");
        for n in names {
            // run-parts' default name rule: letters, digits, underscores and hyphens.
            if !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                continue;
            }
            let hook = format!("{}/{n}", dir.trim_end_matches('/'));
            if self.test_path('x', &hook) != Tri::True {
                continue;
            }
            if kernel_dir && BOOT_HOOKS.contains(&n.as_str()) {
                self.deferred(call, format!("hook {hook}: [boot] makes the kernel's initrd and boot loader (or the kernel needs none)"));
            } else {
                self.not_applied(call, format!("hook {hook} is not run"));
            }
        }
        Ok(Output::ok())
    }

    fn systemctl(&mut self, args: &[&str], call: &Call) -> Result<Output, String> {
        let mut scope = units::Scope::System;
        let mut preset_mode = "full";
        let mut words = Vec::new();
        for a in args {
            match *a {
                "--system" | "-q" | "--quiet" | "--no-reload" | "--no-block" | "-f" | "--force"
                | "--now" | "--root=/" => {}
                "--global" | "--user" => scope = units::Scope::Global,
                a if a.starts_with("--preset-mode=") => preset_mode = &a["--preset-mode=".len()..],
                a if a.starts_with("--root") => return Err(format!("{a} is not handled")),
                a if a.starts_with('-') => return Err(format!("option {a} is not handled")),
                a => words.push(a),
            }
        }
        let Some((&verb, names)) = words.split_first() else {
            return Ok(Output::ok());
        };
        let sde = self.sde;
        match verb {
            "enable" | "reenable" => {
                units::enable(self.tree, scope, names, sde).map(|_| Output::ok())
            }
            "disable" => units::disable(self.tree, scope, names).map(|()| Output::ok()),
            "mask" => {
                for n in names {
                    units::mask(self.tree, scope, n, sde)?;
                }
                Ok(Output::ok())
            }
            "unmask" => {
                for n in names {
                    units::unmask(self.tree, scope, n);
                }
                Ok(Output::ok())
            }
            "preset" => {
                for n in names {
                    let on = units::preset_enables(self.tree, n);
                    if on {
                        units::enable(self.tree, scope, &[n], sde)?;
                    } else if preset_mode == "full" {
                        units::disable(self.tree, scope, &[n])?;
                    }
                }
                Ok(Output::ok())
            }
            "is-enabled" => Ok(Output::tri(Tri::from(
                names.iter().all(|n| units::is_enabled(self.tree, scope, n)),
            ))),
            _ => {
                // In a chroot systemctl ignores these ("Running in chroot, ignoring command").
                self.deferred(call, commands::NO_RUNNING_SYSTEM);
                Ok(Output::ok())
            }
        }
    }

    fn mktemp(&mut self, args: &[&str]) -> Result<Output, String> {
        let dir = args.contains(&"-d");
        if args.iter().any(|a| !a.starts_with('-')) {
            return Err("mktemp with a template is not handled".into());
        }
        self.temp_count += 1;
        let p = format!("/tmp/tmp.kiln{:04}", self.temp_count);
        let sde = self.sde;
        let tmp = fsops::mkdir_p(self.tree, "/tmp", &Meta::new(0o1777, 0, 0, sde))
            .map_err(|e| e.to_string())?;
        let _ = tmp;
        if dir {
            let id = fsops::mkdir_p(self.tree, &p, &Meta::new(0o700, 0, 0, sde))
                .map_err(|e| e.to_string())?;
            self.tree.node_mut(id).meta.mode = 0o700;
        } else {
            fsops::write_file(self.tree, &p, Vec::new(), 0o600, 0, 0, sde)
                .map_err(|e| e.to_string())?;
        }
        self.temps.push(p.clone());
        Ok(Output::text(0, p + "\n"))
    }

    /// dpkg-maintscript-helper(1): on a first install (`$2` empty) every command is a no-op.
    fn maintscript_helper(&mut self, args: &[&str]) -> Result<Output, String> {
        if args.first() == Some(&"supports") {
            return Ok(Output::ok());
        }
        let after: Vec<&str> = match args.iter().position(|a| *a == "--") {
            Some(i) => args[i + 1..].to_vec(),
            None => return Err("no \"--\" before the script's arguments".into()),
        };
        match after[..] {
            ["configure", ""] | ["configure"] | ["install"] | ["install", ""] => Ok(Output::ok()),
            _ => Err("not a first install".into()),
        }
    }

    /// Query commands: answered from the tree and the databases; nothing changes.
    fn query(&mut self, name: &str, args: &[&str], stdin: Option<&Val>) -> Output {
        match (name, args) {
            ("getent", [db, key]) => match self.accounts.getent(db, key) {
                Some(l) => Output::text(0, l + "\n"),
                None => Output::code(2),
            },
            ("id", _) => {
                let user = args.iter().find(|a| !a.starts_with('-'));
                let Some(u) = user.and_then(|n| self.accounts.user(n)) else {
                    return Output::code(1);
                };
                let out = if args.contains(&"-u") {
                    u.uid.to_string()
                } else if args.contains(&"-g") {
                    u.gid.to_string()
                } else {
                    return Output::unknown();
                };
                Output::text(0, out + "\n")
            }
            ("dpkg", ["--compare-versions", a, op, b]) => Output::tri(compare_versions(a, op, b)),
            ("dpkg", ["--print-architecture"]) => Output::text(0, format!("{}\n", self.arch)),
            ("dpkg-query", ["-W" | "--show", ..]) | ("dpkg-query", [_, "-W" | "--show", ..]) => {
                self.dpkg_query(args)
            }
            ("readlink" | "realpath", _) => {
                let args: Vec<&str> = if name == "realpath" {
                    std::iter::once("-f").chain(args.iter().copied()).collect()
                } else {
                    args.to_vec()
                };
                match fileutil::readlink(self.tree, &args) {
                    Ok((rc, out)) => Output::text(rc, out),
                    Err(_) => Output::unknown(),
                }
            }
            ("cat", files) if !files.is_empty() && files.iter().all(|f| !f.starts_with('-')) => {
                // A missing file is skipped (its complaint goes to stderr): the status is 1,
                // the others' contents are still the output.
                let mut out = String::new();
                let mut rc = 0;
                for f in files {
                    match fsops::read_text(self.tree, f) {
                        Some(t) => out.push_str(&t),
                        None => rc = 1,
                    }
                }
                Output::text(rc, out)
            }
            ("cat", []) => Output {
                status: Status::OK,
                stdout: stdin.cloned().unwrap_or(Val::known("")),
                set: Vec::new(),
            },
            ("md5sum" | "sha256sum", [f]) => match fsops::read(self.tree, f) {
                Some(d) => {
                    use md5::Digest;
                    let h = if name == "md5sum" {
                        crate::util::hex(&md5::Md5::digest(&d))
                    } else {
                        crate::util::hex(&sha2::Sha256::digest(&d))
                    };
                    Output::text(0, format!("{h}  {f}\n"))
                }
                None => Output::code(1),
            },
            ("uname", ["-m"]) => Output::text(
                0,
                if self.arch == "arm64" {
                    "aarch64\n"
                } else {
                    "x86_64\n"
                },
            ),
            ("uname", ["-s"]) => Output::text(0, "Linux\n"),
            // The kernel the image boots, when there is one.
            ("uname", ["-r"]) => {
                let k = fsops::glob(self.tree, "/boot/vmlinuz-*");
                match &k[..] {
                    [one] => {
                        Output::text(0, format!("{}\n", one.trim_start_matches("/boot/vmlinuz-")))
                    }
                    _ => Output::unknown(),
                }
            }
            ("dpkg" | "dpkg-query", ["-s" | "--status", pkg]) => {
                let status =
                    fsops::read_text(self.tree, "/var/lib/dpkg/status").unwrap_or_default();
                let name = pkg.split(':').next().unwrap_or(pkg);
                let head = format!("Package: {name}");
                match status
                    .split("\n\n")
                    .find(|p| p.lines().next() == Some(head.as_str()))
                {
                    Some(p) => Output::text(0, format!("{}\n", p.trim_end())),
                    None => Output::code(1),
                }
            }
            // Only "not installed" is answered: the listing of an installed package is not.
            ("dpkg" | "dpkg-query", ["-l" | "--list", pkg]) => {
                let name = pkg.split(':').next().unwrap_or(pkg);
                if self.versions.iter().any(|(n, _)| n == name) {
                    Output::unknown()
                } else {
                    Output::code(1)
                }
            }
            // Nothing runs in an image being built.
            ("pidof" | "pgrep", _) => Output::code(1),
            ("ischroot", _) => Output::ok(),
            // No AppArmor policy is loaded while an image is built.
            ("aa-enabled" | "aa-status", _) => Output::code(1),
            ("mountpoint", _) => Output::code(1),
            ("cmp", files) => {
                let f: Vec<&&str> = files.iter().filter(|a| !a.starts_with('-')).collect();
                match f[..] {
                    [a, b] => match (fsops::read(self.tree, a), fsops::read(self.tree, b)) {
                        (Some(x), Some(y)) => Output::code(if x == y { 0 } else { 1 }),
                        _ => Output::code(2),
                    },
                    _ => Output::unknown(),
                }
            }
            ("perl", ["-e", ""]) => Output::code(if fsops::is_file(self.tree, "/usr/bin/perl") {
                0
            } else {
                127
            }),
            _ => self.text_query(name, args, stdin),
        }
    }

    fn text_query(&mut self, name: &str, args: &[&str], stdin: Option<&Val>) -> Output {
        // Text tools with file operands read the files instead of stdin.
        if let Some((opts, files)) = textutil::split_files(name, args) {
            let mut text = String::new();
            for f in files {
                match fsops::read_text(self.tree, f) {
                    Some(t) => text.push_str(&t),
                    None if f == "/dev/null" => {}
                    None => return Output::code(2),
                }
            }
            let data = Val::Known(text);
            return self.text_query(name, &opts, Some(&data));
        }
        let input = match stdin {
            Some(Val::Known(s)) => Some(s.as_str()),
            Some(Val::Unknown) => None,
            None => Some(""),
        };
        let keys: Vec<String> = self.versions.iter().map(|(n, _)| n.clone()).collect();
        let answer = match (name, input) {
            ("seq", _) => textutil::seq(args),
            ("expr", _) => textutil::expr(args),
            ("tr", Some(i)) => textutil::tr(args, i),
            ("sort", Some(i)) if args.iter().all(|a| a.starts_with('-')) => textutil::sort(args, i),
            ("uniq", Some(i)) => textutil::uniq(args, i),
            ("cut", Some(i)) => textutil::cut(args, i),
            ("head", Some(i)) => textutil::head_tail(true, args, i),
            ("tail", Some(i)) => textutil::head_tail(false, args, i),
            ("wc", Some(i)) => textutil::wc(args, i),
            ("sed", Some(i)) => textutil::sed(args, i),
            ("awk" | "mawk", Some(i)) => super::awk::awk(args, i),
            ("ls", _) => textutil::ls(self.tree, args),
            ("stat", _) => textutil::stat(self.tree, &self.accounts, args),
            ("getcap", _) => textutil::getcap(self.tree, args),
            ("dpkg-realpath", _) => textutil::realpath(self.tree, args),
            ("dpkg" | "dpkg-query", _) => match args {
                [flag @ ("-L" | "--listfiles" | "-S" | "--search"), arg] => {
                    let infos = self.info_keys(&keys);
                    textutil::dpkg_lists(self.tree, &infos, flag, arg)
                }
                _ => None,
            },
            _ => None,
        };
        match answer {
            Some((rc, out)) => Output::text(rc, out),
            None => Output::unknown(),
        }
    }

    /// The `/var/lib/dpkg/info/` prefixes of the installed packages.
    fn info_keys(&self, names: &[String]) -> Vec<String> {
        names
            .iter()
            .map(|n| {
                let plain = format!("{}/{n}.list", super::INFO_DIR);
                if fsops::lookup(self.tree, &plain, false).is_some() {
                    n.clone()
                } else {
                    format!("{n}:{}", self.arch)
                }
            })
            .collect()
    }

    fn dpkg_query(&self, args: &[&str]) -> Output {
        let mut format = None;
        let mut pkgs = Vec::new();
        let mut show = false;
        for a in args {
            if let Some(f) = a
                .strip_prefix("-f=")
                .or_else(|| a.strip_prefix("--showformat="))
            {
                format = Some(f.to_owned());
            } else if *a == "-W" || *a == "--show" {
                show = true;
            } else if !a.starts_with('-') {
                pkgs.push(*a);
            }
        }
        if !show || pkgs.len() != 1 {
            return Output::unknown();
        }
        let name = pkgs[0].split(':').next().unwrap_or("");
        let Some((_, v)) = self.versions.iter().find(|(p, _)| p == name) else {
            return Output::code(1);
        };
        let f = format.unwrap_or_else(|| "${Package}\t${Version}\n".into());
        let out = f
            .replace("${Package}", name)
            .replace("${Version}", v)
            .replace("${Status}", "install ok installed")
            .replace("${db:Status-Abbrev}", "ii ")
            .replace("${db:Status-Status}", "installed")
            .replace("\\n", "\n");
        if out.contains("${") {
            return Output::unknown();
        }
        Output::text(0, out)
    }
}

/// dpkg --compare-versions: an empty version is earlier than any (`lt`, `le`, ...) or later
/// (`lt-nl`, ...).
pub fn compare_versions(a: &str, op: &str, b: &str) -> Tri {
    use std::cmp::Ordering::*;
    let nl = op.ends_with("-nl");
    let base = op.trim_end_matches("-nl");
    let ord = match (a.is_empty(), b.is_empty()) {
        (true, true) => Equal,
        (true, false) => {
            if nl {
                Greater
            } else {
                Less
            }
        }
        (false, true) => {
            if nl {
                Less
            } else {
                Greater
            }
        }
        _ => crate::packages::version::compare(a, b),
    };
    Tri::from(match base {
        "lt" | "<<" => ord == Less,
        "le" | "<=" => ord != Greater,
        "eq" | "=" => ord == Equal,
        "ne" => ord != Equal,
        "ge" | ">=" => ord != Less,
        "gt" | ">>" => ord == Greater,
        _ => return Tri::Unknown,
    })
}

mod calls;
