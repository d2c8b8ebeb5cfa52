//! Certificates for TLS tests, made on the fly: a CA, a server certificate it signs for
//! `localhost`, `127.0.0.1` and `::1`, and a client certificate (mTLS), written as PEM files
//! into a temporary directory that lives as long as the [`TestCerts`].

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A CA and the files of the certificates it signed.
pub struct TestCerts {
    dir: tempfile::TempDir,
}

impl TestCerts {
    /// A fresh CA named `name`, with a server and a client certificate.
    pub fn new(name: &str) -> TestCerts {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ca = ca(name);
        write(dir.path(), "ca.pem", &ca.pem());
        let server = leaf(
            &ca,
            vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            "sessiond test server",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        write(dir.path(), "server.pem", &server.0);
        write(dir.path(), "server.key", &server.1);
        let client = leaf(
            &ca,
            Vec::new(),
            "sessiond test client",
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        write(dir.path(), "client.pem", &client.0);
        write(dir.path(), "client.key", &client.1);
        TestCerts { dir }
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server's certificate chain (PEM).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server's private key (PEM, PKCS#8).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// A client certificate signed by the CA (PEM).
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }

    /// The client certificate's private key (PEM, PKCS#8).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }

    /// The `[tls]` section of a sessiond config that serves the server certificate, and with
    /// `mtls` verifies (and requires) client certificates against the CA.
    pub fn server_config(&self, mtls: bool) -> String {
        let mut section = format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            self.server_cert(),
            self.server_key()
        );
        if mtls {
            section.push_str(&format!(
                "client_ca_file = {:?}\nrequire_client_cert = true\n",
                self.ca()
            ));
        }
        section
    }
}

impl TestCerts {
    /// A daemon serving the native protocol over TLS on a port of its own (its address is
    /// returned; the plain listener stays on loopback as usual), with `extra` config.
    pub fn daemon(&self, mtls: bool, extra: &str) -> (crate::Daemon, String) {
        let tls_addr = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "[server]\ntls_listen = \"{tls_addr}\"\n{}{extra}",
            self.server_config(mtls)
        );
        (crate::Daemon::start_with_config(&config), tls_addr)
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("CA key");
    CertifiedIssuer::self_signed(params, key).expect("CA certificate")
}

/// A certificate signed by `ca`: (certificate PEM, key PEM).
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: Vec<String>,
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = CertificateParams::new(names).expect("certificate parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, ca).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, pem: &str) {
    std::fs::write(dir.join(name), pem).expect("write PEM file");
}

/// A port that was free a moment ago on 127.0.0.1, for listeners whose address the test
/// must know before the daemon starts (the TLS listeners print no address of their own).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}
