//! The evaluator's values: strings that may be unknown, three-valued truth, exit statuses,
//! and what a command hands back.

/// A value: a string, or unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Known(String),
    Unknown,
}

impl Val {
    pub fn known(s: impl Into<String>) -> Val {
        Val::Known(s.into())
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Known(s) => Some(s),
            Val::Unknown => None,
        }
    }
    /// For reports: the text, or `…` where it is unknown.
    pub fn show(&self) -> &str {
        self.as_str().unwrap_or("…")
    }
}

/// True, false, or undecided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    True,
    False,
    Unknown,
}

impl std::ops::Not for Tri {
    type Output = Tri;
    fn not(self) -> Tri {
        match self {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Unknown => Tri::Unknown,
        }
    }
}

impl Tri {
    pub fn from(b: bool) -> Tri {
        if b {
            Tri::True
        } else {
            Tri::False
        }
    }
    pub fn and(self, o: Tri) -> Tri {
        match (self, o) {
            (Tri::False, _) | (_, Tri::False) => Tri::False,
            (Tri::True, Tri::True) => Tri::True,
            _ => Tri::Unknown,
        }
    }
    pub fn or(self, o: Tri) -> Tri {
        match (self, o) {
            (Tri::True, _) | (_, Tri::True) => Tri::True,
            (Tri::False, Tri::False) => Tri::False,
            _ => Tri::Unknown,
        }
    }
    /// The exit status a test with this outcome has.
    pub fn status(self) -> Status {
        match self {
            Tri::True => Status::Code(0),
            Tri::False => Status::Code(1),
            Tri::Unknown => Status::Unknown,
        }
    }
}

/// A command's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Code(i32),
    Unknown,
}

impl Status {
    pub const OK: Status = Status::Code(0);
    pub fn truth(self) -> Tri {
        match self {
            Status::Code(0) => Tri::True,
            Status::Code(_) => Tri::False,
            Status::Unknown => Tri::Unknown,
        }
    }
}

/// What a command did: its status and what it wrote on stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: Status,
    pub stdout: Val,
    /// Shell variables the command sets (debconf's `db_get` sets `$RET`).
    pub set: Vec<(String, Val)>,
}

impl Output {
    pub fn ok() -> Output {
        Output::status(Status::OK)
    }
    pub fn status(status: Status) -> Output {
        Output {
            status,
            stdout: Val::known(""),
            set: Vec::new(),
        }
    }
    pub fn code(code: i32) -> Output {
        Output::status(Status::Code(code))
    }
    pub fn text(code: i32, stdout: impl Into<String>) -> Output {
        Output {
            status: Status::Code(code),
            stdout: Val::Known(stdout.into()),
            set: Vec::new(),
        }
    }
    pub fn unknown() -> Output {
        Output {
            status: Status::Unknown,
            stdout: Val::Unknown,
            set: Vec::new(),
        }
    }
    pub fn tri(t: Tri) -> Output {
        Output::status(t.status())
    }
}

/// A command handed to the [`Host`].
pub struct Call<'a> {
    /// The words after expansion; `argv[0]` is the command's name.
    pub argv: &'a [Val],
    /// `NAME=value` given before the command (its environment additions).
    pub env: &'a [(String, Val)],
    pub stdin: Option<&'a Val>,
    /// `Some(why)` when the command may or may not run on a real install (an undecided
    /// condition): the host must not apply it.
    pub uncertain: Option<&'a str>,
    pub line: usize,
    /// The working directory (`/` unless the script ran `cd`).
    pub cwd: &'a str,
}

impl Call<'_> {
    pub fn certain(&self) -> bool {
        self.uncertain.is_none()
    }
    /// The arguments after the command name as known strings, or `None` if one is unknown.
    pub fn args(&self) -> Option<Vec<&str>> {
        self.argv.iter().skip(1).map(Val::as_str).collect()
    }
    /// The command line for reports.
    pub fn show(&self) -> String {
        let mut s = String::new();
        for (n, v) in self.env {
            s.push_str(&format!("{n}={} ", v.show()));
        }
        let words: Vec<String> = self.argv.iter().map(|v| quote(v.show())).collect();
        s.push_str(&words.join(" "));
        s
    }
}

/// Shell-quotes `s` for display when it needs it.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,~…".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
