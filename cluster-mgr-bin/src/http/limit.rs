//! Admission control of the API: at most [`MAX_IN_FLIGHT`] `/v1` requests run at once on each
//! actix worker; one more waits up to [`ADMIT_WAIT`] for a slot, then gets 503 `overloaded`
//! with `Retry-After: 1`.
//!
//! Invariant: a burst of requests queues here, bounded, instead of piling onto the metadata
//! store's shared pool without end; `/healthz`, `/metrics`, `/v1/leader` and the docs are never
//! refused by it (they stay the way to see that the daemon is loaded, not dead). The leader
//! lease does not depend on this bound: it has the store's system pool.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use tokio::sync::Semaphore;

use super::error::ApiError;

/// `/v1` requests one worker runs at once: a few times the store's default pool (8), so the
/// pool stays busy while the queue in front of it stays short.
pub const MAX_IN_FLIGHT: usize = 32;
/// How long a request waits for a slot before it is refused.
pub const ADMIT_WAIT: Duration = Duration::from_secs(2);

/// The slots of one worker (built in each worker's app factory).
#[derive(Clone)]
pub struct Limiter {
    slots: Arc<Semaphore>,
    max: usize,
}

impl Limiter {
    pub fn new(max_in_flight: usize) -> Self {
        let max = max_in_flight.max(1);
        Limiter {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

/// Paths outside admission control (the KunlunBase job API is inside it, like `/v1`).
fn exempt(path: &str) -> bool {
    (!path.starts_with("/v1/") && path != crate::emit::PATH)
        || path == "/v1/leader"
        || path == "/v1/openapi.json"
}

/// Middleware (`from_fn`): holds a slot of the worker's [`Limiter`] for the whole request.
pub async fn admit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let limiter = req.app_data::<web::Data<Limiter>>().cloned();
    let Some(limiter) = limiter.filter(|_| !exempt(req.path())) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let permit = match tokio::time::timeout(ADMIT_WAIT, limiter.slots.clone().acquire_owned()).await
    {
        Ok(Ok(p)) => p,
        // Timed out, or (never: the semaphore is not closed) closed.
        _ => {
            let e = ApiError::overloaded(format!(
                "{} requests in flight on this worker for {ADMIT_WAIT:?}; retry",
                limiter.max
            ));
            // The original's clients read every Emit answer as HTTP 200.
            let res = if req.path() == crate::emit::PATH {
                crate::emit::instant(crate::emit::codes::INVALID_REQUEST, &e.message)
            } else {
                e.error_response()
            };
            return Ok(req.into_response(res).map_into_right_body());
        }
    };
    let res = next.call(req).await;
    drop(permit);
    res.map(ServiceResponse::map_into_left_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_v1_resources_are_bounded() {
        assert!(exempt("/healthz"));
        assert!(exempt("/metrics"));
        assert!(exempt("/v1/leader"));
        assert!(exempt("/docs/index.html"));
        assert!(!exempt("/v1/machines"));
        assert!(!exempt("/v1/shards/1/switchover"));
    }
}
