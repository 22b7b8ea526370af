//! Talking to remote services and serving test doubles of them: what the judge and the
//! segmentation clients and servers share.
//!
//! - [`client`]: [`JsonService`], one JSON endpoint with the one retry loop
//!   ([`JsonService::call`]), timeouts, a concurrency limit, counters ([`ClientStats`]) and a
//!   response cache ([`cache`]); [`retry`]: [`RetryPolicy`] (backoff with jitter).
//! - [`serve`]: the HTTP/1 accept loop, JSON replies and the serve-until-Ctrl-C runner of the
//!   test servers, and the async runtime of the HTTP commands; [`faults`]: their fault
//!   injection.

pub mod cache;
pub mod client;
pub mod faults;
pub mod retry;
pub mod serve;

pub use cache::{CacheError, DirCache, MemoryCache, ResponseCache, StoreCache};
pub use client::{
    CallFailed, Called, ClientStats, ConfigError, JsonService, ServiceError, body_excerpt,
};
pub use faults::{Deliveries, FaultArgs, FaultKind, FaultPlan};
pub use retry::RetryPolicy;
