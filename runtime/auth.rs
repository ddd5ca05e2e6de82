//! Mutual authentication on a shared secret: HMAC-SHA256 challenge-response.
//!
//! Each side proves it knows the secret by keying an HMAC over the whole handshake
//! transcript (both nonces, the session id, both node identities, the target actor),
//! with a label per role so one side's proof can never be replayed as the other's.
//! The secret never travels; proofs are compared in constant time
//! ([`hmac::Mac::verify_slice`]). Fresh nonces from both sides make every proof unique
//! to its session, so a recorded handshake is worthless.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::AuthError;
use crate::wire::{NodeIdentity, SessionId};

/// Length of a handshake nonce, in bytes.
pub const NONCE_LEN: usize = 32;

/// Length of a proof (an HMAC-SHA256 tag), in bytes.
pub const PROOF_LEN: usize = 32;

/// Shortest secret a node accepts, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// A random per-session handshake nonce.
pub type Nonce = [u8; NONCE_LEN];

/// The cluster's shared secret. Its `Debug` output never shows the bytes.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// Wraps secret bytes.
    ///
    /// # Errors
    /// [`AuthError::SecretTooShort`] when shorter than [`MIN_SECRET_LEN`] bytes.
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Self, AuthError> {
        let bytes = bytes.as_ref();
        if bytes.len() < MIN_SECRET_LEN {
            return Err(AuthError::SecretTooShort {
                len: bytes.len(),
                min: MIN_SECRET_LEN,
            });
        }
        Ok(Self(bytes.into()))
    }

    /// Reads a secret from a file, ignoring one trailing newline.
    ///
    /// # Errors
    /// [`AuthError::SecretFile`] when the file cannot be read, or
    /// [`AuthError::SecretTooShort`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, AuthError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| AuthError::SecretFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let trimmed = bytes
            .strip_suffix(b"\r\n")
            .or_else(|| bytes.strip_suffix(b"\n"))
            .unwrap_or(&bytes);
        Self::new(trimmed)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Which side of the handshake a proof is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProofRole {
    Initiator,
    Acceptor,
}

/// Everything both sides bind their proofs to.
#[derive(Debug)]
pub(crate) struct Transcript<'a> {
    pub(crate) session_id: SessionId,
    pub(crate) initiator: &'a NodeIdentity,
    pub(crate) acceptor: &'a NodeIdentity,
    pub(crate) target: &'a str,
    pub(crate) initiator_nonce: &'a Nonce,
    pub(crate) acceptor_nonce: &'a Nonce,
}

impl Transcript<'_> {
    fn keyed(&self, secret: &Secret, role: ProofRole) -> Hmac<Sha256> {
        let mut mac = secret.mac();
        let label: &[u8] = match role {
            ProofRole::Initiator => b"duologue/v1 initiator proof",
            ProofRole::Acceptor => b"duologue/v1 acceptor proof",
        };
        // Every field is length-prefixed so no two transcripts encode alike.
        for field in [
            label,
            self.session_id.as_bytes(),
            self.initiator.name.as_bytes(),
            self.initiator.incarnation.as_bytes(),
            self.acceptor.name.as_bytes(),
            self.acceptor.incarnation.as_bytes(),
            self.target.as_bytes(),
            self.initiator_nonce,
            self.acceptor_nonce,
        ] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac
    }

    /// The proof `role` presents.
    pub(crate) fn prove(&self, secret: &Secret, role: ProofRole) -> [u8; PROOF_LEN] {
        self.keyed(secret, role).finalize().into_bytes().into()
    }

    /// Checks, in constant time, the proof the peer in `role` presented.
    pub(crate) fn verify(
        &self,
        secret: &Secret,
        role: ProofRole,
        proof: &[u8],
    ) -> Result<(), AuthError> {
        self.keyed(secret, role)
            .verify_slice(proof)
            .map_err(|_| AuthError::ProofMismatch)
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn node(name: &str) -> NodeIdentity {
        NodeIdentity {
            name: name.into(),
            incarnation: Uuid::from_u128(name.len() as u128),
        }
    }

    #[test]
    fn proof_verifies_only_with_the_same_secret_and_role() {
        let (a, b) = (node("a"), node("bb"));
        let t = Transcript {
            session_id: SessionId(Uuid::from_u128(7)),
            initiator: &a,
            acceptor: &b,
            target: "room",
            initiator_nonce: &[1; NONCE_LEN],
            acceptor_nonce: &[2; NONCE_LEN],
        };
        let good = Secret::new("0123456789abcdef").unwrap();
        let bad = Secret::new("0123456789abcdeX").unwrap();
        let proof = t.prove(&good, ProofRole::Initiator);
        assert!(t.verify(&good, ProofRole::Initiator, &proof).is_ok());
        assert_eq!(
            t.verify(&bad, ProofRole::Initiator, &proof),
            Err(AuthError::ProofMismatch)
        );
        assert_eq!(
            t.verify(&good, ProofRole::Acceptor, &proof),
            Err(AuthError::ProofMismatch)
        );
    }

    #[test]
    fn short_secret_is_rejected() {
        assert!(matches!(
            Secret::new("short"),
            Err(AuthError::SecretTooShort { len: 5, .. })
        ));
    }
}
