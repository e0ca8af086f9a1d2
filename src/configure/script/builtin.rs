//! The shell's own commands (XCU §2.14 and dash's builtins), and the small text tools whose
//! answers depend only on their input (`basename`, `dirname`, `grep` on a pipe).

use super::ast::Cmd;
use super::eval::{Flow, Shell, Status, Tri, Val};
use super::pattern::{bre_to_ere, ere_for_regex_lite, regex_escape};

/// The directories `command -v` searches, as dpkg sets PATH for maintainer scripts.
pub const PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

const BUILTINS: &[&str] = &[
    ":", "true", "false", "echo", "printf", "test", "[", "[[", "set", "shift", "exit", "return",
    "local", "export", "readonly", "unset", "umask", "trap", "cd", ".", "source", "eval",
    "command", "type", "break", "continue", "read", "wait", "hash", "exec", "basename", "dirname",
    "grep", "fgrep", "egrep", "which",
];

/// Runs `name` if it is a builtin; `None` otherwise.
pub(super) fn run(
    sh: &mut Shell,
    name: &str,
    argv: &[Val],
    env: &[(String, Val)],
    stdin: Option<&Val>,
    line: usize,
) -> Option<(Flow, Val)> {
    let args = &argv[1..];
    let known: Option<Vec<&str>> = args.iter().map(Val::as_str).collect();
    let ok = |sh: &mut Shell, st: Status, out: Val| {
        sh.last = st;
        Some((Flow::Normal, out))
    };
    let empty = || Val::known("");
    match name {
        ":" | "true" | "trap" | "wait" | "hash" => ok(sh, Status::OK, empty()),
        "cd" => {
            let target = match known.as_deref() {
                Some([d]) => sh.abs(d),
                Some([]) => "/root".to_owned(),
                _ => {
                    sh.host.cannot("`cd` to a directory that is unknown", line);
                    return ok(sh, Status::Unknown, empty());
                }
            };
            if sh.host.test_path('d', &target) == Tri::True {
                sh.cwd = normalize(&target);
                ok(sh, Status::OK, empty())
            } else {
                ok(sh, Status::Code(1), empty())
            }
        }
        "false" => ok(sh, Status::Code(1), empty()),
        "echo" => {
            let Some(a) = known else {
                return ok(sh, Status::OK, Val::Unknown);
            };
            let (nl, words) = match a.first() {
                Some(&"-n") => (false, &a[1..]),
                _ => (true, &a[..]),
            };
            let mut s = words.join(" ");
            if nl {
                s.push('\n');
            }
            ok(sh, Status::OK, Val::Known(s))
        }
        "printf" => {
            let out = match known {
                Some(a) if !a.is_empty() => Val::Known(printf(a[0], &a[1..])),
                _ => Val::Unknown,
            };
            ok(sh, Status::OK, out)
        }
        "test" | "[" | "[[" => {
            let mut a: Vec<Val> = args.to_vec();
            let close = match name {
                "[" => Some("]"),
                "[[" => Some("]]"),
                _ => None,
            };
            if let Some(c) = close {
                if a.last().and_then(Val::as_str) == Some(c) {
                    a.pop();
                }
            }
            let t = test(sh, &a);
            ok(sh, t.status(), empty())
        }
        "set" => {
            set(sh, args);
            ok(sh, Status::OK, empty())
        }
        "shift" => {
            let n = known
                .as_ref()
                .and_then(|a| a.first().map(|n| n.parse().unwrap_or(1)))
                .unwrap_or(1usize);
            if n <= sh.positional.len() {
                sh.positional.drain(..n);
                ok(sh, Status::OK, empty())
            } else {
                ok(sh, Status::Code(1), empty())
            }
        }
        "exit" | "return" => {
            let code = match args.first() {
                None => sh.last,
                Some(Val::Known(n)) => n.parse().map(Status::Code).unwrap_or(Status::Code(2)),
                Some(Val::Unknown) => Status::Unknown,
            };
            sh.last = code;
            if name == "exit" {
                sh.exit_code = code;
                Some((Flow::Exit, empty()))
            } else {
                Some((Flow::Return, empty()))
            }
        }
        "break" | "continue" => {
            let n = known
                .and_then(|a| a.first().and_then(|n| n.parse().ok()))
                .unwrap_or(1u32)
                .max(1);
            sh.last = Status::OK;
            Some((
                if name == "break" {
                    Flow::Break(n)
                } else {
                    Flow::Continue(n)
                },
                empty(),
            ))
        }
        "local" | "export" | "readonly" => {
            for a in args {
                let Val::Known(a) = a else { continue };
                let (n, v) = match a.split_once('=') {
                    Some((n, v)) => (n, Some(Val::known(v))),
                    None => (a.as_str(), None),
                };
                if !super::is_name(n) {
                    continue;
                }
                if name == "local" {
                    sh.make_local(n);
                    sh.set_var(n, v.unwrap_or(Val::known("")));
                } else if let Some(v) = v {
                    sh.set_var(n, v);
                }
            }
            ok(sh, Status::OK, empty())
        }
        "unset" => {
            for a in known.unwrap_or_default() {
                if a != "-v" && a != "-f" {
                    sh.vars.remove(a);
                    sh.funcs.remove(a);
                }
            }
            ok(sh, Status::OK, empty())
        }
        "umask" => {
            // The mode of files kiln creates comes from each command's own rule.
            let out = if args.is_empty() {
                Val::known("0022\n")
            } else {
                empty()
            };
            ok(sh, Status::OK, out)
        }
        "." | "source" => match args.first() {
            Some(Val::Known(p)) => {
                let p = sh.abs(p);
                if sh.call_host(argv, env, stdin, line, |h, call| h.source(&p, call)) {
                    return ok(sh, Status::OK, empty());
                }
                let text = sh.host.read(&p);
                match text.as_str().map(super::parse) {
                    Some(Ok(script)) => {
                        let st = sh.run_nested(&script.body);
                        Some(st)
                    }
                    _ => {
                        sh.host
                            .cannot(&format!("`. {p}`: kiln cannot read it"), line);
                        ok(sh, Status::Unknown, Val::Unknown)
                    }
                }
            }
            _ => {
                sh.host.cannot("`.` of a file whose name is unknown", line);
                ok(sh, Status::Unknown, Val::Unknown)
            }
        },
        "eval" => {
            let Some(a) = known else {
                sh.host.cannot("`eval` of an unknown string", line);
                return ok(sh, Status::Unknown, Val::Unknown);
            };
            match super::parse(&a.join(" ")) {
                Ok(script) => Some(sh.run_nested(&script.body)),
                Err(e) => {
                    sh.host
                        .cannot(&format!("`eval` of a string kiln cannot read ({e})"), line);
                    ok(sh, Status::Unknown, Val::Unknown)
                }
            }
        }
        "command" | "type" | "which" => {
            let Some(a) = known else {
                return ok(sh, Status::Unknown, Val::Unknown);
            };
            let lookup = name != "command" || matches!(a.first(), Some(&"-v" | &"-V"));
            if !lookup {
                // `command NAME args`: NAME, skipping functions.
                let rest: Vec<Val> = argv[1..].to_vec();
                if rest.is_empty() {
                    return ok(sh, Status::OK, empty());
                }
                let n = rest[0].as_str().unwrap_or("").to_owned();
                if let Some(r) = run(sh, &n, &rest, env, stdin, line) {
                    return Some(r);
                }
                let out = sh.call_host(&rest, env, stdin, line, |h, call| h.run(call));
                return ok(sh, out.status, out.stdout);
            }
            let names: Vec<&str> = a.iter().copied().filter(|x| !x.starts_with('-')).collect();
            let mut out = String::new();
            let mut all = true;
            for n in &names {
                match which(sh, n) {
                    Some(p) => {
                        out.push_str(&p);
                        out.push('\n');
                    }
                    None => all = false,
                }
            }
            let st = if all && !names.is_empty() {
                Status::OK
            } else {
                Status::Code(1)
            };
            ok(sh, st, Val::Known(out))
        }
        "read" => {
            let args = known.unwrap_or_default();
            let raw = args
                .iter()
                .take_while(|a| a.starts_with('-'))
                .any(|a| a.contains('r'));
            let names: Vec<&str> = args
                .iter()
                .skip_while(|a| a.starts_with('-'))
                .copied()
                .filter(|a| super::is_name(a))
                .collect();
            let ifs = match sh.get_var("IFS") {
                Some(Val::Known(i)) => Some(i),
                Some(Val::Unknown) => None,
                None => Some(" \t\n".to_owned()),
            };
            // Its own redirection or pipe, else what the enclosing compound command inherits
            // (consumed line by line), else dpkg's stdin, which nothing here knows.
            let line = match (stdin, sh.inherited.last_mut()) {
                (Some(Val::Known(s)), _) => Some(read_line(&mut s.clone(), raw)),
                (None, Some(Val::Known(s))) => Some(read_line(s, raw)),
                _ => None,
            };
            match (line, ifs) {
                (Some((text, status)), Some(ifs)) => {
                    let fields = split_read(&text, &ifs, names.len());
                    for (n, v) in names.iter().zip(fields) {
                        sh.set_var(n, Val::Known(v));
                    }
                    ok(sh, status, empty())
                }
                _ => {
                    for n in names {
                        sh.set_var(n, Val::Unknown);
                    }
                    ok(sh, Status::Unknown, empty())
                }
            }
        }
        "exec" => {
            if args.is_empty() {
                return ok(sh, Status::OK, empty());
            }
            let rest: Vec<Val> = args.to_vec();
            let n = rest[0].as_str().unwrap_or("").to_owned();
            let (_, out) = match run(sh, &n, &rest, env, stdin, line) {
                Some(r) => r,
                None => {
                    let o = sh.call_host(&rest, env, stdin, line, |h, call| h.run(call));
                    sh.last = o.status;
                    (Flow::Normal, o.stdout)
                }
            };
            sh.exit_code = sh.last;
            Some((Flow::Exit, out))
        }
        "basename" | "dirname" => {
            let out = match known.as_deref() {
                Some([p, rest @ ..]) => {
                    let p = p.trim_end_matches('/');
                    let s = if name == "basename" {
                        let b = p.rsplit('/').next().unwrap_or("");
                        match rest.first() {
                            Some(suf) if b.len() > suf.len() => b.strip_suffix(suf).unwrap_or(b),
                            _ => b,
                        }
                        .to_owned()
                    } else {
                        match p.rfind('/') {
                            Some(0) => "/".to_owned(),
                            Some(i) => p[..i].to_owned(),
                            None => ".".to_owned(),
                        }
                    };
                    Val::Known(s + "\n")
                }
                _ => Val::Unknown,
            };
            ok(sh, Status::OK, out)
        }
        "grep" | "fgrep" | "egrep" => {
            let flag = match name {
                "fgrep" => Some("-F"),
                "egrep" => Some("-E"),
                _ => None,
            };
            let with: Option<Vec<&str>> = known.map(|k| flag.into_iter().chain(k).collect());
            let (st, out) = grep(sh, with.as_deref(), stdin);
            ok(sh, st, out)
        }
        _ => None,
    }
}

/// One line taken from the front of `input` as `read` takes it (XCU `read`): without `-r`, a
/// backslash escapes the next character and a backslash-newline joins lines. The status is 1
/// at the end of input (what was read is still assigned).
fn read_line(input: &mut String, raw: bool) -> (String, Status) {
    let mut out = String::new();
    let mut chars = input.char_indices();
    let mut end = input.len();
    let mut status = Status::Code(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '\n' => {
                end = i + 1;
                status = Status::OK;
                break;
            }
            '\\' if !raw => match chars.next() {
                Some((_, '\n')) => {}
                Some((_, e)) => out.push(e),
                None => {}
            },
            c => out.push(c),
        }
    }
    input.drain(..end);
    (out, status)
}

/// `read`'s field splitting of `line` into `n` values (XCU §2.6.5): IFS white space around
/// the fields is dropped; the last name takes the rest of the line.
fn split_read(line: &str, ifs: &str, n: usize) -> Vec<String> {
    let is_ws = |c: char| ifs.contains(c) && c.is_whitespace();
    let is_sep = |c: char| ifs.contains(c);
    let mut rest = line.trim_start_matches(is_ws);
    let mut out = Vec::new();
    for k in 0..n {
        if k + 1 == n {
            out.push(rest.trim_end_matches(is_ws).to_owned());
            break;
        }
        let end = rest.find(is_sep).unwrap_or(rest.len());
        out.push(rest[..end].to_owned());
        rest = rest[end..].trim_start_matches(is_ws);
        if let Some(r) = rest.strip_prefix(|c: char| is_sep(c) && !c.is_whitespace()) {
            rest = r.trim_start_matches(is_ws);
        }
    }
    out
}

/// `/a/./b/../c` → `/a/c` (lexically; `cd` has checked the directory exists).
fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

/// Whether `name` is a shell builtin.
pub fn is_builtin(name: &str) -> bool {
    BUILTINS.contains(&name)
}

/// `command -v NAME`: a function or builtin by name, else the first executable on [`PATH`].
pub(super) fn which(sh: &mut Shell, name: &str) -> Option<String> {
    if sh.funcs.contains_key(name) || (is_builtin(name) && name != "which") {
        return Some(name.to_owned());
    }
    if name.contains('/') {
        let p = sh.abs(name);
        return (sh.host.test_path('x', &p) == Tri::True).then(|| name.to_owned());
    }
    PATH.iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| sh.host.test_path('f', p) == Tri::True && sh.host.test_path('x', p) == Tri::True)
}

fn set(sh: &mut Shell, args: &[Val]) {
    let mut i = 0;
    while i < args.len() {
        let Val::Known(a) = &args[i] else {
            // `set -- $unknown`: the positional parameters are unknown.
            sh.positional = vec![Val::Unknown];
            return;
        };
        if a == "--" {
            sh.positional = args[i + 1..].to_vec();
            return;
        }
        let (on, flags) = match (a.strip_prefix('-'), a.strip_prefix('+')) {
            (Some(f), _) => (true, f),
            (_, Some(f)) => (false, f),
            _ => {
                sh.positional = args[i..].to_vec();
                return;
            }
        };
        if flags == "o" {
            i += 1;
            match args.get(i).and_then(Val::as_str) {
                Some("errexit") => sh.errexit = on,
                Some("noglob") => sh.noglob = on,
                _ => {}
            }
        } else {
            for f in flags.chars() {
                match f {
                    'e' => sh.errexit = on,
                    'f' => sh.noglob = on,
                    _ => {}
                }
            }
        }
        i += 1;
    }
}

/// `test` / `[` (XCU test: the argument-count rules, with `-a`/`-o` and parentheses).
pub(super) fn test(sh: &mut Shell, a: &[Val]) -> Tri {
    // -o binds less tightly than -a.
    if a.len() > 3 {
        if let Some(i) = a.iter().position(|v| v.as_str() == Some("-o")) {
            return test(sh, &a[..i]).or(test(sh, &a[i + 1..]));
        }
        if let Some(i) = a.iter().position(|v| v.as_str() == Some("-a")) {
            return test(sh, &a[..i]).and(test(sh, &a[i + 1..]));
        }
    }
    let s = |v: &Val| v.as_str().map(str::to_owned);
    match a {
        [] => Tri::False,
        [x] => match x {
            Val::Known(x) => Tri::from(!x.is_empty()),
            Val::Unknown => Tri::Unknown,
        },
        [op, x] if op.as_str() == Some("!") => !test(sh, std::slice::from_ref(x)),
        [op, x] => {
            let (Some(op), x) = (s(op), s(x)) else {
                return Tri::Unknown;
            };
            match (op.as_str(), x) {
                ("-n", Some(x)) => Tri::from(!x.is_empty()),
                ("-z", Some(x)) => Tri::from(x.is_empty()),
                (_, None) => Tri::Unknown,
                (op, Some(p)) if op.len() == 2 && op.starts_with('-') => {
                    let c = op.chars().nth(1).unwrap_or('e');
                    if p.is_empty() {
                        return Tri::False;
                    }
                    match c {
                        't' => Tri::False,
                        _ => {
                            let p = sh.abs(&p);
                            sh.host.test_path(c, &p)
                        }
                    }
                }
                _ => Tri::Unknown,
            }
        }
        [l, op, r] if l.as_str() == Some("(") && r.as_str() == Some(")") => {
            test(sh, std::slice::from_ref(op))
        }
        [n, rest @ ..] if n.as_str() == Some("!") => !test(sh, rest),
        [l, op, r] => {
            let (Some(l), Some(op), Some(r)) = (s(l), s(op), s(r)) else {
                return Tri::Unknown;
            };
            let num = |x: &str| x.trim().parse::<i64>().ok();
            match op.as_str() {
                "=" | "==" => Tri::from(l == r),
                "!=" => Tri::from(l != r),
                "-eq" | "-ne" | "-lt" | "-le" | "-gt" | "-ge" => match (num(&l), num(&r)) {
                    (Some(a), Some(b)) => Tri::from(match op.as_str() {
                        "-eq" => a == b,
                        "-ne" => a != b,
                        "-lt" => a < b,
                        "-le" => a <= b,
                        "-gt" => a > b,
                        _ => a >= b,
                    }),
                    _ => Tri::False,
                },
                "-a" => Tri::from(!l.is_empty() && !r.is_empty()),
                "-o" => Tri::from(!l.is_empty() || !r.is_empty()),
                _ => Tri::Unknown,
            }
        }
        _ => Tri::Unknown,
    }
}

/// printf(1) with `%s`, `%d`, `%%` and backslash escapes; the format is reused while
/// arguments remain.
fn printf(fmt: &str, args: &[&str]) -> String {
    let mut out = String::new();
    let mut ai = 0;
    loop {
        let mut cs = fmt.chars().peekable();
        let mut used = false;
        while let Some(c) = cs.next() {
            match c {
                '\\' => match cs.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('\\') => out.push('\\'),
                    Some(o) => {
                        out.push('\\');
                        out.push(o);
                    }
                    None => out.push('\\'),
                },
                '%' => {
                    // Flags and width are skipped.
                    while cs.peek().is_some_and(|c| "-+ #0123456789.".contains(*c)) {
                        cs.next();
                    }
                    match cs.next() {
                        Some('%') => out.push('%'),
                        Some(_) => {
                            out.push_str(args.get(ai).copied().unwrap_or(""));
                            ai += 1;
                            used = true;
                        }
                        None => out.push('%'),
                    }
                }
                c => out.push(c),
            }
        }
        if !used || ai >= args.len() {
            return out;
        }
    }
}

/// grep(1) over stdin or files: `-q -s -x -F -E -v -i -c`. Basic regular expressions are
/// translated to the `regex-lite` syntax.
fn grep(sh: &mut Shell, args: Option<&[&str]>, stdin: Option<&Val>) -> (Status, Val) {
    let Some(args) = args else {
        return (Status::Unknown, Val::Unknown);
    };
    let (mut quiet, mut whole, mut fixed, mut ext, mut invert, mut icase, mut count) =
        (false, false, false, false, false, false, false);
    let mut rest = Vec::new();
    let mut patterns = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if *a == "-e" {
            if let Some(p) = it.next() {
                patterns.push((*p).to_owned());
            }
        } else if a.starts_with('-') && a.len() > 1 && rest.is_empty() && patterns.is_empty() {
            for f in a[1..].chars() {
                match f {
                    'q' => quiet = true,
                    's' => {}
                    'x' => whole = true,
                    'F' => fixed = true,
                    'E' => ext = true,
                    'v' => invert = true,
                    'i' => icase = true,
                    'c' => count = true,
                    _ => return (Status::Unknown, Val::Unknown),
                }
            }
        } else {
            rest.push(*a);
        }
    }
    if patterns.is_empty() {
        if rest.is_empty() {
            return (Status::Code(2), Val::known(""));
        }
        patterns.push(rest.remove(0).to_owned());
    }
    let text = if rest.is_empty() {
        match stdin {
            Some(Val::Known(s)) => s.clone(),
            Some(Val::Unknown) => return (Status::Unknown, Val::Unknown),
            None => String::new(),
        }
    } else {
        let mut all = String::new();
        for f in &rest {
            let f = sh.abs(f);
            match sh.host.read(&f) {
                Val::Known(s) => all.push_str(&s),
                Val::Unknown => return (Status::Unknown, Val::Unknown),
            }
        }
        all
    };
    let mut res = Vec::new();
    for p in &patterns {
        let mut src = if fixed {
            regex_escape(p)
        } else if ext {
            ere_for_regex_lite(p)
        } else {
            ere_for_regex_lite(&bre_to_ere(p))
        };
        if whole {
            src = format!("^(?:{src})$");
        }
        if icase {
            src = format!("(?i){src}");
        }
        match regex_lite::Regex::new(&src) {
            Ok(r) => res.push(r),
            Err(_) => return (Status::Unknown, Val::Unknown),
        }
    }
    let mut out = String::new();
    let mut n = 0;
    for line in text.lines() {
        if res.iter().any(|r| r.is_match(line)) != invert {
            n += 1;
            out.push_str(line);
            out.push('\n');
        }
    }
    let out = match (quiet, count) {
        (true, _) => String::new(),
        (_, true) => format!("{n}\n"),
        _ => out,
    };
    (
        if n > 0 { Status::OK } else { Status::Code(1) },
        Val::Known(out),
    )
}

impl Shell<'_> {
    /// Runs `body` (from `.` or `eval`) in this shell; `return` ends it.
    pub(super) fn run_nested(&mut self, body: &[Cmd]) -> (Flow, Val) {
        let mut flow = Flow::Normal;
        for c in body {
            flow = self.cmd(c);
            if flow != Flow::Normal {
                break;
            }
        }
        let flow = match flow {
            Flow::Return => Flow::Normal,
            f => f,
        };
        (flow, Val::known(""))
    }
}

#[cfg(test)]
mod tests {
    use super::super::pattern::{glob_match, trim};
    use super::*;

    #[test]
    fn patterns() {
        assert!(glob_match("abort-*", "abort-upgrade"));
        assert!(glob_match("*.conf", "a.conf"));
        assert!(!glob_match("*.conf", "a.confx"));
        assert!(glob_match("[!a]?", "bc"));
        assert!(glob_match("\\*", "*"));
        assert!(!glob_match("\\*", "x"));
        assert!(glob_match(
            "*a*a*a*a*b",
            &"a".repeat(40).replace("aaaa", "aaab")
        ));
        assert_eq!(trim("a/b/c", "*/", true, false), "b/c");
        assert_eq!(trim("a/b/c", "*/", true, true), "c");
        assert_eq!(trim("x.tar.gz", ".*", false, false), "x.tar");
        assert_eq!(trim("x.tar.gz", ".*", false, true), "x");
        assert_eq!(printf("%s-%s\\n", &["a", "b", "c"]), "a-b\nc-\n");
        assert_eq!(bre_to_ere("^shadow:[^:]*:42"), "^shadow:[^:]*:42");
        assert_eq!(bre_to_ere("a\\(b\\)+"), "a(b)\\+");
    }
}
