//! Routes each control call to the validator it is about (issue 22): one [`ControlService`] per
//! validator this member serves, picked by the request header [`VALIDATOR_HEADER`]. A member
//! with one validator takes calls without the header, as every earlier version did.
//!
//! Owns the choice of service only; it never reads the store or changes anything itself, and
//! never guesses: a name it does not serve, or no name while it serves several, is refused with
//! the names it serves.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{ControlService, EventStream};
use crate::domain::ValidatorId;
use crate::proto::v1::control_server::Control;
use crate::proto::v1::{
    DemoteRequest, EventsRequest, MembersReply, MembersRequest, PauseReply, PauseRequest, PromoteReply, PromoteRequest,
    StatusReply, StatusRequest, ValidatorsReply, ValidatorsRequest, WatermarkExportReply, WatermarkExportRequest,
    WatermarkImportReply, WatermarkImportRequest,
};

/// The request header that names the validator a call is about (`failoverctl --validator`).
pub const VALIDATOR_HEADER: &str = "failoverd-validator";

/// Every validator's control service, by id.
#[derive(Clone)]
pub struct ControlRouter {
    services: Arc<BTreeMap<ValidatorId, ControlService>>,
}

impl ControlRouter {
    pub fn new(services: impl IntoIterator<Item = (ValidatorId, ControlService)>) -> ControlRouter {
        ControlRouter { services: Arc::new(services.into_iter().collect()) }
    }

    /// The service of the validator `request` names, or of the only one.
    fn pick<T>(&self, request: &Request<T>) -> Result<&ControlService, Status> {
        service_named(&self.services, request.metadata().get(VALIDATOR_HEADER))
    }
}

/// The entry of `services` the header `named` names, or the only one without a header; a
/// refusal that names what is served otherwise. Every control call meets it first (public
/// for the fuzz target `control_request`).
pub fn service_named<'s, S>(
    services: &'s BTreeMap<ValidatorId, S>,
    named: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
) -> Result<&'s S, Status> {
    let served = || services.keys().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let Some(value) = named else {
        let mut only = services.values();
        return match (only.next(), only.next()) {
            (Some(service), None) => Ok(service),
            (None, _) => Err(Status::internal("this member serves no validator")),
            (Some(_), Some(_)) => Err(Status::invalid_argument(format!(
                "this member serves several validators ({}); name one with --validator",
                served()
            ))),
        };
    };
    let text = value.to_str().map_err(|_| {
        Status::invalid_argument(format!("the {VALIDATOR_HEADER} header is not text; name one of: {}", served()))
    })?;
    let id = ValidatorId::new(text).map_err(|e| {
        Status::invalid_argument(format!("the {VALIDATOR_HEADER} header names no valid validator: {e}"))
    })?;
    services
        .get(&id)
        .ok_or_else(|| Status::not_found(format!("this member serves no validator {id}; it serves: {}", served())))
}

#[tonic::async_trait]
impl Control for ControlRouter {
    type EventsStream = EventStream;

    async fn events(&self, request: Request<EventsRequest>) -> Result<Response<EventStream>, Status> {
        self.pick(&request)?.events(request).await
    }

    async fn promote(&self, request: Request<PromoteRequest>) -> Result<Response<PromoteReply>, Status> {
        self.pick(&request)?.promote(request).await
    }

    async fn demote(&self, request: Request<DemoteRequest>) -> Result<Response<PromoteReply>, Status> {
        self.pick(&request)?.demote(request).await
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        self.pick(&request)?.status(request).await
    }

    async fn members(&self, request: Request<MembersRequest>) -> Result<Response<MembersReply>, Status> {
        self.pick(&request)?.members(request).await
    }

    async fn pause(&self, request: Request<PauseRequest>) -> Result<Response<PauseReply>, Status> {
        self.pick(&request)?.pause(request).await
    }

    async fn resume(&self, request: Request<PauseRequest>) -> Result<Response<PauseReply>, Status> {
        self.pick(&request)?.resume(request).await
    }

    async fn watermark_export(
        &self,
        request: Request<WatermarkExportRequest>,
    ) -> Result<Response<WatermarkExportReply>, Status> {
        self.pick(&request)?.watermark_export(request).await
    }

    async fn watermark_import(
        &self,
        request: Request<WatermarkImportRequest>,
    ) -> Result<Response<WatermarkImportReply>, Status> {
        self.pick(&request)?.watermark_import(request).await
    }

    async fn validators(&self, _request: Request<ValidatorsRequest>) -> Result<Response<ValidatorsReply>, Status> {
        Ok(Response::new(ValidatorsReply { validators: self.services.keys().map(ToString::to_string).collect() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services(ids: &[&str]) -> BTreeMap<ValidatorId, String> {
        ids.iter().map(|id| (ValidatorId::new(*id).expect("id"), id.to_string())).collect()
    }

    fn header(text: &str) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
        text.parse().expect("ascii")
    }

    #[test]
    fn a_call_goes_to_the_validator_it_names_or_to_the_only_one() {
        let two = services(&["hub", "osmo"]);
        assert_eq!(service_named(&two, Some(&header("osmo"))).map(String::as_str).ok(), Some("osmo"));
        let one = services(&["default"]);
        assert_eq!(service_named(&one, None).map(String::as_str).ok(), Some("default"));
        assert_eq!(service_named(&one, Some(&header("default"))).map(String::as_str).ok(), Some("default"));
    }

    #[test]
    fn an_unknown_bad_or_missing_name_is_refused_with_what_is_served() {
        let two = services(&["hub", "osmo"]);
        let cases = [
            (Some(header("nope")), tonic::Code::NotFound, "serves no validator nope; it serves: hub, osmo"),
            (Some(header("../hub")), tonic::Code::InvalidArgument, "names no valid validator"),
            (Some(header(&"x".repeat(300))), tonic::Code::InvalidArgument, "at most 63 characters"),
            (None, tonic::Code::InvalidArgument, "several validators (hub, osmo); name one with --validator"),
        ];
        for (named, code, says) in cases {
            let refused = service_named(&two, named.as_ref()).expect_err("refused");
            assert_eq!(refused.code(), code, "{refused}");
            assert!(refused.message().contains(says), "{refused}");
        }
        // HTTP/2 carries bytes above ASCII in a header; they are no validator's name.
        let binary =
            tonic::metadata::MetadataValue::<tonic::metadata::Ascii>::try_from(&b"\xffhub"[..]).expect("bytes");
        let refused = service_named(&two, Some(&binary)).expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
        assert!(refused.message().contains("is not text; name one of: hub, osmo"), "{refused}");
    }
}
