//! awk(1), answered only where the answer is certain without running awk's language: a program
//! of `/RE/ { ... }` rules (and `{ ... }` rules on empty input) and `END { print ... }` blocks,
//! over input none of whose lines the rules select. No rule body then runs, every variable is
//! still uninitialized (or what `-v` set), and the END blocks' prints of variables and string
//! literals are the whole output. This is how locales' config reads the default `LANG` out of
//! `/etc/environment` and `/etc/default/locale` on a fresh install (neither has a `LANG=` line).
//! Anything else is `None`: the answer stays unknown.

use std::collections::BTreeMap;

use super::textutil::Answer;

/// One item of an END block's `print` list.
enum Item {
    Var(String),
    Str(String),
}

/// `awk [-F SEP] [-v NAME=VALUE]... PROGRAM` over `input` (the files already read).
pub fn awk(args: &[&str], input: &str) -> Answer {
    let mut vars = BTreeMap::new();
    let mut program = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "-F" => {
                it.next()?;
            }
            "-v" => {
                let (k, v) = it.next()?.split_once('=')?;
                vars.insert(k.to_owned(), v.to_owned());
            }
            a if a.starts_with("-F") => {}
            a if a.starts_with('-') => return None,
            a if program.is_none() => program = Some(a),
            _ => return None,
        }
    }
    let (selectors, ends) = parse(program?)?;
    for line in input.lines() {
        for s in &selectors {
            match s {
                // A rule without a pattern runs on every record.
                None => return None,
                Some(r) if r.is_match(line) => return None,
                Some(_) => {}
            }
        }
    }
    let mut out = String::new();
    for print in ends {
        let texts: Vec<&str> = print
            .iter()
            .map(|i| match i {
                Item::Var(v) => vars.get(v).map_or("", String::as_str),
                Item::Str(s) => s.as_str(),
            })
            .collect();
        out.push_str(&texts.join(" "));
        out.push('\n');
    }
    Some((0, out))
}

/// The program's rules' patterns (`None`: a rule without one) and its END blocks' prints, in
/// order; `None` for anything else.
#[allow(clippy::type_complexity)]
fn parse(p: &str) -> Option<(Vec<Option<regex_lite::Regex>>, Vec<Vec<Item>>)> {
    let mut selectors = Vec::new();
    let mut prints = Vec::new();
    let mut rest = p.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("END") {
            let (body, r) = block(r.trim_start())?;
            for stmt in body.split([';', '\n']) {
                let stmt = stmt.trim();
                if stmt.is_empty() {
                    continue;
                }
                prints.push(print_items(stmt.strip_prefix("print")?)?);
            }
            rest = r;
        } else if let Some(r) = rest.strip_prefix('/') {
            let end = regex_end(r)?;
            let re = super::script::ere_for_regex_lite(&r[..end]);
            selectors.push(Some(regex_lite::Regex::new(&re).ok()?));
            rest = block(r[end + 1..].trim_start())?.1;
        } else if rest.starts_with('{') {
            selectors.push(None);
            rest = block(rest)?.1;
        } else {
            // BEGIN, expression patterns, functions: not followed.
            return None;
        }
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
    }
    Some((selectors, prints))
}

/// The end of a `/RE/` literal (the closing slash's index in `s`, which follows the opening).
fn regex_end(s: &str) -> Option<usize> {
    let mut esc = false;
    let mut class = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if esc => esc = false,
            '\\' => esc = true,
            '[' => class = true,
            ']' if class => class = false,
            '/' if !class => return Some(i),
            '\n' => return None,
            _ => {}
        }
    }
    None
}

/// `{ body }` at the start of `s`: (body, what follows). The body's braces are matched outside
/// string literals; a body with a `/` outside strings (a regular expression or a division,
/// which awk's grammar tells apart by context) is not followed.
fn block(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix('{')?;
    let mut depth = 1;
    let mut in_str = false;
    let mut esc = false;
    for (i, c) in inner.char_indices() {
        match c {
            _ if esc => esc = false,
            '\\' if in_str => esc = true,
            '"' => in_str = !in_str,
            _ if in_str => {}
            '/' => return None,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((&inner[..i], &inner[i + 1..]));
                }
            }
            _ => {}
        }
    }
    None
}

/// `print a, "text", b`: the items (names and string literals only; a bare `print` is `$0`,
/// not followed).
fn print_items(s: &str) -> Option<Vec<Item>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut items = Vec::new();
    for part in split_commas(s)? {
        let part = part.trim();
        if let Some(lit) = part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
            items.push(Item::Str(unescape(lit)?));
        } else if is_name(part) {
            items.push(Item::Var(part.to_owned()));
        } else {
            return None;
        }
    }
    Some(items)
}

fn split_commas(s: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut in_str, mut esc, mut start) = (false, false, 0);
    for (i, c) in s.char_indices() {
        match c {
            _ if esc => esc = false,
            '\\' if in_str => esc = true,
            '"' => in_str = !in_str,
            ',' if !in_str => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    (!in_str).then_some(())?;
    parts.push(&s[start..]);
    Some(parts)
}

/// A name that is a user variable: awk's built-in variables (NR, NF, FILENAME...) are
/// upper-case and have values even in END, so they are not followed.
fn is_name(s: &str) -> bool {
    let mut cs = s.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(s, "getline" | "print" | "printf" | "in")
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut cs = s.chars();
    while let Some(c) = cs.next() {
        match c {
            '\\' => out.push(match cs.next()? {
                'n' => '\n',
                't' => '\t',
                '"' => '"',
                '\\' => '\\',
                '/' => '/',
                _ => return None,
            }),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// locales 2.36's config script, as it reads the default LANG.
    const LOCALES: &str =
        r#"/^LANG=/ {gsub("\"", ""); sub("LANG=", ""); lang=$0;} END {print lang}"#;

    #[test]
    fn no_selected_line_leaves_only_the_end_blocks_prints() {
        assert_eq!(awk(&[LOCALES], ""), Some((0, "\n".into())));
        assert_eq!(
            awk(&[LOCALES], "#  File generated by update-locale\n"),
            Some((0, "\n".into()))
        );
        assert_eq!(
            awk(&["-v", "x=1", r#"END { print x, "a\tb"; print y }"#], "z\n"),
            Some((0, "1 a\tb\n\n".into()))
        );
        // A rule without a pattern runs on no record of empty input.
        assert_eq!(
            awk(&["{ n++ } END { print n }"], ""),
            Some((0, "\n".into()))
        );
    }

    #[test]
    fn anything_a_rule_selects_or_the_program_does_otherwise_is_unknown() {
        assert_eq!(awk(&[LOCALES], "LANG=en_US.UTF-8\n"), None);
        assert_eq!(awk(&["{ n++ } END { print n }"], "a\n"), None);
        assert_eq!(awk(&["BEGIN { x = 1 } END { print x }"], ""), None);
        assert_eq!(awk(&["END { print NR }"], ""), None);
        assert_eq!(awk(&["END { print }"], ""), None);
        assert_eq!(awk(&["END { print x + 1 }"], ""), None);
        assert_eq!(awk(&["$1 == \"a\" { print }"], ""), None);
        assert_eq!(awk(&["/a/ { x = 4 / 2 } END { print x }"], ""), None);
        assert_eq!(awk(&["-f", "prog"], ""), None);
    }
}
