//! A throwaway certificate authority for TLS tests: a self-signed CA and server certificates it
//! signs (for `127.0.0.1` and names), as PEM. Built with OpenSSL in memory; nothing is trusted
//! system-wide.

use anyhow::{Context, Result};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509, X509NameBuilder};

/// A CA that signs server certificates.
pub struct TestCa {
    cert: X509,
    key: PKey<Private>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A server certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
}

fn new_key() -> Result<PKey<Private>> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    Ok(PKey::from_ec_key(EcKey::generate(&group)?)?)
}

fn serial() -> Result<openssl::asn1::Asn1Integer> {
    let mut bn = BigNum::new()?;
    bn.rand(64, MsbOption::MAYBE_ZERO, false)?;
    bn.to_asn1_integer().map_err(Into::into)
}

impl TestCa {
    /// A new CA named `common_name`, valid for a day.
    pub fn new(common_name: &str) -> Result<Self> {
        let key = new_key()?;
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_text("CN", common_name)?;
        let name = name.build();
        let mut b = X509::builder()?;
        b.set_version(2)?;
        let serial = serial()?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(&name)?;
        b.set_pubkey(&key)?;
        b.set_not_before(&*Asn1Time::days_from_now(0)?)?;
        b.set_not_after(&*Asn1Time::days_from_now(1)?)?;
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok(TestCa {
            cert: b.build(),
            key,
        })
    }

    /// The CA certificate, PEM (what a client must trust).
    pub fn cert_pem(&self) -> String {
        String::from_utf8(self.cert.to_pem().expect("PEM encoding")).expect("PEM is text")
    }

    /// A server certificate for `ips` and DNS `names`, signed by this CA.
    pub fn server_cert(&self, ips: &[&str], names: &[&str]) -> Result<ServerCert> {
        let key = new_key()?;
        let mut subject = X509NameBuilder::new()?;
        subject.append_entry_by_text("CN", ips.first().or(names.first()).unwrap_or(&"server"))?;
        let subject = subject.build();
        let mut b = X509::builder()?;
        b.set_version(2)?;
        let serial = serial()?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(&subject)?;
        b.set_issuer_name(self.cert.subject_name())?;
        b.set_pubkey(&key)?;
        b.set_not_before(&*Asn1Time::days_from_now(0)?)?;
        b.set_not_after(&*Asn1Time::days_from_now(1)?)?;
        let mut san = SubjectAlternativeName::new();
        for ip in ips {
            san.ip(ip);
        }
        for n in names {
            san.dns(n);
        }
        let san = san.build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(san)?;
        b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
        b.sign(&self.key, MessageDigest::sha256())
            .context("Signing the server certificate")?;
        Ok(ServerCert {
            cert_pem: String::from_utf8(b.build().to_pem()?)?,
            key_pem: String::from_utf8(key.private_key_to_pem_pkcs8()?)?,
        })
    }
}
