//! `$((...))`: the shell's integer arithmetic (XCU §2.6.4), for the forms scripts use.

use super::eval::{Shell, Val};

/// `$((...))`: integers, variables, + - * / % and parentheses; unknown otherwise.
pub(super) fn arith(sh: &mut Shell, text: &str) -> Val {
    let mut toks = Vec::new();
    let cs: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let s = i;
            while i < cs.len() && cs[i].is_ascii_digit() {
                i += 1;
            }
            let n: String = cs[s..i].iter().collect();
            match n.parse::<i64>() {
                Ok(n) => toks.push(Tok::Num(n)),
                Err(_) => return Val::Unknown,
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == '$' {
            let s = if c == '$' { i + 1 } else { i };
            i = s;
            while i < cs.len() && (cs[i].is_ascii_alphanumeric() || cs[i] == '_') {
                i += 1;
            }
            let name: String = cs[s..i].iter().collect();
            let v = sh.get_var(&name).unwrap_or(Val::known("0"));
            match v.as_str().map(|s| s.trim().parse::<i64>()) {
                Some(Ok(n)) => toks.push(Tok::Num(n)),
                Some(Err(_)) if v.as_str() == Some("") => toks.push(Tok::Num(0)),
                _ => return Val::Unknown,
            }
        } else if "+-*/%()".contains(c) {
            toks.push(Tok::Op(c));
            i += 1;
        } else {
            return Val::Unknown;
        }
    }
    let mut p = 0;
    match expr(&toks, &mut p, 0) {
        Some(n) if p == toks.len() => Val::Known(n.to_string()),
        _ => Val::Unknown,
    }
}

enum Tok {
    Num(i64),
    Op(char),
}

fn expr(t: &[Tok], p: &mut usize, depth: usize) -> Option<i64> {
    if depth > 64 {
        return None;
    }
    let mut v = term(t, p, depth)?;
    while let Some(Tok::Op(c @ ('+' | '-'))) = t.get(*p) {
        *p += 1;
        let r = term(t, p, depth)?;
        v = if *c == '+' {
            v.checked_add(r)?
        } else {
            v.checked_sub(r)?
        };
    }
    Some(v)
}

fn term(t: &[Tok], p: &mut usize, depth: usize) -> Option<i64> {
    let mut v = atom(t, p, depth)?;
    while let Some(Tok::Op(c @ ('*' | '/' | '%'))) = t.get(*p) {
        *p += 1;
        let r = atom(t, p, depth)?;
        v = match c {
            '*' => v.checked_mul(r)?,
            '/' => v.checked_div(r)?,
            _ => v.checked_rem(r)?,
        };
    }
    Some(v)
}

fn atom(t: &[Tok], p: &mut usize, depth: usize) -> Option<i64> {
    match t.get(*p)? {
        Tok::Num(n) => {
            *p += 1;
            Some(*n)
        }
        Tok::Op('-') => {
            *p += 1;
            atom(t, p, depth + 1)?.checked_neg()
        }
        Tok::Op('(') => {
            *p += 1;
            let v = expr(t, p, depth + 1)?;
            match t.get(*p) {
                Some(Tok::Op(')')) => {
                    *p += 1;
                    Some(v)
                }
                _ => None,
            }
        }
        _ => None,
    }
}
