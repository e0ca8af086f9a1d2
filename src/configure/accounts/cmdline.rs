//! The account commands of maintainer scripts (`adduser`, `addgroup`, `useradd`, `groupadd`,
//! `usermod`, `gpasswd`) read into a [`Request`]: pure parsing of untrusted text, never a panic.

/// What an account command asked for, once read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// adduser --system NAME (with --group: `own_group`).
    SystemUser {
        name: String,
        uid: Option<u32>,
        gid: Option<u32>,
        group: Option<String>,
        own_group: bool,
        home: Option<String>,
        shell: Option<String>,
        gecos: Option<String>,
        no_create_home: bool,
    },
    /// addgroup --system NAME / groupadd -r NAME.
    SystemGroup {
        name: String,
        gid: Option<u32>,
        /// groupadd's allocation (from the top of the range) instead of adduser's.
        from_top: bool,
    },
    /// adduser USER GROUP / usermod -aG GROUP USER / gpasswd -a USER GROUP.
    Member { user: String, group: String },
    /// useradd [-r] NAME with its options.
    UserAdd {
        name: String,
        system: bool,
        uid: Option<u32>,
        group: Option<String>,
        groups: Vec<String>,
        home: Option<String>,
        create_home: bool,
        shell: Option<String>,
        gecos: Option<String>,
        user_group: bool,
    },
}

/// Reads an `adduser`/`addgroup`/`useradd`/`groupadd`/`usermod`/`gpasswd` command line.
/// `Err` says what kiln does not handle (the command is then reported, not applied).
pub fn parse_command(argv: &[&str]) -> Result<Request, String> {
    let Some((&cmd, args)) = argv.split_first() else {
        return Err("no command".into());
    };
    let cmd = cmd.rsplit('/').next().unwrap_or(cmd);
    match cmd {
        "adduser" | "addgroup" => parse_adduser(cmd, args),
        "useradd" => parse_useradd(args),
        "groupadd" => {
            let mut o = Opts::new(
                args,
                &[
                    "-g",
                    "--gid",
                    "-K",
                    "--key",
                    "-p",
                    "--password",
                    "-R",
                    "--root",
                ],
            );
            let mut gid = None;
            let mut system = false;
            let mut name = None;
            while let Some(a) = o.next()? {
                match a {
                    Arg::Opt("-r" | "--system", _) => system = true,
                    Arg::Opt("-g" | "--gid", Some(v)) => gid = Some(num(&v)?),
                    Arg::Opt("-f" | "--force" | "-o" | "--non-unique", _) => {}
                    Arg::Opt("-K" | "--key", _) => {}
                    Arg::Opt(o, _) => return Err(format!("groupadd option {o} is not handled")),
                    Arg::Word(w) if name.is_none() => name = Some(w),
                    Arg::Word(w) => return Err(format!("unexpected argument {w}")),
                }
            }
            let name = name.ok_or("groupadd without a name")?;
            if !system && gid.is_none() {
                return Err("a non-system group without a GID".into());
            }
            Ok(Request::SystemGroup {
                name,
                gid,
                from_top: true,
            })
        }
        "usermod" => {
            let mut o = Opts::new(args, &["-G", "--groups"]);
            let (mut append, mut groups, mut user) = (false, None, None);
            while let Some(a) = o.next()? {
                match a {
                    Arg::Opt("-a" | "--append", _) => append = true,
                    Arg::Opt("-G" | "--groups", Some(g)) => groups = Some(g),
                    Arg::Opt("-aG", Some(g)) => {
                        append = true;
                        groups = Some(g);
                    }
                    Arg::Opt(o, _) => return Err(format!("usermod option {o} is not handled")),
                    Arg::Word(w) => user = Some(w),
                }
            }
            match (append, groups, user) {
                (true, Some(g), Some(user)) if !g.contains(',') => {
                    Ok(Request::Member { user, group: g })
                }
                _ => Err("only `usermod -a -G GROUP USER` is handled".into()),
            }
        }
        "gpasswd" => match args {
            ["-a", user, group] => Ok(Request::Member {
                user: (*user).into(),
                group: (*group).into(),
            }),
            _ => Err("only `gpasswd -a USER GROUP` is handled".into()),
        },
        _ => Err(format!("{cmd} is not an account command")),
    }
}

fn parse_adduser(cmd: &str, args: &[&str]) -> Result<Request, String> {
    let mut o = Opts::new(
        args,
        &[
            "--home",
            "--shell",
            "--gecos",
            "--comment",
            "--uid",
            "--gid",
            "--ingroup",
            "--firstuid",
            "--lastuid",
            "--firstgid",
            "--lastgid",
            "--conf",
            "-c",
        ],
    );
    let (mut system, mut group_opt, mut no_home) = (false, false, false);
    let (mut uid, mut gid, mut ingroup, mut home, mut shell, mut gecos) =
        (None, None, None, None, None, None);
    let mut names = Vec::new();
    while let Some(a) = o.next()? {
        match a {
            Arg::Opt("--system", _) => system = true,
            Arg::Opt("--group", _) => group_opt = true,
            Arg::Opt("--no-create-home", _) => no_home = true,
            Arg::Opt(
                "--quiet"
                | "-q"
                | "--disabled-password"
                | "--disabled-login"
                | "--force-badname"
                | "--allow-badname"
                | "--allow-bad-names"
                | "--allow-all-names"
                | "--verbose"
                | "--debug",
                _,
            ) => {}
            Arg::Opt("--home", v) => home = v,
            Arg::Opt("--shell", v) => shell = v,
            Arg::Opt("--gecos" | "--comment", v) => gecos = v,
            Arg::Opt("--uid", Some(v)) => uid = Some(num(&v)?),
            Arg::Opt("--gid", Some(v)) => gid = Some(num(&v)?),
            Arg::Opt("--ingroup", v) => ingroup = v,
            Arg::Opt(o, _) => return Err(format!("adduser option {o} is not handled")),
            Arg::Word(w) => names.push(w),
        }
    }
    if names.len() == 2 && !system && !group_opt {
        return Ok(Request::Member {
            user: names[0].clone(),
            group: names[1].clone(),
        });
    }
    let [name] = &names[..] else {
        return Err("adduser needs one name".into());
    };
    if [group_opt, ingroup.is_some(), gid.is_some()]
        .iter()
        .filter(|b| **b)
        .count()
        > 1
        && !(cmd == "addgroup" || (!system && group_opt))
    {
        return Err("--group, --ingroup and --gid exclude each other".into());
    }
    let group_action = cmd == "addgroup" || (group_opt && !system);
    match (system, group_action) {
        (true, true) => Ok(Request::SystemGroup {
            name: name.clone(),
            gid,
            from_top: false,
        }),
        (true, false) => Ok(Request::SystemUser {
            name: name.clone(),
            uid,
            gid,
            group: ingroup,
            own_group: group_opt,
            home,
            shell,
            gecos,
            no_create_home: no_home,
        }),
        (false, _) => Err("only system accounts (--system) are created at build time".into()),
    }
}

fn parse_useradd(args: &[&str]) -> Result<Request, String> {
    let mut o = Opts::new(
        args,
        &[
            "-u",
            "--uid",
            "-g",
            "--gid",
            "-G",
            "--groups",
            "-d",
            "--home-dir",
            "--home",
            "-s",
            "--shell",
            "-c",
            "--comment",
            "-K",
            "--key",
            "-R",
            "--root",
            "-k",
            "--skel",
            "-e",
            "--expiredate",
            "-f",
            "--inactive",
            "-p",
            "--password",
        ],
    );
    let (mut system, mut uid, mut group, mut groups, mut home) = (false, None, None, vec![], None);
    let (mut create_home, mut shell, mut gecos) = (false, None, None);
    let mut name = None;
    let mut user_group = None;
    while let Some(a) = o.next()? {
        match a {
            Arg::Opt("-r" | "--system", _) => system = true,
            Arg::Opt("-u" | "--uid", Some(v)) => uid = Some(num(&v)?),
            Arg::Opt("-g" | "--gid", v) => group = v,
            Arg::Opt("-G" | "--groups", Some(v)) => {
                groups = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(Into::into)
                    .collect()
            }
            Arg::Opt("-d" | "--home-dir" | "--home", v) => home = v,
            Arg::Opt("-m" | "--create-home", _) => create_home = true,
            Arg::Opt("-M" | "--no-create-home", _) => create_home = false,
            Arg::Opt("-s" | "--shell", v) => shell = v,
            Arg::Opt("-c" | "--comment", v) => gecos = v,
            Arg::Opt("-U" | "--user-group", _) => user_group = Some(true),
            Arg::Opt("-N" | "--no-user-group", _) => user_group = Some(false),
            Arg::Opt("-K" | "--key" | "-o" | "--non-unique" | "-l" | "--no-log-init", _) => {}
            Arg::Opt(o, _) => return Err(format!("useradd option {o} is not handled")),
            Arg::Word(w) if name.is_none() => name = Some(w),
            Arg::Word(w) => return Err(format!("unexpected argument {w}")),
        }
    }
    let name = name.ok_or("useradd without a name")?;
    if !system && uid.is_none() {
        return Err("only system accounts (-r) or fixed UIDs are created at build time".into());
    }
    // login.defs USERGROUPS_ENAB yes: a same-named group unless -g or -N.
    let user_group = user_group.unwrap_or(group.is_none());
    Ok(Request::UserAdd {
        name,
        system,
        uid,
        group,
        groups,
        home,
        create_home,
        shell,
        gecos,
        user_group,
    })
}

fn num(v: &str) -> Result<u32, String> {
    v.parse().map_err(|_| format!("{v:?} is not a number"))
}

enum Arg<'a> {
    Opt(&'a str, Option<String>),
    Word(String),
}

/// getopt_long-style reading: `--opt=value`, `--opt value` for options that take a value,
/// clustered short flags are not split (maintainer scripts write them apart).
struct Opts<'a> {
    args: &'a [&'a str],
    i: usize,
    with_value: &'a [&'a str],
    done: bool,
}

impl<'a> Opts<'a> {
    fn new(args: &'a [&'a str], with_value: &'a [&'a str]) -> Self {
        Opts {
            args,
            i: 0,
            with_value,
            done: false,
        }
    }

    fn next(&mut self) -> Result<Option<Arg<'a>>, String> {
        let Some(&a) = self.args.get(self.i) else {
            return Ok(None);
        };
        self.i += 1;
        if self.done || !a.starts_with('-') || a == "-" {
            return Ok(Some(Arg::Word(a.to_owned())));
        }
        if a == "--" {
            self.done = true;
            return self.next();
        }
        if let Some((k, v)) = a.split_once('=').filter(|_| a.starts_with("--")) {
            return Ok(Some(Arg::Opt(k, Some(v.to_owned()))));
        }
        // `-aG wheel`: usermod's clustered form.
        if self.with_value.contains(&a) || a == "-aG" {
            let v = self
                .args
                .get(self.i)
                .ok_or_else(|| format!("{a} needs a value"))?;
            self.i += 1;
            return Ok(Some(Arg::Opt(a, Some((*v).to_owned()))));
        }
        Ok(Some(Arg::Opt(a, None)))
    }
}
