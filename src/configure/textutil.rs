//! Read-only tools scripts use in pipelines and conditions, answered from their input: seq, tr,
//! sort, uniq, cut, head, tail, wc, expr (and sed, in [`super::sed`]). `None` means the form
//! is not handled (the answer is then unknown). The tools that read the tree (find, ls, stat,
//! getcap, dpkg -L / dpkg-query -S, dpkg-realpath) are in [`super::treeutil`], re-exported here.

pub use super::sed::{sed, sed_in_place};
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
        "awk" | "mawk" => {
            let mut program = false;
            while let Some(a) = it.next() {
                if program {
                    files.push(*a);
                } else if *a == "-F" || *a == "-v" {
                    opts.push(*a);
                    opts.push(*it.next()?);
                } else {
                    program = !a.starts_with('-');
                    opts.push(*a);
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
