//! Patterns of the shell and its tools: globs (XCU §2.13), `${x#pat}` trimming, and grep/sed
//! regular expressions turned into what regex-lite reads.

pub(super) fn regex_escape(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

/// POSIX basic regular expressions → extended: `\( \) \{ \} \|` become operators and the bare
/// characters become literals.
/// A regular expression as regex-lite takes it: a backslash before a character that is not
/// special (`\/`, `\-`, which POSIX allows) is dropped.
pub fn ere_for_regex_lite(p: &str) -> String {
    let mut o = String::new();
    let mut cs = p.chars();
    while let Some(c) = cs.next() {
        if c != '\\' {
            o.push(c);
            continue;
        }
        match cs.next() {
            Some(d) if d.is_ascii_alphanumeric() || "\\.+*?()|[]{}^$-#&~ ".contains(d) => {
                o.push('\\');
                o.push(d);
            }
            Some(d) => o.push(d),
            None => o.push_str("\\\\"),
        }
    }
    o
}

pub fn bre_to_ere(p: &str) -> String {
    let mut o = String::new();
    let mut cs = p.chars().peekable();
    let mut in_bracket = false;
    while let Some(c) = cs.next() {
        if in_bracket {
            o.push(c);
            if c == '[' && cs.peek() == Some(&':') {
                // [:class:]
                for d in cs.by_ref() {
                    o.push(d);
                    if d == ']' {
                        break;
                    }
                }
            } else if c == ']' {
                in_bracket = false;
            }
            continue;
        }
        match c {
            '\\' => match cs.next() {
                Some(d @ ('(' | ')' | '{' | '}' | '|' | '+' | '?')) => o.push(d),
                Some(d) => {
                    o.push('\\');
                    o.push(d);
                }
                None => o.push_str("\\\\"),
            },
            '(' | ')' | '{' | '}' | '|' | '+' | '?' => {
                o.push('\\');
                o.push(c);
            }
            '[' => {
                in_bracket = true;
                o.push('[');
                if cs.peek() == Some(&'^') {
                    o.push('^');
                    cs.next();
                }
                if cs.peek() == Some(&']') {
                    o.push_str("\\]");
                    cs.next();
                }
            }
            c => o.push(c),
        }
    }
    o
}

/// Shell pattern matching (XCU §2.13): `*`, `?`, `[...]`, `\x`.
pub fn glob_match(pat: &str, s: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let t: Vec<char> = s.chars().collect();
    // Iterative matching with backtracking to the last `*`: linear memory, no recursion.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => match bracket(&p, pi, t[ti]) {
                Some((true, next)) => Some(next),
                Some((false, _)) => None,
                None => (t[ti] == '[').then_some(pi + 1),
            },
            Some('\\') if pi + 1 < p.len() => (p[pi + 1] == t[ti]).then_some(pi + 2),
            Some(&c) => (c == t[ti]).then_some(pi + 1),
            None => None,
        };
        match step {
            Some(n) => {
                pi = n;
                ti += 1;
            }
            None => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A bracket expression at `p[i]`: (matches, index after it); `None` if it is not closed.
fn bracket(p: &[char], i: usize, c: char) -> Option<(bool, usize)> {
    let mut j = i + 1;
    let negate = matches!(p.get(j), Some('!' | '^'));
    if negate {
        j += 1;
    }
    let mut matched = false;
    let mut first = true;
    while j < p.len() {
        let ch = p[j];
        if ch == ']' && !first {
            return Some((matched != negate, j + 1));
        }
        first = false;
        if ch == '[' && p.get(j + 1) == Some(&':') {
            let end =
                (j + 2..p.len().saturating_sub(1)).find(|&k| p[k] == ':' && p[k + 1] == ']')?;
            let class: String = p[j + 2..end].iter().collect();
            matched |= match class.as_str() {
                "space" => c.is_whitespace(),
                "alpha" => c.is_alphabetic(),
                "digit" => c.is_ascii_digit(),
                "alnum" => c.is_alphanumeric(),
                "upper" => c.is_uppercase(),
                "lower" => c.is_lowercase(),
                _ => false,
            };
            j = end + 2;
            continue;
        }
        if p.get(j + 1) == Some(&'-') && p.get(j + 2).is_some_and(|&e| e != ']') {
            matched |= (ch..=p[j + 2]).contains(&c);
            j += 3;
        } else {
            matched |= ch == c;
            j += 1;
        }
    }
    None
}

/// `${s#p}`, `${s##p}`, `${s%p}`, `${s%%p}`.
pub fn trim(s: &str, pat: &str, prefix: bool, longest: bool) -> String {
    let bounds: Vec<usize> = s
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(s.len()))
        .collect();
    let mut order: Vec<usize> = bounds.clone();
    if prefix == longest {
        order.reverse();
    }
    for b in order {
        let (part, keep) = if prefix {
            (&s[..b], &s[b..])
        } else {
            (&s[b..], &s[..b])
        };
        if glob_match(pat, part) {
            return keep.to_owned();
        }
    }
    s.to_owned()
}
