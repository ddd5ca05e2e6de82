//! TLS for a node's sessions, on both ends, through tonic's rustls support (on ring).
//!
//! [`ServerTls`] is what a node serves with: its certificate chain and key, and, for
//! mutual TLS, the CA its clients' certificates must chain to. [`ClientTls`] is what it
//! dials with: the CA its peers' certificates must chain to and, for mutual TLS, its own
//! client certificate. Both parse their PEM when loaded, so a bad file is a
//! [`NodeError::Tls`] that names it, not a failure on the first connection.
//!
//! The HMAC handshake goes on over TLS, bound to the server certificate of the
//! connection: the verifier of each dialled link records the certificate it verified
//! the acceptor by, and both sides put its SHA-256 into the proofs' transcript (the
//! acceptor puts its own). A relay that terminates TLS with any other certificate, even
//! one from the same CA, makes the proofs disagree. tonic exposes no TLS exporter
//! (RFC 5705) on either end, so the binding is to the certificate, not to the TLS
//! session; `docs/semantics.md` ("TLS") says what that does and does not stop.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tonic::transport::{ClientTlsConfig, Endpoint, Identity};

use crate::auth::{CertDigest, TlsBinding, VerifiedCert};
use crate::error::{ConnectError, NodeError, chain, sources};

mod accept;

pub use crate::error::TlsFailure;
pub(crate) use accept::{TlsAccept, TlsRefusedByPort};
pub use accept::{TlsRefusal, TlsRefused};

/// What a node serves with: accepts only TLS, and with a client CA, only clients whose
/// certificate chains to it (mutual TLS). Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct ServerTls {
    cert: Pem,
    key: Pem,
    client_ca: Option<Pem>,
    /// SHA-256 of the leaf certificate: what the proofs are bound to.
    leaf: CertDigest,
}

impl ServerTls {
    /// A certificate chain (leaf first) and its private key, in PEM.
    ///
    /// # Errors
    /// [`NodeError::Tls`] when either does not parse, or the key does not match the
    /// certificate.
    pub fn from_pem(cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Result<Self, NodeError> {
        let cert = Pem::new(cert.into(), "the certificate (PEM in memory)");
        let key = Pem::new(key.into(), "the key (PEM in memory)");
        Self::load(cert, key)
    }

    /// Reads a certificate chain (leaf first) and its private key from PEM files.
    ///
    /// # Errors
    /// [`NodeError::Tls`] naming the file that cannot be read or does not parse, or the
    /// certificate whose key does not match.
    pub fn from_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, NodeError> {
        Self::load(Pem::read(cert.as_ref())?, Pem::read(key.as_ref())?)
    }

    /// Requires client certificates chaining to `ca` (PEM): mutual TLS. A client without
    /// one is refused during the TLS handshake.
    ///
    /// # Errors
    /// [`NodeError::Tls`] when `ca` holds no usable certificate.
    pub fn client_ca_pem(self, ca: impl Into<Vec<u8>>) -> Result<Self, NodeError> {
        self.with_client_ca(Pem::new(ca.into(), "the client CA (PEM in memory)"))
    }

    /// As [`ServerTls::client_ca_pem`], read from a file.
    ///
    /// # Errors
    /// [`NodeError::Tls`] naming the file that cannot be read or holds no usable
    /// certificate.
    pub fn client_ca_file(self, path: impl AsRef<Path>) -> Result<Self, NodeError> {
        self.with_client_ca(Pem::read(path.as_ref())?)
    }

    /// Whether clients must present a certificate (mutual TLS).
    pub fn requires_client_certs(&self) -> bool {
        self.client_ca.is_some()
    }

    fn load(cert: Pem, key: Pem) -> Result<Self, NodeError> {
        let chain = cert.certificates()?;
        let private = key.private_key()?;
        // rustls checks that the key is the certificate's; ask it now, with the file name.
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(chain.clone(), private)
            })
            .map_err(|e| cert.error(format!("unusable with its key {}: {e}", key.source)))?;
        let leaf = CertDigest::of(&chain[0]);
        Ok(Self {
            cert,
            key,
            client_ca: None,
            leaf,
        })
    }

    fn with_client_ca(mut self, ca: Pem) -> Result<Self, NodeError> {
        ca.roots()?;
        self.client_ca = Some(ca);
        Ok(self)
    }

    /// What the session port serves with: HTTP/2 by ALPN and, with a client CA, client
    /// certificates required and verified against it.
    ///
    /// # Errors
    /// [`NodeError::Tls`] when the client CA or the key cannot be used.
    pub(crate) fn session_config(&self) -> Result<Arc<rustls::ServerConfig>, NodeError> {
        self.rustls_config(b"h2", self.client_ca.as_ref())
    }

    /// What the admin address serves with: HTTP/1.1, no client certificates (its token
    /// authenticates).
    ///
    /// # Errors
    /// [`NodeError::Tls`] when the key cannot be used.
    pub(crate) fn admin_config(&self) -> Result<Arc<rustls::ServerConfig>, NodeError> {
        self.rustls_config(b"http/1.1", None)
    }

    fn rustls_config(
        &self,
        alpn: &[u8],
        client_ca: Option<&Pem>,
    ) -> Result<Arc<rustls::ServerConfig>, NodeError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| self.cert.error(e.to_string()))?;
        let builder = match client_ca {
            Some(ca) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(ca.roots()?),
                    provider(),
                )
                .build()
                .map_err(|e| ca.error(format!("unusable as a client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(self.cert.certificates()?, self.key.private_key()?)
            .map_err(|e| {
                self.cert
                    .error(format!("unusable with its key {}: {e}", self.key.source))
            })?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(config))
    }

    /// What the acceptor's proofs are bound to.
    pub(crate) fn binding(&self) -> TlsBinding {
        TlsBinding::Served(self.leaf)
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert.source)
            .field("key", &self.key.source)
            .field("client_ca", &self.client_ca.as_ref().map(|ca| &ca.source))
            .finish()
    }
}

/// What a node dials its peers with: the CA their certificates must chain to and,
/// for peers that require mutual TLS, this node's client certificate. Its `Debug` output
/// never shows the key.
#[derive(Clone)]
pub struct ClientTls {
    ca: Pem,
    identity: Option<(Pem, Pem)>,
    domain: Option<String>,
}

impl ClientTls {
    /// Trusts peers whose certificate chains to `ca` (PEM).
    ///
    /// # Errors
    /// [`NodeError::Tls`] when `ca` holds no usable certificate.
    pub fn from_ca_pem(ca: impl Into<Vec<u8>>) -> Result<Self, NodeError> {
        Self::trusting(Pem::new(ca.into(), "the CA (PEM in memory)"))
    }

    /// As [`ClientTls::from_ca_pem`], read from a file.
    ///
    /// # Errors
    /// [`NodeError::Tls`] naming the file that cannot be read or holds no usable
    /// certificate.
    pub fn from_ca_file(path: impl AsRef<Path>) -> Result<Self, NodeError> {
        Self::trusting(Pem::read(path.as_ref())?)
    }

    /// Presents this client certificate chain (leaf first) and key (PEM) to peers that
    /// ask for one (mutual TLS).
    ///
    /// # Errors
    /// [`NodeError::Tls`] when either does not parse, or the key does not match.
    pub fn identity_pem(
        self,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Result<Self, NodeError> {
        let cert = Pem::new(cert.into(), "the client certificate (PEM in memory)");
        let key = Pem::new(key.into(), "the client key (PEM in memory)");
        self.with_identity(cert, key)
    }

    /// As [`ClientTls::identity_pem`], read from files.
    ///
    /// # Errors
    /// [`NodeError::Tls`] naming the file that cannot be read or does not parse.
    pub fn identity_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, NodeError> {
        self.with_identity(Pem::read(cert.as_ref())?, Pem::read(key.as_ref())?)
    }

    /// The name peers' certificates must carry, instead of the host of the address
    /// dialled (an IP address matches an IP address SAN).
    pub fn domain(mut self, name: impl Into<String>) -> Self {
        self.domain = Some(name.into());
        self
    }

    /// Whether this client presents a certificate of its own.
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    fn trusting(ca: Pem) -> Result<Self, NodeError> {
        ca.roots()?;
        Ok(Self {
            ca,
            identity: None,
            domain: None,
        })
    }

    fn with_identity(mut self, cert: Pem, key: Pem) -> Result<Self, NodeError> {
        let chain = cert.certificates()?;
        let private = key.private_key()?;
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_root_certificates(RootCertStore::empty())
                    .with_client_auth_cert(chain, private)
            })
            .map_err(|e| cert.error(format!("unusable with its key {}: {e}", key.source)))?;
        self.identity = Some((cert, key));
        Ok(self)
    }

    /// Why a TLS handshake with `addr` fails, with rustls' text, asked within `timeout`
    /// with a bare TLS handshake that then sends nothing: `None` when it succeeds and the
    /// peer waits, or fails for a reason other than TLS.
    ///
    /// After a TLS dial broke with no word from rustls. In TLS 1.3 a server that refuses
    /// the client's certificate (or its absence) says so only after the client finished
    /// its side and started talking HTTP/2; closing with that unread, the server's socket
    /// resets the connection, and the client may lose the alert with it. A client that
    /// sends nothing reads the alert.
    pub(crate) async fn diagnose(
        &self,
        addr: &str,
        timeout: std::time::Duration,
    ) -> Option<(TlsFailure, String)> {
        use tokio::io::AsyncReadExt;
        let probe = async {
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .ok()?
                .with_root_certificates(self.ca.roots_arc());
            let mut config = match &self.identity {
                Some((cert, key)) => config
                    .with_client_auth_cert(cert.certificates().ok()?, key.private_key().ok()?)
                    .ok()?,
                None => config.with_no_client_auth(),
            };
            config.alpn_protocols = vec![b"h2".to_vec()];
            let domain = self.domain.clone().unwrap_or_else(|| host(addr).to_owned());
            let name = ServerName::try_from(domain).ok()?;
            let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let mut stream = match connector.connect(name, tcp).await {
                Ok(stream) => stream,
                Err(error) => return failure_of(&error),
            };
            match stream.read(&mut [0u8; 64]).await {
                Err(error) => failure_of(&error),
                Ok(_) => None,
            }
        };
        tokio::time::timeout(timeout, probe).await.ok().flatten()
    }

    /// `endpoint` (an `https://` one to `addr`) dialling over TLS, with the TLS handshake
    /// bounded by `timeout`; the proofs of its sessions are bound to what the returned
    /// cell records.
    pub(crate) fn endpoint(
        &self,
        endpoint: Endpoint,
        addr: &str,
        timeout: std::time::Duration,
    ) -> Result<(Endpoint, Option<VerifiedCert>), ConnectError> {
        let invalid = |reason: String| ConnectError::InvalidAddress {
            addr: addr.to_owned(),
            reason,
        };
        let domain = match &self.domain {
            Some(domain) => domain.clone(),
            None => host(addr).to_owned(),
        };
        let seen = VerifiedCert::default();
        let verifier = Arc::new(RecordingVerifier {
            inner: WebPkiServerVerifier::builder_with_provider(self.ca.roots_arc(), provider())
                .build()
                .map_err(|e| invalid(format!("the CA {}: {e}", self.ca.source)))?,
            seen: seen.clone(),
        });
        let mut config = ClientTlsConfig::new().domain_name(domain).timeout(timeout);
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(&*cert.bytes, &*key.bytes));
        }
        let endpoint = endpoint
            .tls_config_with_verifier(config, verifier)
            .map_err(|e| invalid(chain(&e)))?;
        Ok((endpoint, Some(seen)))
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca.source)
            .field("identity", &self.identity.as_ref().map(|(c, _)| &c.source))
            .field("domain", &self.domain)
            .finish()
    }
}

/// What a TLS stream's I/O error says about the handshake, with its text: `None` when
/// rustls did not fail.
fn failure_of(error: &std::io::Error) -> Option<(TlsFailure, String)> {
    Some((tls_failure(error)?, chain(error)))
}

/// The TLS failure somewhere in `error`'s chain (a tonic status and its sources, an
/// I/O error from a TLS stream): a certificate not trusted, refused, or missing; a peer
/// not speaking TLS. `None` when rustls did not fail.
pub(crate) fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error};
    let rustls = sources(error).find_map(|e| e.downcast_ref::<Error>())?;
    Some(match rustls {
        Error::AlertReceived(Alert::CertificateRequired) | Error::NoCertificatesPresented => {
            TlsFailure::ClientCertificateRequired
        }
        Error::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => {
            TlsFailure::UntrustedPeer
        }
        Error::AlertReceived(Alert::UnknownCA | Alert::BadCertificate) => {
            TlsFailure::UntrustedByPeer
        }
        Error::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            TlsFailure::WrongName
        }
        Error::InvalidMessage(_) => TlsFailure::NotTls,
        other => TlsFailure::Other(other.to_string()),
    })
}

/// Whether the server at `addr` speaks TLS, asked within `timeout`: after a plaintext
/// dial broke, to tell "it serves TLS" from "it is down". Sends the HTTP/2 preface, as
/// the plaintext dial did: a plaintext gRPC server answers with an HTTP/2 frame, a TLS
/// server with a TLS alert record (content type 21, version 3.x).
pub(crate) async fn serves_tls(addr: &str, timeout: std::time::Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await.ok()?;
        Some(head == [21, 3])
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Some(true)))
}

/// The host part of `host:port` or `[v6]:port`.
fn host(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// PEM bytes and where they came from.
#[derive(Clone)]
struct Pem {
    bytes: Arc<[u8]>,
    source: String,
}

impl Pem {
    fn new(bytes: Vec<u8>, source: &str) -> Self {
        Self {
            bytes: bytes.into(),
            source: source.to_owned(),
        }
    }

    fn read(path: &Path) -> Result<Self, NodeError> {
        let bytes = std::fs::read(path).map_err(|e| NodeError::Tls {
            path: path.display().to_string(),
            reason: format!("cannot read it: {e}"),
        })?;
        Ok(Self {
            bytes: bytes.into(),
            source: path.display().to_string(),
        })
    }

    fn error(&self, reason: String) -> NodeError {
        NodeError::Tls {
            path: self.source.clone(),
            reason,
        }
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, NodeError> {
        let certs = CertificateDer::pem_slice_iter(&self.bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(self.error("holds no PEM certificate (BEGIN CERTIFICATE)".into()));
        }
        Ok(certs)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, NodeError> {
        PrivateKeyDer::from_pem_slice(&self.bytes)
            .map_err(|e| self.error(format!("holds no PEM private key: {e}")))
    }

    fn roots(&self) -> Result<RootCertStore, NodeError> {
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(self.certificates()?);
        if added == 0 {
            return Err(self.error("holds no certificate usable as a trust anchor".into()));
        }
        Ok(roots)
    }

    fn roots_arc(&self) -> Arc<RootCertStore> {
        // Parsed once already when loaded: it cannot fail now.
        Arc::new(self.roots().unwrap_or_else(|_| RootCertStore::empty()))
    }
}

/// rustls' own verifier, recording the certificate it verified the server by.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    seen: VerifiedCert,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.seen.record(CertDigest::of(end_entity));
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host("127.0.0.1:4000"), "127.0.0.1");
        assert_eq!(host("[::1]:4000"), "::1");
        assert_eq!(host("node-a.example:4000"), "node-a.example");
    }

    #[test]
    fn garbage_is_a_typed_error_naming_its_source() {
        let error = ServerTls::from_pem("not a certificate", "not a key").unwrap_err();
        assert!(
            matches!(&error, NodeError::Tls { path, .. } if path.contains("certificate")),
            "{error}"
        );
        let error = ClientTls::from_ca_file("/nonexistent/ca.pem").unwrap_err();
        assert!(
            matches!(&error, NodeError::Tls { path, .. } if path == "/nonexistent/ca.pem"),
            "{error}"
        );
    }

    #[test]
    fn rustls_failures_are_typed_through_an_io_error() {
        use rustls::{AlertDescription, CertificateError, Error};
        let wrapped = |e: Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let unknown = wrapped(Error::InvalidCertificate(CertificateError::UnknownIssuer));
        assert_eq!(tls_failure(&unknown), Some(TlsFailure::UntrustedPeer));
        let required = wrapped(Error::AlertReceived(AlertDescription::CertificateRequired));
        assert_eq!(
            tls_failure(&required),
            Some(TlsFailure::ClientCertificateRequired)
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(tls_failure(&refused), None);
    }
}
