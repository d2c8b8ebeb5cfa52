//! TLS for the listeners: loading the certificate, key and client CA from PEM files,
//! building the rustls server configuration, and swapping it for a new one on reload.
//!
//! TLS is a property of a listener, not of a protocol: `server.tls_listen` and
//! `resp.tls_listen` accept connections that [`crate::server`] hands to [`Tls::acceptor`]
//! for the handshake, and from then on the connection handler reads and writes plaintext as
//! on any other socket. Commands never see TLS.
//!
//! Only TLS 1.3 and 1.2 are offered, with rustls's ring provider and its default (modern,
//! forward-secret) cipher suites: a client that can only speak TLS 1.1 or older fails the
//! handshake. With `client_ca_file`, client certificates are verified against that CA
//! (mutual TLS); `require_client_cert` decides whether a client without one is let in.
//!
//! Reload ([`Tls::reload`], on SIGHUP) reads every file again and builds a complete new
//! configuration before anything changes: a missing or broken file leaves the previous
//! configuration in place. Connections accepted afterwards get the new certificate;
//! established ones keep the session they negotiated.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Where the certificate material is (the `[tls]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain: the server's certificate first, then its intermediates.
    pub cert_file: PathBuf,
    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates that client certificates are verified against; `None` asks
    /// clients for no certificate.
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: whether a client that presents no certificate is refused.
    /// A certificate that is presented is always verified.
    pub require_client_cert: bool,
}

/// Why a TLS configuration could not be built. Messages name the file and what is wrong
/// with it, never its contents (the key file is a secret).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read, or is not PEM.
    #[error("cannot read {what} {path}: {source}")]
    Pem {
        /// Which file: "certificate file", "key file", "client CA file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong, from the PEM reader.
        source: rustls_pki_types::pem::Error,
    },
    /// A PEM file holds none of what it should.
    #[error("{what} {path} contains no {expected}")]
    Empty {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What it should contain.
        expected: &'static str,
    },
    /// A client CA certificate could not be used as a trust anchor.
    #[error("client CA file {path}: {source}")]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// Why rustls refused it.
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built.
    #[error("client CA file {path}: {source}")]
    Verifier {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::server::VerifierBuilderError,
    },
    /// rustls refused the certificate and key, e.g. because the key does not belong to the
    /// certificate.
    #[error("certificate {cert} with key {key}: {source}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why rustls refused them.
        source: rustls::Error,
    },
}

/// The TLS configuration both listeners use, replaceable while they run.
pub struct Tls {
    files: TlsFiles,
    /// The acceptor for new connections. A lock rather than anything cleverer: it is taken
    /// once per accepted connection, for the time it takes to clone an `Arc`, and written
    /// only on reload.
    current: RwLock<TlsAcceptor>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The configuration holds the private key: show where it came from, not what it is.
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Loads the files and builds the configuration.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let config = server_config(&files)?;
        Ok(Tls {
            files,
            current: RwLock::new(TlsAcceptor::from(config)),
        })
    }

    /// Reads the files again and, if they make a valid configuration, uses it for every
    /// connection accepted from now on. On error nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let acceptor = TlsAcceptor::from(server_config(&self.files)?);
        // A poisoned lock only means a panic while an `Arc` was being swapped: the value
        // inside is still a whole acceptor.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = acceptor;
        Ok(())
    }

    /// The files the configuration is read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The acceptor for a connection accepted now.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Builds a rustls server configuration from `files`: TLS 1.3 and 1.2 only, ring's cipher
/// suites, and client certificates verified against `client_ca_file` if it is set.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert_file, "certificate file")?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|source| TlsError::Pem {
        what: "key file",
        path: files.key_file.clone(),
        source,
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsError::Config {
            cert: files.cert_file.clone(),
            key: files.key_file.clone(),
            source,
        })?;
    let builder = match &files.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(client_verifier(
            path,
            files.require_client_cert,
            provider,
        )?),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Config {
            cert: files.cert_file.clone(),
            key: files.key_file.clone(),
            source,
        })?;
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file, in order; an error if there is none.
fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
            expected: "CERTIFICATE block",
        });
    }
    Ok(certs)
}

/// A verifier of client certificates signed by the CAs in `path`.
fn client_verifier(
    path: &Path,
    required: bool,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, "client CA file")? {
        roots.add(cert).map_err(|source| TlsError::ClientCa {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder.build().map_err(|source| TlsError::Verifier {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and its key, as PEM files in a temporary directory.
    struct Files {
        dir: tempfile::TempDir,
        key_pem: String,
    }

    impl Files {
        fn new() -> Files {
            let dir = tempfile::tempdir().unwrap();
            let key_pem = Files::write_pair(dir.path(), "server");
            Files { dir, key_pem }
        }

        /// Writes NAME.pem and NAME.key in `dir`; returns the key's PEM.
        fn write_pair(dir: &Path, name: &str) -> String {
            let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
            let key_pem = certified.signing_key.serialize_pem();
            std::fs::write(dir.join(format!("{name}.pem")), certified.cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), &key_pem).unwrap();
            key_pem
        }

        fn tls_files(&self) -> TlsFiles {
            TlsFiles {
                cert_file: self.dir.path().join("server.pem"),
                key_file: self.dir.path().join("server.key"),
                client_ca_file: None,
                require_client_cert: false,
            }
        }
    }

    /// The base64 body of a PEM block: what must never appear in a message.
    fn pem_body(pem: &str) -> String {
        pem.lines().filter(|l| !l.starts_with("-----")).collect()
    }

    #[test]
    fn loads_a_certificate_and_its_key_and_debug_shows_no_key() {
        let files = Files::new();
        let tls = Tls::load(files.tls_files()).unwrap();
        let debug = format!("{tls:?}");
        assert!(debug.contains("server.key"), "{debug}");
        assert!(!debug.contains(&pem_body(&files.key_pem)[..40]), "{debug}");
        tls.reload().unwrap();
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_both_files() {
        let files = Files::new();
        let other_key = Files::write_pair(files.dir.path(), "other");
        let mut tls_files = files.tls_files();
        tls_files.key_file = files.dir.path().join("other.key");
        let err = server_config(&tls_files).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, TlsError::Config { .. }), "{message}");
        assert!(message.contains("server.pem") && message.contains("other.key"));
        assert!(!message.contains(&pem_body(&other_key)[..40]), "{message}");
    }

    #[test]
    fn missing_empty_and_garbled_files_are_named() {
        let files = Files::new();
        let mut tls_files = files.tls_files();
        tls_files.cert_file = files.dir.path().join("missing.pem");
        let err = server_config(&tls_files).unwrap_err().to_string();
        assert!(
            err.contains("certificate file") && err.contains("missing.pem"),
            "{err}"
        );

        let empty = files.dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        tls_files.cert_file = empty;
        let err = server_config(&tls_files).unwrap_err().to_string();
        assert!(err.contains("contains no CERTIFICATE"), "{err}");

        let garbled = files.dir.path().join("garbled.key");
        std::fs::write(&garbled, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n").unwrap();
        let mut tls_files = files.tls_files();
        tls_files.key_file = garbled;
        let err = server_config(&tls_files).unwrap_err().to_string();
        assert!(
            err.contains("key file") && err.contains("garbled.key"),
            "{err}"
        );
        assert!(!err.contains("c2VjcmV0"), "{err}");
    }

    #[test]
    fn a_failed_reload_changes_nothing() {
        let files = Files::new();
        let tls = Tls::load(files.tls_files()).unwrap();
        let before = tls.acceptor().config().clone();
        std::fs::write(files.dir.path().join("server.key"), "garbage").unwrap();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, tls.acceptor().config()));
        Files::write_pair(files.dir.path(), "server");
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, tls.acceptor().config()));
    }

    #[test]
    fn client_certificates_are_verified_against_the_ca_file() {
        let files = Files::new();
        let mut tls_files = files.tls_files();
        tls_files.client_ca_file = Some(files.dir.path().join("server.pem"));
        tls_files.require_client_cert = true;
        server_config(&tls_files).unwrap();
        tls_files.client_ca_file = Some(files.dir.path().join("server.key"));
        let err = server_config(&tls_files).unwrap_err().to_string();
        assert!(err.contains("client CA file"), "{err}");
    }
}
