//! A reader for the shell language of maintainer scripts (POSIX XCU §2.10's grammar, with
//! here-documents, functions and the bash forms Debian's scripts use: `&>`, `<<<`, `function`).
//!
//! [`parse`] is pure and never panics: untrusted scripts come from packages, and the hardening
//! fuzzers call it directly. Nesting is limited so that no input can exhaust the stack.

use super::ast::{Cmd, Part, Redir, RedirOp, Script, Simple, Word};
use super::word::Mode;

/// Why a script could not be read, with the line (1-based) where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Deeper nesting than any real script has; the limit keeps recursion bounded.
pub(super) const MAX_DEPTH: usize = 100;

/// Reads the text of an arithmetic expansion as a word in which `$...` and `` `...` `` expand
/// (XCU §2.6.4: parameter and command substitution come before the arithmetic).
pub fn parse_word_text(text: &str) -> Result<Word, ParseError> {
    let mut p = Parser::new(text, 1);
    Ok(Word(p.chars_until(|_| false, Mode::HereDoc)?))
}

/// Reads a whole script.
pub fn parse(src: &str) -> Result<Script, ParseError> {
    let mut p = Parser::new(src, 1);
    let body = p.list(&[])?;
    p.blanks();
    if let Some(c) = p.peek(0) {
        return Err(p.error(format!("unexpected {c:?}")));
    }
    Ok(Script {
        body,
        heredocs: p.heredocs,
    })
}

pub(super) struct Pending {
    delim: String,
    strip_tabs: bool,
    quoted: bool,
    index: usize,
}

pub(super) struct Parser {
    pub(super) s: Vec<char>,
    pub(super) i: usize,
    pub(super) line: usize,
    pub(super) depth: usize,
    pub(super) heredocs: Vec<Word>,
    pub(super) pending: Vec<Pending>,
}

pub(super) fn is_meta(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\n' | ';' | '&' | '|' | '<' | '>' | '(' | ')'
    )
}

pub(super) fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

pub(super) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

pub fn is_name(s: &str) -> bool {
    let mut cs = s.chars();
    cs.next().is_some_and(is_name_start) && cs.all(is_name_char)
}

const RESERVED: &[&str] = &[
    "if", "then", "elif", "else", "fi", "case", "esac", "for", "while", "until", "do", "done", "{",
    "}", "!", "in", "function",
];

impl Parser {
    pub(super) fn new(src: &str, line: usize) -> Self {
        Parser {
            s: src.chars().collect(),
            i: 0,
            line,
            depth: 0,
            heredocs: Vec::new(),
            pending: Vec::new(),
        }
    }

    pub(super) fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line,
            message: message.into(),
        }
    }

    pub(super) fn peek(&self, k: usize) -> Option<char> {
        self.s.get(self.i + k).copied()
    }

    pub(super) fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    pub(super) fn at(&self, text: &str) -> bool {
        text.chars()
            .enumerate()
            .all(|(k, c)| self.peek(k) == Some(c))
    }

    pub(super) fn eat(&mut self, text: &str) -> bool {
        if self.at(text) {
            for _ in text.chars() {
                self.bump();
            }
            true
        } else {
            false
        }
    }

    pub(super) fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("the script nests too deeply"));
        }
        Ok(())
    }

    pub(super) fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// Spaces, tabs, line continuations and a comment, up to (not including) a newline.
    pub(super) fn blanks(&mut self) {
        loop {
            match self.peek(0) {
                Some(' ' | '\t' | '\r') => {
                    self.bump();
                }
                Some('\\') if self.peek(1) == Some('\n') => {
                    self.bump();
                    self.bump();
                }
                Some('#') => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                _ => return,
            }
        }
    }

    /// Blanks and newlines (reading any here-document bodies that a newline starts).
    pub(super) fn linebreaks(&mut self) -> Result<(), ParseError> {
        loop {
            self.blanks();
            if self.peek(0) == Some('\n') {
                self.bump();
                self.heredoc_bodies()?;
            } else {
                return Ok(());
            }
        }
    }

    fn heredoc_bodies(&mut self) -> Result<(), ParseError> {
        for p in std::mem::take(&mut self.pending) {
            let start = self.line;
            let mut body = String::new();
            loop {
                if self.peek(0).is_none() {
                    // bash accepts a missing delimiter at the end of the file, with a warning.
                    break;
                }
                let mut line = String::new();
                while let Some(c) = self.peek(0) {
                    self.bump();
                    if c == '\n' {
                        break;
                    }
                    line.push(c);
                }
                let cmp = if p.strip_tabs {
                    line.trim_start_matches('\t')
                } else {
                    line.as_str()
                };
                if cmp == p.delim {
                    break;
                }
                body.push_str(cmp);
                body.push('\n');
            }
            let word = if p.quoted {
                Word(vec![Part::Quoted(body)])
            } else {
                let mut sub = Parser::new(&body, start);
                sub.depth = self.depth;
                Word(sub.chars_until(|_| false, Mode::HereDoc)?)
            };
            if let Some(slot) = self.heredocs.get_mut(p.index) {
                *slot = word;
            }
        }
        Ok(())
    }

    /// The next word without consuming it, if it is plain literal text.
    fn peek_literal(&mut self) -> Option<String> {
        let (i, line) = (self.i, self.line);
        let pending = self.pending.len();
        let heredocs = self.heredocs.len();
        let w = self.word().ok().flatten();
        self.i = i;
        self.line = line;
        self.pending.truncate(pending);
        self.heredocs.truncate(heredocs);
        w.and_then(|w| w.as_literal().map(str::to_owned))
    }

    /// A list of and-or lists until EOF, `)` or one of the reserved words in `stop`.
    pub(super) fn list(&mut self, stop: &[&str]) -> Result<Vec<Cmd>, ParseError> {
        self.enter()?;
        let mut out = Vec::new();
        loop {
            self.linebreaks()?;
            match self.peek(0) {
                None | Some(')') => break,
                Some(';') if self.at(";;") || self.at(";&") => break,
                Some(';') => return Err(self.error("unexpected \";\"")),
                _ => {}
            }
            if let Some(w) = self.peek_literal() {
                if stop.contains(&w.as_str()) {
                    break;
                }
                if matches!(
                    w.as_str(),
                    "then" | "elif" | "else" | "fi" | "do" | "done" | "esac" | "}"
                ) {
                    return Err(self.error(format!("unexpected \"{w}\"")));
                }
            }
            let start = self.i;
            let mut cmd = self.and_or()?;
            self.blanks();
            if self.peek(0) == Some('&') && !self.at("&&") {
                self.bump();
                cmd = Cmd::Background(Box::new(cmd));
            } else if self.peek(0) == Some(';') && !self.at(";;") && !self.at(";&") {
                self.bump();
            }
            out.push(cmd);
            if self.i == start {
                return Err(self.error("cannot read this command"));
            }
        }
        self.leave();
        Ok(out)
    }

    fn and_or(&mut self) -> Result<Cmd, ParseError> {
        let mut left = self.pipeline()?;
        loop {
            self.blanks();
            if self.eat("&&") {
                self.linebreaks()?;
                left = Cmd::And(Box::new(left), Box::new(self.pipeline()?));
            } else if self.eat("||") {
                self.linebreaks()?;
                left = Cmd::Or(Box::new(left), Box::new(self.pipeline()?));
            } else {
                return Ok(left);
            }
        }
    }

    fn pipeline(&mut self) -> Result<Cmd, ParseError> {
        self.blanks();
        let mut negate = false;
        if self.peek_literal().as_deref() == Some("!") {
            self.word()?;
            negate = true;
        }
        let mut cmds = vec![self.command()?];
        loop {
            self.blanks();
            if self.peek(0) == Some('|') && !self.at("||") {
                self.bump();
                // `|&` (bash): stderr too; the same for kiln.
                self.eat("&");
                self.linebreaks()?;
                cmds.push(self.command()?);
            } else {
                break;
            }
        }
        if !negate && cmds.len() == 1 {
            return Ok(cmds.remove(0));
        }
        Ok(Cmd::Pipeline { negate, cmds })
    }

    fn command(&mut self) -> Result<Cmd, ParseError> {
        self.enter()?;
        self.blanks();
        let cmd = self.command_inner()?;
        self.leave();
        Ok(cmd)
    }

    fn command_inner(&mut self) -> Result<Cmd, ParseError> {
        if self.peek(0) == Some('(') {
            self.bump();
            let body = self.list(&[])?;
            self.linebreaks()?;
            if !self.eat(")") {
                return Err(self.error("\"(\" without a matching \")\""));
            }
            let redirs = self.redirs()?;
            return Ok(Cmd::Subshell { body, redirs });
        }
        match self.peek_literal().as_deref() {
            Some("if") => return self.if_cmd(),
            Some("case") => return self.case_cmd(),
            Some("for") => return self.for_cmd(),
            Some("while") => return self.loop_cmd(false),
            Some("until") => return self.loop_cmd(true),
            Some("{") => {
                self.word()?;
                let body = self.list(&["}"])?;
                self.expect("}")?;
                let redirs = self.redirs()?;
                return Ok(Cmd::Group { body, redirs });
            }
            Some("function") => {
                self.word()?;
                self.blanks();
                let name = self.name_word()?;
                self.blanks();
                if self.eat("(") {
                    self.blanks();
                    if !self.eat(")") {
                        return Err(self.error("expected \"()\" after the function's name"));
                    }
                }
                self.linebreaks()?;
                let body = self.command()?;
                return Ok(Cmd::Func {
                    name,
                    body: Box::new(body),
                });
            }
            _ => {}
        }
        self.simple()
    }

    fn name_word(&mut self) -> Result<String, ParseError> {
        match self.word()? {
            Some(w) => match w.as_literal() {
                Some(n) if !n.is_empty() => Ok(n.to_owned()),
                _ => Err(self.error("expected a name")),
            },
            None => Err(self.error("expected a name")),
        }
    }

    fn expect(&mut self, kw: &str) -> Result<(), ParseError> {
        self.linebreaks()?;
        match self.peek_literal() {
            Some(w) if w == kw => {
                self.word()?;
                Ok(())
            }
            _ => Err(self.error(format!("expected \"{kw}\""))),
        }
    }

    fn if_cmd(&mut self) -> Result<Cmd, ParseError> {
        self.word()?; // if
        let mut arms = Vec::new();
        let mut otherwise = None;
        loop {
            let cond = self.list(&["then"])?;
            self.expect("then")?;
            let body = self.list(&["elif", "else", "fi"])?;
            arms.push((cond, body));
            self.linebreaks()?;
            match self.peek_literal().as_deref() {
                Some("elif") => {
                    self.word()?;
                }
                Some("else") => {
                    self.word()?;
                    otherwise = Some(self.list(&["fi"])?);
                    self.expect("fi")?;
                    break;
                }
                Some("fi") => {
                    self.word()?;
                    break;
                }
                _ => return Err(self.error("\"if\" without a matching \"fi\"")),
            }
        }
        let redirs = self.redirs()?;
        Ok(Cmd::If {
            arms,
            otherwise,
            redirs,
        })
    }

    fn case_cmd(&mut self) -> Result<Cmd, ParseError> {
        self.word()?; // case
        self.blanks();
        let word = self
            .word()?
            .ok_or_else(|| self.error("expected a word after \"case\""))?;
        self.linebreaks()?;
        self.expect("in")?;
        let mut arms = Vec::new();
        loop {
            self.linebreaks()?;
            if self.peek_literal().as_deref() == Some("esac") {
                self.word()?;
                break;
            }
            if self.peek(0).is_none() {
                return Err(self.error("\"case\" without a matching \"esac\""));
            }
            self.eat("(");
            let mut pats = Vec::new();
            loop {
                self.blanks();
                let w = self
                    .word()?
                    .ok_or_else(|| self.error("expected a pattern in \"case\""))?;
                pats.push(w);
                self.blanks();
                if !self.eat("|") {
                    break;
                }
            }
            self.blanks();
            if !self.eat(")") {
                return Err(self.error("expected \")\" after a case pattern"));
            }
            let body = self.list(&["esac"])?;
            arms.push((pats, body));
            self.linebreaks()?;
            // `;;`, and bash's `;&` / `;;&` (fall-through: read as `;;`).
            if !(self.eat(";;&") || self.eat(";;") || self.eat(";&")) {
                self.linebreaks()?;
                if self.peek_literal().as_deref() != Some("esac") {
                    return Err(self.error("expected \";;\" or \"esac\""));
                }
            }
        }
        let redirs = self.redirs()?;
        Ok(Cmd::Case { word, arms, redirs })
    }

    fn for_cmd(&mut self) -> Result<Cmd, ParseError> {
        self.word()?; // for
        self.blanks();
        let var = self.name_word()?;
        self.blanks();
        self.eat(";");
        self.linebreaks()?;
        let mut words = None;
        if self.peek_literal().as_deref() == Some("in") {
            self.word()?;
            let mut ws = Vec::new();
            loop {
                self.blanks();
                match self.peek(0) {
                    Some(';') => {
                        self.bump();
                        break;
                    }
                    Some('\n') | None => break,
                    _ => match self.word()? {
                        Some(w) => ws.push(w),
                        None => return Err(self.error("unexpected character in \"for\"")),
                    },
                }
            }
            words = Some(ws);
        }
        self.expect("do")?;
        let body = self.list(&["done"])?;
        self.expect("done")?;
        let redirs = self.redirs()?;
        Ok(Cmd::For {
            var,
            words,
            body,
            redirs,
        })
    }

    fn loop_cmd(&mut self, until: bool) -> Result<Cmd, ParseError> {
        self.word()?;
        let cond = self.list(&["do"])?;
        self.expect("do")?;
        let body = self.list(&["done"])?;
        self.expect("done")?;
        let redirs = self.redirs()?;
        Ok(Cmd::Loop {
            until,
            cond,
            body,
            redirs,
        })
    }

    /// Redirections after a compound command.
    fn redirs(&mut self) -> Result<Vec<Redir>, ParseError> {
        let mut out = Vec::new();
        loop {
            self.blanks();
            match self.redir()? {
                Some(r) => out.push(r),
                None => return Ok(out),
            }
        }
    }

    /// A redirection at the current position, if there is one.
    fn redir(&mut self) -> Result<Option<Redir>, ParseError> {
        let mut k = 0;
        while self.peek(k).is_some_and(|c| c.is_ascii_digit()) {
            k += 1;
        }
        let fd = match self.peek(k) {
            Some('<' | '>') if k > 0 => {
                let digits: String = self.s[self.i..self.i + k].iter().collect();
                digits.parse().ok()
            }
            Some('<' | '>') => None,
            Some('&') if k == 0 && self.peek(1) == Some('>') => None,
            _ => return Ok(None),
        };
        for _ in 0..k {
            self.bump();
        }
        let op = if self.eat("&>>") || self.eat("&>") {
            RedirOp::OutErr
        } else if self.eat("<<<") {
            RedirOp::HereString
        } else if self.at("<<") {
            let strip_tabs = self.eat("<<-") || {
                self.eat("<<");
                false
            };
            self.blanks();
            let delim = self
                .word()?
                .ok_or_else(|| self.error("expected a here-document delimiter"))?;
            let quoted = delim
                .0
                .iter()
                .any(|p| matches!(p, Part::Quoted(_) | Part::Double(_)));
            let text = unquoted_text(&delim);
            let index = self.heredocs.len();
            self.heredocs.push(Word::default());
            self.pending.push(Pending {
                delim: text,
                strip_tabs,
                quoted,
                index,
            });
            return Ok(Some(Redir {
                fd,
                op: RedirOp::HereDoc(index),
                target: Word::default(),
            }));
        } else if self.eat(">>") {
            RedirOp::Append
        } else if self.eat(">&") {
            RedirOp::DupOut
        } else if self.eat("<&") {
            RedirOp::DupIn
        } else if self.eat("<>") {
            RedirOp::ReadWrite
        } else if self.eat(">|") || self.eat(">") {
            RedirOp::Out
        } else if self.eat("<") {
            RedirOp::In
        } else {
            return Ok(None);
        };
        self.blanks();
        let target = self
            .word()?
            .ok_or_else(|| self.error("expected a file name after a redirection"))?;
        Ok(Some(Redir { fd, op, target }))
    }

    fn simple(&mut self) -> Result<Cmd, ParseError> {
        let line = self.line;
        let mut s = Simple {
            assigns: Vec::new(),
            words: Vec::new(),
            redirs: Vec::new(),
            line,
        };
        loop {
            self.blanks();
            if let Some(r) = self.redir()? {
                s.redirs.push(r);
                continue;
            }
            match self.peek(0) {
                None | Some('\n' | ';' | '&' | '|' | ')') => break,
                Some('(') => {
                    // `name() body`: a function definition.
                    let name = match (s.words.len(), s.words.first()) {
                        (1, Some(w)) => w.as_literal().map(str::to_owned),
                        _ => None,
                    };
                    let Some(name) = name.filter(|n| !RESERVED.contains(&n.as_str())) else {
                        return Err(self.error("unexpected \"(\""));
                    };
                    self.bump();
                    self.blanks();
                    if !self.eat(")") {
                        return Err(self.error("expected \")\" in a function definition"));
                    }
                    self.linebreaks()?;
                    let body = self.command()?;
                    return Ok(Cmd::Func {
                        name,
                        body: Box::new(body),
                    });
                }
                _ => {}
            }
            let Some(w) = self.word()? else {
                return Err(self.error("cannot read this word"));
            };
            if s.words.is_empty() {
                if let Some((name, value)) = split_assignment(&w) {
                    s.assigns.push((name, value));
                    continue;
                }
            }
            s.words.push(w);
        }
        if s.assigns.is_empty() && s.words.is_empty() && s.redirs.is_empty() {
            return Err(self.error(match self.peek(0) {
                Some(c) => format!("unexpected {c:?}"),
                None => "unexpected end of the script".into(),
            }));
        }
        Ok(Cmd::Simple(s))
    }
}

/// `NAME=value` as an assignment.
fn split_assignment(w: &Word) -> Option<(String, Word)> {
    let Some(Part::Lit(first)) = w.0.first() else {
        return None;
    };
    let (name, rest) = first.split_once('=')?;
    if !is_name(name) {
        return None;
    }
    let mut parts = Vec::new();
    if !rest.is_empty() {
        parts.push(Part::Lit(rest.to_owned()));
    }
    parts.extend(w.0[1..].iter().cloned());
    Some((name.to_owned(), Word(parts)))
}

/// A here-document delimiter's text with its quotes removed.
fn unquoted_text(w: &Word) -> String {
    let mut s = String::new();
    for p in &w.0 {
        match p {
            Part::Lit(t) | Part::Quoted(t) => s.push_str(t),
            Part::Double(inner) => {
                for q in inner {
                    if let Part::Lit(t) = q {
                        s.push_str(t);
                    }
                }
            }
            _ => {}
        }
    }
    s
}
