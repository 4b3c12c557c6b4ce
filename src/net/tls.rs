//! TLS for the WebSocket and HTTP API ports: the certificate and key read from their PEM files
//! into a rustls configuration (re-read on SIGHUP), and the handshake counters both doors share.

use rustls::crypto::aws_lc_rs as provider;
use rustls::server::ServerSessionMemoryCache;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::cell::Cell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

/// Sessions a returning client may resume without a full handshake (TLS 1.2 ids; TLS 1.3
/// uses stateless tickets).
const SESSION_CACHE: usize = 4096;

/// Why a certificate and key cannot be served: which file, and what is wrong with it.
#[derive(Debug)]
pub enum TlsError {
    Unreadable {
        file: PathBuf,
        key: &'static str,
        error: std::io::Error,
    },
    /// Not PEM, or no block of the kind the key names.
    NoPem {
        file: PathBuf,
        key: &'static str,
        what: &'static str,
    },
    /// rustls refused the pair: a key that does not match the certificate, or a key type it
    /// does not support.
    Refused {
        file: PathBuf,
        key: &'static str,
        error: rustls::Error,
    },
}

impl TlsError {
    /// The file at fault and the configuration key that names it.
    pub fn file_and_key(&self) -> (&Path, &'static str) {
        match self {
            TlsError::Unreadable { file, key, .. }
            | TlsError::NoPem { file, key, .. }
            | TlsError::Refused { file, key, .. } => (file, key),
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Unreadable { file, error, .. } => {
                write!(f, "cannot read {}: {error}", file.display())
            }
            TlsError::NoPem { file, what, .. } => {
                write!(f, "{} holds no PEM {what}", file.display())
            }
            TlsError::Refused { file, error, .. } => write!(f, "{}: {error}", file.display()),
        }
    }
}

impl std::error::Error for TlsError {}

/// Where the pair is read from (the two configuration keys).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads and checks the pair: the certificate chain, then the key, which must match the
    /// chain's first certificate.
    pub fn load(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let cert_key = "server.ssl_cert_file";
        let key_key = "server.ssl_key_file";
        let cert_pem = read(&self.cert, cert_key)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|_| no_pem(&self.cert, cert_key, "certificate"))?;
        if chain.is_empty() {
            return Err(no_pem(&self.cert, cert_key, "certificate"));
        }
        let key_pem = read(&self.key, key_key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|_| no_pem(&self.key, key_key, "private key (PKCS#8, PKCS#1 or SEC1)"))?;
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|error| TlsError::Refused {
                    file: self.cert.clone(),
                    key: cert_key,
                    error,
                })?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(|error| TlsError::Refused {
                    file: self.key.clone(),
                    key: key_key,
                    error,
                })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        // Stateless TLS 1.3 tickets: a reconnecting app resumes without a full handshake. The
        // ticket keys are made at each load and never leave the process.
        if let Ok(ticketer) = provider::Ticketer::new() {
            config.ticketer = ticketer;
        }
        Ok(Arc::new(config))
    }
}

fn read(file: &Path, key: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|error| TlsError::Unreadable {
        file: file.into(),
        key,
        error,
    })
}

fn no_pem(file: &Path, key: &'static str, what: &'static str) -> TlsError {
    TlsError::NoPem {
        file: file.into(),
        key,
        what,
    }
}

/// Why a TLS handshake did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// A plain HTTP (or WebSocket) request on the TLS port.
    PlainHttp,
    /// The client sent an alert: it did not accept our certificate, usually.
    ClientAlert,
    /// Not valid TLS, or nothing we share (versions, ciphers).
    Protocol,
    /// The client went away, or let the handshake deadline pass, before finishing.
    Abandoned,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 4] = [
        HandshakeFailure::PlainHttp,
        HandshakeFailure::ClientAlert,
        HandshakeFailure::Protocol,
        HandshakeFailure::Abandoned,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::PlainHttp => "plain_http",
            HandshakeFailure::ClientAlert => "client_alert",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Abandoned => "abandoned",
        }
    }

    pub fn of(error: &rustls::Error) -> HandshakeFailure {
        match error {
            rustls::Error::AlertReceived(_) => HandshakeFailure::ClientAlert,
            _ => HandshakeFailure::Protocol,
        }
    }
}

/// Handshakes done and failed, by reason. The master is one thread: plain cells suffice.
#[derive(Debug, Default)]
pub struct TlsCounters {
    handshakes: Cell<u64>,
    failures: [Cell<u64>; 4],
}

impl TlsCounters {
    pub fn completed(&self) {
        self.handshakes.set(self.handshakes.get() + 1);
    }

    pub fn failed(&self, why: HandshakeFailure) {
        let c = &self.failures[why as usize];
        c.set(c.get() + 1);
    }

    pub fn handshakes(&self) -> u64 {
        self.handshakes.get()
    }

    pub fn failures(&self, why: HandshakeFailure) -> u64 {
        self.failures[why as usize].get()
    }
}

/// What a door needs to accept TLS connections: the current configuration (replaced on
/// SIGHUP; open connections keep the one they started with) and the shared counters.
#[derive(Clone)]
pub struct TlsAcceptor {
    pub config: Arc<ServerConfig>,
    pub counters: Rc<TlsCounters>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> TlsFiles {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.cert.pem()).unwrap();
        std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();
        files
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wspush-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_matching_pair_loads() {
        let dir = temp_dir("ok");
        assert!(pair(&dir, "a").load().is_ok());
    }

    #[test]
    fn each_fault_names_its_file_and_key() {
        let dir = temp_dir("bad");
        let a = pair(&dir, "a");
        let b = pair(&dir, "b");
        let mismatched = TlsFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let e = mismatched.load().unwrap_err();
        assert_eq!(e.file_and_key(), (b.key.as_path(), "server.ssl_key_file"));
        assert!(matches!(e, TlsError::Refused { .. }), "{e}");

        let missing = TlsFiles {
            cert: dir.join("nope.crt"),
            key: a.key.clone(),
        };
        let e = missing.load().unwrap_err();
        assert_eq!(e.file_and_key().1, "server.ssl_cert_file");
        assert!(e.to_string().contains("nope.crt"), "{e}");

        let swapped = TlsFiles {
            cert: a.key.clone(),
            key: a.cert.clone(),
        };
        let e = swapped.load().unwrap_err();
        assert!(matches!(e, TlsError::NoPem { .. }), "{e}");
        assert_eq!(e.file_and_key().1, "server.ssl_cert_file");
    }
}
