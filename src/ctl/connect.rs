//! Where failoverctl reaches the member — its unix socket, or its TCP control API with mutual
//! TLS — from the connection flags and `--config`, and the connected [`Daemon`] every
//! subcommand calls. It never retries a call: a failed call is the caller's to report.

use std::path::PathBuf;
use std::time::Duration;

use super::args::Connection;
use super::failure::{EXIT_UNREACHABLE, Failure, causes_once, from_status};
use crate::domain::{MemberId, ValidatorId};
use crate::proto::v1::control_client::ControlClient;

pub(super) type Client = ControlClient<tonic::transport::Channel>;

/// A connected member: the client, and how to name the member in a failure.
pub(super) struct Daemon {
    pub(super) client: Client,
    /// The socket path or `HOST:PORT (TLS)`.
    pub(super) at: String,
    /// The validator calls are about (`--validator`); `None`: the member's only one.
    pub(super) validator: Option<ValidatorId>,
}

/// `message` as a call about `validator` (`--validator`): the request header the member routes
/// by ([`crate::api::VALIDATOR_HEADER`]).
pub(super) fn ask<T>(validator: &Option<ValidatorId>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(v) = validator
        && let Ok(value) = v.as_str().parse()
    {
        request.metadata_mut().insert(crate::api::VALIDATOR_HEADER, value);
    }
    request
}

impl Daemon {
    /// The validators the member serves: one, `default`, for a member of an earlier version.
    pub(super) async fn validators(&mut self) -> Result<Vec<ValidatorId>, Failure> {
        match self.client.validators(crate::proto::v1::ValidatorsRequest {}).await {
            Ok(reply) => reply
                .into_inner()
                .validators
                .into_iter()
                .map(|v| {
                    ValidatorId::new(v.clone())
                        .map_err(|e| Failure::refused(format!("the member named a validator {v:?} that is no id: {e}")))
                })
                .collect(),
            Err(s) if s.code() == tonic::Code::Unimplemented => Ok(vec![ValidatorId::default_validator()]),
            Err(s) => Err(self.failure(s)),
        }
    }
}

impl Daemon {
    /// `s`, the status of a failed call, as failoverctl reports it.
    pub(super) fn failure(&self, s: tonic::Status) -> Failure {
        from_status(&self.at, s)
    }
}

/// Where failoverctl reaches the member.
pub(super) enum Target {
    Socket(PathBuf),
    Tls { address: String, member: Option<MemberId>, ca: PathBuf, cert: PathBuf, key: PathBuf },
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Socket(p) => p.display().to_string(),
            Target::Tls { address, .. } => format!("{address} (TLS)"),
        }
    }

    /// Connects, or says why not: a usage failure for unusable TLS files, unreachable otherwise.
    pub(super) async fn connect(&self, timeout: Duration) -> Result<Daemon, Failure> {
        let unreachable = |e: String| Failure {
            code: EXIT_UNREACHABLE,
            message: format!("cannot reach the daemon at {}: {e}; is failoverd running?", self.describe()),
        };
        let client = match self {
            Target::Socket(socket) => {
                crate::api::client::connect(socket, timeout).await.map_err(|e| unreachable(causes_once(&e)))?
            }
            Target::Tls { address, member, ca, cert, key } => {
                let operator =
                    crate::tls::TlsMaterial::from_files(("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key))
                        .map_err(|e| Failure::usage(e.to_string()))?;
                operator.expect_operator(cert).map_err(|e| Failure::usage(format!("--tls-cert: {e}")))?;
                crate::api::client::connect_tls(address, &operator, member.clone(), timeout)
                    .await
                    .map_err(|e| unreachable(causes_once(&e)))?
            }
        };
        Ok(Daemon { client, at: self.describe(), validator: None })
    }
}

/// The target the connection flags name: the socket unless `--address` is given.
pub(super) fn target_of(args: &Connection) -> Result<Target, Failure> {
    let Some(address) = &args.address else { return socket_of(args).map(Target::Socket) };
    // Only the CA comes from a member's config: its certificate is a member's, and the control
    // API accepts operators only.
    let config_ca = match &args.config {
        Some(path) => crate::config::Config::load(path)
            .map_err(|e| Failure::usage(format!("--config: {e}")))?
            .tls
            .map(|t| t.ca_file),
        None => None,
    };
    let required = |given: &Option<PathBuf>, flag: &str| {
        given.clone().ok_or_else(|| {
            Failure::usage(format!(
                "--address needs {flag}: the TCP control API requires an operator certificate (`failoverd tls operator NAME`)"
            ))
        })
    };
    let member = match &args.tls_member {
        None => None,
        Some(m) => Some(MemberId::new(m.clone()).map_err(|e| Failure::usage(format!("--tls-member: {e}")))?),
    };
    Ok(Target::Tls {
        address: address.clone(),
        member,
        ca: args.tls_ca.clone().or(config_ca).ok_or_else(|| {
            Failure::usage("--address needs --tls-ca (or --config with a [tls] section): the cluster's CA".to_string())
        })?,
        cert: required(&args.tls_cert, "--tls-cert")?,
        key: required(&args.tls_key, "--tls-key")?,
    })
}

fn socket_of(args: &Connection) -> Result<PathBuf, Failure> {
    if let Some(s) = &args.socket {
        return Ok(s.clone());
    }
    if let Some(path) = &args.config {
        let config = crate::config::Config::load(path).map_err(|e| Failure::usage(format!("--config: {e}")))?;
        return Ok(config.api.socket);
    }
    Ok(crate::config::defaults::api_socket())
}
