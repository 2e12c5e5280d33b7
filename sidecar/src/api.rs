//! HTTP layer: routes, request parsing with bounded bodies, and the mapping of store
//! results to JSON answers. Generic over [`Store`], so it never knows which store runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::model::{
    CounterView, EventCounts, MAX_FEED, MINUTE_MS, PlanBody, PreparedBatch, PurgeBody, Rollup,
    SyncRequest, SyncResponse, UsageResponse, check_name,
};
use crate::store::{Store, StoreError};
use crate::timefmt::parse_time_ms;

/// Body bounds: a full sync batch (20k events of ~300 bytes) fits in 8 MiB.
pub const SYNC_BODY_LIMIT: usize = 8 << 20;
pub const ADMIN_BODY_LIMIT: usize = 64 << 10;
/// Longest span one usage query may cover.
pub const MAX_USAGE_SPAN_MS: u64 = 31 * 24 * 60 * MINUTE_MS;

pub struct App<S> {
    pub store: S,
    pub retention_ms: u64,
    pub metrics: Metrics,
}

impl<S: Store> App<S> {
    pub fn new(store: S, retention_days: u32) -> Self {
        Self {
            store,
            retention_ms: u64::from(retention_days) * 24 * 60 * MINUTE_MS,
            metrics: Metrics::default(),
        }
    }

    fn store_err(&self, e: StoreError) -> ApiError {
        Metrics::inc(&self.metrics.store_errors, 1);
        tracing::warn!(error = %e, "store operation failed");
        ApiError::from(e)
    }
}

/// The one place the HTTP layer reads the clock; everything below gets `now_ms`.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A JSON body read with a hard size bound; errors name the offending field.
pub struct JsonBody<T, const LIMIT: usize>(pub T);

impl<S: Send + Sync, T: DeserializeOwned, const LIMIT: usize> FromRequest<S>
    for JsonBody<T, LIMIT>
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::to_bytes(req.into_body(), LIMIT)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("request body is larger than {LIMIT} bytes"),
                )
            })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de)
            .map(JsonBody)
            .map_err(|e| {
                let path = e.path().to_string();
                ApiError::bad_json(if path == "." {
                    e.inner().to_string()
                } else {
                    format!("{path}: {}", e.inner())
                })
            })
    }
}

/// Counts every 4xx answer, whatever produced it.
async fn count_rejections<S: Store>(
    State(app): State<Arc<App<S>>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let resp = next.run(req).await;
    if resp.status().is_client_error() {
        Metrics::inc(&app.metrics.bad_requests, 1);
    }
    resp
}

pub fn router<S: Store>(app: Arc<App<S>>) -> Router {
    Router::new()
        .route("/healthz", get(healthz::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/v1/sync", post(sync::<S>))
        .route("/v1/usage", get(usage::<S>))
        .route(
            "/v1/tenants/{tenant}/plan",
            put(put_plan::<S>)
                .get(get_plan::<S>)
                .delete(delete_plan::<S>),
        )
        .route("/v1/purge", post(purge::<S>))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            count_rejections::<S>,
        ))
        .with_state(app)
}

async fn healthz<S: Store>(State(app): State<Arc<App<S>>>) -> Response {
    match app.store.ping().await {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => app.store_err(e).into_response(),
    }
}

async fn metrics<S: Store>(State(app): State<Arc<App<S>>>) -> Response {
    let nodes = match app.store.nodes_alive(now_ms()).await {
        Ok(n) => Some(n),
        Err(e) => {
            app.store_err(e);
            None
        }
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(nodes),
    )
        .into_response()
}

async fn sync<S: Store>(
    State(app): State<Arc<App<S>>>,
    JsonBody(req): JsonBody<SyncRequest, SYNC_BODY_LIMIT>,
) -> Result<Json<SyncResponse>, ApiError> {
    let now = now_ms();
    let batch = PreparedBatch::from_request(&req, now, app.retention_ms)?;
    let (outcome, totals) = app
        .store
        .apply_batch_with_totals(&batch, now, app.retention_ms)
        .await
        .map_err(|e| app.store_err(e))?;
    let m = &app.metrics;
    Metrics::inc(&m.syncs, 1);
    if outcome.duplicate {
        Metrics::inc(&m.duplicate_batches, 1);
    } else {
        Metrics::inc(&m.batches, 1);
        Metrics::inc(&m.events_ingested, outcome.events_accepted);
        Metrics::inc(&m.duplicate_events, outcome.events_duplicate);
        Metrics::inc(&m.dropped_events, batch.dropped_events);
    }
    // The batch is durable from here on: a failure below answers 503 and the node's
    // retry of the same batch id is then recognised as a duplicate.
    let nodes = app
        .store
        .heartbeat(&batch.node_id, now)
        .await
        .map_err(|e| app.store_err(e))?;
    let plans = app
        .store
        .plans_since(req.override_seq, MAX_FEED)
        .await
        .map_err(|e| app.store_err(e))?;
    let purges = app
        .store
        .purges_since(req.purge_seq, MAX_FEED)
        .await
        .map_err(|e| app.store_err(e))?;
    let counters = batch
        .counters
        .iter()
        .zip(totals)
        .map(|(c, t)| CounterView {
            key: c.key.clone(),
            window_start_ms: c.window_start_ms,
            window_ms: c.window_ms,
            fleet_total: t.fleet_total,
            others: t.fleet_total.saturating_sub(t.own),
        })
        .collect();
    let events = if outcome.duplicate {
        EventCounts::default()
    } else {
        EventCounts {
            accepted: outcome.events_accepted,
            duplicate: outcome.events_duplicate,
            dropped: batch.dropped_events,
        }
    };
    Ok(Json(SyncResponse {
        batch_id: batch.batch_id,
        duplicate: outcome.duplicate,
        nodes,
        counters,
        overrides: plans.items,
        override_seq: plans.next_seq,
        purges: purges.items,
        purge_seq: purges.next_seq,
        events,
        server_time_ms: now,
    }))
}

async fn usage<S: Store>(
    State(app): State<Arc<App<S>>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<UsageResponse>, ApiError> {
    let tenant = q
        .get("tenant")
        .ok_or_else(|| ApiError::bad_query("tenant is required"))?;
    check_name("tenant", tenant)?;
    let time = |name: &str| -> Result<Option<u64>, ApiError> {
        q.get(name)
            .map(|v| {
                parse_time_ms(v).ok_or_else(|| {
                    ApiError::bad_query(format!(
                        "{name} must be Unix milliseconds or RFC 3339, got {v:?}"
                    ))
                })
            })
            .transpose()
    };
    if let Some(unknown) = q
        .keys()
        .find(|k| !matches!(k.as_str(), "tenant" | "from" | "to"))
    {
        return Err(ApiError::bad_query(format!(
            "unknown parameter {unknown:?}"
        )));
    }
    let to = time("to")?.unwrap_or_else(now_ms);
    let from = time("from")?.unwrap_or(to.saturating_sub(60 * MINUTE_MS));
    // A minute belongs to the range when it starts in it.
    let from = from
        .div_ceil(MINUTE_MS)
        .checked_mul(MINUTE_MS)
        .ok_or_else(|| ApiError::bad_query("from is out of range"))?;
    if from >= to {
        return Err(ApiError::bad_query("from must be before to"));
    }
    if to - from > MAX_USAGE_SPAN_MS {
        return Err(ApiError::bad_query("the range may span at most 31 days"));
    }
    let minutes = app
        .store
        .usage(tenant, from, to)
        .await
        .map_err(|e| app.store_err(e))?;
    let mut total = Rollup::default();
    for m in &minutes {
        total.merge(m);
    }
    Ok(Json(UsageResponse {
        tenant: tenant.clone(),
        from_ms: from,
        to_ms: to,
        minutes,
        total,
    }))
}

async fn put_plan<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<PlanBody, ADMIN_BODY_LIMIT>,
) -> Result<Response, ApiError> {
    check_name("tenant", &tenant)?;
    body.validate()?;
    let rec = app
        .store
        .put_plan(&tenant, &body, now_ms())
        .await
        .map_err(|e| app.store_err(e))?;
    Metrics::inc(&app.metrics.plan_changes, 1);
    Ok(Json(rec).into_response())
}

async fn get_plan<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    check_name("tenant", &tenant)?;
    match app
        .store
        .get_plan(&tenant)
        .await
        .map_err(|e| app.store_err(e))?
    {
        Some(rec) => Ok(Json(rec).into_response()),
        None => Err(ApiError::not_found(format!(
            "tenant {tenant} has no plan override"
        ))),
    }
}

async fn delete_plan<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    check_name("tenant", &tenant)?;
    match app
        .store
        .delete_plan(&tenant, now_ms())
        .await
        .map_err(|e| app.store_err(e))?
    {
        Some(tomb) => {
            Metrics::inc(&app.metrics.plan_changes, 1);
            Ok(Json(tomb).into_response())
        }
        None => Err(ApiError::not_found(format!(
            "tenant {tenant} has no plan override"
        ))),
    }
}

async fn purge<S: Store>(
    State(app): State<Arc<App<S>>>,
    JsonBody(body): JsonBody<PurgeBody, ADMIN_BODY_LIMIT>,
) -> Result<Response, ApiError> {
    body.validate()?;
    let rec = app
        .store
        .add_purge(&body, now_ms())
        .await
        .map_err(|e| app.store_err(e))?;
    Metrics::inc(&app.metrics.purges, 1);
    Ok((StatusCode::CREATED, Json(rec)).into_response())
}
