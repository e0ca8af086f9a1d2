//! Word expansion (XCU §2.6): parameters, command substitution, arithmetic, quote removal,
//! field splitting and pathname expansion, with unknown values carried through.

use super::*;

impl Shell<'_> {
    /// Expands a word without field splitting (assignments, redirection targets, case words).
    pub(in crate::configure::script) fn expand_string(&mut self, w: &Word) -> Val {
        let segs = self.segments(&w.0, true);
        let mut s = String::new();
        for seg in segs {
            match seg.text {
                Some(t) => s.push_str(&t),
                None => return Val::Unknown,
            }
        }
        Val::Known(s)
    }

    /// A `case` pattern: `*`, `?` and `[` are special unless quoted. `None` if unknown.
    pub(super) fn expand_pattern(&mut self, w: &Word) -> Option<String> {
        let segs = self.segments(&w.0, false);
        let mut s = String::new();
        for seg in segs {
            let t = seg.text?;
            if seg.quoted {
                for c in t.chars() {
                    if "*?[]\\".contains(c) {
                        s.push('\\');
                    }
                    s.push(c);
                }
            } else {
                s.push_str(&t);
            }
        }
        Some(s)
    }

    /// Expands a word into fields (XCU §2.6: expansions, field splitting, pathname expansion).
    pub(in crate::configure::script) fn expand_fields(&mut self, w: &Word) -> Vec<Val> {
        // "$@": one field per positional parameter.
        if let [Part::Double(inner)] = w.0.as_slice() {
            if let [Part::Param(Param {
                name,
                op: ParamOp::Plain,
            })] = inner.as_slice()
            {
                if name == "@" {
                    return self.positional.clone();
                }
            }
        }
        let segs = self.segments(&w.0, false);
        let ifs: Vec<char> = match self.vars.get("IFS") {
            Some(Val::Known(s)) => s.chars().collect(),
            _ => vec![' ', '\t', '\n'],
        };
        let mut fields: Vec<Val> = Vec::new();
        let mut cur = String::new();
        let mut unknown = false;
        let mut has = false;
        let mut globbable = false;
        for seg in segs {
            match (seg.text, seg.quoted || !seg.split) {
                (None, _) => {
                    unknown = true;
                    has = true;
                }
                (Some(t), true) => {
                    if !seg.quoted && seg.glob {
                        globbable = true;
                    }
                    cur.push_str(&t);
                    has = true;
                }
                (Some(t), false) => {
                    for c in t.chars() {
                        if ifs.contains(&c) {
                            if has {
                                fields.push(if unknown {
                                    Val::Unknown
                                } else {
                                    Val::Known(std::mem::take(&mut cur))
                                });
                            }
                            cur.clear();
                            unknown = false;
                            has = false;
                        } else {
                            cur.push(c);
                            has = true;
                        }
                    }
                }
            }
        }
        if has {
            if unknown {
                fields.push(Val::Unknown);
            } else if globbable && !self.noglob {
                let pattern = self.abs(&cur);
                let prefix = pattern.len() - cur.len();
                let matches: Vec<String> = self
                    .host
                    .glob(&pattern)
                    .into_iter()
                    .map(|m| m.get(prefix..).unwrap_or(&m).to_owned())
                    .collect();
                if matches.is_empty() {
                    fields.push(Val::Known(cur));
                } else {
                    fields.extend(matches.into_iter().map(Val::Known));
                }
            } else {
                fields.push(Val::Known(cur));
            }
        }
        fields
    }

    pub(super) fn segments(&mut self, parts: &[Part], _no_split: bool) -> Vec<Seg> {
        let mut out = Vec::new();
        for p in parts {
            match p {
                Part::Lit(t) => out.push(Seg {
                    text: Some(t.clone()),
                    quoted: false,
                    split: false,
                    glob: t.contains(['*', '?', '[']),
                }),
                Part::Quoted(t) => out.push(Seg {
                    text: Some(t.clone()),
                    quoted: true,
                    split: false,
                    glob: false,
                }),
                Part::Double(inner) => {
                    let inner = self.segments(inner, true);
                    // "" is an empty field of its own.
                    if inner.is_empty() {
                        out.push(Seg {
                            text: Some(String::new()),
                            quoted: true,
                            split: false,
                            glob: false,
                        });
                    }
                    for mut s in inner {
                        s.quoted = true;
                        out.push(s);
                    }
                }
                Part::Param(p) => {
                    let v = self.param(p);
                    out.push(Seg {
                        text: v.as_str().map(str::to_owned),
                        quoted: false,
                        split: true,
                        glob: false,
                    });
                }
                Part::Command(body) => {
                    let v = self.substitute(body);
                    out.push(Seg {
                        text: v.as_str().map(str::to_owned),
                        quoted: false,
                        split: true,
                        glob: false,
                    });
                }
                Part::Arith(text) => {
                    let v = match super::super::parse::parse_word_text(text) {
                        Ok(w) => match self.expand_string(&w) {
                            Val::Known(t) => super::super::arith::arith(self, &t),
                            Val::Unknown => Val::Unknown,
                        },
                        Err(_) => Val::Unknown,
                    };
                    out.push(Seg {
                        text: v.as_str().map(str::to_owned),
                        quoted: false,
                        split: true,
                        glob: false,
                    });
                }
            }
        }
        out
    }

    /// `$(...)`: the list's stdout without trailing newlines.
    pub(in crate::configure::script) fn substitute(&mut self, body: &[Cmd]) -> Val {
        self.captures.push(Some(String::new()));
        let saved_exit = self.exit_code;
        let flow = self.list(body);
        if flow == Flow::Exit {
            self.last = self.exit_code;
            self.exit_code = saved_exit;
        }
        match self.captures.pop().flatten() {
            Some(s) => Val::Known(s.trim_end_matches('\n').to_owned()),
            None => Val::Unknown,
        }
    }

    pub(super) fn param(&mut self, p: &Param) -> Val {
        let v = self.get_var(&p.name);
        let empty_or_unset = |v: &Option<Val>, colon: bool| -> Tri {
            match v {
                None => Tri::True,
                Some(Val::Known(s)) => Tri::from(colon && s.is_empty()),
                Some(Val::Unknown) => {
                    if colon {
                        Tri::Unknown
                    } else {
                        Tri::False
                    }
                }
            }
        };
        match &p.op {
            ParamOp::Plain => v.unwrap_or(Val::known("")),
            ParamOp::Length => match v {
                Some(Val::Known(s)) => Val::known(s.chars().count().to_string()),
                None => Val::known("0"),
                Some(Val::Unknown) => Val::Unknown,
            },
            ParamOp::Default { colon, word } | ParamOp::Error { colon, word } => {
                match empty_or_unset(&v, *colon) {
                    Tri::True => self.expand_string(word),
                    Tri::False => v.unwrap_or(Val::known("")),
                    Tri::Unknown => Val::Unknown,
                }
            }
            ParamOp::Assign { colon, word } => match empty_or_unset(&v, *colon) {
                Tri::True => {
                    let nv = self.expand_string(word);
                    self.set_var(&p.name, nv.clone());
                    nv
                }
                Tri::False => v.unwrap_or(Val::known("")),
                Tri::Unknown => Val::Unknown,
            },
            ParamOp::Alt { colon, word } => match empty_or_unset(&v, *colon) {
                Tri::True => Val::known(""),
                Tri::False => self.expand_string(word),
                Tri::Unknown => Val::Unknown,
            },
            ParamOp::TrimPrefix { longest, pattern } | ParamOp::TrimSuffix { longest, pattern } => {
                let prefix = matches!(p.op, ParamOp::TrimPrefix { .. });
                let pat = self.expand_pattern(pattern);
                match (v.unwrap_or(Val::known("")), pat) {
                    (Val::Known(s), Some(pat)) => {
                        Val::Known(super::super::pattern::trim(&s, &pat, prefix, *longest))
                    }
                    _ => Val::Unknown,
                }
            }
            ParamOp::Other(_) => Val::Unknown,
        }
    }
}

pub(super) struct Seg {
    /// `None`: unknown.
    text: Option<String>,
    quoted: bool,
    /// The result of an unquoted expansion: subject to field splitting.
    split: bool,
    /// Unquoted literal text with `*`, `?` or `[`.
    glob: bool,
}
