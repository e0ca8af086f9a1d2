//! The [`Host`] side of [`World`]: each command a script runs, classified by
//! [`commands`] and applied, answered or reported.

use super::*;

impl Host for World<'_> {
    fn run(&mut self, call: &Call) -> Output {
        tracing::trace!(
            "{} {} line {}: {}{}",
            self.package,
            self.script,
            call.line,
            if call.certain() { "" } else { "(uncertain) " },
            call.show()
        );
        let Some(first) = call.argv.first().and_then(Val::as_str) else {
            self.not_applied(call, "the command's name is unknown");
            return Output::unknown();
        };
        let name = first.rsplit('/').next().unwrap_or(first).to_owned();
        let args_known = call.args();
        let class = commands::classify(&name, &args_known.clone().unwrap_or_default());
        // After `cd`, relative operands name files under the working directory.
        let has_relative = call.cwd != "/"
            && args_known
                .as_ref()
                .is_some_and(|a| a.iter().any(|x| !x.starts_with('/') && !x.starts_with('-')));
        let relative = has_relative && commands::takes_paths(&name);
        if has_relative && class == Class::Query && commands::reads_paths(&name) {
            let abs: Vec<String> = args_known
                .iter()
                .flatten()
                .map(|a| {
                    if a.starts_with('/') || a.starts_with('-') {
                        (*a).to_owned()
                    } else {
                        fsops::join(call.cwd, a)
                    }
                })
                .collect();
            let refs: Vec<&str> = abs.iter().map(String::as_str).collect();
            return self.query(&name, &refs, call.stdin);
        }
        if name == "find" {
            return match &args_known {
                Some(a) => match textutil::find(self.tree, call.cwd, a) {
                    Some((rc, out)) => Output::text(rc, out),
                    None => Output::unknown(),
                },
                None => Output::unknown(),
            };
        }
        match class {
            Class::Query => match &args_known {
                Some(a) => self.query(&name, a, call.stdin),
                None => Output::unknown(),
            },
            Class::Apply => {
                let Some(args) = args_known else {
                    self.not_applied(call, "an argument is unknown");
                    return Output::unknown();
                };
                if relative {
                    self.not_applied(
                        call,
                        format!(
                            "relative paths after `cd {}`: kiln applies file commands from / only",
                            call.cwd
                        ),
                    );
                    return Output::unknown();
                }
                if let Some(why) = call.uncertain {
                    self.not_applied(
                        call,
                        format!("it may or may not run on a real install: {why}"),
                    );
                    return Output::unknown();
                }
                match self.apply(&name, &args, call) {
                    Ok(o) => o,
                    Err(e) => {
                        self.not_applied(call, e);
                        Output::unknown()
                    }
                }
            }
            Class::Deferred(reason) => {
                self.deferred(call, reason);
                Output::ok()
            }
            Class::NotApplied(reason) => {
                if reason == commands::NO_RULE {
                    if let Some(o) = self.helper(first, call) {
                        return o;
                    }
                }
                self.not_applied(call, reason);
                Output::unknown()
            }
        }
    }

    fn test_path(&mut self, op: char, path: &str) -> Tri {
        self.test_path_inner(op, path)
    }

    fn read(&mut self, path: &str) -> Val {
        self.read_inner(path)
    }

    fn write(&mut self, path: &str, data: &Val, append: bool, call: &Call) {
        self.write_inner(path, data, append, call)
    }

    fn glob(&mut self, pattern: &str) -> Vec<String> {
        fsops::glob(self.tree, pattern)
    }

    fn source(&mut self, path: &str, call: &Call) -> bool {
        // debconf's shell library: its db_* functions arrive here as commands. Loading it from
        // a maintainer script first runs the package's `config` script, once (debconf's
        // confmodule does, when dpkg-preconfigure has not).
        if path != "/usr/share/debconf/confmodule" {
            return false;
        }
        if self.script != "config" && self.configs_run.insert(self.pkg_key.clone()) {
            self.run_config(call);
        }
        true
    }

    fn cannot(&mut self, what: &str, line: usize) {
        self.report.not_applied.push(Entry {
            package: self.package.clone(),
            script: self.script.clone(),
            line,
            command: String::new(),
            reason: what.to_owned(),
        });
    }
}

impl World<'_> {
    fn test_path_inner(&mut self, op: char, path: &str) -> Tri {
        let follow = !matches!(op, 'L' | 'h');
        let Some(id) = fsops::lookup(self.tree, path, follow) else {
            return Tri::False;
        };
        let n = self.tree.node(id);
        Tri::from(match op {
            'e' | 'r' | 'w' => true,
            'f' => matches!(n.kind, Kind::File(_)),
            'd' => n.is_dir(),
            'L' | 'h' => matches!(n.kind, Kind::Symlink(_)),
            'x' => n.meta.mode & 0o111 != 0 || n.is_dir(),
            's' => match &n.kind {
                Kind::File(c) => !c.is_empty(),
                _ => true,
            },
            'S' => matches!(n.kind, Kind::Socket),
            'b' => matches!(n.kind, Kind::BlockDev { .. }),
            'c' => matches!(n.kind, Kind::CharDev { .. }),
            'p' => matches!(n.kind, Kind::Fifo),
            'u' => n.meta.mode & 0o4000 != 0,
            'g' => n.meta.mode & 0o2000 != 0,
            'k' => n.meta.mode & 0o1000 != 0,
            _ => return Tri::Unknown,
        })
    }

    fn write_inner(&mut self, path: &str, data: &Val, append: bool, call: &Call) {
        if let Some(why) = call.uncertain {
            self.not_applied(
                call,
                format!("output to {path} may or may not be written: {why}"),
            );
            return;
        }
        let Val::Known(text) = data else {
            self.not_applied(call, format!("what is written to {path} is unknown"));
            return;
        };
        // Writes go through a symlink to its target, into an existing file keeping its mode.
        let target = fsops::find(self.tree, path, true)
            .map(|f| f.path())
            .unwrap_or_else(|| path.to_owned());
        let old = fsops::lookup(self.tree, &target, true);
        let (mode, uid, gid) = old.map_or((0o644, 0, 0), |id| {
            let m = &self.tree.node(id).meta;
            (m.mode, m.uid, m.gid)
        });
        let mut bytes = if append {
            fsops::read(self.tree, &target).unwrap_or_default()
        } else {
            Vec::new()
        };
        bytes.extend_from_slice(text.as_bytes());
        if let Err(e) = fsops::write_file(self.tree, &target, bytes, mode, uid, gid, self.sde) {
            self.not_applied(call, e.to_string());
        }
    }

    fn read_inner(&mut self, path: &str) -> Val {
        match fsops::read_text(self.tree, path) {
            Some(t) => Val::Known(t),
            None => Val::Unknown,
        }
    }

    /// The current package's debconf `config` script, as `config configure ''`.
    fn run_config(&mut self, call: &Call) {
        let path = format!("{}/{}.config", crate::configure::INFO_DIR, self.pkg_key);
        let Some(text) = fsops::read_text(self.tree, &path) else {
            return;
        };
        let saved = std::mem::replace(&mut self.script, "config".to_owned());
        match crate::configure::script::parse(&text) {
            Ok(script) => {
                let (_, errexit) = crate::configure::shebang(&text);
                let pkg = self.package.clone();
                let env = [
                    ("DPKG_MAINTSCRIPT_PACKAGE", pkg.as_str()),
                    ("DPKG_ROOT", ""),
                    ("DEBIAN_FRONTEND", "noninteractive"),
                ];
                let doubt = call.uncertain.map(str::to_owned);
                let mut sh =
                    crate::configure::script::Shell::new(self, &path, &["configure", ""], &env);
                sh.set_errexit(errexit);
                if let Some(d) = doubt {
                    sh.doubt(d);
                }
                sh.run(&script);
            }
            Err(e) => self.cannot(&format!("kiln cannot read {path}: {e}"), 1),
        }
        self.script = saved;
    }

    /// A command kiln has no rule for that is a shell script in the tree (a package's helper,
    /// such as runit-helper): read and evaluated like a maintainer script, with the call's
    /// arguments and environment.
    fn helper(&mut self, cmd: &str, call: &Call) -> Option<Output> {
        const MAX_HELPER_DEPTH: usize = 4;
        if self.helper_depth >= MAX_HELPER_DEPTH {
            return None;
        }
        let path = if cmd.contains('/') {
            cmd.to_owned()
        } else {
            crate::configure::script::PATH
                .iter()
                .map(|d| format!("{d}/{cmd}"))
                .find(|p| fsops::is_file(self.tree, p))?
        };
        let text = fsops::read_text(self.tree, &path)?;
        let (interp, errexit) = crate::configure::shebang(&text);
        if !crate::configure::is_shell(&interp) {
            return None;
        }
        let script = crate::configure::script::parse(&text).ok()?;
        let args: Vec<&str> = call.argv[1..]
            .iter()
            .map(|v| v.as_str().unwrap_or(""))
            .collect();
        if call.argv[1..].iter().any(|v| v.as_str().is_none()) {
            return None;
        }
        let env: Vec<(String, String)> = call
            .env
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect();
        let mut env_refs: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let pkg = self.package.clone();
        env_refs.push(("DPKG_MAINTSCRIPT_PACKAGE", &pkg));
        env_refs.push(("DPKG_ROOT", ""));
        self.helper_depth += 1;
        let status = {
            let doubt = call.uncertain.map(str::to_owned);
            let mut sh = crate::configure::script::Shell::new(self, &path, &args, &env_refs);
            sh.set_errexit(errexit);
            if let Some(d) = doubt {
                sh.doubt(d);
            }
            sh.run(&script)
        };
        self.helper_depth -= 1;
        Some(Output::status(status))
    }
}
