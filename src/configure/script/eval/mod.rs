//! Evaluating a maintainer script as dpkg would run it on a fresh install, without running it.
//!
//! Values may be unknown (the output of a command kiln cannot evaluate); conditions are then
//! undecided, and both branches are walked *speculatively*: the [`Host`] is told the command is
//! not certain to run (`Call::certain`), applies nothing and reports it. Variables assigned in
//! such a branch are unknown afterwards, and an `exit` there makes the rest of the script
//! uncertain too. Branches a fresh install does not take (`[ -n "$2" ]` with no old version,
//! `[ -d /run/systemd/system ]` in an image) are skipped, as the shell would skip them.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::ast::{Cmd, Param, ParamOp, Part, Redir, RedirOp, Script, Simple, Word};
use super::builtin;
use describe::{describe, describe_list, has_command};

mod describe;
mod expand;
mod value;
pub use value::{quote, Call, Output, Status, Tri, Val};

/// What the evaluator asks of the world: the image's tree and the effects kiln applies.
pub trait Host {
    /// Runs an external command (anything that is not a shell builtin or a function).
    fn run(&mut self, call: &Call) -> Output;
    /// `test -e/-f/-d/-L/-h/-x/-s/-r/-w/-S/-b/-c/-p PATH` against the tree.
    fn test_path(&mut self, op: char, path: &str) -> Tri;
    /// `> path` / `>> path`.
    fn write(&mut self, path: &str, data: &Val, append: bool, call: &Call);
    /// `< path`.
    fn read(&mut self, path: &str) -> Val;
    /// Pathname expansion of `pattern` (sorted matches; empty: none).
    fn glob(&mut self, pattern: &str) -> Vec<String>;
    /// `. path` / `source path`: `true` if the host handled it (debconf's confmodule).
    fn source(&mut self, path: &str, call: &Call) -> bool;
    /// A construct the evaluator could not follow (an unreadable `eval`, a loop without end).
    fn cannot(&mut self, what: &str, line: usize);
}

/// How a command list ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Normal,
    Exit,
    Return,
    Break(u32),
    Continue(u32),
}

const MAX_CALL_DEPTH: usize = 64;
const MAX_LOOP: usize = 1000;

/// The evaluator's state for one script run.
pub struct Shell<'h> {
    pub(super) host: &'h mut dyn Host,
    pub(super) vars: BTreeMap<String, Val>,
    pub(super) positional: Vec<Val>,
    pub(super) last: Status,
    pub(super) funcs: BTreeMap<String, Rc<Cmd>>,
    /// Undecided conditions enclosing the current command, innermost last.
    pub(super) doubts: Vec<String>,
    /// Nested command substitutions' captured output (`None`: unknown).
    pub(super) captures: Vec<Option<String>>,
    /// `set -e`.
    pub(super) errexit: bool,
    /// `set -f`.
    pub(super) noglob: bool,
    /// >0 inside an `if`/`while` condition or `&&`/`||`/`!` (where `set -e` does not apply).
    pub(super) in_condition: usize,
    pub(super) depth: usize,
    pub(super) exit_code: Status,
    heredocs: Vec<Word>,
    locals: Vec<Vec<(String, Option<Val>)>>,
    /// The working directory (`cd`).
    pub(super) cwd: String,
    /// The standard input a compound command inherits (`… | while read`, `done < file`),
    /// innermost last: `read` takes its lines from the top. Outside any, stdin is dpkg's
    /// (unknown).
    pub(super) inherited: Vec<Val>,
}

impl<'h> Shell<'h> {
    /// A shell for a script run as `$0 args...` with `vars` as its environment.
    pub fn new(host: &'h mut dyn Host, zero: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut vars = BTreeMap::new();
        for (k, v) in env {
            vars.insert((*k).to_owned(), Val::known(*v));
        }
        vars.insert("0".into(), Val::known(zero));
        vars.insert("IFS".into(), Val::known(" \t\n"));
        Shell {
            host,
            vars,
            positional: args.iter().map(|a| Val::known(*a)).collect(),
            last: Status::OK,
            funcs: BTreeMap::new(),
            doubts: Vec::new(),
            captures: Vec::new(),
            errexit: false,
            noglob: false,
            in_condition: 0,
            depth: 0,
            exit_code: Status::OK,
            heredocs: Vec::new(),
            locals: Vec::new(),
            cwd: "/".into(),
            inherited: Vec::new(),
        }
    }

    /// `path` made absolute against the working directory.
    pub(super) fn abs(&self, path: &str) -> String {
        if path.starts_with('/') {
            path.to_owned()
        } else if self.cwd == "/" {
            format!("/{path}")
        } else {
            format!("{}/{path}", self.cwd)
        }
    }

    /// Runs everything as uncertain (a helper called from an undecided branch).
    pub fn doubt(&mut self, why: String) {
        self.doubts.push(why);
    }

    /// `set -e` from the start (the script's `#!/bin/sh -e`).
    pub fn set_errexit(&mut self, on: bool) {
        self.errexit = on;
    }

    /// Runs the whole script; returns its exit status.
    pub fn run(&mut self, script: &Script) -> Status {
        self.heredocs = script.heredocs.clone();
        match self.list(&script.body) {
            Flow::Exit => self.exit_code,
            _ => self.last,
        }
    }

    /// Hands `act` the host and the [`Call`] of the command `argv` at `line`, marked with the
    /// current doubt and working directory (the one place a `Call` is made).
    pub(super) fn call_host<T>(
        &mut self,
        argv: &[Val],
        env: &[(String, Val)],
        stdin: Option<&Val>,
        line: usize,
        act: impl FnOnce(&mut dyn Host, &Call) -> T,
    ) -> T {
        let call = Call {
            argv,
            env,
            stdin,
            uncertain: self.doubts.last().map(String::as_str),
            line,
            cwd: &self.cwd,
        };
        act(&mut *self.host, &call)
    }

    fn list(&mut self, cmds: &[Cmd]) -> Flow {
        for c in cmds {
            let f = self.cmd(c);
            if f != Flow::Normal {
                return f;
            }
        }
        Flow::Normal
    }

    /// Runs `f` with the current commands marked uncertain because of `why`.
    fn doubting<T>(&mut self, why: String, f: impl FnOnce(&mut Self) -> T) -> T {
        self.doubts.push(why);
        let r = f(self);
        self.doubts.pop();
        r
    }

    /// Runs `f` speculatively: variables it changes are unknown afterwards, and an exit or
    /// return inside it makes what follows uncertain.
    fn speculate(&mut self, why: &str, f: impl FnOnce(&mut Self) -> Flow) -> Flow {
        tracing::trace!("undecided: {why}");
        let before = self.vars.clone();
        let flow = self.doubting(why.to_owned(), f);
        let changed: Vec<String> = self
            .vars
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .chain(
                before
                    .keys()
                    .filter(|k| !self.vars.contains_key(*k))
                    .cloned(),
            )
            .collect();
        for k in changed {
            self.vars.insert(k, Val::Unknown);
        }
        self.last = Status::Unknown;
        match flow {
            Flow::Exit | Flow::Return => {
                // The rest may or may not run: keep going, uncertain.
                self.doubts
                    .push(format!("{why} (and the script may have stopped there)"));
                Flow::Normal
            }
            f => f,
        }
    }

    pub(super) fn cmd(&mut self, c: &Cmd) -> Flow {
        match c {
            Cmd::Simple(s) => self.simple(s, None).0,
            Cmd::Pipeline { negate, cmds } => {
                if *negate {
                    self.in_condition += 1;
                }
                let flow = self.pipeline(cmds);
                if *negate {
                    self.in_condition -= 1;
                    self.last = match !self.last.truth() {
                        Tri::True => Status::OK,
                        Tri::False => Status::Code(1),
                        Tri::Unknown => Status::Unknown,
                    };
                }
                flow
            }
            Cmd::And(a, b) | Cmd::Or(a, b) => {
                let is_and = matches!(c, Cmd::And(..));
                self.in_condition += 1;
                let f = self.cmd(a);
                self.in_condition -= 1;
                if f != Flow::Normal {
                    return f;
                }
                let go = match (self.last.truth(), is_and) {
                    (Tri::True, true) | (Tri::False, false) => Tri::True,
                    (Tri::Unknown, _) => Tri::Unknown,
                    _ => Tri::False,
                };
                match go {
                    Tri::True => self.cmd(b),
                    Tri::False => Flow::Normal,
                    Tri::Unknown => {
                        let why = format!("the outcome of {} is unknown", describe(a));
                        self.speculate(&why, |sh| sh.cmd(b))
                    }
                }
            }
            Cmd::If {
                arms,
                otherwise,
                redirs,
            } => self.with_redirs(redirs, |sh| sh.if_cmd(arms, otherwise.as_deref())),
            Cmd::Case { word, arms, redirs } => {
                self.with_redirs(redirs, |sh| sh.case_cmd(word, arms))
            }
            Cmd::For {
                var,
                words,
                body,
                redirs,
            } => self.with_redirs(redirs, |sh| sh.for_cmd(var, words.as_deref(), body)),
            Cmd::Loop {
                until,
                cond,
                body,
                redirs,
            } => self.with_redirs(redirs, |sh| sh.loop_cmd(*until, cond, body)),
            Cmd::Group { body, redirs } => self.with_redirs(redirs, |sh| sh.list(body)),
            Cmd::Subshell { body, redirs } => {
                let (vars, pos, errexit) =
                    (self.vars.clone(), self.positional.clone(), self.errexit);
                let flow = self.with_redirs(redirs, |sh| sh.list(body));
                self.vars = vars;
                self.positional = pos;
                self.errexit = errexit;
                match flow {
                    Flow::Exit => {
                        self.last = self.exit_code;
                        Flow::Normal
                    }
                    f => f,
                }
            }
            Cmd::Func { name, body } => {
                self.funcs.insert(name.clone(), Rc::new((**body).clone()));
                self.last = Status::OK;
                Flow::Normal
            }
            Cmd::Background(c) => {
                let f = self.cmd(c);
                self.last = Status::OK;
                f
            }
        }
    }

    /// Runs a compound command's body. Output redirections of compound commands are rare in
    /// maintainer scripts and only ever discard output, so they are not followed; an input
    /// redirection (`while read …; done < file`) is what the body's `read` reads.
    fn with_redirs(&mut self, redirs: &[Redir], f: impl FnOnce(&mut Self) -> Flow) -> Flow {
        let mut input = None;
        for r in redirs {
            match r.op {
                RedirOp::In if r.fd.unwrap_or(0) == 0 => {
                    input = Some(match self.expand_string(&r.target) {
                        Val::Known(p) => {
                            let p = self.abs(&p);
                            self.host.read(&p)
                        }
                        Val::Unknown => Val::Unknown,
                    });
                }
                RedirOp::HereDoc(i) if r.fd.unwrap_or(0) == 0 => {
                    let body = self.heredocs.get(i).cloned().unwrap_or_default();
                    input = Some(self.expand_string(&body));
                }
                _ => {}
            }
        }
        match input {
            Some(v) => self.reading(v, f),
            None => f(self),
        }
    }

    /// Runs `f` with `input` as the standard input its commands inherit.
    fn reading<T>(&mut self, input: Val, f: impl FnOnce(&mut Self) -> T) -> T {
        self.inherited.push(input);
        let r = f(self);
        self.inherited.pop();
        r
    }

    fn condition(&mut self, cond: &[Cmd]) -> (Flow, Tri) {
        self.in_condition += 1;
        let f = self.list(cond);
        self.in_condition -= 1;
        (f, self.last.truth())
    }

    fn if_cmd(&mut self, arms: &[(Vec<Cmd>, Vec<Cmd>)], otherwise: Option<&[Cmd]>) -> Flow {
        let Some(((cond, body), rest)) = arms.split_first() else {
            if let Some(o) = otherwise {
                return self.list(o);
            }
            self.last = Status::OK;
            return Flow::Normal;
        };
        let (f, t) = self.condition(cond);
        if f != Flow::Normal {
            return f;
        }
        match t {
            Tri::True => self.list(body),
            Tri::False => self.if_cmd(rest, otherwise),
            Tri::Unknown => {
                let why = format!("the condition {} is undecided", describe_list(cond));
                let f = self.speculate(&why, |sh| sh.list(body));
                if f != Flow::Normal {
                    return f;
                }
                self.speculate(&why, |sh| sh.if_cmd(rest, otherwise))
            }
        }
    }

    fn case_cmd(&mut self, word: &Word, arms: &[(Vec<Word>, Vec<Cmd>)]) -> Flow {
        let subject = self.expand_string(word);
        self.last = Status::OK;
        let mut doubt: Option<String> = None;
        for (pats, body) in arms {
            let mut m = Tri::False;
            for p in pats {
                let pat = self.expand_pattern(p);
                m = m.or(match (&subject, pat) {
                    (Val::Known(s), Some(pat)) => Tri::from(super::pattern::glob_match(&pat, s)),
                    _ => Tri::Unknown,
                });
            }
            match (m, &doubt) {
                (Tri::True, None) => return self.list(body),
                (Tri::False, _) => {}
                (Tri::True, Some(why)) => {
                    let why = why.clone();
                    return self.speculate(&why, |sh| sh.list(body));
                }
                (Tri::Unknown, _) => {
                    let why = doubt
                        .get_or_insert_with(|| {
                            format!("which case of {} applies is undecided", word.show())
                        })
                        .clone();
                    let f = self.speculate(&why, |sh| sh.list(body));
                    if f != Flow::Normal {
                        return f;
                    }
                }
            }
        }
        Flow::Normal
    }

    fn for_cmd(&mut self, var: &str, words: Option<&[Word]>, body: &[Cmd]) -> Flow {
        let items: Vec<Val> = match words {
            Some(ws) => ws.iter().flat_map(|w| self.expand_fields(w)).collect(),
            None => self.positional.clone(),
        };
        self.last = Status::OK;
        if items.iter().any(|v| v == &Val::Unknown) || items.len() > MAX_LOOP {
            let why = format!("the items of \"for {var}\" are unknown");
            return self.speculate(&why, |sh| {
                sh.vars.insert(var.to_owned(), Val::Unknown);
                sh.list(body)
            });
        }
        for it in items {
            self.vars.insert(var.to_owned(), it);
            match self.list(body) {
                Flow::Break(n) if n <= 1 => break,
                Flow::Break(n) => return Flow::Break(n - 1),
                Flow::Continue(n) if n <= 1 => continue,
                Flow::Continue(n) => return Flow::Continue(n - 1),
                Flow::Normal => {}
                f => return f,
            }
        }
        Flow::Normal
    }

    fn loop_cmd(&mut self, until: bool, cond: &[Cmd], body: &[Cmd]) -> Flow {
        self.last = Status::OK;
        for _ in 0..MAX_LOOP {
            let (f, t) = self.condition(cond);
            if f != Flow::Normal {
                return f;
            }
            let go = if until { !t } else { t };
            match go {
                Tri::False => return Flow::Normal,
                Tri::Unknown => {
                    let why = format!("the loop condition {} is undecided", describe_list(cond));
                    return self.speculate(&why, |sh| sh.list(body));
                }
                Tri::True => match self.list(body) {
                    Flow::Break(n) if n <= 1 => return Flow::Normal,
                    Flow::Break(n) => return Flow::Break(n - 1),
                    Flow::Continue(n) if n > 1 => return Flow::Continue(n - 1),
                    Flow::Normal | Flow::Continue(_) => {}
                    f => return f,
                },
            }
        }
        self.host.cannot("a loop that does not end", 0);
        Flow::Normal
    }

    fn pipeline(&mut self, cmds: &[Cmd]) -> Flow {
        let mut stdin: Option<Val> = None;
        let n = cmds.len();
        for (i, c) in cmds.iter().enumerate() {
            let last = i + 1 == n;
            // Each command of a pipeline runs in a subshell (dash has no lastpipe): what it
            // assigns (`… | while read x; do found=1; done`) is gone afterwards.
            let saved = (n > 1).then(|| {
                (
                    self.vars.clone(),
                    self.positional.clone(),
                    self.funcs.clone(),
                    self.errexit,
                    self.cwd.clone(),
                )
            });
            let f = self.pipeline_member(c, i, last, &mut stdin);
            if let Some((vars, positional, funcs, errexit, cwd)) = saved {
                self.vars = vars;
                self.positional = positional;
                self.funcs = funcs;
                self.errexit = errexit;
                self.cwd = cwd;
            }
            if f != Flow::Normal && last {
                return f;
            }
        }
        Flow::Normal
    }

    /// Runs the `i`th command of a pipeline with the previous one's output in `stdin`, leaving
    /// its own output there unless it is the `last`.
    fn pipeline_member(&mut self, c: &Cmd, i: usize, last: bool, stdin: &mut Option<Val>) -> Flow {
        {
            match c {
                Cmd::Simple(s) => {
                    let (f, out) = self.simple_piped(s, stdin.take(), !last);
                    *stdin = out;
                    f
                }
                other => {
                    // A compound command in a pipeline: its `read`s read the previous
                    // command's output, and its own output is captured.
                    let input = stdin.take().unwrap_or_else(|| Val::known(""));
                    let input = if i == 0 { None } else { Some(input) };
                    let run = |sh: &mut Self| match input {
                        Some(v) => sh.reading(v, |sh| sh.cmd(other)),
                        None => sh.cmd(other),
                    };
                    if last {
                        run(self)
                    } else {
                        self.captures.push(Some(String::new()));
                        let f = run(self);
                        *stdin = Some(match self.captures.pop().flatten() {
                            Some(s) => Val::Known(s),
                            None => Val::Unknown,
                        });
                        f
                    }
                }
            }
        }
    }

    fn simple(&mut self, s: &Simple, stdin: Option<Val>) -> (Flow, Option<Val>) {
        self.simple_piped(s, stdin, false)
    }

    /// Runs a simple command; with `piped`, its stdout is returned for the next command
    /// instead of being emitted.
    pub(super) fn simple_piped(
        &mut self,
        s: &Simple,
        stdin: Option<Val>,
        piped: bool,
    ) -> (Flow, Option<Val>) {
        let mut argv: Vec<Val> = Vec::new();
        for w in &s.words {
            argv.extend(self.expand_fields(w));
        }
        let mut env: Vec<(String, Val)> = Vec::new();
        for (name, w) in &s.assigns {
            let v = self.expand_string(w);
            env.push((name.clone(), v));
        }
        // Redirections: where stdout goes and where stdin comes from.
        let mut stdin = stdin;
        let mut out_to: Option<(Val, bool)> = None;
        let mut discard = false;
        for r in &s.redirs {
            let fd = r.fd.unwrap_or(match r.op {
                RedirOp::In | RedirOp::DupIn | RedirOp::HereDoc(_) | RedirOp::HereString => 0,
                _ => 1,
            });
            match r.op {
                RedirOp::HereDoc(i) => {
                    let body = self.heredocs.get(i).cloned().unwrap_or_default();
                    stdin = Some(self.expand_string(&body));
                }
                RedirOp::HereString => {
                    let v = self.expand_string(&r.target);
                    stdin = Some(match v {
                        Val::Known(s) => Val::Known(s + "\n"),
                        u => u,
                    });
                }
                RedirOp::In if fd == 0 => {
                    let p = self.expand_string(&r.target);
                    stdin = Some(match p {
                        Val::Known(p) => {
                            let p = self.abs(&p);
                            self.host.read(&p)
                        }
                        Val::Unknown => Val::Unknown,
                    });
                }
                RedirOp::Out | RedirOp::Append | RedirOp::OutErr if fd == 1 => {
                    let p = self.expand_string(&r.target);
                    if p.as_str() == Some("/dev/null") {
                        discard = true;
                    } else {
                        let p = match p {
                            Val::Known(p) => Val::Known(self.abs(&p)),
                            u => u,
                        };
                        out_to = Some((p, r.op == RedirOp::Append));
                    }
                }
                RedirOp::DupOut if fd == 1 => {
                    // `>&2`: to stderr, which nothing reads.
                    discard = true;
                }
                _ => {}
            }
        }
        let line = s.line;
        if argv.is_empty() {
            for (name, v) in env {
                self.set_var(&name, v);
            }
            if let Some((Val::Known(p), append)) = &out_to {
                self.call_host(&[], &[], None, line, |h, call| {
                    h.write(p, &Val::known(""), *append, call)
                });
            }
            if !s.assigns.iter().any(|(_, w)| has_command(w)) {
                self.last = Status::OK;
            }
            return (Flow::Normal, None);
        }
        let (flow, out) = self.invoke(&argv, &env, stdin.as_ref(), line);
        // set -e: a failing command outside a condition ends the script.
        let flow = match (flow, self.last) {
            (Flow::Normal, Status::Code(c))
                if c != 0 && self.errexit && self.in_condition == 0 && !piped =>
            {
                self.call_host(&argv, &env, None, line, |h, call| {
                    let what = format!("set -e stops the script here: {} exits {c}", call.show());
                    h.cannot(&what, line)
                });
                self.exit_code = Status::Code(c);
                Flow::Exit
            }
            (f, _) => f,
        };
        if piped {
            return (flow, Some(out));
        }
        if discard {
            return (flow, None);
        }
        match out_to {
            Some((Val::Known(p), append)) => {
                self.call_host(&argv, &env, None, line, |h, call| {
                    h.write(&p, &out, append, call)
                });
            }
            Some((Val::Unknown, _)) => {
                self.host
                    .cannot("output written to a file whose name is unknown", line);
            }
            None => self.emit(out),
        }
        (flow, None)
    }

    /// Sends stdout to the innermost command substitution, if any.
    pub(super) fn emit(&mut self, out: Val) {
        if let Some(top) = self.captures.last_mut() {
            match (top.as_mut(), out) {
                (Some(buf), Val::Known(s)) => buf.push_str(&s),
                (_, Val::Unknown) => *top = None,
                (None, _) => {}
            }
        }
    }

    /// Runs a function, a builtin or an external command; returns the flow and its stdout.
    fn invoke(
        &mut self,
        argv: &[Val],
        env: &[(String, Val)],
        stdin: Option<&Val>,
        line: usize,
    ) -> (Flow, Val) {
        let name = match argv.first() {
            Some(Val::Known(n)) => n.clone(),
            _ => {
                let out = self.call_host(argv, env, stdin, line, |h, call| h.run(call));
                self.last = out.status;
                return (Flow::Normal, out.stdout);
            }
        };
        if let Some(body) = self.funcs.get(&name).cloned() {
            return self.call_function(&body, argv, line);
        }
        if let Some(r) = builtin::run(self, &name, argv, env, stdin, line) {
            return r;
        }
        let out = self.call_host(argv, env, stdin, line, |h, call| h.run(call));
        self.last = out.status;
        for (k, v) in out.set {
            self.set_var(&k, v);
        }
        (Flow::Normal, out.stdout)
    }

    fn call_function(&mut self, body: &Cmd, argv: &[Val], line: usize) -> (Flow, Val) {
        if self.depth >= MAX_CALL_DEPTH {
            self.host
                .cannot("functions that call each other too deeply", line);
            self.last = Status::Unknown;
            return (Flow::Normal, Val::Unknown);
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.positional, argv[1..].to_vec());
        self.locals.push(Vec::new());
        let doubts = self.doubts.len();
        let flow = self.cmd(body);
        // A `return` in an undecided branch makes the rest of the function uncertain, not the
        // caller.
        self.doubts.truncate(doubts);
        if let Some(frame) = self.locals.pop() {
            for (name, old) in frame.into_iter().rev() {
                match old {
                    Some(v) => self.vars.insert(name, v),
                    None => self.vars.remove(&name),
                };
            }
        }
        self.positional = saved;
        self.depth -= 1;
        let flow = match flow {
            Flow::Return => Flow::Normal,
            f => f,
        };
        (flow, Val::known(""))
    }

    /// `local name[=value]`: remembered so the function's return restores it.
    pub(super) fn make_local(&mut self, name: &str) {
        let old = self.vars.get(name).cloned();
        if let Some(frame) = self.locals.last_mut() {
            if !frame.iter().any(|(n, _)| n == name) {
                frame.push((name.to_owned(), old));
            }
        }
    }

    pub(super) fn set_var(&mut self, name: &str, v: Val) {
        if let Ok(n) = name.parse::<usize>() {
            if n >= 1 {
                if let Some(slot) = self.positional.get_mut(n - 1) {
                    *slot = v;
                }
            }
            return;
        }
        self.vars.insert(name.to_owned(), v);
    }

    /// The value of a parameter; `None` when unset.
    pub(super) fn get_var(&self, name: &str) -> Option<Val> {
        match name {
            "#" => Some(Val::known(self.positional.len().to_string())),
            "?" => Some(match self.last {
                Status::Code(c) => Val::known(c.to_string()),
                Status::Unknown => Val::Unknown,
            }),
            "@" | "*" => {
                if self.positional.iter().any(|v| v == &Val::Unknown) {
                    return Some(Val::Unknown);
                }
                let all: Vec<&str> = self.positional.iter().filter_map(Val::as_str).collect();
                Some(Val::known(all.join(" ")))
            }
            "$" | "!" => Some(Val::Unknown),
            "-" => Some(Val::known(if self.errexit { "e" } else { "" })),
            n if n.chars().all(|c| c.is_ascii_digit()) && n != "0" => {
                let i: usize = n.parse().ok()?;
                self.positional.get(i.checked_sub(1)?).cloned()
            }
            n => self.vars.get(n).cloned(),
        }
    }
}
