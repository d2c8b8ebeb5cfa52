//! [`TlsOptions`]: how a client verifies the server (and, for mTLS, proves who it is).
//!
//! The certificate files are read and checked when the options are made, not at the first
//! connection, so that a wrong path or a key that does not belong to its certificate is
//! reported where the application configures the client. What is kept is a ready
//! `rustls::ClientConfig`, shared by every connection (and every reconnection) of a client.
//!
//! Only TLS 1.2 and 1.3 are offered, with the `ring` provider named explicitly rather than
//! taken from the process default, so that another crate in the same program enabling a
//! different provider cannot change (or break) what this client negotiates.
//!
//! Because the config is shared, so is its cache of TLS sessions: a reconnection resumes the
//! session of an earlier connection (TLS 1.3 tickets, TLS 1.2 ids) when the server allows
//! it, and skips the full handshake.
//!
//! There is no fallback to the system's trust store: a session store is reached through a
//! private CA far more often than through a public one, and trusting every public CA for
//! it would let anyone with a certificate for the name impersonate the store.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::Error;

/// TLS settings of a client: the CA that signs the server's certificate, optionally a
/// client certificate (mTLS), and the name to verify.
///
/// ```no_run
/// use sessiond_client::{Client, TlsOptions};
///
/// # async fn demo() -> Result<(), sessiond_client::Error> {
/// let tls = TlsOptions::ca_file("/etc/sessiond/ca.pem")?
///     .client_cert_files("/etc/app/client.pem", "/etc/app/client.key")?
///     .server_name("sessiond.internal")?;
/// let client = Client::builder("10.0.0.5:7879").tls(tls).connect().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TlsOptions {
    roots: Arc<RootCertStore>,
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    client_cert: bool,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key stays out of Debug output; what is trusted and who is verified is
        // what a reader of a log needs.
        f.debug_struct("TlsOptions")
            .field("trusted_cas", &self.roots.len())
            .field("server_name", &self.server_name)
            .field("client_cert", &self.client_cert)
            .finish()
    }
}

impl TlsOptions {
    /// Trusts the CA certificates in the PEM file at `path` (one or more) to sign the
    /// server's certificate.
    pub fn ca_file(path: impl AsRef<Path>) -> Result<TlsOptions, Error> {
        let path = path.as_ref();
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| tls_error(format!("CA file {}: {e}", path.display())))?;
        TlsOptions::with_roots(certs, &format!("CA file {}", path.display()))
    }

    /// Trusts the CA certificates in `pem` (one or more PEM blocks).
    pub fn ca_pem(pem: &[u8]) -> Result<TlsOptions, Error> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_error(format!("CA PEM: {e}")))?;
        TlsOptions::with_roots(certs, "CA PEM")
    }

    fn with_roots(certs: Vec<CertificateDer<'static>>, what: &str) -> Result<TlsOptions, Error> {
        if certs.is_empty() {
            return Err(tls_error(format!("{what} holds no certificate")));
        }
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| tls_error(format!("{what}: {e}")))?;
        }
        let roots = Arc::new(roots);
        let config = builder()?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        Ok(TlsOptions {
            roots,
            config: Arc::new(config),
            server_name: None,
            client_cert: false,
        })
    }

    /// Presents the certificate chain in the PEM file `cert` with the private key in the PEM
    /// file `key` (PKCS#8, PKCS#1 or SEC1) when the server asks for one (mTLS).
    pub fn client_cert_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsOptions, Error> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| tls_error(format!("client certificate {}: {e}", cert.display())))?;
        // The key's own error could quote nothing secret, but a path is all a reader needs.
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| tls_error(format!("client key {}: {e}", key.display())))?;
        self.with_client_cert(chain, key)
    }

    /// Like [`TlsOptions::client_cert_files`], from PEM in memory.
    pub fn client_cert_pem(self, cert: &[u8], key: &[u8]) -> Result<TlsOptions, Error> {
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_error(format!("client certificate PEM: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| tls_error(format!("client key PEM: {e}")))?;
        self.with_client_cert(chain, key)
    }

    fn with_client_cert(
        mut self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsOptions, Error> {
        if chain.is_empty() {
            return Err(tls_error(
                "the client certificate file holds no certificate",
            ));
        }
        let config = builder()?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls_error(format!("client certificate and key: {e}")))?;
        self.config = Arc::new(config);
        self.client_cert = true;
        Ok(self)
    }

    /// The name the server's certificate must carry (a DNS name or an IP address). By
    /// default, the host part of the address the client connects to.
    pub fn server_name(mut self, name: impl Into<String>) -> Result<TlsOptions, Error> {
        let name = name.into();
        let parsed = ServerName::try_from(name.clone())
            .map_err(|e| tls_error(format!("server name {name:?}: {e}")))?;
        self.server_name = Some(parsed);
        Ok(self)
    }

    /// The options command-line tools build from their flags: the CA file, optionally a
    /// client certificate and key (mTLS) and a server name.
    pub fn from_files(
        ca: &Path,
        client_cert: Option<(&Path, &Path)>,
        server_name: Option<&str>,
    ) -> Result<TlsOptions, Error> {
        let mut tls = TlsOptions::ca_file(ca)?;
        if let Some((cert, key)) = client_cert {
            tls = tls.client_cert_files(cert, key)?;
        }
        if let Some(name) = server_name {
            tls = tls.server_name(name)?;
        }
        Ok(tls)
    }

    pub(crate) fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The name to verify for a connection to `addr` (`HOST:PORT`, `[IPv6]:PORT`).
    pub(crate) fn name_for(&self, addr: &str) -> Result<ServerName<'static>, Error> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = addr.rsplit_once(':').map_or(addr, |(host, _port)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_string()).map_err(|e| {
            tls_error(format!(
                "{host:?} (from {addr}) is not a name a certificate can carry ({e}); set a server name"
            ))
        })
    }
}

/// A config builder for TLS 1.2 and 1.3 with the `ring` provider.
fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, Error> {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| tls_error(format!("TLS versions: {e}")))
}

fn tls_error(message: impl Into<String>) -> Error {
    Error::Tls(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_without_certificates_is_refused() {
        assert!(matches!(TlsOptions::ca_pem(b""), Err(Error::Tls(_))));
        assert!(matches!(
            TlsOptions::ca_file("/nonexistent/ca.pem"),
            Err(Error::Tls(_))
        ));
    }

    #[test]
    fn server_names_come_from_the_address_unless_set() {
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let tls = TlsOptions::ca_pem(ca.cert.pem().as_bytes()).unwrap();
        assert_eq!(
            tls.name_for("localhost:7879").unwrap(),
            ServerName::try_from("localhost").unwrap()
        );
        assert_eq!(
            tls.name_for("[::1]:7879").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        let tls = tls.server_name("sessiond.internal").unwrap();
        assert_eq!(
            tls.name_for("127.0.0.1:7879").unwrap(),
            ServerName::try_from("sessiond.internal").unwrap()
        );
    }

    #[test]
    fn debug_shows_no_key_material() {
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let tls = TlsOptions::ca_pem(ca.cert.pem().as_bytes())
            .unwrap()
            .client_cert_pem(
                ca.cert.pem().as_bytes(),
                ca.signing_key.serialize_pem().as_bytes(),
            )
            .unwrap();
        let debug = format!("{tls:?}");
        assert!(debug.contains("client_cert: true"), "{debug}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
    }
}
