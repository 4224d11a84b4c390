//! The words of docs/design.md §2 as plain data: member ids, epochs, HRS, watermarks, lease views,
//! member status and monotonic time, and the watermark interchange format ([`interchange`]).
//!
//! Everything here is a value type with no I/O beyond reading the monotonic clock in
//! [`MonoTime::now`]. The ordering rules that safety depends on (HRS order, watermark advance)
//! live here so that every backend and adapter shares one definition of them.

mod hrs;
pub mod interchange;
mod lease;
mod member;
pub mod rfc3339;
mod status;
mod time;
mod watermark;

pub use hrs::{Hrs, Step, StepParseError};
pub use lease::{Epoch, Lease, LeaseView};
pub use member::{DEFAULT_VALIDATOR, KeyId, MemberId, MemberIdError, MemberKind, ValidatorId};
pub use status::{MemberStatus, RoleName};
pub use time::MonoTime;
pub use watermark::{IMPORT_HEIGHT_CEILING, Watermark, WatermarkRefusal, check_import_height};
