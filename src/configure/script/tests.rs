//! The script reader's tests.

use super::ast::{Cmd, Part};
use super::eval::{Call, Host, Output, Shell, Status, Tri, Val};
use super::parse::parse;
use std::collections::BTreeSet;

fn simple_words(c: &Cmd) -> Vec<String> {
    match c {
        Cmd::Simple(s) => s.words.iter().map(|w| w.show()).collect(),
        other => panic!("not a simple command: {other:?}"),
    }
}

#[test]
fn debhelper_block() {
    let s = parse(
        r#"#!/bin/sh
set -e
# Automatically added by dh_installalternatives/13.7.1
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ]; then
    update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \
        --slave /usr/bin/nawk nawk /usr/bin/mawk
fi
# End automatically added section
"#,
    )
    .unwrap();
    assert_eq!(s.body.len(), 2);
    let Cmd::If { arms, .. } = &s.body[1] else {
        panic!()
    };
    assert_eq!(
        simple_words(&arms[0].1[0]),
        [
            "update-alternatives",
            "--install",
            "/usr/bin/awk",
            "awk",
            "/usr/bin/mawk",
            "5",
            "--slave",
            "/usr/bin/nawk",
            "nawk",
            "/usr/bin/mawk"
        ]
    );
    let Cmd::Simple(sc) = &arms[0].1[0] else {
        panic!()
    };
    assert_eq!(sc.line, 5);
}

#[test]
fn functions_case_heredoc_and_substitutions() {
    let s = parse(
        r#"f() {
  local x="${1:-def}" y=${2#*/}
  cat <<-EOF >/etc/x
	a $x
	EOF
  echo `basename "$0"` $(dirname "$(readlink -f /a)")
}
case "$1" in
  configure|abort-*) f a b ;;
  *) exit 0 ;;
esac
for i in 1 2; do :; done
while false; do :; done &
{ echo a; echo b; } > /dev/null 2>&1
( cd / && ls ) || true
! grep -q x /etc/y
x=1 y=$((2+3)) env
"#,
    )
    .unwrap();
    assert_eq!(s.body.len(), 8);
    assert!(matches!(s.body[0], Cmd::Func { .. }));
    assert!(matches!(s.body[1], Cmd::Case { .. }));
    assert_eq!(s.heredocs.len(), 1);
    assert_eq!(s.heredocs[0].0[0], Part::Lit("a ".into()));
    assert!(matches!(s.body[6], Cmd::Pipeline { negate: true, .. }));
}

#[test]
fn errors_are_reported_with_a_line() {
    assert_eq!(parse("if true; then\n echo\n").unwrap_err().line, 3);
    assert!(parse("echo 'open").is_err());
    assert!(parse("echo )").is_err());
    assert!(parse("fi").is_err());
    let deep = "(".repeat(10_000);
    assert!(parse(&deep).is_err());
    let deep = "$(".repeat(10_000);
    assert!(parse(&deep).is_err());
}

/// A script in the shape of Debian's postinst scripts (written for this test).
const SAMPLE: &str = r#"#!/bin/sh
set -e
. /usr/share/debconf/confmodule
action="$1"
umask 022
get_option() {
	[ -f /etc/x.conf ] || return
	sed -E -n -e 's/[[:space:]]+/ /g' -e 's/^'"$1"'[[:space:]=]+//Ip' /etc/x.conf
}
setup_user() {
	if ! getent passwd svc >/dev/null; then
		adduser --quiet --system --no-create-home --home /run/svc --shell /usr/sbin/nologin svc
	fi
}
if [ "$action" = configure ]; then
	db_get pkg/question
	value="$RET"
	setup_user
	if dpkg --compare-versions "$2" lt-nl 1:7.9p1-5 && \
	   [ -f /etc/x.dpkg-bak ]; then
	    mv /etc/x.dpkg-bak /etc/x
	fi
fi
if [ -z "${DPKG_ROOT:-}" ] ; then
NAME='svc' ENABLE='yes' /lib/helper postinst "$@"
fi
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] ; then
	if deb-systemd-helper --quiet was-enabled 'svc.service'; then
		deb-systemd-helper enable 'svc.service' >/dev/null || true
	else
		deb-systemd-helper update-state 'svc.service' >/dev/null || true
	fi
fi
case "$1" in
  configure) echo "$(basename "$0"): ${value%%,*}" ;;
  *) exit 0 ;;
esac
db_stop
exit 0
"#;

#[test]
fn never_panics_on_prefixes_of_a_real_script() {
    let text = SAMPLE;
    for end in 0..text.len() {
        if text.is_char_boundary(end) {
            let _ = parse(&text[..end]);
        }
    }
    assert!(parse(text).is_ok());
}

/// A tree of known files and a log of the commands the evaluator handed over.
#[derive(Default)]
struct Fake {
    files: BTreeSet<String>,
    log: Vec<String>,
    cannot: Vec<String>,
}

impl Host for Fake {
    fn run(&mut self, call: &Call) -> Output {
        let tag = if call.certain() { "" } else { "?" };
        self.log.push(format!("{tag}{}", call.show()));
        match call.argv[0].as_str() {
            Some("getent") => Output::status(Status::Code(2)),
            Some("stat") => Output::unknown(),
            _ => Output::ok(),
        }
    }
    fn test_path(&mut self, _op: char, path: &str) -> Tri {
        Tri::from(self.files.contains(path))
    }
    fn write(&mut self, path: &str, data: &Val, append: bool, call: &Call) {
        let tag = if call.certain() { "" } else { "?" };
        let op = if append { ">>" } else { ">" };
        self.log.push(format!("{tag}{op}{path}:{}", data.show()));
    }
    fn read(&mut self, _path: &str) -> Val {
        Val::Unknown
    }
    fn glob(&mut self, _pattern: &str) -> Vec<String> {
        Vec::new()
    }
    fn source(&mut self, path: &str, _call: &Call) -> bool {
        path == "/usr/share/debconf/confmodule"
    }
    fn cannot(&mut self, what: &str, _line: usize) {
        self.cannot.push(what.to_owned());
    }
}

fn run(script: &str, files: &[&str]) -> Fake {
    let mut host = Fake {
        files: files.iter().map(|f| f.to_string()).collect(),
        ..Fake::default()
    };
    let s = parse(script).unwrap();
    let mut sh = Shell::new(
        &mut host,
        "/var/lib/dpkg/info/p.postinst",
        &["configure", ""],
        &[],
    );
    sh.run(&s);
    host
}

#[test]
fn a_fresh_install_takes_the_configure_branches_only() {
    let h = run(SAMPLE, &["/usr/bin/deb-systemd-helper"]);
    assert_eq!(
        h.log,
        [
            "db_get pkg/question",
            "getent passwd svc",
            "adduser --quiet --system --no-create-home --home /run/svc --shell /usr/sbin/nologin svc",
            "dpkg --compare-versions '' lt-nl 1:7.9p1-5",
            "NAME=svc ENABLE=yes /lib/helper postinst configure ''",
            "deb-systemd-helper --quiet was-enabled svc.service",
            "deb-systemd-helper enable svc.service",
            "db_stop",
        ]
    );
}

#[test]
fn undecided_conditions_make_their_branches_uncertain() {
    let h = run(
        r#"set -e
x=1
if [ "$(stat -c %i /)" = 2 ]; then x=2; touch /a; exit 0; fi
echo "$x" > /etc/out
f() { [ -e /etc/y ] || return 0; rm /etc/y; }
f
case "$1" in configure) echo c >> /etc/log ;; *) echo other ;; esac
for i in a "b c"; do echo "$i" >> /etc/items; done
: ${V:=default}
echo "$V ${V#de} ${#V}" > /etc/v
"#,
        &[],
    );
    assert_eq!(
        h.log,
        [
            "stat -c %i /",
            "?touch /a",
            "?>/etc/out:…",
            // The undecided branch may have exited: what follows is uncertain too.
            "?>>/etc/log:c\n",
            "?>>/etc/items:a\n",
            "?>>/etc/items:b c\n",
            "?>/etc/v:default fault 7\n",
        ]
        .map(|s| s.replace("\\n", "\n"))
    );
}

#[test]
fn set_e_stops_at_a_failing_command() {
    let h = run("set -e\ngetent passwd x\ntouch /never\n", &[]);
    assert_eq!(h.log, ["getent passwd x"]);
    assert_eq!(h.cannot.len(), 1);
    let h = run("set -e\nif ! getent passwd x; then touch /yes; fi\n", &[]);
    assert_eq!(h.log, ["getent passwd x", "touch /yes"]);
}

#[test]
fn read_takes_lines_from_a_pipe_a_redirection_or_a_here_document() {
    let h = run(
        r#"printf 'a b  c\nd\\\ne\n' | while read x y; do echo "$x|$y" >> /etc/out; done
printf 'r\\s\n' | while read -r z; do echo "$z" >> /etc/raw; done
while read l; do echo "$l" >> /etc/h; done <<EOF
one
two
EOF
echo x | { read a; read b || echo "eof:$a:$b" >> /etc/eof; }
while read u; do touch /never; done
printf '1\n' | while read l; do found=$l; done
echo x | read a
echo "${found-none} ${a-unset}" >> /etc/sub
"#,
        &[],
    );
    assert_eq!(
        h.log,
        [
            ">>/etc/out:a|b  c\n",
            ">>/etc/out:de|\n",
            ">>/etc/raw:r\\s\n",
            ">>/etc/h:one\n",
            ">>/etc/h:two\n",
            ">>/etc/eof:eof:x:\n",
            // dpkg's own stdin: nothing here knows what it holds.
            "?touch /never",
            // A pipeline's commands run in subshells: their assignments are gone after it.
            ">>/etc/sub:none unset\n",
        ]
    );
}
