//! Which keys of a keyring may vouch for a signature, decided as gpgv (GnuPG 2.2) decides it,
//! since APT trusts what gpgv reports as a good signature (RFC 9580 §5.2.3, §10.1, §10.2):
//!
//! - a key counts only with a valid self-signature: a user ID certification or a direct-key
//!   signature that verifies against the primary key;
//! - the primary key is unusable once revoked (a valid key revocation signature, type 0x20),
//!   and once expired: its latest self-signature's Key Expiration Time, counted from the key's
//!   creation, has passed when the data was signed, or now;
//! - a subkey counts only through a valid binding signature (0x18) that allows signing (key
//!   flag 0x02, or no Key Flags subpacket and an algorithm that signs) and carries the subkey's back-signature (0x19; gpg refuses signing subkeys that
//!   are not cross-certified), and is unusable once revoked (0x28) or expired, or when its
//!   primary key is;
//! - the primary key signs only if its latest self-signature allows it: gpg reads the key flags
//!   when the subpacket is there, and the algorithm's capabilities when it is not;
//! - no signature counts before its key was created.
//!
//! "Now" is the caller's: kiln injects the clock (see `packages::Options::now`); without one,
//! keys are judged at the time the data was signed.

use pgp::composed::SignedPublicKey;
use pgp::packet::{Signature, SignatureType, SubpacketData};
use pgp::types::{KeyDetails, Tag};

/// Which key of a [`SignedPublicKey`] made a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Primary,
    Subkey(usize),
}

/// Why a key that made a cryptographically good signature still does not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    NoSelfSignature,
    Revoked,
    /// Expired at this time (seconds since 1970).
    Expired(i64),
    /// The key is newer than the signature.
    NewerThanSignature,
    /// A subkey without a binding signature that verifies.
    NotBound,
    /// The key's flags do not allow signing data.
    MayNotSign,
    /// A signing subkey without a valid back-signature.
    NotCrossCertified,
    /// The primary key of this subkey is unusable.
    Primary(Box<Unusable>),
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::NoSelfSignature => write!(f, "has no valid self-signature"),
            Unusable::Revoked => write!(f, "is revoked"),
            Unusable::Expired(at) => write!(f, "expired at {}", crate::recipe::format_utc(*at)),
            Unusable::NewerThanSignature => write!(f, "was created after the signature"),
            Unusable::NotBound => write!(f, "has no valid binding to its primary key"),
            Unusable::MayNotSign => write!(f, "is not allowed to sign (key flags)"),
            Unusable::NotCrossCertified => {
                write!(f, "is a signing subkey without a valid back-signature")
            }
            Unusable::Primary(why) => write!(f, "belongs to a primary key that {why}"),
        }
    }
}

/// Whether the key `which` of `key` may vouch for a signature made at `signed` (seconds since
/// 1970), judged at `signed` and at `now`.
pub fn usable(
    key: &SignedPublicKey,
    which: Which,
    signed: i64,
    now: Option<i64>,
) -> Result<(), Unusable> {
    let primary = &key.primary_key;
    let self_sig = latest_self_signature(key).ok_or(Unusable::NoSelfSignature)?;
    let revoked =
        key.details.revocation_signatures.iter().any(|s| {
            s.typ() == Some(SignatureType::KeyRevocation) && s.verify_key(primary).is_ok()
        });
    if revoked {
        return wrap(which, Unusable::Revoked);
    }
    let created = secs(primary.created_at());
    if let Err(e) = alive(created, self_sig, signed, now) {
        return wrap(which, e);
    }
    match which {
        Which::Primary => {
            if may_sign(self_sig) == Some(false) {
                return Err(Unusable::MayNotSign);
            }
            Ok(())
        }
        Which::Subkey(i) => {
            let sub = key.public_subkeys.get(i).ok_or(Unusable::NotBound)?;
            let revoked = sub.signatures.iter().any(|s| {
                s.typ() == Some(SignatureType::SubkeyRevocation)
                    && s.verify_subkey_binding(primary, &sub.key).is_ok()
            });
            if revoked {
                return Err(Unusable::Revoked);
            }
            let binding = sub
                .signatures
                .iter()
                .filter(|s| {
                    s.typ() == Some(SignatureType::SubkeyBinding)
                        && s.verify_subkey_binding(primary, &sub.key).is_ok()
                })
                .max_by_key(|s| s.created().map_or(0, secs))
                .ok_or(Unusable::NotBound)?;
            alive(secs(sub.key.created_at()), binding, signed, now)?;
            // Without Key Flags, gpg goes by the algorithm, and this one has just verified.
            if may_sign(binding) == Some(false) {
                return Err(Unusable::MayNotSign);
            }
            let crossed = binding.embedded_signature().is_some_and(|b| {
                b.typ() == Some(SignatureType::KeyBinding)
                    && b.verify_primary_key_binding(&sub.key, primary).is_ok()
            });
            if !crossed {
                return Err(Unusable::NotCrossCertified);
            }
            Ok(())
        }
    }
}

fn wrap(which: Which, e: Unusable) -> Result<(), Unusable> {
    match which {
        Which::Primary => Err(e),
        Which::Subkey(_) => Err(Unusable::Primary(Box::new(e))),
    }
}

fn secs(t: pgp::types::Timestamp) -> i64 {
    i64::from(t.as_secs())
}

/// Not created after `signed`, not expired at `signed` nor at `now`, by `sig`'s Key Expiration
/// Time (0 or absent: never).
fn alive(created: i64, sig: &Signature, signed: i64, now: Option<i64>) -> Result<(), Unusable> {
    if created > signed {
        return Err(Unusable::NewerThanSignature);
    }
    let Some(d) = sig.key_expiration_time().filter(|d| d.as_secs() > 0) else {
        return Ok(());
    };
    let end = created + i64::from(d.as_secs());
    if end <= signed || now.is_some_and(|n| end <= n) {
        return Err(Unusable::Expired(end));
    }
    Ok(())
}

/// The sign flag of a self- or binding signature: `None` when it has no Key Flags subpacket.
fn may_sign(sig: &Signature) -> Option<bool> {
    let c = sig.config()?;
    c.hashed_subpackets().find_map(|p| match &p.data {
        SubpacketData::KeyFlags(f) => Some(f.sign()),
        _ => None,
    })
}

/// The newest self-signature of the primary key that verifies: user ID certifications and
/// direct-key signatures (gpg takes expiry and flags from the latest one).
fn latest_self_signature(key: &SignedPublicKey) -> Option<&Signature> {
    let primary = &key.primary_key;
    let certs = key.details.users.iter().flat_map(|u| {
        u.signatures.iter().filter(move |s| {
            s.is_certification() && s.verify_certification(primary, Tag::UserId, &u.id).is_ok()
        })
    });
    let direct = key
        .details
        .direct_signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::Key) && s.verify_key(primary).is_ok());
    certs
        .chain(direct)
        .max_by_key(|s| s.created().map_or(0, secs))
}
