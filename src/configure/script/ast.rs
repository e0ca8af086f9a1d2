//! The shell syntax tree that [`super::parse`] reads from a maintainer script (the POSIX shell
//! command language, XCU §2, plus the few bash forms Debian's scripts use).

/// A whole script: its commands, and the here-documents they refer to by index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    pub body: Vec<Cmd>,
    pub heredocs: Vec<Word>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Simple(Simple),
    /// `a | b | c`, `! a`.
    Pipeline {
        negate: bool,
        cmds: Vec<Cmd>,
    },
    And(Box<Cmd>, Box<Cmd>),
    Or(Box<Cmd>, Box<Cmd>),
    /// `if c; then t; elif c2; then t2; else e; fi`: each arm is (condition, body).
    If {
        arms: Vec<(Vec<Cmd>, Vec<Cmd>)>,
        otherwise: Option<Vec<Cmd>>,
        redirs: Vec<Redir>,
    },
    Case {
        word: Word,
        arms: Vec<(Vec<Word>, Vec<Cmd>)>,
        redirs: Vec<Redir>,
    },
    /// `for var in words; do body; done` (`words: None`: `for var; do`, the positional parameters).
    For {
        var: String,
        words: Option<Vec<Word>>,
        body: Vec<Cmd>,
        redirs: Vec<Redir>,
    },
    /// `while` (or `until`) `cond; do body; done`.
    Loop {
        until: bool,
        cond: Vec<Cmd>,
        body: Vec<Cmd>,
        redirs: Vec<Redir>,
    },
    /// `{ list; }`.
    Group {
        body: Vec<Cmd>,
        redirs: Vec<Redir>,
    },
    /// `( list )`.
    Subshell {
        body: Vec<Cmd>,
        redirs: Vec<Redir>,
    },
    /// `name() body`.
    Func {
        name: String,
        body: Box<Cmd>,
    },
    /// `cmd &`: run in the background.
    Background(Box<Cmd>),
}

/// `NAME=value ... word ... >redir`, with the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simple {
    pub assigns: Vec<(String, Word)>,
    pub words: Vec<Word>,
    pub redirs: Vec<Redir>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redir {
    /// The file descriptor written before the operator (`2>`), if any.
    pub fd: Option<u32>,
    pub op: RedirOp,
    /// The file name, the descriptor (`>&2`), or unused for here-documents.
    pub target: Word,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirOp {
    /// `>` and `>|`.
    Out,
    /// `>>`.
    Append,
    /// `<`.
    In,
    /// `<>`.
    ReadWrite,
    /// `>&`.
    DupOut,
    /// `<&`.
    DupIn,
    /// `&>` (bash): stdout and stderr.
    OutErr,
    /// `<<` / `<<-`: the here-document with this index in [`Script::heredocs`].
    HereDoc(usize),
    /// `<<<` (bash).
    HereString,
}

/// A word: its parts, concatenated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Word(pub Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Unquoted text (subject to field splitting and globbing when it came from an expansion;
    /// literal text is only globbed).
    Lit(String),
    /// `'text'`, or a backslash-escaped character: never expanded.
    Quoted(String),
    /// `"..."`.
    Double(Vec<Part>),
    /// `$name`, `${name...}`.
    Param(Param),
    /// `$(...)` or `` `...` ``.
    Command(Vec<Cmd>),
    /// `$((...))`, kept as text.
    Arith(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub op: ParamOp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamOp {
    Plain,
    /// `${#name}`.
    Length,
    /// `${name:-w}` (colon: also when empty), `${name-w}`.
    Default {
        colon: bool,
        word: Word,
    },
    /// `${name:=w}`.
    Assign {
        colon: bool,
        word: Word,
    },
    /// `${name:+w}`.
    Alt {
        colon: bool,
        word: Word,
    },
    /// `${name:?w}`.
    Error {
        colon: bool,
        word: Word,
    },
    /// `${name#p}` / `${name##p}`.
    TrimPrefix {
        longest: bool,
        pattern: Word,
    },
    /// `${name%p}` / `${name%%p}`.
    TrimSuffix {
        longest: bool,
        pattern: Word,
    },
    /// A bash form kiln does not evaluate (`${name/a/b}`, `${name:1:2}`, ...).
    Other(String),
}

impl Word {
    pub fn lit(s: &str) -> Word {
        Word(vec![Part::Lit(s.to_owned())])
    }

    /// The word's text if it is plain unquoted literal text (how reserved words are recognized).
    pub fn as_literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// The word as it was written, roughly (for reports).
    pub fn show(&self) -> String {
        let mut s = String::new();
        show_parts(&self.0, &mut s);
        s
    }
}

fn show_parts(parts: &[Part], s: &mut String) {
    for p in parts {
        match p {
            Part::Lit(t) => s.push_str(t),
            Part::Quoted(t) => {
                s.push('\'');
                s.push_str(t);
                s.push('\'');
            }
            Part::Double(inner) => {
                s.push('"');
                show_parts(inner, s);
                s.push('"');
            }
            Part::Param(p) => {
                s.push_str("${");
                s.push_str(&p.name);
                s.push('}');
            }
            Part::Command(_) => s.push_str("$(...)"),
            Part::Arith(t) => {
                s.push_str("$((");
                s.push_str(t);
                s.push_str("))");
            }
        }
    }
}
