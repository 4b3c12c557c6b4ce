//! TLS for the load benches: a throwaway self-signed certificate for the server, and one
//! rustls client configuration that trusts exactly that certificate, for the coordinator's
//! HTTPS calls and the agents' wss:// connections.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, Error, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// The certificate the bench's server presents, and its key.
pub struct BenchCert {
    pub der: Vec<u8>,
    cert_pem: String,
    key_pem: String,
}

impl BenchCert {
    /// A new ECDSA P-256 certificate (rcgen's default) for 127.0.0.1 and localhost.
    pub fn new() -> BenchCert {
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let c = rcgen::generate_simple_self_signed(names).expect("self-signed certificate");
        BenchCert {
            der: c.cert.der().to_vec(),
            cert_pem: c.cert.pem(),
            key_pem: c.signing_key.serialize_pem(),
        }
    }

    /// Writes the pair into `dir`; returns the `[server]` lines that serve it.
    pub fn server_lines(&self, dir: &Path) -> String {
        let (cert, key) = (dir.join("bench.crt"), dir.join("bench.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write the certificate");
        std::fs::write(&key, &self.key_pem).expect("write the key");
        format!(
            "ssl_cert_file = \"{}\"\nssl_key_file = \"{}\"\n",
            cert.display(),
            key.display()
        )
    }
}

/// A client configuration for a server presenting exactly `cert_der`. Session resumption is
/// off, so that every connection pays for a full handshake, as a first login does.
pub fn client_config(cert_der: &[u8]) -> Arc<ClientConfig> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let verifier = Arc::new(Pinned {
        der: cert_der.to_vec(),
        schemes: provider
            .signature_verification_algorithms
            .supported_schemes(),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The server name the clients ask for (the certificate names it; `Pinned` does not look).
pub fn server_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
}

/// Accepts the one certificate the coordinator made, compared byte for byte, and does not
/// verify the handshake's signature: the load generator shares the cores with the server, and
/// only the server's side of the handshake is being measured (it still signs).
#[derive(Debug)]
struct Pinned {
    der: Vec<u8>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}
