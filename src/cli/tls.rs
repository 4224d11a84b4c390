//! `failoverd tls ca|member|operator`: a cluster's certificates, one command each, written as
//! files into a directory (by default the current one) and never over an existing file.
//!
//! Output, on stdout: one `wrote PATH` line per file, then `expires YYYY-MM-DD (N days)`, then
//! what to do with the files (a member's `[tls]` section, an operator's failoverctl flags).
//! Exit status: 0 done, 2 a bad argument (clap names it), 1 anything else (an error line on
//! stderr says what and what to do). The issuing itself is [`crate::tls`]'s.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Subcommand;

use crate::config::TlsConfig;
use crate::domain::MemberId;
use crate::tls::{
    CertificateAuthority, DEFAULT_CA_DAYS, DEFAULT_LEAF_DAYS, MAX_CA_DAYS, MAX_LEAF_DAYS, OperatorName, WrittenPair,
    date_text, member_stem, operator_stem,
};

const SECONDS_PER_DAY: u64 = 86_400;

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Create the cluster's CA: ca.pem (give it to every member and operator) and ca.key (mode
    /// 0600; whoever holds it can make members and operators, so keep it off the members).
    Ca {
        /// Where to write ca.pem and ca.key (created when missing).
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// The CA's name, in its common name "failoverd CA NAME".
        #[arg(long, value_name = "NAME", default_value = "cluster", value_parser = parse_ca_name)]
        name: String,
        /// Validity in days.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_CA_DAYS,
              value_parser = clap::value_parser!(u64).range(1..=MAX_CA_DAYS))]
        days: u64,
    },
    /// Issue member ID's certificate (failoverd://member/ID; server and client):
    /// member-ID.pem and member-ID.key (mode 0600), and print its [tls] section.
    Member {
        /// The member's id, as in the config's [[members]].
        #[arg(value_name = "ID", value_parser = parse_member_id)]
        id: MemberId,
        #[command(flatten)]
        issuer: IssuerArgs,
        /// A DNS name to add, for tools that check host names; repeat for more.
        #[arg(long = "dns", value_name = "NAME", value_parser = parse_dns_name)]
        dns: Vec<String>,
        /// An IP address to add, for tools that check host names; repeat for more.
        #[arg(long = "ip", value_name = "IP")]
        ip: Vec<IpAddr>,
        /// Validity in days.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_LEAF_DAYS,
              value_parser = clap::value_parser!(u64).range(1..=MAX_LEAF_DAYS))]
        days: u64,
    },
    /// Issue operator NAME's certificate (failoverd://operator/NAME; client only), for
    /// failoverctl over TCP: operator-NAME.pem and operator-NAME.key (mode 0600).
    Operator {
        /// The operator's name: letters, digits, '-', '_' and '.', at most 63.
        #[arg(value_name = "NAME", value_parser = parse_operator_name)]
        name: OperatorName,
        #[command(flatten)]
        issuer: IssuerArgs,
        /// Validity in days.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_LEAF_DAYS,
              value_parser = clap::value_parser!(u64).range(1..=MAX_LEAF_DAYS))]
        days: u64,
    },
}

/// Where the new files go and which CA signs them.
#[derive(Debug, clap::Args)]
pub struct IssuerArgs {
    /// Where to write the certificate and key (created when missing); also where the CA's files
    /// are looked for.
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// The CA's certificate [default: DIR/ca.pem].
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// The CA's private key, mode 0600 [default: DIR/ca.key].
    #[arg(long, value_name = "FILE")]
    ca_key: Option<PathBuf>,
}

fn parse_member_id(text: &str) -> Result<MemberId, String> {
    MemberId::new(text).map_err(|e| e.to_string())
}

fn parse_operator_name(text: &str) -> Result<OperatorName, String> {
    OperatorName::new(text).map_err(|e| e.to_string())
}

fn parse_ca_name(text: &str) -> Result<String, String> {
    crate::tls::check_ca_name(text).map(|()| text.to_string()).map_err(|e| e.to_string())
}

fn parse_dns_name(text: &str) -> Result<String, String> {
    crate::tls::check_extra_dns_name(text).map(|()| text.to_string()).map_err(|e| e.to_string())
}

/// Runs one `failoverd tls` subcommand: prints what it wrote, or one error line and exit 1.
pub fn run(command: TlsCommand) -> ExitCode {
    let done = match command {
        TlsCommand::Ca { dir, name, days } => create_ca(&dir, &name, days),
        TlsCommand::Member { id, issuer, dns, ip, days } => issue_member(&id, &issuer, &dns, &ip, days),
        TlsCommand::Operator { name, issuer, days } => issue_operator(&name, &issuer, days),
    };
    match done {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn create_ca(dir: &Path, name: &str, days: u64) -> Result<String, String> {
    let dir = absolute(dir)?;
    let ca = CertificateAuthority::create(name, days_long(days)).map_err(|e| e.to_string())?;
    let written = ca.write(&dir).map_err(|e| e.to_string())?;
    let mut report = written_lines(&written, ca.not_after());
    report.push_str(&format!(
        "next: `failoverd tls member ID` for each member and `failoverd tls operator NAME` for each operator, \
         with --dir {} (or --ca-cert and --ca-key)\n",
        shell_word(&dir)
    ));
    Ok(report)
}

fn issue_member(
    id: &MemberId,
    issuer: &IssuerArgs,
    dns: &[String],
    ips: &[IpAddr],
    days: u64,
) -> Result<String, String> {
    let (ca, ca_file, dir) = load_ca(issuer)?;
    let leaf = ca.issue_member(id, dns, ips, days_long(days)).map_err(|e| e.to_string())?;
    let written = leaf.write_pair(&dir, &member_stem(id)).map_err(|e| e.to_string())?;
    let mut report = written_lines(&written, leaf.not_after);
    let section = TlsSection { tls: TlsConfig { ca_file, cert_file: written.cert, key_file: written.key } };
    let toml = toml::to_string(&section).map_err(|e| format!("cannot print the [tls] section: {e}"))?;
    report.push_str(&format!(
        "\n# member {id}'s config (copy the three files to its host and adjust the paths if they move):\n{toml}"
    ));
    Ok(report)
}

fn issue_operator(name: &OperatorName, issuer: &IssuerArgs, days: u64) -> Result<String, String> {
    let (ca, ca_file, dir) = load_ca(issuer)?;
    let leaf = ca.issue_operator(name, days_long(days)).map_err(|e| e.to_string())?;
    let written = leaf.write_pair(&dir, &operator_stem(name)).map_err(|e| e.to_string())?;
    let mut report = written_lines(&written, leaf.not_after);
    report.push_str(&format!(
        "use: failoverctl --address MEMBER_HOST:PORT --tls-ca {} --tls-cert {} --tls-key {} status\n",
        shell_word(&ca_file),
        shell_word(&written.cert),
        shell_word(&written.key)
    ));
    Ok(report)
}

/// The CA named by `issuer`, the absolute path of its certificate, and the absolute output dir.
fn load_ca(issuer: &IssuerArgs) -> Result<(CertificateAuthority, PathBuf, PathBuf), String> {
    let dir = absolute(&issuer.dir)?;
    let cert = absolute(&issuer.ca_cert.clone().unwrap_or_else(|| dir.join("ca.pem")))?;
    let key = absolute(&issuer.ca_key.clone().unwrap_or_else(|| dir.join("ca.key")))?;
    let ca = CertificateAuthority::load(&cert, &key).map_err(|e| e.to_string())?;
    Ok((ca, cert, dir))
}

#[derive(serde::Serialize)]
struct TlsSection {
    tls: TlsConfig,
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("cannot resolve {}: {e}", path.display()))
}

fn days_long(days: u64) -> Duration {
    Duration::from_secs(days.saturating_mul(SECONDS_PER_DAY))
}

/// `wrote PATH` for each file, then the expiry date and the whole days left until it.
fn written_lines(written: &WrittenPair, not_after: SystemTime) -> String {
    let left = not_after.duration_since(SystemTime::now()).map(|d| d.as_secs()).unwrap_or(0);
    let days = match (left + SECONDS_PER_DAY / 2) / SECONDS_PER_DAY {
        1 => "1 day".to_string(),
        n => format!("{n} days"),
    };
    format!(
        "wrote {}\nwrote {} (private: mode 0600)\nexpires {} ({days})\n",
        written.cert.display(),
        written.key.display(),
        date_text(not_after)
    )
}

/// A path as one shell word, quoted only when it needs to be.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c)) {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}
