//! sed(1) as maintainer scripts use it, answered from its input (and `sed -i` on a tree file):
//! the `s`, `d` and `p` commands, each with an optional address (`N`, `$`, `/RE/`), a range of
//! two (`A,B`, and GNU's `0,/RE/`: the range may end on the first line) and `!`; several `-e`;
//! basic or (`-E`) extended regular expressions. `None` means the script is not handled (the
//! answer is then unknown).

use super::fsops;
use super::textutil::Answer;
use crate::tree::Tree;

/// One address (POSIX sed "Addresses in sed").
enum Addr {
    Line(usize),
    Last,
    Re(regex_lite::Regex),
}

/// What a command applies to.
enum Select {
    All,
    One(Addr),
    /// `A,B`: from a line A selects through the next line B selects (a line number at or
    /// before the first line ends the range there).
    Range(Addr, Addr),
}

enum Op {
    /// (pattern, replacement, global, print)
    Subst(regex_lite::Regex, String, bool, bool),
    Delete,
    Print,
}

struct Command {
    select: Select,
    negate: bool,
    op: Op,
    /// A range's state: inside since this line.
    active: bool,
}

fn compile(p: &str, ext: bool) -> Option<regex_lite::Regex> {
    let src = if ext {
        super::script::ere_for_regex_lite(p)
    } else {
        super::script::ere_for_regex_lite(&super::script::bre_to_ere(p))
    };
    regex_lite::Regex::new(&src).ok()
}

/// An address at the start of `s`, and what follows it.
fn address(s: &str, ext: bool) -> Option<(Option<Addr>, &str)> {
    if let Some(rest) = s.strip_prefix('/') {
        let end = find_unescaped(rest, '/')?;
        return Some((
            Some(Addr::Re(compile(&rest[..end], ext)?)),
            &rest[end + 1..],
        ));
    }
    if let Some(rest) = s.strip_prefix('$') {
        return Some((Some(Addr::Last), rest));
    }
    let digits = s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits > 0 {
        return Some((Some(Addr::Line(s[..digits].parse().ok()?)), &s[digits..]));
    }
    Some((None, s))
}

fn parse_command(part: &str, ext: bool) -> Option<Command> {
    let (first, rest) = address(part, ext)?;
    let (select, rest) = match (first, rest.strip_prefix(',')) {
        (Some(a), Some(more)) => {
            let (b, rest) = address(more.trim_start(), ext)?;
            let b = b?;
            // `0,` only before a regular expression (GNU).
            if matches!(a, Addr::Line(0)) && !matches!(b, Addr::Re(_)) {
                return None;
            }
            (Select::Range(a, b), rest)
        }
        (Some(Addr::Line(0)), None) => return None,
        (Some(a), None) => (Select::One(a), rest),
        (None, _) => (Select::All, rest),
    };
    let rest = rest.trim_start();
    let (negate, cmd) = match rest.strip_prefix('!') {
        Some(r) => (true, r.trim_start()),
        None => (false, rest),
    };
    let op = if let Some(rest) = cmd.strip_prefix('s') {
        let d = rest.chars().next()?;
        let body = &rest[d.len_utf8()..];
        let a = find_unescaped(body, d)?;
        let b = a + d.len_utf8() + find_unescaped(&body[a + d.len_utf8()..], d)?;
        let (pat, repl, flags) = (
            &body[..a],
            &body[a + d.len_utf8()..b],
            &body[b + d.len_utf8()..],
        );
        if flags.chars().any(|f| !matches!(f, 'g' | 'p')) {
            return None;
        }
        Op::Subst(
            compile(pat, ext)?,
            sed_replacement(repl),
            flags.contains('g'),
            flags.contains('p'),
        )
    } else {
        match cmd {
            "d" => Op::Delete,
            "p" => Op::Print,
            _ => return None,
        }
    };
    Some(Command {
        select,
        negate,
        op,
        active: false,
    })
}

impl Addr {
    fn matches(&self, n: usize, last: bool, line: &str) -> bool {
        match self {
            Addr::Line(l) => *l == n,
            Addr::Last => last,
            Addr::Re(r) => r.is_match(line),
        }
    }
}

impl Command {
    /// Whether the command applies to line `n` (from 1), updating a range's state.
    fn selects(&mut self, n: usize, last: bool, line: &str) -> bool {
        let hit = match &self.select {
            Select::All => true,
            Select::One(a) => a.matches(n, last, line),
            Select::Range(a, b) => {
                if self.active {
                    if b.matches(n, last, line) {
                        self.active = false;
                    }
                    true
                } else if matches!(a, Addr::Line(0)) && n == 1 || a.matches(n, last, line) {
                    // The end is looked for from the next line, except after `0,` (GNU) and
                    // for a line number not after the start.
                    let ends_here = match b {
                        Addr::Line(l) => *l <= n,
                        Addr::Re(r) if matches!(a, Addr::Line(0)) => r.is_match(line),
                        _ => false,
                    };
                    self.active = !ends_here;
                    true
                } else {
                    false
                }
            }
        };
        hit != self.negate
    }
}

/// sed without -i over `input`.
pub fn sed(args: &[&str], input: &str) -> Answer {
    // No input lines: no output, whatever the script (without -i, which reads files).
    if input.is_empty() && !args.iter().any(|a| a.starts_with("-i")) {
        return Some((0, String::new()));
    }
    let mut quiet = false;
    let mut scripts = Vec::new();
    let mut ext = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "-n" => quiet = true,
            "-e" => scripts.push((*it.next()?).to_owned()),
            "-E" | "-r" => ext = true,
            a if a.starts_with('-') => return None,
            a if scripts.is_empty() => scripts.push(a.to_owned()),
            _ => return None,
        }
    }
    let mut cmds = Vec::new();
    for s in &scripts {
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            cmds.push(parse_command(part, ext)?);
        }
    }
    let mut out = String::new();
    let all: Vec<&str> = input.lines().collect();
    'line: for (i, l) in all.iter().enumerate() {
        let (n, last) = (i + 1, i + 1 == all.len());
        let mut line = (*l).to_owned();
        for c in &mut cmds {
            if !c.selects(n, last, &line) {
                continue;
            }
            match &c.op {
                Op::Subst(r, repl, global, print) => {
                    let new = if *global {
                        r.replace_all(&line, repl.as_str()).into_owned()
                    } else {
                        r.replace(&line, repl.as_str()).into_owned()
                    };
                    if *print && r.is_match(&line) {
                        out.push_str(&new);
                        out.push('\n');
                    }
                    line = new;
                }
                Op::Delete => continue 'line,
                Op::Print => {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        }
        if !quiet {
            out.push_str(&line);
            out.push('\n');
        }
    }
    Some((0, out))
}

/// The index of the first `d` not escaped by a backslash.
fn find_unescaped(s: &str, d: char) -> Option<usize> {
    let mut esc = false;
    let mut in_class = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if esc => esc = false,
            '\\' => esc = true,
            '[' => in_class = true,
            ']' if in_class => in_class = false,
            c if c == d && !in_class => return Some(i),
            _ => {}
        }
    }
    None
}

/// A sed replacement for regex-lite: `&` is the match, `\N` a group, `$` literal.
fn sed_replacement(r: &str) -> String {
    let mut out = String::new();
    let mut cs = r.chars();
    while let Some(c) = cs.next() {
        match c {
            '&' => out.push_str("${0}"),
            '$' => out.push_str("$$"),
            '\\' => match cs.next() {
                Some(d) if d.is_ascii_digit() => out.push_str(&format!("${{{d}}}")),
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

/// `sed -i SCRIPT... FILE`: the same edits, written back in place (mode and owner kept).
pub fn sed_in_place(tree: &mut Tree, args: &[&str], sde: crate::tree::Time) -> Result<i32, String> {
    let mut script_args = Vec::new();
    let mut files = Vec::new();
    let mut it = args.iter();
    let mut have_script = false;
    while let Some(a) = it.next() {
        match *a {
            a if a.starts_with("-i") || a == "--in-place" => {}
            "-e" => {
                script_args.push("-e");
                script_args.push(*it.next().ok_or("-e needs a script")?);
                have_script = true;
            }
            "-E" | "-r" | "-n" => script_args.push(*a),
            a if a.starts_with('-') => return Err(format!("sed option {a} is not handled")),
            a if !have_script => {
                script_args.push("-e");
                script_args.push(a);
                have_script = true;
            }
            a => files.push(a),
        }
    }
    for f in files {
        let Some(text) = fsops::read_text(tree, f) else {
            return Ok(2);
        };
        let (_, out) = sed(&script_args, &text).ok_or("this sed script is not handled")?;
        let target = fsops::find(tree, f, true)
            .map(|x| x.path())
            .unwrap_or_else(|| f.to_owned());
        let id = fsops::lookup(tree, &target, false).ok_or("the file vanished")?;
        let m = tree.node(id).meta.clone();
        fsops::write_file(tree, &target, out.into_bytes(), m.mode, m.uid, m.gid, sde)
            .map_err(|e| e.to_string())?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], input: &str) -> Option<String> {
        sed(args, input).map(|(_, out)| out)
    }

    #[test]
    fn addresses_ranges_and_negation() {
        // locales' config and postinst: keep only the lines that start with a letter.
        assert_eq!(
            run(
                &["-e", "/^[a-zA-Z]/!d", "-e", "s/ *$//g"],
                "# c\naa UTF-8  \n\nbb X\n"
            ),
            Some("aa UTF-8\nbb X\n".into())
        );
        assert_eq!(run(&["2d"], "a\nb\nc\n"), Some("a\nc\n".into()));
        assert_eq!(run(&["$d"], "a\nb\nc\n"), Some("a\nb\n".into()));
        assert_eq!(run(&["-n", "2,$p"], "a\nb\nc\n"), Some("b\nc\n".into()));
        assert_eq!(run(&["/b/,/c/d"], "a\nb\nx\nc\nd\n"), Some("a\nd\n".into()));
        // A range's end is looked for from the line after its start...
        assert_eq!(run(&["/b/,/b/d"], "b\nx\nb\ny\n"), Some("y\n".into()));
        // ...except after GNU's `0,`, which may end on the first line.
        assert_eq!(
            run(&["0,/b/ s/b/B/"], "b\nx\nb\n"),
            Some("B\nx\nb\n".into())
        );
        assert_eq!(
            run(&["1,/b/ s/b/B/"], "b\nx\nb\n"),
            Some("B\nx\nB\n".into())
        );
        // locales' postinst with no locale selected: `read` gives an empty name, so the first
        // line of only `#` and blanks is emptied (what a real install leaves in locale.gen).
        assert_eq!(
            run(
                &["-e", "0,/^[# ]* *$/ s/^[# ]* *$//"],
                "# text\n#\n\n# aa UTF-8\n"
            ),
            Some("# text\n\n\n# aa UTF-8\n".into())
        );
        assert_eq!(run(&["2!d"], "a\nb\nc\n"), Some("b\n".into()));
        // Not handled: the answer stays unknown.
        assert_eq!(run(&["0,3d"], "a\n"), None);
        assert_eq!(run(&["0d"], "a\n"), None);
        assert_eq!(run(&["s/a/b/w out"], "a\n"), None);
        assert_eq!(run(&["/a/y/ab/ba/"], "a\n"), None);
    }
}
