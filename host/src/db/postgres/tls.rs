//! TLS to the PostgreSQL server, through rustls (`sslmode` and
//! `sslrootcert` of the URL; see the parent module's table).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};

/// How sessions are encrypted.
pub enum Tls {
    /// `sslmode=disable`: plain TCP (a server on loopback or a private network).
    Disable,
    /// `require` or `verify-full`: rustls, with the verifier the mode asks for.
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl Tls {
    /// The TLS of `sslmode` (`disable`, `require`, `verify-full`), trusting
    /// the CAs of the PEM file `rootcert` (else the web's roots) when verifying.
    pub fn new(sslmode: &str, rootcert: Option<&str>) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?;
        let config = match sslmode {
            "disable" => {
                if rootcert.is_some() {
                    return Err("sslrootcert is given but sslmode=disable: say sslmode=verify-full to check the server with it".into());
                }
                return Ok(Tls::Disable);
            }
            "require" => builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))).with_no_client_auth(),
            "verify-full" => {
                let mut roots = rustls::RootCertStore::empty();
                match rootcert {
                    Some(file) => {
                        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
                            .and_then(|certs| certs.collect::<Result<_, _>>())
                            .map_err(|e| format!("sslrootcert={file}: cannot read PEM certificates: {e}"))?;
                        if certs.is_empty() {
                            return Err(format!("sslrootcert={file}: no certificate in the file"));
                        }
                        for cert in certs {
                            roots.add(cert).map_err(|e| format!("sslrootcert={file}: {e}"))?;
                        }
                    }
                    None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            other => return Err(format!("sslmode={other} is not one weir knows: use disable, require or verify-full")),
        };
        Ok(Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
    }
}

/// A connection error as an operator should read it: a refused certificate
/// says what to check.
pub fn explain(e: &tokio_postgres::Error, shown: &str) -> String {
    let text = e.to_string();
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.contains("certificate") || detail.contains("Certificate") || detail.contains("NotValidForName") || detail.contains("UnknownIssuer") {
        return format!(
            "TLS refused the server's certificate ({detail}): with sslmode=verify-full the certificate must be signed by a CA of sslrootcert and name the URL's host ({shown})"
        );
    }
    if detail.is_empty() || text.contains(&detail) { text } else { format!("{text}: {detail}") }
}

/// `sslmode=require`: the session is encrypted, the certificate taken as it
/// comes (libpq's `require`: protects against sniffing, not impersonation).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
