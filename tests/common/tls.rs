//! TLS for the tests: a throwaway self-signed certificate for 127.0.0.1 and localhost, and
//! clients (HTTPS, WSS) that trust exactly it.

use super::{parse_response, Client, WAIT};
use base64::Engine;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A certificate and its key as PEM, and a client configuration that trusts it.
#[derive(Clone)]
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub client: Arc<ClientConfig>,
    /// Base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo: what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes to trust exactly this certificate.
    pub spki_sha256: String,
}

impl TestCert {
    pub fn new() -> TestCert {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let c = rcgen::generate_simple_self_signed(names).expect("self-signed certificate");
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(c.cert.der().to_vec()))
            .expect("trusted root");
        let mut client = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let spki = rcgen::PublicKeyData::subject_public_key_info(&c.signing_key);
        let spki_sha256 = base64::engine::general_purpose::STANDARD
            .encode(<sha2::Sha256 as sha2::Digest>::digest(&spki));
        TestCert {
            cert_pem: c.cert.pem(),
            key_pem: c.signing_key.serialize_pem(),
            client: Arc::new(client),
            spki_sha256,
        }
    }

    /// Writes `name.crt` and `name.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// A blocking TLS connection to 127.0.0.1:`port`, the handshake done.
pub fn connect(port: u16, client: &Arc<ClientConfig>) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(WAIT))?;
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let conn = ClientConnection::new(client.clone(), name).map_err(std::io::Error::other)?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A one-shot HTTPS request (Connection: close). None if nothing answers.
pub fn https_request_opt(
    port: u16,
    client: &Arc<ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    let mut s = connect(port, client).ok()?;
    let headers = [&[("Connection", "close")], headers].concat();
    let mut bytes = super::http_request_head(method, path, &headers, body.len()).into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).ok()?;
    let mut out = Vec::new();
    // A server that closes without close_notify still sent a whole answer.
    let _ = s.read_to_end(&mut out);
    parse_response(&out).map(|(status, body, _)| (status, body))
}

/// A `wss://` client trusting `client`'s roots.
pub fn wss_client(url: &str, client: &Arc<ClientConfig>) -> Client {
    let port = url
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse::<u16>().ok())
        .expect("wss://127.0.0.1:port/ url");
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(WAIT)).expect("timeout");
    let connector = tungstenite::Connector::Rustls(client.clone());
    let (ws, _) = tungstenite::client_tls_with_config(url, tcp, None, Some(connector))
        .expect("wss handshake");
    if let tungstenite::stream::MaybeTlsStream::Rustls(s) = ws.get_ref() {
        s.sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
    }
    Client { ws, fd: 0 }
}
