//! Commands as written, for the report of what kiln could not decide.

use super::super::ast::{Cmd, Part, Word};

pub(super) fn has_command(w: &Word) -> bool {
    w.0.iter().any(|p| match p {
        Part::Command(_) => true,
        Part::Double(inner) => has_command(&Word(inner.clone())),
        _ => false,
    })
}

/// A command as written, for "the condition ... is undecided".
pub(super) fn describe(c: &Cmd) -> String {
    match c {
        Cmd::Simple(s) => {
            let words: Vec<String> = s.words.iter().map(Word::show).collect();
            format!("`{}`", words.join(" "))
        }
        Cmd::Pipeline { negate, cmds } => {
            let inner: Vec<String> = cmds.iter().map(describe).collect();
            format!("{}{}", if *negate { "! " } else { "" }, inner.join(" | "))
        }
        Cmd::And(a, b) => format!("{} && {}", describe(a), describe(b)),
        Cmd::Or(a, b) => format!("{} || {}", describe(a), describe(b)),
        _ => "a compound command".into(),
    }
}

pub(super) fn describe_list(cs: &[Cmd]) -> String {
    cs.last().map(describe).unwrap_or_default()
}
