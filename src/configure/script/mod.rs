//! Reading and evaluating maintainer scripts: a shell reader ([`parse()`]) and an evaluator
//! ([`eval`]) that runs a script's commands against the image's tree, as dpkg would run them on
//! a fresh install, handing each command to a [`eval::Host`] that applies what kiln knows how to
//! apply and reports the rest.

mod arith;
pub mod ast;
mod builtin;
pub mod eval;
mod parse;
mod pattern;
#[cfg(test)]
mod tests;
mod word;

pub use builtin::PATH;
pub use eval::{Call, Host, Output, Shell, Status, Tri, Val};
pub use parse::{is_name, parse, ParseError};
pub use pattern::{bre_to_ere, ere_for_regex_lite, glob_match};
