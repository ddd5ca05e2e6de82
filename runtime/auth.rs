//! Mutual authentication on a shared secret: HMAC-SHA256 challenge-response.
//!
//! Each side proves it knows the secret by keying an HMAC over the whole handshake
//! transcript (both nonces, the session id, both node identities, the target actor),
//! with a label per role so one side's proof can never be replayed as the other's.
//! The secret never travels; proofs are compared in constant time
//! ([`hmac::Mac::verify_slice`]). Fresh nonces from both sides make every proof unique
//! to its session, so a recorded handshake is worthless.
//!
//! A session's first handshake also derives its **resume key** ([`ResumeKey`]): an HMAC
//! keyed with the secret over that handshake's transcript, under a label of its own. It
//! never travels. A resume stream proves it with an HMAC keyed with the resume key over
//! the new stream's transcript and resume point, so the secret alone does not resume a
//! session: one must have taken part in (or recorded) its first handshake.
//!
//! Over TLS, an initiator that asks for it (`Hello.bind_tls_certificate`) binds both
//! proofs to the SHA-256 of the acceptor's TLS certificate as well ([`TlsBinding`]): the
//! one its link verified, and the acceptor's own. A relay terminating TLS with any other
//! certificate cannot carry the proofs across. The binding is part of the transcript
//! every MAC here is computed over: the first handshake's proofs, the resume key derived
//! from it, and each resume stream's proofs (which bind the certificate of their own
//! connection).

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::AuthError;
use crate::wire::{NodeIdentity, Nonce, PROOF_LEN, SessionId};

/// The cluster's shared secret. Its `Debug` output never shows the bytes.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// Shortest secret a node accepts, in bytes.
    pub const MIN_LEN: usize = 16;

    /// Fewest distinct byte values a secret may hold: sixteen zero bytes or one repeated
    /// letter are refused. (This catches only the most regular secrets: the node binaries
    /// also estimate a text secret's strength, and the secret must be random, because an
    /// acceptor's challenge lets anyone test guesses offline; see `docs/semantics.md`.)
    pub const MIN_DISTINCT_BYTES: usize = 8;

    /// Wraps secret bytes.
    ///
    /// # Errors
    /// [`AuthError::SecretTooShort`] when shorter than [`Self::MIN_LEN`] bytes,
    /// [`AuthError::WeakSecret`] with fewer than [`Self::MIN_DISTINCT_BYTES`] distinct bytes.
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Self, AuthError> {
        let bytes = bytes.as_ref();
        if bytes.len() < Self::MIN_LEN {
            return Err(AuthError::SecretTooShort {
                len: bytes.len(),
                min: Self::MIN_LEN,
            });
        }
        let mut seen = [false; 256];
        bytes.iter().for_each(|&b| seen[usize::from(b)] = true);
        let distinct = seen.iter().filter(|&&s| s).count();
        if distinct < Self::MIN_DISTINCT_BYTES {
            return Err(AuthError::WeakSecret {
                reason: format!("only {distinct} distinct byte values"),
            });
        }
        Ok(Self(bytes.into()))
    }

    /// Writes a new random secret to `path`, which must not exist yet, readable and
    /// writable by its owner only (mode 0600): 32 random bytes, as 64 hex digits (no
    /// newline: the file's bytes are the secret), so it survives being copied as text.
    ///
    /// # Errors
    /// [`AuthError::SecretFile`] when the file exists or cannot be written.
    pub fn create_file(path: impl AsRef<Path>) -> Result<Self, AuthError> {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;

        let path = path.as_ref();
        let file_error = |e: std::io::Error| AuthError::SecretFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let bytes: [u8; 32] = rand::random();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = options.open(path).map_err(file_error)?;
        file.write_all(hex.as_bytes()).map_err(file_error)?;
        Self::new(hex)
    }

    /// Reads a secret from a file, ignoring one trailing newline. A file that users other
    /// than its owner can read is taken, with a warning (`tracing`) to `chmod 600` it.
    ///
    /// # Errors
    /// [`AuthError::SecretFile`] when the file cannot be read, or as [`Secret::new`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, AuthError> {
        let path = path.as_ref();
        let file_error = |e: std::io::Error| AuthError::SecretFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        #[cfg(unix)]
        if let Ok(metadata) = std::fs::metadata(path)
            && let mode = std::os::unix::fs::PermissionsExt::mode(&metadata.permissions())
            && mode & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "the secret file can be read by other users: chmod 600 it"
            );
        }
        let bytes = std::fs::read(path).map_err(file_error)?;
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

/// Bytes of the tag on each gossip datagram: a truncated HMAC-SHA256 (128 bits).
pub(crate) const GOSSIP_TAG_LEN: usize = 16;

/// Bytes of a gossip cookie ([`GossipCookies`]).
pub(crate) const GOSSIP_COOKIE_LEN: usize = 8;

/// What a gossip datagram's tag is computed over first: the tag of a datagram is the
/// HMAC of this label, then the datagram's header and body, so that no other MAC made
/// with the gossip key can pass for one.
const GOSSIP_DATAGRAM_LABEL: &[u8] = b"duologue/v1 gossip datagram";

/// The key that authenticates a cluster's gossip datagrams: derived from the shared
/// secret and the cluster id, so that neither a node without the secret nor one of
/// another cluster sharing the secret is heard.
#[derive(Clone)]
pub(crate) struct GossipKey(Hmac<Sha256>);

impl GossipKey {
    /// The gossip key of `cluster_id` under `secret`.
    pub(crate) fn new(secret: &Secret, cluster_id: &str) -> Self {
        let mut derive = secret.mac();
        derive.update(b"duologue/v1 gossip key");
        derive.update(&(cluster_id.len() as u64).to_be_bytes());
        derive.update(cluster_id.as_bytes());
        let key = derive.finalize().into_bytes();
        Self(Hmac::<Sha256>::new_from_slice(&key).expect("HMAC accepts any key length"))
    }

    /// The tag of `datagram` (its header and body): the first [`GOSSIP_TAG_LEN`] bytes of
    /// HMAC-SHA256 over [`GOSSIP_DATAGRAM_LABEL`] then `datagram`.
    pub(crate) fn tag(&self, datagram: &[u8]) -> [u8; GOSSIP_TAG_LEN] {
        let full = self.mac(datagram).finalize().into_bytes();
        let mut tag = [0; GOSSIP_TAG_LEN];
        tag.copy_from_slice(&full[..GOSSIP_TAG_LEN]);
        tag
    }

    /// Whether `tag` is `datagram`'s, compared in constant time.
    pub(crate) fn verify(&self, datagram: &[u8], tag: &[u8]) -> bool {
        tag.len() == GOSSIP_TAG_LEN && self.mac(datagram).verify_truncated_left(tag).is_ok()
    }

    fn mac(&self, datagram: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(GOSSIP_DATAGRAM_LABEL);
        mac.update(datagram);
        mac
    }
}

/// A node's gossip cookies: what it gives each peer address to echo, so that a datagram
/// is heard only from an address that has received from this node (the address is the
/// sender's, not claimed by it: a datagram replayed from elsewhere, or to another node,
/// echoes a cookie that does not match). Keyed with a random key of this process's own:
/// a peer's cookie is worth nothing at another node, and nothing after a restart. Not
/// secret from the peer it is given to; it proves where a datagram comes from, while the
/// datagram's tag proves who made it.
pub(crate) struct GossipCookies(Hmac<Sha256>);

impl GossipCookies {
    /// Cookies under a fresh random key.
    pub(crate) fn random() -> Self {
        let key: [u8; 32] = rand::random();
        Self(Hmac::<Sha256>::new_from_slice(&key).expect("HMAC accepts any key length"))
    }

    /// The cookie of `peer` (normalized: an IPv4-mapped IPv6 address is its IPv4
    /// address): the first [`GOSSIP_COOKIE_LEN`] bytes of HMAC-SHA256 over the address.
    pub(crate) fn of(&self, peer: std::net::SocketAddr) -> [u8; GOSSIP_COOKIE_LEN] {
        let full = self.mac(peer).finalize().into_bytes();
        let mut cookie = [0; GOSSIP_COOKIE_LEN];
        cookie.copy_from_slice(&full[..GOSSIP_COOKIE_LEN]);
        cookie
    }

    /// Whether `echo` is the cookie of `peer`, compared in constant time.
    pub(crate) fn verify(&self, peer: std::net::SocketAddr, echo: &[u8]) -> bool {
        echo.len() == GOSSIP_COOKIE_LEN && self.mac(peer).verify_truncated_left(echo).is_ok()
    }

    fn mac(&self, peer: std::net::SocketAddr) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(b"duologue/v1 gossip cookie");
        match peer.ip().to_canonical() {
            std::net::IpAddr::V4(ip) => {
                mac.update(&[4]);
                mac.update(&ip.octets());
            }
            std::net::IpAddr::V6(ip) => {
                mac.update(&[6]);
                mac.update(&ip.octets());
            }
        }
        mac.update(&peer.port().to_be_bytes());
        mac
    }
}

impl fmt::Debug for GossipCookies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GossipCookies(..)")
    }
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GossipKey(..)")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The SHA-256 of a DER-encoded certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CertDigest([u8; 32]);

impl CertDigest {
    /// The digest of `der`.
    pub(crate) fn of(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

/// The certificate a dialled link verified its peer by: recorded by the link's TLS
/// verifier on each (re)connection, read by its sessions' drivers each time a stream
/// opens. Shared by the link and the drivers; the session core gets a copy.
#[derive(Clone, Debug, Default)]
pub(crate) struct VerifiedCert(Arc<Mutex<Option<CertDigest>>>);

impl VerifiedCert {
    /// The verifier accepted `cert`.
    pub(crate) fn record(&self, cert: CertDigest) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(cert);
    }

    /// The certificate last verified, if any was.
    pub(crate) fn get(&self) -> Option<CertDigest> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a session's proofs are bound to beyond the handshake's own fields.
#[derive(Clone, Debug, Default)]
pub(crate) enum TlsBinding {
    /// Plaintext: nothing.
    #[default]
    Plaintext,
    /// An acceptor serving TLS: its own certificate, bound when the initiator asks.
    Served(CertDigest),
    /// An initiator dialling over TLS: the certificate its link verified the acceptor by
    /// on the connection of the current stream (the driver tells the session each time a
    /// stream opens), always bound (and asked for in the `Hello`).
    Verified(Option<CertDigest>),
}

/// Which side of the handshake a proof is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProofRole {
    Initiator,
    Acceptor,
}

/// A session's resume key, derived from the secret and its first handshake's transcript
/// ([`Transcript::resume_key`]). Its `Debug` output never shows the bytes.
#[derive(Clone)]
#[cfg_attr(test, derive(PartialEq, Eq))]
pub(crate) struct ResumeKey([u8; PROOF_LEN]);

impl ResumeKey {
    /// A key no session has, checked against when a resume names an unknown session, so
    /// that the check costs the same whether or not the session exists.
    pub(crate) fn decoy() -> Self {
        Self([0; PROOF_LEN])
    }
}

impl fmt::Debug for ResumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeKey(..)")
    }
}

const RESUME_KEY_LABEL: &[u8] = b"duologue/v1 resume key";
const RESUME_PROOF_LABEL: &[u8] = b"duologue/v1 resume proof";

/// Everything both sides bind their proofs to.
#[derive(Debug)]
pub(crate) struct Transcript<'a> {
    pub(crate) session_id: SessionId,
    pub(crate) initiator: &'a NodeIdentity,
    pub(crate) acceptor: &'a NodeIdentity,
    pub(crate) target: &'a str,
    pub(crate) initiator_nonce: &'a Nonce,
    pub(crate) acceptor_nonce: &'a Nonce,
    /// Over TLS, when the initiator asked: the SHA-256 of the acceptor's certificate as
    /// this side knows it (`Some(None)`: bound, but to none known, which matches nothing).
    pub(crate) tls_certificate: Option<Option<CertDigest>>,
}

impl Transcript<'_> {
    fn keyed(&self, secret: &Secret, role: ProofRole) -> Hmac<Sha256> {
        let label: &[u8] = match role {
            ProofRole::Initiator => b"duologue/v1 initiator proof",
            ProofRole::Acceptor => b"duologue/v1 acceptor proof",
        };
        self.mac(secret.mac(), label)
    }

    /// `mac` over `label` and the transcript, every field length-prefixed so no two
    /// transcripts encode alike.
    fn mac(&self, mut mac: Hmac<Sha256>, label: &[u8]) -> Hmac<Sha256> {
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
        // Absent in plaintext, so a plaintext transcript is what it always was.
        if let Some(certificate) = &self.tls_certificate {
            let digest: &[u8] = certificate.as_ref().map_or(&[], |d| &d.0);
            for field in [b"tls server certificate sha-256".as_slice(), digest] {
                mac.update(&(field.len() as u64).to_be_bytes());
                mac.update(field);
            }
        }
        mac
    }

    /// The resume key of the session whose first handshake this transcript is.
    pub(crate) fn resume_key(&self, secret: &Secret) -> ResumeKey {
        ResumeKey(
            self.mac(secret.mac(), RESUME_KEY_LABEL)
                .finalize()
                .into_bytes()
                .into(),
        )
    }

    fn resume_keyed(&self, key: &ResumeKey, last_received: u64) -> Hmac<Sha256> {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mac = Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC accepts any key length");
        let mut mac = self.mac(mac, RESUME_PROOF_LABEL);
        let point = last_received.to_be_bytes();
        mac.update(&(point.len() as u64).to_be_bytes());
        mac.update(&point);
        mac
    }

    /// The initiator's proof on a resume stream (this transcript): it holds the session's
    /// resume key, and resumes after `last_received`.
    pub(crate) fn prove_resume(&self, key: &ResumeKey, last_received: u64) -> [u8; PROOF_LEN] {
        self.resume_keyed(key, last_received)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Checks, in constant time, a resume proof ([`Transcript::prove_resume`]).
    pub(crate) fn verify_resume(
        &self,
        key: &ResumeKey,
        last_received: u64,
        proof: &[u8],
    ) -> Result<(), AuthError> {
        self.resume_keyed(key, last_received)
            .verify_slice(proof)
            .map_err(|_| AuthError::ProofMismatch)
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
    use crate::wire::NONCE_LEN;

    #[test]
    fn regular_secrets_are_refused_and_random_ones_taken() {
        for weak in [&[0u8; 16][..], b"aaaaaaaaaaaaaaaa", b"abababababababababab"] {
            assert!(
                matches!(Secret::new(weak), Err(AuthError::WeakSecret { .. })),
                "{weak:?}"
            );
        }
        assert!(Secret::new("integration-test secret, 32 bytes").is_ok());
    }

    #[test]
    fn a_created_secret_file_is_random_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;

        let dir = std::env::temp_dir().join(format!("duologue-auth-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        let created = Secret::create_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let read = Secret::from_file(&path).unwrap();
        assert_eq!(created.0, read.0, "what is written is what is read");
        assert_eq!(read.0.len(), 64);
        assert!(matches!(
            Secret::create_file(&path),
            Err(AuthError::SecretFile { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
            tls_certificate: None,
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
    fn a_resume_proof_needs_the_first_handshakes_key_not_just_the_secret() {
        let (a, b) = (node("a"), node("bb"));
        let first = Transcript {
            session_id: SessionId(Uuid::from_u128(7)),
            initiator: &a,
            acceptor: &b,
            target: "room",
            initiator_nonce: &[1; NONCE_LEN],
            acceptor_nonce: &[2; NONCE_LEN],
            tls_certificate: None,
        };
        let secret = Secret::new("0123456789abcdef").unwrap();
        let key = first.resume_key(&secret);
        let again = Transcript {
            initiator_nonce: &[3; NONCE_LEN],
            acceptor_nonce: &[4; NONCE_LEN],
            ..first
        };
        let proof = again.prove_resume(&key, 5);
        assert!(again.verify_resume(&key, 5, &proof).is_ok());
        assert!(
            again.verify_resume(&key, 6, &proof).is_err(),
            "bound to the point"
        );
        // Another first handshake of the same session id and nodes: another key.
        let copied = Transcript {
            initiator_nonce: &[9; NONCE_LEN],
            ..first
        };
        let other_key = copied.resume_key(&secret);
        assert_ne!(other_key, key);
        assert!(again.verify_resume(&other_key, 5, &proof).is_err());
        // The secret itself is not the key.
        let as_key = ResumeKey(again.prove(&secret, ProofRole::Initiator));
        assert!(again.verify_resume(&as_key, 5, &proof).is_err());
    }

    /// The test vector of `docs/protocol.md`, "The resume key" (the Python client
    /// computes the same).
    #[test]
    fn the_resume_key_and_proof_match_the_documented_vector() {
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let ann = NodeIdentity {
            name: "py-ann".into(),
            incarnation: Uuid::from_bytes(std::array::from_fn(|i| 0x10 + i as u8)),
        };
        let hub = NodeIdentity {
            name: "hub".into(),
            incarnation: Uuid::from_bytes(std::array::from_fn(|i| 0x20 + i as u8)),
        };
        let first = Transcript {
            session_id: SessionId(Uuid::from_bytes(std::array::from_fn(|i| i as u8))),
            initiator: &ann,
            acceptor: &hub,
            target: "lobby",
            initiator_nonce: &[1; NONCE_LEN],
            acceptor_nonce: &[2; NONCE_LEN],
            tls_certificate: None,
        };
        let secret = Secret::new("0123456789abcdef0123456789abcdef").unwrap();
        let key = first.resume_key(&secret);
        assert_eq!(
            hex(&key.0),
            "52d407f80acc86a0f10e5bcb8984014ceccbe6debd999bd8c14b7ec8695705b1"
        );
        let again = Transcript {
            initiator_nonce: &[3; NONCE_LEN],
            acceptor_nonce: &[4; NONCE_LEN],
            ..first
        };
        assert_eq!(
            hex(&again.prove_resume(&key, 5)),
            "5831e9aa87ea411524669d99a26210e0c0784fa562cd56766a9fd7d910db5663"
        );
    }

    /// The TLS-bound test vector of `docs/protocol.md`, "Binding to TLS": the one above,
    /// bound to a certificate, through a first handshake and a resume.
    #[test]
    fn the_tls_bound_proofs_match_the_documented_vector() {
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let ann = NodeIdentity {
            name: "py-ann".into(),
            incarnation: Uuid::from_bytes(std::array::from_fn(|i| 0x10 + i as u8)),
        };
        let hub = NodeIdentity {
            name: "hub".into(),
            incarnation: Uuid::from_bytes(std::array::from_fn(|i| 0x20 + i as u8)),
        };
        let certificate = CertDigest::of(b"duologue test certificate");
        assert_eq!(
            hex(&certificate.0),
            "c91943b7d041c91430feb474914a9857e2aa844c215e49380debcad338c3e7a4"
        );
        let first = Transcript {
            session_id: SessionId(Uuid::from_bytes(std::array::from_fn(|i| i as u8))),
            initiator: &ann,
            acceptor: &hub,
            target: "lobby",
            initiator_nonce: &[1; NONCE_LEN],
            acceptor_nonce: &[2; NONCE_LEN],
            tls_certificate: Some(Some(certificate)),
        };
        let secret = Secret::new("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(
            hex(&first.prove(&secret, ProofRole::Acceptor)),
            "c63c9f5df11e3e8a87e2e11c0e14b810038e44b37344a330fe9d85beabf27a03"
        );
        assert_eq!(
            hex(&first.prove(&secret, ProofRole::Initiator)),
            "6e33cc82319d16a7c092402740dc62cc85bf449e2c8f9257208432ab88503378"
        );
        let key = first.resume_key(&secret);
        assert_eq!(
            hex(&key.0),
            "9540f5060475f66e35ba8ec5cb40f386e7e46d0287b5c5281733fd9652889387"
        );
        let again = Transcript {
            initiator_nonce: &[3; NONCE_LEN],
            acceptor_nonce: &[4; NONCE_LEN],
            ..first
        };
        assert_eq!(
            hex(&again.prove(&secret, ProofRole::Acceptor)),
            "89c0f8dc61def750c73fb5508ffdf7633c25c4417f3b6ab6ed8bfa148b17b913"
        );
        assert_eq!(
            hex(&again.prove_resume(&key, 5)),
            "72f365af81dc94a639bc4aeb0c73222526ee3e0bcb5ccea9f95d5b24ee6e7633"
        );
    }

    #[test]
    fn a_tls_binding_changes_the_proof_and_must_match() {
        let (a, b) = (node("a"), node("bb"));
        let transcript = |tls_certificate| Transcript {
            session_id: SessionId(Uuid::from_u128(7)),
            initiator: &a,
            acceptor: &b,
            target: "room",
            initiator_nonce: &[1; NONCE_LEN],
            acceptor_nonce: &[2; NONCE_LEN],
            tls_certificate,
        };
        let secret = Secret::new("0123456789abcdef").unwrap();
        let served = CertDigest::of(b"the acceptor's certificate");
        let relayed = CertDigest::of(b"a relay's certificate");
        let proof = transcript(Some(Some(served))).prove(&secret, ProofRole::Acceptor);
        assert!(
            transcript(Some(Some(served)))
                .verify(&secret, ProofRole::Acceptor, &proof)
                .is_ok()
        );
        for other in [None, Some(Some(relayed)), Some(None)] {
            assert_eq!(
                transcript(other).verify(&secret, ProofRole::Acceptor, &proof),
                Err(AuthError::ProofMismatch)
            );
        }
    }

    /// The binding is in every transcript: the resume key derived from a bound first
    /// handshake, and the proof of a bound resume stream.
    #[test]
    fn a_tls_binding_holds_for_the_resume_key_and_the_resume_proof() {
        let (a, b) = (node("a"), node("bb"));
        let served = CertDigest::of(b"the acceptor's certificate");
        let relayed = CertDigest::of(b"a relay's certificate");
        let first = |tls_certificate| Transcript {
            session_id: SessionId(Uuid::from_u128(7)),
            initiator: &a,
            acceptor: &b,
            target: "room",
            initiator_nonce: &[1; NONCE_LEN],
            acceptor_nonce: &[2; NONCE_LEN],
            tls_certificate,
        };
        let secret = Secret::new("0123456789abcdef").unwrap();
        let key = first(Some(Some(served))).resume_key(&secret);
        assert_ne!(key, first(None).resume_key(&secret), "the key binds it");
        let again = |tls_certificate| Transcript {
            initiator_nonce: &[3; NONCE_LEN],
            acceptor_nonce: &[4; NONCE_LEN],
            ..first(tls_certificate)
        };
        let proof = again(Some(Some(served))).prove_resume(&key, 5);
        assert!(
            again(Some(Some(served)))
                .verify_resume(&key, 5, &proof)
                .is_ok()
        );
        for other in [None, Some(Some(relayed)), Some(None)] {
            assert_eq!(
                again(other).verify_resume(&key, 5, &proof),
                Err(AuthError::ProofMismatch)
            );
        }
    }

    #[test]
    fn short_secret_is_rejected() {
        assert!(matches!(
            Secret::new("short"),
            Err(AuthError::SecretTooShort { len: 5, .. })
        ));
    }
}
