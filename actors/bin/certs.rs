//! `duologue certs DIR`: a development CA and node certificates signed by it, so TLS and
//! mutual TLS can be tried without openssl. Not for production: the CA's key sits beside
//! its certificate, and nothing expires before the year 4096.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Options of `duologue certs`.
#[derive(Debug, Args)]
pub(crate) struct CertsArgs {
    /// The directory to write `ca.pem`, `ca.key` and each `NAME.pem`, `NAME.key` into
    /// (created if missing; existing files are never overwritten).
    dir: PathBuf,
    /// A node to make a certificate for, signed by the CA, for `localhost`, `127.0.0.1`,
    /// `::1` and NAME. Repeatable; one `node` by default. The certificate serves both TLS
    /// and, as a client certificate, mutual TLS.
    #[arg(long = "node", value_name = "NAME", default_value = "node")]
    nodes: Vec<String>,
}

pub(crate) fn run(args: &CertsArgs) -> ExitCode {
    match write_all(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("duologue certs: {message}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(args: &CertsArgs) -> Result<(), String> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for name in &args.nodes {
        if name.is_empty() || name == "ca" || name.contains(['/', '\\']) {
            return Err(format!(
                "--node {name:?}: not a usable file name (nor \"ca\")"
            ));
        }
    }
    let rcgen = |e: rcgen::Error| e.to_string();

    let ca_key = KeyPair::generate().map_err(rcgen)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(rcgen)?;
    ca.distinguished_name
        .push(DnType::CommonName, "duologue development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(rcgen)?;
    write(dir, "ca.pem", &ca_cert.pem(), false)?;
    write(dir, "ca.key", &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca, ca_key);

    for name in &args.nodes {
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
        if !names.contains(name) && rcgen::CertificateParams::new(vec![name.clone()]).is_ok() {
            names.push(name.clone());
        }
        let mut params = CertificateParams::new(names).map_err(rcgen)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(rcgen)?;
        let cert = params.signed_by(&key, &issuer).map_err(rcgen)?;
        write(dir, &format!("{name}.pem"), &cert.pem(), false)?;
        write(dir, &format!("{name}.key"), &key.serialize_pem(), true)?;
    }
    Ok(())
}

/// Writes a new file (never over an existing one), readable by its owner only when
/// `secret`; prints its path.
fn write(dir: &Path, name: &str, contents: &str, secret: bool) -> Result<(), String> {
    let path = dir.join(name);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}
