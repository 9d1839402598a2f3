//! The ingest memory budget: how much request data ingest may hold at once, from the first byte
//! read to the answer (decoding, normalization and the wait for the writer's commit included).
//! A request reserves its share before its body is read; when the budget stays spent for longer
//! than a short wait, the server is overloaded and says so (503 with Retry-After), instead of
//! reading ever more bodies into memory.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// How long a request waits for its share before being told to come back later.
const WAIT: Duration = Duration::from_millis(500);

/// Memory a request holds per byte of body: the body, its decoded form (JSON values or OTLP
/// messages), the normalized traces and their serialized form waiting for the writer. Measured
/// on the native and OTLP workloads (docs/BENCHMARKS.md, "Reliability: overload").
pub const BYTES_PER_BODY_BYTE: usize = 4;

pub struct IngestBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
}

/// A request's share of the budget, given back when dropped (after the answer).
pub struct Reservation {
    permit: OwnedSemaphorePermit,
    kib: u32,
}

impl IngestBudget {
    /// A budget of `bytes` of ingest working memory.
    pub fn new(bytes: usize) -> Self {
        let total_kib = u32::try_from((bytes / 1024).max(1)).unwrap_or(u32::MAX >> 3);
        IngestBudget { kib: Arc::new(Semaphore::new(total_kib as usize)), total_kib }
    }

    fn kib_for(&self, body_bytes: usize) -> u32 {
        let kib = body_bytes.saturating_mul(BYTES_PER_BODY_BYTE).div_ceil(1024).max(1);
        // a single request larger than the whole budget still passes, alone
        u32::try_from(kib).unwrap_or(u32::MAX).min(self.total_kib)
    }

    /// Reserves for a body of the declared length (`limit` when the length is not declared).
    /// When refused, the body is read and thrown away first, so that a client still sending sees
    /// the 503 and its Retry-After rather than a broken connection.
    pub async fn reserve(
        &self,
        headers: &HeaderMap,
        body: &mut Body,
        limit: usize,
    ) -> Result<Reservation, ApiError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .unwrap_or(limit);
        match self.reserve_bytes(declared.min(limit)).await {
            Ok(r) => Ok(r),
            Err(e) => {
                discard(body, limit).await;
                Err(e)
            }
        }
    }

    /// Reserves for a body of `bytes` (gRPC: the decoded message's encoded length).
    pub async fn reserve_bytes(&self, bytes: usize) -> Result<Reservation, ApiError> {
        let kib = self.kib_for(bytes);
        let permit = self.acquire(kib).await?;
        Ok(Reservation { permit, kib })
    }

    /// Grows a reservation to cover `bytes` of body (a gzip body, once inflated). Does not wait:
    /// the inflated body is already in memory, and holding it while waiting would defeat the
    /// bound (inflating runs on the async workers, so few such bodies exist at once).
    pub fn grow(&self, r: &mut Reservation, bytes: usize) -> Result<(), ApiError> {
        let want = self.kib_for(bytes);
        if want <= r.kib {
            return Ok(());
        }
        let more =
            Arc::clone(&self.kib).try_acquire_many_owned(want - r.kib).map_err(|_| overloaded())?;
        r.permit.merge(more);
        r.kib = want;
        Ok(())
    }

    async fn acquire(&self, kib: u32) -> Result<OwnedSemaphorePermit, ApiError> {
        match tokio::time::timeout(WAIT, Arc::clone(&self.kib).acquire_many_owned(kib)).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) | Err(_) => Err(overloaded()),
        }
    }
}

/// Reads up to `limit` bytes of a body and drops them as they come: no memory is held.
async fn discard(body: &mut Body, limit: usize) {
    use http_body_util::BodyExt;
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        seen = seen.saturating_add(frame.data_ref().map_or(0, |d| d.len()));
        if seen > limit {
            break;
        }
    }
}

pub fn overloaded() -> ApiError {
    ApiError {
        retry_after: Some(1),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "server is overloaded: ingest requests in flight hold its whole memory budget \
             (--ingest-memory-mb); retry after the Retry-After delay",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spent_budget_refuses_and_a_returned_one_accepts() {
        let b = IngestBudget::new(BYTES_PER_BODY_BYTE * 100 * 1024);
        let first = b.reserve_bytes(60 * 1024).await.unwrap();
        let e = b.reserve_bytes(60 * 1024).await.err().expect("over budget");
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.retry_after, Some(1));
        assert!(e.message.contains("overloaded"), "{}", e.message);
        drop(first);
        let mut r = b.reserve_bytes(10).await.unwrap();
        // more than the whole budget: passes alone, capped
        b.grow(&mut r, 10 * 1024 * 1024).unwrap();
        assert!(b.reserve_bytes(10).await.is_err(), "the grown reservation holds everything");
        drop(r);
        b.reserve_bytes(10).await.unwrap();
    }
}
