//! The key's watermark in and out (`WatermarkExport`, `WatermarkImport`). An import can only
//! raise a watermark: the store refuses anything at or below the current one (S3).

use tokio::time::Instant;
use tonic::Status;

use super::{ControlService, refuse};
use crate::domain::{Hrs, KeyId};
use crate::proto::v1::{WatermarkExportReply, WatermarkImportReply, WatermarkImportRequest};

impl ControlService {
    pub(super) async fn export_watermark(&self) -> Result<WatermarkExportReply, Status> {
        let deadline = Instant::now() + self.call_timeout;
        let w = self.coord.watermark(&self.key, deadline).await.map_err(refuse)?;
        Ok(WatermarkExportReply { key: self.key.to_string(), watermark: w.map(Into::into) })
    }

    pub(super) async fn import_watermark(&self, req: WatermarkImportRequest) -> Result<WatermarkImportReply, Status> {
        let key = KeyId::new(req.key).map_err(|e| Status::invalid_argument(format!("key: {e}")))?;
        if key != self.key {
            return Err(Status::invalid_argument(format!("key: this cluster signs with key {}, not {key}", self.key)));
        }
        let hrs = req.hrs.ok_or_else(|| Status::invalid_argument("hrs: missing"))?;
        let hrs = Hrs::try_from(hrs).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let deadline = Instant::now() + self.call_timeout;
        let w = self.coord.import_watermark(&key, hrs, deadline).await.map_err(refuse)?;
        Ok(WatermarkImportReply { key: key.to_string(), watermark: Some(w.into()) })
    }
}
