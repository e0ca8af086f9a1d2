//! Words: quoting, parameter expansion, command substitution (XCU §2.2, §2.6).

use super::ast::{Param, ParamOp, Part, Word};
use super::parse::{is_meta, is_name_char, is_name_start, ParseError, Parser, MAX_DEPTH};

impl Parser {
    /// One word at the current position; `None` at a metacharacter or the end.
    pub(super) fn word(&mut self) -> Result<Option<Word>, ParseError> {
        let parts = self.chars_until(is_meta, Mode::Word)?;
        Ok((!parts.is_empty()).then_some(Word(parts)))
    }

    /// Reads word parts until `stop` (unquoted) or the end.
    pub(super) fn chars_until(
        &mut self,
        stop: fn(char) -> bool,
        mode: Mode,
    ) -> Result<Vec<Part>, ParseError> {
        self.enter()?;
        let mut parts = Vec::new();
        let mut lit = String::new();
        let flush = |lit: &mut String, parts: &mut Vec<Part>| {
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(lit)));
            }
        };
        while let Some(c) = self.peek(0) {
            if mode != Mode::HereDoc && stop(c) {
                break;
            }
            match c {
                '\\' => {
                    self.bump();
                    match self.bump() {
                        Some('\n') => {}
                        Some(e) if mode == Mode::HereDoc && !matches!(e, '$' | '`' | '\\') => {
                            lit.push('\\');
                            lit.push(e);
                        }
                        Some(e) => {
                            flush(&mut lit, &mut parts);
                            parts.push(Part::Quoted(e.to_string()));
                        }
                        None => lit.push('\\'),
                    }
                }
                '\'' if mode != Mode::HereDoc => {
                    self.bump();
                    let mut q = String::new();
                    loop {
                        match self.bump() {
                            Some('\'') => break,
                            Some(ch) => q.push(ch),
                            None => return Err(self.error("a ' quote is not closed")),
                        }
                    }
                    flush(&mut lit, &mut parts);
                    parts.push(Part::Quoted(q));
                }
                '"' if mode != Mode::HereDoc => {
                    self.bump();
                    flush(&mut lit, &mut parts);
                    let inner = self.double()?;
                    parts.push(Part::Double(inner));
                }
                '$' => {
                    flush(&mut lit, &mut parts);
                    let p = self.dollar()?;
                    parts.push(p);
                }
                '`' => {
                    flush(&mut lit, &mut parts);
                    let p = self.backtick()?;
                    parts.push(p);
                }
                _ => {
                    self.bump();
                    lit.push(c);
                }
            }
        }
        flush(&mut lit, &mut parts);
        self.leave();
        Ok(parts)
    }

    /// The inside of `"..."`, after the opening quote; consumes the closing one.
    fn double(&mut self) -> Result<Vec<Part>, ParseError> {
        self.enter()?;
        let mut parts = Vec::new();
        let mut lit = String::new();
        loop {
            let Some(c) = self.peek(0) else {
                return Err(self.error("a \" quote is not closed"));
            };
            match c {
                '"' => {
                    self.bump();
                    break;
                }
                '\\' => {
                    self.bump();
                    match self.bump() {
                        Some('\n') => {}
                        Some(e @ ('$' | '`' | '"' | '\\')) => lit.push(e),
                        Some(e) => {
                            lit.push('\\');
                            lit.push(e);
                        }
                        None => return Err(self.error("a \" quote is not closed")),
                    }
                }
                '$' | '`' => {
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    let p = if c == '$' {
                        self.dollar()?
                    } else {
                        self.backtick()?
                    };
                    parts.push(p);
                }
                _ => {
                    self.bump();
                    lit.push(c);
                }
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        self.leave();
        Ok(parts)
    }

    /// `$...` at the current position.
    fn dollar(&mut self) -> Result<Part, ParseError> {
        self.bump(); // $
        match self.peek(0) {
            Some('(') if self.peek(1) == Some('(') => {
                self.bump();
                self.bump();
                let mut depth = 0usize;
                let mut text = String::new();
                loop {
                    match self.bump() {
                        Some(')') if depth == 0 && self.peek(0) == Some(')') => {
                            self.bump();
                            break;
                        }
                        Some(c) => {
                            if c == '(' {
                                depth += 1;
                            } else if c == ')' {
                                depth = depth.saturating_sub(1);
                            }
                            text.push(c);
                        }
                        None => return Err(self.error("\"$((\" without a matching \"))\"")),
                    }
                }
                Ok(Part::Arith(text))
            }
            Some('(') => {
                self.bump();
                let body = self.list(&[])?;
                self.linebreaks()?;
                if !self.eat(")") {
                    return Err(self.error("\"$(\" without a matching \")\""));
                }
                Ok(Part::Command(body))
            }
            Some('{') => {
                self.bump();
                self.braced()
            }
            Some(c) if is_name_start(c) => {
                let mut name = String::new();
                while let Some(c) = self.peek(0).filter(|&c| is_name_char(c)) {
                    self.bump();
                    name.push(c);
                }
                Ok(Part::Param(Param {
                    name,
                    op: ParamOp::Plain,
                }))
            }
            Some(c) if c.is_ascii_digit() || "@*#?-$!".contains(c) => {
                self.bump();
                Ok(Part::Param(Param {
                    name: c.to_string(),
                    op: ParamOp::Plain,
                }))
            }
            _ => Ok(Part::Lit("$".into())),
        }
    }

    /// `${...}` after the brace.
    fn braced(&mut self) -> Result<Part, ParseError> {
        let name_at = |p: &Self, k: usize| -> usize {
            // The length of the parameter name starting k characters ahead.
            match p.peek(k) {
                Some(c) if is_name_start(c) => {
                    let mut n = 1;
                    while p.peek(k + n).is_some_and(is_name_char) {
                        n += 1;
                    }
                    n
                }
                Some(c) if c.is_ascii_digit() => {
                    let mut n = 1;
                    while p.peek(k + n).is_some_and(|c| c.is_ascii_digit()) {
                        n += 1;
                    }
                    n
                }
                Some(c) if "@*#?-$!".contains(c) => 1,
                _ => 0,
            }
        };
        // `${#name}`
        if self.peek(0) == Some('#') {
            let n = name_at(self, 1);
            if n > 0 && self.peek(1 + n) == Some('}') {
                self.bump();
                let name: String = self.s[self.i..self.i + n].iter().collect();
                for _ in 0..=n {
                    self.bump();
                }
                return Ok(Part::Param(Param {
                    name,
                    op: ParamOp::Length,
                }));
            }
        }
        let n = name_at(self, 0);
        if n == 0 {
            let text = self.skip_braced()?;
            return Ok(Part::Param(Param {
                name: String::new(),
                op: ParamOp::Other(text),
            }));
        }
        let name: String = self.s[self.i..self.i + n].iter().collect();
        for _ in 0..n {
            self.bump();
        }
        if self.eat("}") {
            return Ok(Part::Param(Param {
                name,
                op: ParamOp::Plain,
            }));
        }
        let colon = self.eat(":");
        let op = match self.peek(0) {
            Some(c @ ('-' | '=' | '+' | '?')) => {
                self.bump();
                let word = self.param_word()?;
                match c {
                    '-' => ParamOp::Default { colon, word },
                    '=' => ParamOp::Assign { colon, word },
                    '+' => ParamOp::Alt { colon, word },
                    _ => ParamOp::Error { colon, word },
                }
            }
            Some(c @ ('#' | '%')) if !colon => {
                self.bump();
                let longest = self.eat(&c.to_string());
                let pattern = self.param_word()?;
                if c == '#' {
                    ParamOp::TrimPrefix { longest, pattern }
                } else {
                    ParamOp::TrimSuffix { longest, pattern }
                }
            }
            _ => ParamOp::Other(self.skip_braced()?),
        };
        Ok(Part::Param(Param { name, op }))
    }

    /// The word of `${name:-word}` up to the closing brace, which it consumes.
    fn param_word(&mut self) -> Result<Word, ParseError> {
        let parts = self.chars_until(|c| c == '}', Mode::Param)?;
        if !self.eat("}") {
            return Err(self.error("\"${\" without a matching \"}\""));
        }
        Ok(Word(parts))
    }

    /// Skips to the matching `}` (nested braces counted), returning the text.
    fn skip_braced(&mut self) -> Result<String, ParseError> {
        let mut depth = 0usize;
        let mut text = String::new();
        loop {
            match self.bump() {
                Some('}') if depth == 0 => return Ok(text),
                Some(c) => {
                    if c == '{' {
                        depth += 1;
                    } else if c == '}' {
                        depth -= 1;
                    }
                    text.push(c);
                }
                None => return Err(self.error("\"${\" without a matching \"}\"")),
            }
        }
    }

    /// `` `...` ``: the text up to the closing backquote, read as a script of its own.
    fn backtick(&mut self) -> Result<Part, ParseError> {
        self.bump();
        let line = self.line;
        let mut text = String::new();
        loop {
            match self.bump() {
                Some('`') => break,
                Some('\\') => match self.bump() {
                    Some(c @ ('`' | '\\' | '$')) => text.push(c),
                    Some(c) => {
                        text.push('\\');
                        text.push(c);
                    }
                    None => return Err(self.error("a ` quote is not closed")),
                },
                Some(c) => text.push(c),
                None => return Err(self.error("a ` quote is not closed")),
            }
        }
        let mut sub = Parser::new(&text, line);
        sub.depth = self.depth + 1;
        if sub.depth > MAX_DEPTH {
            return Err(self.error("the script nests too deeply"));
        }
        let body = sub.list(&[])?;
        sub.blanks();
        if let Some(c) = sub.peek(0) {
            return Err(sub.error(format!("unexpected {c:?}")));
        }
        Ok(Part::Command(body))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Word,
    Param,
    /// The body of an unquoted here-document: only `$`, `` ` `` and `\` are special.
    HereDoc,
}
