//! Read-only tools scripts use in pipelines and conditions, answered from their input: seq, tr,
//! sort, uniq, cut, head, tail, wc, sed (and `sed -i` on a tree file), expr. `None` means the form
//! is not handled (the answer is then unknown). The tools that read the tree (find, ls, stat,
//! getcap, dpkg -L / dpkg-query -S, dpkg-realpath) are in [`super::treeutil`], re-exported here.

use super::fsops;
use crate::tree::Tree;

pub use super::treeutil::{dpkg_lists, find, getcap, ls, realpath, stat};

/// (status, stdout).
pub type Answer = Option<(i32, String)>;

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

fn join_lines(v: &[String]) -> String {
    let mut s = v.join("\n");
    if !v.is_empty() {
        s.push('\n');
    }
    s
}

pub fn seq(args: &[&str]) -> Answer {
    let nums: Vec<i64> = args.iter().map(|a| a.parse().ok()).collect::<Option<_>>()?;
    let (first, step, last) = match nums[..] {
        [l] => (1, 1, l),
        [f, l] => (f, 1, l),
        [f, s, l] => (f, s, l),
        _ => return None,
    };
    if step == 0 || (last - first) / step > 100_000 {
        return None;
    }
    let mut out = Vec::new();
    let mut x = first;
    while (step > 0 && x <= last) || (step < 0 && x >= last) {
        out.push(x.to_string());
        x += step;
    }
    Some((0, join_lines(&out)))
}

/// A tr(1) set: ranges, escapes and the [:classes:] scripts use.
fn tr_set(s: &str) -> Option<Vec<char>> {
    let mut out = Vec::new();
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let rest: String = cs[i..].iter().collect();
        if rest.starts_with("[:") {
            let end = rest.find(":]")?;
            let class = &rest[2..end];
            let all: Vec<char> = (0u8..128).map(char::from).collect();
            out.extend(all.into_iter().filter(|c| match class {
                "upper" => c.is_ascii_uppercase(),
                "lower" => c.is_ascii_lowercase(),
                "digit" => c.is_ascii_digit(),
                "alpha" => c.is_ascii_alphabetic(),
                "alnum" => c.is_ascii_alphanumeric(),
                "space" => c.is_ascii_whitespace(),
                "blank" => *c == ' ' || *c == '\t',
                "punct" => c.is_ascii_punctuation(),
                _ => false,
            }));
            i += end + 2;
            continue;
        }
        let c = if cs[i] == '\\' && i + 1 < cs.len() {
            i += 1;
            match cs[i] {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '\\' => '\\',
                o => o,
            }
        } else {
            cs[i]
        };
        if i + 2 < cs.len() && cs[i + 1] == '-' {
            let end = cs[i + 2];
            if end < c {
                return None;
            }
            out.extend(c..=end);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Some(out)
}

pub fn tr(args: &[&str], input: &str) -> Answer {
    match args {
        ["-d", set] => {
            let s = tr_set(set)?;
            Some((0, input.chars().filter(|c| !s.contains(c)).collect()))
        }
        ["-s", set] => {
            let s = tr_set(set)?;
            let mut out = String::new();
            let mut prev = None;
            for c in input.chars() {
                if !(s.contains(&c) && prev == Some(c)) {
                    out.push(c);
                }
                prev = Some(c);
            }
            Some((0, out))
        }
        [a, b] if !a.starts_with('-') => {
            let (a, b) = (tr_set(a)?, tr_set(b)?);
            let last = *b.last()?;
            Some((
                0,
                input
                    .chars()
                    .map(|c| match a.iter().position(|x| *x == c) {
                        Some(i) => *b.get(i).unwrap_or(&last),
                        None => c,
                    })
                    .collect(),
            ))
        }
        _ => None,
    }
}

pub fn sort(args: &[&str], input: &str) -> Answer {
    let mut v: Vec<String> = lines(input).into_iter().map(str::to_owned).collect();
    let (mut unique, mut reverse, mut numeric) = (false, false, false);
    for a in args {
        match *a {
            "-u" => unique = true,
            "-r" => reverse = true,
            "-n" => numeric = true,
            _ => return None,
        }
    }
    // The C locale's byte order (scripts sorting for files set LC_ALL=C or do not care).
    if numeric {
        let key = |s: &str| {
            s.trim()
                .split(|c: char| !c.is_ascii_digit() && c != '-')
                .next()
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap_or(0)
        };
        v.sort_by(|a, b| key(a).cmp(&key(b)).then(a.cmp(b)));
    } else {
        v.sort();
    }
    if unique {
        v.dedup();
    }
    if reverse {
        v.reverse();
    }
    Some((0, join_lines(&v)))
}

pub fn uniq(args: &[&str], input: &str) -> Answer {
    let count = match args {
        [] => false,
        ["-c"] => true,
        _ => return None,
    };
    let mut out = Vec::new();
    let mut prev: Option<(&str, usize)> = None;
    for l in lines(input) {
        match prev {
            Some((p, n)) if p == l => prev = Some((p, n + 1)),
            _ => {
                if let Some((p, n)) = prev {
                    out.push(if count {
                        format!("{n:>7} {p}")
                    } else {
                        p.to_owned()
                    });
                }
                prev = Some((l, 1));
            }
        }
    }
    if let Some((p, n)) = prev {
        out.push(if count {
            format!("{n:>7} {p}")
        } else {
            p.to_owned()
        });
    }
    Some((0, join_lines(&out)))
}

pub fn cut(args: &[&str], input: &str) -> Answer {
    let mut delim = '\t';
    let mut fields: Option<Vec<usize>> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, val) = if a.len() > 2 && a.starts_with('-') {
            (&a[..2], a[2..].to_owned())
        } else {
            (*a, it.next()?.to_string())
        };
        match flag {
            "-d" => delim = val.chars().next()?,
            "-f" => {
                fields = Some(
                    val.split(',')
                        .map(|f| f.parse().ok())
                        .collect::<Option<_>>()?,
                )
            }
            _ => return None,
        }
    }
    let fields = fields?;
    let out: Vec<String> = lines(input)
        .iter()
        .map(|l| {
            if !l.contains(delim) {
                return (*l).to_owned();
            }
            let parts: Vec<&str> = l.split(delim).collect();
            fields
                .iter()
                .filter_map(|&f| parts.get(f.checked_sub(1)?).copied())
                .collect::<Vec<_>>()
                .join(&delim.to_string())
        })
        .collect();
    Some((0, join_lines(&out)))
}

pub fn head_tail(head: bool, args: &[&str], input: &str) -> Answer {
    let n: usize = match args {
        [] => 10,
        ["-n", n] => n.parse().ok()?,
        [a] if a.starts_with("-n") => a[2..].parse().ok()?,
        [a] if a.starts_with('-') => a[1..].parse().ok()?,
        _ => return None,
    };
    let ls = lines(input);
    let pick: Vec<String> = if head {
        ls.iter().take(n).map(|s| (*s).to_owned()).collect()
    } else {
        ls.iter()
            .skip(ls.len().saturating_sub(n))
            .map(|s| (*s).to_owned())
            .collect()
    };
    Some((0, join_lines(&pick)))
}

pub fn wc(args: &[&str], input: &str) -> Answer {
    match args {
        ["-l"] => Some((0, format!("{}\n", input.matches('\n').count()))),
        ["-c"] => Some((0, format!("{}\n", input.len()))),
        ["-w"] => Some((0, format!("{}\n", input.split_whitespace().count()))),
        _ => None,
    }
}

/// sed without -i: `s/RE/REPL/[g]`, `/RE/d`, `/RE/p` with -n, several -e; basic regular
/// expressions.
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
    enum Cmd {
        Subst(
            Option<regex_lite::Regex>,
            regex_lite::Regex,
            String,
            bool,
            bool,
        ),
        Delete(regex_lite::Regex),
        Print(regex_lite::Regex),
    }
    let re = |p: &str| {
        let src = if ext {
            super::script::ere_for_regex_lite(p)
        } else {
            super::script::ere_for_regex_lite(&super::script::bre_to_ere(p))
        };
        regex_lite::Regex::new(&src).ok()
    };
    let mut cmds = Vec::new();
    for s in &scripts {
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            // An optional `/RE/` address before the command.
            let (addr, cmd) = match part.strip_prefix('/') {
                Some(rest) => {
                    let end = find_unescaped(rest, '/')?;
                    (Some(&rest[..end]), rest[end + 1..].trim_start())
                }
                None => (None, part),
            };
            if let Some(rest) = cmd.strip_prefix('s') {
                let d = rest.chars().next()?;
                let body = &rest[d.len_utf8()..];
                let a = find_unescaped(body, d)?;
                let b = a + d.len_utf8() + find_unescaped(&body[a + d.len_utf8()..], d)?;
                let (pat, repl, flags) = (
                    &body[..a],
                    &body[a + d.len_utf8()..b],
                    &body[b + d.len_utf8()..],
                );
                let addr = match addr {
                    Some(p) => Some(re(p)?),
                    None => None,
                };
                cmds.push(Cmd::Subst(
                    addr,
                    re(pat)?,
                    sed_replacement(repl),
                    flags.contains('g'),
                    flags.contains('p'),
                ));
            } else if let Some(p) = addr {
                match cmd {
                    "d" => cmds.push(Cmd::Delete(re(p)?)),
                    "p" => cmds.push(Cmd::Print(re(p)?)),
                    _ => return None,
                }
            } else {
                return None;
            }
        }
    }
    let mut out = String::new();
    'line: for l in lines(input) {
        let mut line = l.to_owned();
        for c in &cmds {
            match c {
                Cmd::Subst(addr, r, repl, global, print) => {
                    if addr.as_ref().is_some_and(|a| !a.is_match(&line)) {
                        continue;
                    }
                    let new = if *global {
                        r.replace_all(&line, repl.as_str()).into_owned()
                    } else {
                        r.replace(&line, repl.as_str()).into_owned()
                    };
                    if *print && new != line {
                        out.push_str(&new);
                        out.push('\n');
                    }
                    line = new;
                }
                Cmd::Delete(r) if r.is_match(&line) => continue 'line,
                Cmd::Print(r) if r.is_match(&line) => {
                    out.push_str(&line);
                    out.push('\n');
                }
                _ => {}
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

/// expr(1): `STRING : REGEX` (anchored basic regular expression: the first group's text, or
/// the length of the match) and two-operand arithmetic and comparisons.
pub fn expr(args: &[&str]) -> Answer {
    let [a, op, b] = args else { return None };
    let result = match *op {
        ":" => {
            let src = super::script::ere_for_regex_lite(&super::script::bre_to_ere(b));
            let re = regex_lite::Regex::new(&format!("^(?:{src})")).ok()?;
            match re.captures(a) {
                Some(c) if c.len() > 1 => c.get(1).map_or(String::new(), |m| m.as_str().to_owned()),
                Some(c) => c
                    .get(0)
                    .map_or(0, |m| m.as_str().chars().count())
                    .to_string(),
                None if re.captures_len() > 1 => String::new(),
                None => "0".to_owned(),
            }
        }
        _ => {
            let (x, y) = (a.parse::<i64>(), b.parse::<i64>());
            match (op, x.clone(), y.clone()) {
                (&"+", Ok(x), Ok(y)) => x.checked_add(y)?.to_string(),
                (&"-", Ok(x), Ok(y)) => x.checked_sub(y)?.to_string(),
                (&"*", Ok(x), Ok(y)) => x.checked_mul(y)?.to_string(),
                (&"/", Ok(x), Ok(y)) => x.checked_div(y)?.to_string(),
                (&"%", Ok(x), Ok(y)) => x.checked_rem(y)?.to_string(),
                (&("=" | "!=" | "<" | ">" | "<=" | ">="), _, _) => {
                    let ord = match (x, y) {
                        (Ok(x), Ok(y)) => x.cmp(&y),
                        _ => a.cmp(b),
                    };
                    let t = match *op {
                        "=" => ord.is_eq(),
                        "!=" => !ord.is_eq(),
                        "<" => ord.is_lt(),
                        ">" => ord.is_gt(),
                        "<=" => ord.is_le(),
                        _ => ord.is_ge(),
                    };
                    (t as i32).to_string()
                }
                _ => return None,
            }
        }
    };
    // expr exits 1 when the result is null or 0.
    let rc = if result.is_empty() || result == "0" {
        1
    } else {
        0
    };
    Some((rc, result + "\n"))
}

/// For a text tool called with file operands: (the options and script, the files).
pub fn split_files<'a>(name: &str, args: &[&'a str]) -> Option<(Vec<&'a str>, Vec<&'a str>)> {
    let mut opts = Vec::new();
    let mut files = Vec::new();
    let mut it = args.iter();
    match name {
        "sed" => {
            let mut script = false;
            while let Some(a) = it.next() {
                if *a == "-e" {
                    opts.push(*a);
                    opts.push(*it.next()?);
                    script = true;
                } else if a.starts_with('-') {
                    opts.push(*a);
                } else if !script {
                    opts.push(*a);
                    script = true;
                } else {
                    files.push(*a);
                }
            }
        }
        "sort" | "uniq" | "head" | "tail" | "wc" | "cut" => {
            while let Some(a) = it.next() {
                if a.starts_with('-') && a.len() > 1 {
                    opts.push(*a);
                    if matches!(*a, "-n" | "-d" | "-f" | "-k" | "-t" | "-c")
                        && name != "wc"
                        && name != "uniq"
                        && !(name == "sort" && *a == "-n")
                    {
                        opts.push(*it.next()?);
                    }
                } else {
                    files.push(*a);
                }
            }
        }
        _ => return None,
    }
    (!files.is_empty()).then_some((opts, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_tools() {
        assert_eq!(seq(&["6", "-1", "4"]).unwrap().1, "6\n5\n4\n");
        assert_eq!(
            expr(&[", None,", ":", ".*, None,.*"]).unwrap(),
            (0, "7\n".into())
        );
        assert_eq!(
            expr(&[", x,", ":", ".*, None,.*"]).unwrap(),
            (1, "0\n".into())
        );
        assert_eq!(expr(&["abc", ":", "a\\(.\\)"]).unwrap(), (0, "b\n".into()));
        assert_eq!(expr(&["3", "+", "4"]).unwrap(), (0, "7\n".into()));
        assert_eq!(tr(&[",", "\\n"], "a,b").unwrap().1, "a\nb");
        assert_eq!(tr(&["[:upper:]", "[:lower:]"], "AbC").unwrap().1, "abc");
        assert_eq!(sort(&[], "b\na\nb\n").unwrap().1, "a\nb\nb\n");
        assert_eq!(
            uniq(&["-c"], "a\nb\nb\n").unwrap().1,
            "      1 a\n      2 b\n"
        );
        assert_eq!(
            cut(&["-f", "1", "-d", " "], "x y\nz\n").unwrap().1,
            "x\nz\n"
        );
        assert_eq!(head_tail(true, &["-n", "1"], "a\nb\n").unwrap().1, "a\n");
        assert_eq!(
            sed(
                &[
                    "-e",
                    "s/^[[:space:]]*2[[:space:]]*//",
                    "-e",
                    "s/^[[:space:]]*1[[:space:]]*/!/"
                ],
                "   2 a.crt\n   1 b.crt\n"
            )
            .unwrap()
            .1,
            "a.crt\n!b.crt\n"
        );
        assert_eq!(
            sed(
                &["-n", "/^\\/usr\\/lib\\/.*\\.py$/p"],
                "/usr/lib/a.py\n/etc/x\n"
            )
            .unwrap()
            .1,
            "/usr/lib/a.py\n"
        );
        assert_eq!(sed(&["s/a/&&/g"], "aba\n").unwrap().1, "aabaa\n");
        assert!(sed(&["-i", "s/a/b/", "f"], "").is_none());
        assert_eq!(
            sed(&["-e", r"s/^\.\///"], "./a/b.crt\n").unwrap().1,
            "a/b.crt\n"
        );
        assert_eq!(sed(&["-e", "s/^[[:space:]]*//"], "  x\n").unwrap().1, "x\n");
        // libnss-myhostname's edit of nsswitch.conf.
        let nss = "passwd:         files\nhosts:          files dns\n";
        let out = sed(
            &[
                "-E",
                "-e",
                r"/^hosts:\s[^#]*$/ s/(\s)(files(\s+\[[^]]+\])?)(\s|$)/\1\2 myhostname\4/",
            ],
            nss,
        )
        .unwrap()
        .1;
        assert_eq!(
            out,
            "passwd:         files\nhosts:          files myhostname dns\n"
        );
    }
}
