//! Making a cluster's certificates: its own CA, one certificate per member and one per operator,
//! written as PEM files (what `failoverd tls …` does, and what tests and the demo do in-process).
//!
//! Every certificate names exactly one identity, as the one URI SAN of [`super::identity`]'s two
//! namespaces. A member's certificate is for both ends of a TLS connection (serverAuth and
//! clientAuth); an operator's is for clients only, so it can never serve the peer port, and
//! neither can pass for the other because the namespace is part of the signed name. The CA may
//! sign leaves only (path length 0). Keys are ECDSA P-256, serial numbers random, and every
//! certificate starts an hour in the past so that a member whose clock lags still accepts it.
//!
//! This module never overwrites a file, never lets a private key file be readable by anyone but
//! its owner (not even for an instant), and never signs with a CA key that group or others can
//! read. It decides nothing about what an identity may do: the peer service and the control
//! API do.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use ring::rand::SecureRandom;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;

use super::identity::{OperatorName, member_uri, operator_uri};
use crate::domain::MemberId;
use crate::domain::rfc3339::format_unix_nanos;

/// The longest a CA may be valid: 100 years.
pub const MAX_CA_DAYS: u64 = 36_500;
/// The longest a member's or operator's certificate may be valid: 10 years.
pub const MAX_LEAF_DAYS: u64 = 3_650;
/// `failoverd tls ca`'s default validity: 10 years.
pub const DEFAULT_CA_DAYS: u64 = 3_650;
/// `failoverd tls member|operator`'s default validity: 1 year.
pub const DEFAULT_LEAF_DAYS: u64 = 365;
/// The CA's file stem: `ca.pem` and `ca.key`.
pub const CA_STEM: &str = "ca";

/// How far in the past a certificate starts, for members whose clocks lag the issuer's.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);
const SECONDS_PER_DAY: u64 = 86_400;
/// Every CA's common name starts so; X.520 allows 64 characters in all.
const CA_CN_PREFIX: &str = "failoverd CA ";
const MAX_CN: usize = 64;
/// Where a name may not appear in an extra DNS name: it would look like an identity.
const RESERVED_IN_DNS: &str = "failoverd";

/// Why a certificate could not be made, loaded or written. Each message says what went wrong, with
/// which name or file, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("CA name {name:?} is refused: {reason}")]
    CaName { name: String, reason: String },
    #[error(
        "{subject}: a validity of {} is refused; give at least 1 second and at most {max_days} days",
        duration_text(*seconds)
    )]
    Validity { subject: String, seconds: u64, max_days: u64 },
    #[error(
        "{subject}: the certificate would expire on {not_after}, after its CA does ({ca_not_after}); \
         issue it for at most {max_days} days (--days), or create a new CA with `failoverd tls ca` and issue every certificate again"
    )]
    OutlivesCa { subject: String, not_after: String, ca_not_after: String, max_days: u64 },
    #[error(
        "the CA expired on {ca_not_after}; create a new CA with `failoverd tls ca` and issue every member's and operator's certificate again"
    )]
    CaExpired { ca_not_after: String },
    #[error("extra DNS name {name:?} is refused: {reason}")]
    DnsName { name: String, reason: String },
    #[error("cannot sign the certificate for {subject}: {source}")]
    Sign { subject: String, source: rcgen::Error },
    #[error("cannot read {what} {}: {source}; create a CA with `failoverd tls ca`, or name its files with --ca-cert and --ca-key", path.display())]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("the CA key {} is readable by group or others (mode {mode:04o}); a CA key must be private: run chmod 600 {}", path.display(), path.display())]
    KeyTooOpen { path: PathBuf, mode: u32 },
    #[error("{} is not a PEM certificate ({reason}); give the CA's certificate, ca.pem", path.display())]
    NotACertificate { path: PathBuf, reason: String },
    #[error("{} is not a CA certificate: its basic constraints do not allow signing certificates; give the CA's certificate, ca.pem", path.display())]
    NotACa { path: PathBuf },
    #[error("{} is not a usable private key ({reason}); give the CA's key, ca.key", path.display())]
    NotAKey { path: PathBuf, reason: String },
    #[error("the CA key {} does not belong to the CA certificate {}; give the key that was made with that certificate", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{} already exists and is left as it is; remove it to replace it, or write to another directory (--dir)", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {source}; check that the directory is writable", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{0:?} is not a file name stem: expected one non-empty name without '/'")]
    Stem(String),
    #[error("cannot {what}: {reason}")]
    System { what: &'static str, reason: String },
}

/// A CA that issues a cluster's certificates: its certificate and its signing key.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: Vec<u8>,
    not_after: SystemTime,
}

impl fmt::Debug for CertificateAuthority {
    /// Never shows the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority").field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

/// A member's or operator's certificate and private key, both PEM.
pub struct Leaf {
    pub cert_pem: String,
    /// The same certificate, DER: what a TLS handshake carries and [`super::identity_of`] reads.
    pub cert_der: Vec<u8>,
    pub key_pem: String,
    /// The end of the validity window, to the second, as written in the certificate.
    pub not_after: SystemTime,
}

impl fmt::Debug for Leaf {
    /// Never shows the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaf").field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

/// The two files [`Leaf::write_pair`] or [`CertificateAuthority::write`] created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenPair {
    /// `<stem>.pem`, mode 0644.
    pub cert: PathBuf,
    /// `<stem>.key`, mode 0600.
    pub key: PathBuf,
}

/// The file stem of member `id`'s certificate and key: `member-<id>`.
pub fn member_stem(id: &MemberId) -> String {
    format!("member-{id}")
}

/// The file stem of operator `name`'s certificate and key: `operator-<name>`.
pub fn operator_stem(name: &OperatorName) -> String {
    format!("operator-{name}")
}

impl CertificateAuthority {
    /// A new self-signed CA named `failoverd CA <name>`, valid from an hour ago for `valid_for`
    /// (at most [`MAX_CA_DAYS`]). It may sign certificates and CRLs, and no other CA.
    pub fn create(name: &str, valid_for: Duration) -> Result<CertificateAuthority, IssueError> {
        check_ca_name(name)?;
        let subject = format!("{CA_CN_PREFIX}{name}");
        let window = Window::from_now(&subject, valid_for, MAX_CA_DAYS)?;
        let key = new_key(&subject)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(&subject);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial()?);
        params.not_before = window.not_before;
        params.not_after = window.not_after;
        let cert = params.self_signed(&key).map_err(|source| IssueError::Sign { subject, source })?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            not_after: window.not_after_system,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA in `cert_path` (PEM) with its key in `key_path` (PEM, PKCS#8). Refuses a key file
    /// that group or others can read, a certificate that is not a CA, and a key that is not the
    /// certificate's.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<CertificateAuthority, IssueError> {
        let cert_pem = File::open(cert_path).and_then(read_small).map_err(|source| IssueError::Read {
            what: "the CA certificate",
            path: cert_path.to_path_buf(),
            source,
        })?;
        let key_pem = read_private(key_path)?;
        let not_a_cert = |reason: String| IssueError::NotACertificate { path: cert_path.to_path_buf(), reason };
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| not_a_cert(e.to_string()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der).map_err(|e| not_a_cert(e.to_string()))?;
        let is_ca = matches!(parsed.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        if !is_ca {
            return Err(IssueError::NotACa { path: cert_path.to_path_buf() });
        }
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| IssueError::NotAKey { path: key_path.to_path_buf(), reason: e.to_string() })?;
        if key.public_key_raw() != parsed.public_key().subject_public_key.data.as_ref() {
            return Err(IssueError::KeyMismatch { cert: cert_path.to_path_buf(), key: key_path.to_path_buf() });
        }
        let not_after = UNIX_EPOCH + Duration::from_secs(parsed.validity().not_after.timestamp().max(0).unsigned_abs());
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| not_a_cert(e.to_string()))?;
        Ok(CertificateAuthority { issuer, cert_pem, cert_der: cert_der.to_vec(), not_after })
    }

    /// The CA's certificate, PEM: what every member and operator trusts (`ca_file`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Writes `ca.pem` (0644) and `ca.key` (0600) into `dir`, creating `dir` when missing and
    /// refusing to overwrite either file.
    pub fn write(&self, dir: &Path) -> Result<WrittenPair, IssueError> {
        write_pem_pair(dir, CA_STEM, &self.cert_pem, &self.issuer.key().serialize_pem())
    }

    /// A certificate for member `id`: URI SAN `failoverd://member/<id>`, for serverAuth and
    /// clientAuth, plus `extra_dns` and `extra_ips` as SANs for tools that check host names.
    pub fn issue_member(
        &self,
        id: &MemberId,
        extra_dns: &[String],
        extra_ips: &[IpAddr],
        valid_for: Duration,
    ) -> Result<Leaf, IssueError> {
        let mut sans = vec![uri_san(member_uri(id))?];
        for name in extra_dns {
            check_extra_dns_name(name)?;
            sans.push(SanType::DnsName(ia5(name, |reason| IssueError::DnsName { name: name.clone(), reason })?));
        }
        sans.extend(extra_ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let ekus = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(format!("member {id}"), sans, ekus, valid_for)
    }

    /// A certificate for operator `name`: URI SAN `failoverd://operator/<name>` and nothing else,
    /// for clientAuth only.
    pub fn issue_operator(&self, name: &OperatorName, valid_for: Duration) -> Result<Leaf, IssueError> {
        let sans = vec![uri_san(operator_uri(name))?];
        self.issue(format!("operator {name}"), sans, vec![ExtendedKeyUsagePurpose::ClientAuth], valid_for)
    }

    fn issue(
        &self,
        subject: String,
        sans: Vec<SanType>,
        ekus: Vec<ExtendedKeyUsagePurpose>,
        valid_for: Duration,
    ) -> Result<Leaf, IssueError> {
        let window = Window::from_now(&subject, valid_for, MAX_LEAF_DAYS)?;
        self.check_outlived_by(&subject, &window)?;
        let key = new_key(&subject)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(&subject);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = ekus;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        params.not_before = window.not_before;
        params.not_after = window.not_after;
        let cert = params.signed_by(&key, &self.issuer).map_err(|source| IssueError::Sign { subject, source })?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            not_after: window.not_after_system,
        })
    }

    /// Refuses a certificate that would still be valid when its CA no longer is: it would stop
    /// verifying earlier than its printed expiry says.
    fn check_outlived_by(&self, subject: &str, window: &Window) -> Result<(), IssueError> {
        if window.not_after_system <= self.not_after {
            return Ok(());
        }
        let ca_not_after = date_text(self.not_after);
        let left = self
            .not_after
            .duration_since(window.now)
            .map_err(|_| IssueError::CaExpired { ca_not_after: ca_not_after.clone() })?;
        Err(IssueError::OutlivesCa {
            subject: subject.to_string(),
            not_after: date_text(window.not_after_system),
            ca_not_after,
            max_days: left.as_secs() / SECONDS_PER_DAY,
        })
    }
}

impl Leaf {
    /// Writes `<stem>.pem` (0644) and `<stem>.key` (0600) into `dir`, creating `dir` when
    /// missing and refusing to overwrite either file.
    pub fn write_pair(&self, dir: &Path, stem: &str) -> Result<WrittenPair, IssueError> {
        write_pem_pair(dir, stem, &self.cert_pem, &self.key_pem)
    }
}

/// Checks a CA's name: the text after `failoverd CA ` in its common name.
pub fn check_ca_name(name: &str) -> Result<(), IssueError> {
    let refuse = |reason: String| Err(IssueError::CaName { name: name.to_string(), reason });
    let longest = MAX_CN - CA_CN_PREFIX.len();
    if name.trim().is_empty() {
        return refuse("it must not be empty".into());
    }
    if name.trim() != name {
        return refuse("it must not start or end with a space".into());
    }
    if name.chars().count() > longest {
        return refuse(format!(
            "it has {} characters; at most {longest} fit in a certificate's name",
            name.chars().count()
        ));
    }
    match name.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) {
        Some(c) => refuse(format!("it may contain only printable ASCII; found {c:?}")),
        None => Ok(()),
    }
}

/// Checks a DNS name to add to a member's certificate: a valid host name that cannot be mistaken
/// for a failoverd identity.
pub fn check_extra_dns_name(name: &str) -> Result<(), IssueError> {
    let refuse = |reason: &str| Err(IssueError::DnsName { name: name.to_string(), reason: reason.to_string() });
    if name.to_ascii_lowercase().contains(RESERVED_IN_DNS) {
        return refuse(
            "a DNS name containing \"failoverd\" could be mistaken for an identity; \
             the identity is the failoverd:// URI that failoverd writes itself",
        );
    }
    if name.parse::<IpAddr>().is_ok() {
        return refuse("it is an IP address; give it with --ip");
    }
    match rustls::pki_types::DnsName::try_from(name) {
        Ok(_) => Ok(()),
        Err(_) => refuse("it is not a valid DNS name (letters, digits, '-' and '.', labels of 1 to 63 characters)"),
    }
}

/// The UTC calendar date of `at`, `YYYY-MM-DD`, as `failoverd tls` prints expiry dates.
pub fn date_text(at: SystemTime) -> String {
    let nanos = match at.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    };
    format_unix_nanos(nanos).chars().take(10).collect()
}

fn duration_text(seconds: u64) -> String {
    if seconds.is_multiple_of(SECONDS_PER_DAY) {
        format!("{} days", seconds / SECONDS_PER_DAY)
    } else {
        format!("{seconds} s")
    }
}

/// A validity window starting [`CLOCK_SKEW`] before now, to whole seconds as X.509 writes it.
struct Window {
    now: SystemTime,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    not_after_system: SystemTime,
}

impl Window {
    fn from_now(subject: &str, valid_for: Duration, max_days: u64) -> Result<Window, IssueError> {
        let seconds = valid_for.as_secs();
        if seconds == 0 || seconds > max_days * SECONDS_PER_DAY {
            return Err(IssueError::Validity { subject: subject.to_string(), seconds, max_days });
        }
        let clock = |reason: String| IssueError::System { what: "read the system clock", reason };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| clock(e.to_string()))?.as_secs();
        let at = |secs: u64| {
            let signed = i64::try_from(secs).map_err(|e| clock(e.to_string()))?;
            OffsetDateTime::from_unix_timestamp(signed).map_err(|e| clock(e.to_string()))
        };
        Ok(Window {
            now: UNIX_EPOCH + Duration::from_secs(now),
            not_before: at(now.saturating_sub(CLOCK_SKEW.as_secs()))?,
            not_after: at(now + seconds)?,
            not_after_system: UNIX_EPOCH + Duration::from_secs(now + seconds),
        })
    }
}

fn new_key(subject: &str) -> Result<KeyPair, IssueError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|source| IssueError::Sign { subject: subject.to_string(), source })
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    name
}

/// 16 random bytes, positive and of fixed length (top bit clear, next bit set): 126 random bits,
/// well above the 64 that make serial numbers unpredictable.
fn random_serial() -> Result<SerialNumber, IssueError> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| IssueError::System {
        what: "draw a random serial number",
        reason: "the system's random source failed".into(),
    })?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn uri_san(uri: String) -> Result<SanType, IssueError> {
    let reason = format!("{uri:?} is not ASCII");
    rcgen::string::Ia5String::try_from(uri)
        .map(SanType::URI)
        .map_err(|_| IssueError::System { what: "name the identity", reason })
}

fn ia5(text: &str, refuse: impl FnOnce(String) -> IssueError) -> Result<rcgen::string::Ia5String, IssueError> {
    rcgen::string::Ia5String::try_from(text).map_err(|e| refuse(e.to_string()))
}

/// Reads a private key file, refusing one that group or others can read. Its mode is checked on
/// the open file, so the file checked is the file read.
fn read_private(path: &Path) -> Result<String, IssueError> {
    let unreadable = |source| IssueError::Read { what: "the CA key", path: path.to_path_buf(), source };
    let file = File::open(path).map_err(unreadable)?;
    let mode = file.metadata().map_err(unreadable)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IssueError::KeyTooOpen { path: path.to_path_buf(), mode });
    }
    read_small(file).map_err(unreadable)
}

/// The largest CA certificate or key file read: a PEM one is a few KiB.
const MAX_PEM_BYTES: u64 = 64 * 1024;

/// Reads a regular file of at most [`MAX_PEM_BYTES`] as text: a FIFO, a device or a huge file
/// named by mistake is refused instead of hanging or filling memory.
fn read_small(file: File) -> std::io::Result<String> {
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut text = String::new();
    file.take(MAX_PEM_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_PEM_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_PEM_BYTES} bytes; a PEM certificate or key is a few KiB"),
        ));
    }
    Ok(text)
}

/// Writes `<stem>.key` then `<stem>.pem` into `dir`; neither may exist. When the second cannot
/// be written the first is removed, so a failure leaves nothing behind.
fn write_pem_pair(dir: &Path, stem: &str, cert_pem: &str, key_pem: &str) -> Result<WrittenPair, IssueError> {
    if stem.is_empty() || Path::new(stem).file_name() != Some(stem.as_ref()) {
        return Err(IssueError::Stem(stem.to_string()));
    }
    let pair = WrittenPair { cert: dir.join(format!("{stem}.pem")), key: dir.join(format!("{stem}.key")) };
    for path in [&pair.cert, &pair.key] {
        // symlink_metadata: a dangling link counts as existing, as create_new would find it.
        if path.symlink_metadata().is_ok() {
            return Err(IssueError::Exists(path.clone()));
        }
    }
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| IssueError::Write { path: dir.to_path_buf(), source })?;
    }
    write_new(&pair.key, key_pem, 0o600)?;
    if let Err(e) = write_new(&pair.cert, cert_pem, 0o644) {
        let _ = std::fs::remove_file(&pair.key);
        return Err(e);
    }
    if let Ok(d) = File::open(dir) {
        // Best effort: the files are complete and synced; this makes their names durable too.
        let _ = d.sync_all();
    }
    Ok(pair)
}

/// Creates `path` with `mode` from the start (never briefly more open), writes and syncs it.
/// A partly written file is removed.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), IssueError> {
    let failed = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::AlreadyExists => IssueError::Exists(path.to_path_buf()),
        _ => IssueError::Write { path: path.to_path_buf(), source },
    };
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(failed)?;
    // The umask may have narrowed the mode; a certificate is meant to be world-readable.
    let written = file
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_all());
    if let Err(source) = written {
        let _ = std::fs::remove_file(path);
        return Err(IssueError::Write { path: path.to_path_buf(), source });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::server::WebPkiClientVerifier;
    use x509_parser::certificate::X509Certificate;
    use x509_parser::extensions::GeneralName;

    use super::*;
    use crate::tls::{PeerIdentity, identity_of};

    const DAY: Duration = Duration::from_secs(SECONDS_PER_DAY);

    fn member(s: &str) -> MemberId {
        MemberId::new(s).expect("member id")
    }

    fn operator(s: &str) -> OperatorName {
        OperatorName::new(s).expect("operator name")
    }

    fn ca() -> CertificateAuthority {
        CertificateAuthority::create("test", 30 * DAY).expect("CA")
    }

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        x509_parser::parse_x509_certificate(der).expect("X.509").1
    }

    fn unix_now() -> i64 {
        i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()).expect("i64")
    }

    fn common_name_of(cert: &X509Certificate<'_>) -> String {
        cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).expect("a common name").to_string()
    }

    /// The certificate's SANs as text: `uri:…`, `dns:…`, `ip:…`.
    fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
        let ext = cert.subject_alternative_name().expect("SAN parses").expect("a SAN extension");
        ext.value
            .general_names
            .iter()
            .map(|name| match name {
                GeneralName::URI(u) => format!("uri:{u}"),
                GeneralName::DNSName(d) => format!("dns:{d}"),
                GeneralName::IPAddress(b) => match <[u8; 4]>::try_from(*b) {
                    Ok(v4) => format!("ip:{}", IpAddr::from(v4)),
                    Err(_) => format!("ip:{}", IpAddr::from(<[u8; 16]>::try_from(*b).expect("16-byte IP"))),
                },
                other => format!("other:{other}"),
            })
            .collect()
    }

    /// (serverAuth, clientAuth), asserting that no other purpose is present.
    fn purposes(cert: &X509Certificate<'_>) -> (bool, bool) {
        let eku = cert.extended_key_usage().expect("EKU parses").expect("an EKU extension").value;
        assert!(
            !eku.any && !eku.code_signing && !eku.email_protection && !eku.time_stamping && !eku.ocsp_signing,
            "unexpected purposes"
        );
        assert!(eku.other.is_empty(), "unexpected purposes");
        (eku.server_auth, eku.client_auth)
    }

    fn verifies_as_client(ca: &CertificateAuthority, leaf_der: &[u8]) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.cert_der().to_vec())).expect("CA is a trust anchor");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().expect("verifier");
        let leaf = CertificateDer::from(leaf_der.to_vec());
        verifier.verify_client_cert(&leaf, &[], rustls::pki_types::UnixTime::now()).map(|_| ())
    }

    #[test]
    fn a_ca_signs_leaves_only_and_names_itself() {
        let ca = CertificateAuthority::create("prod eu", 10 * DAY).expect("CA");
        let cert = parse(ca.cert_der());
        assert_eq!(common_name_of(&cert), "failoverd CA prod eu");
        assert_eq!(cert.subject().as_raw(), cert.issuer().as_raw(), "self-signed");
        let bc = cert.basic_constraints().expect("parses").expect("basic constraints").value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0), "a CA that may sign no other CA");
        let ku = cert.key_usage().expect("parses").expect("key usage").value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert!(!ku.digital_signature(), "the CA signs certificates, not handshakes");
        assert_eq!(
            cert.public_key().algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()),
            Some(x509_parser::oid_registry::OID_EC_P256),
            "ECDSA P-256"
        );
    }

    #[test]
    fn validity_starts_an_hour_ago_and_ends_after_the_time_asked() {
        let ca = ca();
        let leaf = ca.issue_operator(&operator("alice"), 7 * DAY).expect("leaf");
        let now = unix_now();
        for (der, valid_for, not_after) in
            [(ca.cert_der(), 30 * DAY, ca.not_after()), (leaf.cert_der.as_slice(), 7 * DAY, leaf.not_after)]
        {
            let validity = parse(der).validity().clone();
            let starts = validity.not_before.timestamp();
            let ends = validity.not_after.timestamp();
            assert!((now - 3600 - 5..=now - 3600).contains(&starts), "not_before {starts}, now {now}");
            let asked = i64::try_from(valid_for.as_secs()).expect("i64");
            assert!((now + asked - 5..=now + asked).contains(&ends), "not_after {ends}, now {now}");
            let reported = i64::try_from(not_after.duration_since(UNIX_EPOCH).expect("after 1970").as_secs());
            assert_eq!(reported, Ok(ends), "the not_after reported is the one written");
        }
    }

    #[test]
    fn a_member_certificate_names_its_member_for_server_and_client_auth() {
        let ca = ca();
        let ips: Vec<IpAddr> = vec!["10.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")];
        let leaf = ca.issue_member(&member("eu-1"), &["eu-1.example.net".into()], &ips, DAY).expect("leaf");
        let cert = parse(&leaf.cert_der);
        assert_eq!(common_name_of(&cert), "member eu-1");
        assert_eq!(sans(&cert), ["uri:failoverd://member/eu-1", "dns:eu-1.example.net", "ip:10.0.0.1", "ip:::1"]);
        assert_eq!(purposes(&cert), (true, true));
        assert!(!cert.basic_constraints().expect("parses").expect("basic constraints").value.ca);
        assert_eq!(identity_of(&leaf.cert_der), Ok(PeerIdentity::Member(member("eu-1"))));
        assert_eq!(verifies_as_client(&ca, &leaf.cert_der), Ok(()));
    }

    #[test]
    fn an_operator_certificate_names_only_its_operator_for_client_auth_only() {
        let ca = ca();
        let leaf = ca.issue_operator(&operator("alice"), DAY).expect("leaf");
        let cert = parse(&leaf.cert_der);
        assert_eq!(common_name_of(&cert), "operator alice");
        assert_eq!(sans(&cert), ["uri:failoverd://operator/alice"]);
        assert_eq!(purposes(&cert), (false, true));
        assert_eq!(identity_of(&leaf.cert_der), Ok(PeerIdentity::Operator(operator("alice"))));
    }

    #[test]
    fn serial_numbers_are_random_positive_and_16_bytes() {
        let ca = ca();
        let serials: Vec<Vec<u8>> = (0..4)
            .map(|_| {
                let leaf = ca.issue_operator(&operator("alice"), DAY).expect("leaf");
                parse(&leaf.cert_der).raw_serial().to_vec()
            })
            .collect();
        for (i, serial) in serials.iter().enumerate() {
            assert_eq!(serial.len(), 16);
            assert_eq!(serial[0] & 0xc0, 0x40, "positive, no leading zero");
            assert!(!serials[..i].contains(serial), "serial repeated");
        }
    }

    #[test]
    fn a_validity_of_zero_or_above_the_bound_is_refused_naming_the_subject() {
        let too_long_ca = Duration::from_secs((MAX_CA_DAYS + 1) * SECONDS_PER_DAY);
        let e = CertificateAuthority::create("x", too_long_ca).expect_err("too long");
        assert!(e.to_string().contains("failoverd CA x") && e.to_string().contains("36500 days"), "{e}");
        let ca = CertificateAuthority::create("x", Duration::from_secs(MAX_CA_DAYS * SECONDS_PER_DAY)).expect("CA");
        let cases = [Duration::ZERO, Duration::from_millis(999), DAY * u32::try_from(MAX_LEAF_DAYS + 1).expect("u32")];
        for valid_for in cases {
            let e = ca.issue_operator(&operator("bob"), valid_for).expect_err("refused");
            assert!(matches!(e, IssueError::Validity { .. }), "{valid_for:?}: {e}");
            assert!(e.to_string().contains("operator bob"), "{e}");
        }
        assert!(ca.issue_operator(&operator("bob"), DAY * u32::try_from(MAX_LEAF_DAYS).expect("u32")).is_ok());
    }

    #[test]
    fn a_certificate_that_would_outlive_its_ca_is_refused_saying_how_long_it_may_be() {
        let ca = CertificateAuthority::create("short", 10 * DAY).expect("CA");
        let e = ca.issue_member(&member("a"), &[], &[], 30 * DAY).expect_err("outlives the CA");
        match &e {
            IssueError::OutlivesCa { subject, max_days, .. } => {
                assert_eq!(subject, "member a");
                assert!((9..=10).contains(max_days), "{e}");
            }
            other => panic!("expected OutlivesCa, got {other}"),
        }
        assert!(ca.issue_member(&member("a"), &[], &[], 9 * DAY).is_ok());
    }

    #[test]
    fn extra_dns_names_must_be_host_names_that_do_not_mention_failoverd() {
        let cases: &[(&str, Option<&str>)] = &[
            ("a.example.net", None),
            ("localhost", None),
            ("member.failoverd.example", Some("could be mistaken for an identity")),
            ("FailoverD-a", Some("could be mistaken for an identity")),
            ("10.0.0.1", Some("give it with --ip")),
            ("a b", Some("not a valid DNS name")),
            ("", Some("not a valid DNS name")),
            ("é.example", Some("not a valid DNS name")),
        ];
        let ca = ca();
        for (name, refusal) in cases {
            let got = ca.issue_member(&member("a"), &[name.to_string()], &[], DAY);
            match (refusal, got) {
                (None, Ok(_)) => {}
                (Some(fragment), Err(e)) => {
                    assert!(matches!(e, IssueError::DnsName { .. }), "{name:?}: {e}");
                    assert!(e.to_string().contains(fragment) && e.to_string().contains(name), "{name:?}: {e}");
                }
                (_, got) => panic!("{name:?}: expected {refusal:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn ca_names_must_be_printable_and_fit_in_the_certificate() {
        for ok in ["prod", "Acme prod eu-1", &"x".repeat(51)] {
            assert!(check_ca_name(ok).is_ok(), "{ok:?}");
        }
        for (bad, fragment) in [
            ("", "must not be empty"),
            (" prod", "start or end with a space"),
            (&"x".repeat(52) as &str, "at most 51"),
            ("prod\n", "start or end with a space"),
            ("pr\tod", "printable ASCII"),
            ("prød", "printable ASCII"),
        ] {
            let e = check_ca_name(bad).expect_err(bad);
            assert!(e.to_string().contains(fragment), "{bad:?}: {e}");
        }
    }

    #[test]
    fn writing_a_pair_makes_the_key_private_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sub = dir.path().join("new").join("tls");
        let leaf = ca().issue_operator(&operator("alice"), DAY).expect("leaf");
        let written = leaf.write_pair(&sub, "operator-alice").expect("written");
        assert_eq!(written.cert, sub.join("operator-alice.pem"));
        assert_eq!(written.key, sub.join("operator-alice.key"));
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&written.cert), 0o644);
        assert_eq!(mode(&written.key), 0o600);
        assert_eq!(std::fs::read_to_string(&written.key).expect("key"), leaf.key_pem);

        let other = ca().issue_operator(&operator("alice"), DAY).expect("leaf");
        let e = other.write_pair(&sub, "operator-alice").expect_err("exists");
        assert!(matches!(&e, IssueError::Exists(p) if p == &written.cert), "{e}");
        assert!(e.to_string().contains("remove it") && e.to_string().contains("--dir"), "{e}");
        assert_eq!(std::fs::read_to_string(&written.cert).expect("cert"), leaf.cert_pem, "unchanged");

        std::fs::remove_file(&written.cert).expect("remove the certificate only");
        let e = other.write_pair(&sub, "operator-alice").expect_err("the key exists");
        assert!(matches!(&e, IssueError::Exists(p) if p == &written.key), "{e}");
        assert!(!written.cert.exists(), "nothing written when one file exists");

        for stem in ["", "../x", "a/b", ".."] {
            assert!(matches!(leaf.write_pair(&sub, stem), Err(IssueError::Stem(_))), "{stem:?}");
        }
    }

    #[test]
    fn a_loaded_ca_issues_certificates_that_verify_against_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let created = ca();
        let files = created.write(dir.path()).expect("written");
        assert_eq!(files.cert, dir.path().join("ca.pem"));
        let loaded = CertificateAuthority::load(&files.cert, &files.key).expect("loads");
        assert_eq!(loaded.cert_der(), created.cert_der());
        assert_eq!(loaded.not_after(), created.not_after());
        let leaf = loaded.issue_operator(&operator("alice"), DAY).expect("leaf");
        assert_eq!(verifies_as_client(&created, &leaf.cert_der), Ok(()));
        let stranger = ca().issue_operator(&operator("alice"), DAY).expect("leaf");
        assert!(verifies_as_client(&created, &stranger.cert_der).is_err(), "another CA's certificate");
    }

    #[test]
    fn loading_refuses_an_open_key_a_foreign_key_and_a_leaf() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = ca().write(&dir.path().join("one")).expect("written");
        let other = ca().write(&dir.path().join("two")).expect("written");

        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let e = CertificateAuthority::load(&files.cert, &files.key).expect_err("open key");
        let shown = files.key.display().to_string();
        assert!(e.to_string().contains(&format!("chmod 600 {shown}")) && e.to_string().contains("0640"), "{e}");
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).expect("chmod");

        let e = CertificateAuthority::load(&files.cert, &other.key).expect_err("foreign key");
        assert!(matches!(e, IssueError::KeyMismatch { .. }), "{e}");

        let leaf = CertificateAuthority::load(&files.cert, &files.key)
            .expect("loads")
            .issue_operator(&operator("alice"), DAY)
            .expect("leaf")
            .write_pair(dir.path(), "operator-alice")
            .expect("written");
        let e = CertificateAuthority::load(&leaf.cert, &leaf.key).expect_err("a leaf is not a CA");
        assert!(matches!(e, IssueError::NotACa { .. }), "{e}");

        let e = CertificateAuthority::load(&dir.path().join("missing.pem"), &files.key).expect_err("missing");
        assert!(e.to_string().contains("missing.pem") && e.to_string().contains("failoverd tls ca"), "{e}");
        let e = CertificateAuthority::load(&files.key, &files.key).expect_err("a key is not a certificate");
        assert!(matches!(e, IssueError::NotACertificate { .. }), "{e}");
        // A device or an oversized file named by mistake is refused, not read without end.
        let e = CertificateAuthority::load(Path::new("/dev/zero"), &files.key).expect_err("a device");
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let huge = dir.path().join("huge.pem");
        std::fs::write(&huge, vec![b'A'; 65 * 1024]).expect("write");
        let e = CertificateAuthority::load(&huge, &files.key).expect_err("oversized");
        assert!(e.to_string().contains("larger than 65536 bytes"), "{e}");
    }
}
