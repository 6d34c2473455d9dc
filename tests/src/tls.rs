//! Certificates made in the test (a CA, server and client certificates, with rcgen) and a
//! small HTTPS client on rustls, so a test controls the TLS versions and the client
//! certificate it presents and sees the certificate the server presents.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::pki_types::pem::PemObject;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A certificate authority for one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    pub pem: String,
}

/// A certificate and its key, as PEM, and where they were written.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).expect("self-signed CA");
        let pem = cert.pem();
        TestCa { cert, key, pem }
    }

    /// Writes the CA certificate to `dir/<file>` and returns the path.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, &self.pem).expect("write CA");
        path
    }

    /// A certificate for `names` (DNS names or IP addresses) with common name `cn`, written
    /// to `dir/<stem>.crt` and `dir/<stem>.key`.
    pub fn issue(&self, dir: &Path, stem: &str, cn: &str, names: &[&str]) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("sign");
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        let (cert_path, key_path) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
        std::fs::write(&cert_path, &cert_pem).expect("write cert");
        std::fs::write(&key_path, &key_pem).expect("write key");
        Issued { cert_pem, key_pem, cert: cert_path, key: key_path }
    }
}

/// What an HTTPS request got back, and the certificate the server presented.
#[derive(Debug)]
pub struct HttpsReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// DER of the server's leaf certificate.
    pub server_cert: Vec<u8>,
    pub version: Option<rustls::ProtocolVersion>,
}

impl HttpsReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// How an HTTPS client connects.
#[derive(Clone, Default)]
pub struct HttpsClient {
    /// CA certificates (PEM) the client trusts.
    pub ca_pem: String,
    /// A client certificate and key (PEM) to present.
    pub identity: Option<(String, String)>,
    /// Offer only TLS 1.2.
    pub tls12_only: bool,
    pub token: Option<String>,
}

impl HttpsClient {
    pub fn trusting(ca_pem: &str) -> HttpsClient {
        HttpsClient { ca_pem: ca_pem.to_string(), ..HttpsClient::default() }
    }

    fn config(&self) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] =
            if self.tls12_only { &[&rustls::version::TLS12] } else { &[&rustls::version::TLS13, &rustls::version::TLS12] };
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(ca.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider).with_protocol_versions(versions).map_err(|e| e.to_string())?.with_root_certificates(roots);
        match &self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| e.to_string())?;
                builder.with_client_auth_cert(chain, key).map_err(|e| e.to_string())
            }
        }
    }

    /// Sends one request over a new TLS connection to 127.0.0.1:`port`, naming the server
    /// `localhost`; any TLS or transport failure is the error.
    pub fn call(&self, port: u16, method: &str, path: &str, body: Option<&str>) -> Result<HttpsReply, String> {
        let config = Arc::new(self.config()?);
        let name = ServerName::try_from("localhost").unwrap().to_owned();
        let connection = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, tcp);
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n");
        if let Some(token) = &self.token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(body) = body {
            request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        request.push_str(body.unwrap_or(""));
        tls.write_all(request.as_bytes()).map_err(|e| format!("TLS write: {e}"))?;
        let mut raw = vec![];
        match tls.read_to_end(&mut raw) {
            Ok(_) => {}
            // The server closes without close_notify after `Connection: close` sometimes.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(e) => return Err(format!("TLS read: {e}")),
        }
        let server_cert = tls.conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
        let version = tls.conn.protocol_version();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP reply: {text:?}"))?;
        let mut lines = head.lines();
        let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad status line in {head:?}"))?;
        let headers = lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
        Ok(HttpsReply { status, headers, body: body.to_string(), server_cert, version })
    }

    pub fn get(&self, port: u16, path: &str) -> Result<HttpsReply, String> {
        self.call(port, "GET", path, None)
    }
}

/// The DER of a PEM certificate (to compare with what a server presented).
pub fn der(cert_pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("a PEM certificate").to_vec()
}
