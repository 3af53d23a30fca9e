//! Log cache reads (`/api/v1/info`, `/api/v1/read/<source id>`) over the
//! LogStore, in log cache's protobuf-JSON envelope shape.

use crate::context::Shared;
use crate::error::{ApiError, ApiResult};
use crate::web::ListParams;
use axum::Json;
use axum::extract::{Path, State};
use base64::Engine;
use kiln_logs::ReadQuery;
use kiln_model::logs::MessageType;
use serde_json::{Value, json};

pub async fn info() -> Json<Value> {
    Json(json!({"version": "3.0.0", "vm_uptime": "0"}))
}

pub async fn read(
    State(ctx): State<Shared>,
    Path(source_id): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let int = |key: &str| -> ApiResult<Option<i64>> {
        params
            .get(key)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_query(format!("{key} must be an integer")))
            })
            .transpose()
    };
    let start_time = int("start_time")?.unwrap_or(0).max(0);
    let end_time = int("end_time")?;
    let limit = int("limit")?.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_query("limit must be between 1 and 1000"));
    }
    let descending = params.get("descending").is_some_and(|v| v == "true");
    // Repeated `envelope_types` are a union; none means every type. The
    // store holds only LOG envelopes.
    let mut types = params
        .pairs
        .iter()
        .filter(|(k, _)| k == "envelope_types")
        .flat_map(|(_, v)| v.split(','))
        .peekable();
    let wants_logs = types.peek().is_none() || types.any(|t| t == "LOG" || t == "ANY");
    let envelopes = if wants_logs {
        ctx.logs.read(
            &source_id,
            &ReadQuery {
                start_time,
                end_time,
                limit: limit as usize,
                descending,
            },
        )
    } else {
        Vec::new()
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let batch: Vec<Value> = envelopes
        .into_iter()
        .map(|e| {
            json!({
                "timestamp": e.timestamp.to_string(),
                "source_id": e.source_id,
                "instance_id": e.instance_id,
                "deprecated_tags": {},
                "tags": {"source_type": e.source_type},
                "log": {
                    "payload": b64.encode(e.message.as_bytes()),
                    "type": match e.message_type { MessageType::Out => "OUT", MessageType::Err => "ERR" },
                },
            })
        })
        .collect();
    Ok(Json(json!({"envelopes": {"batch": batch}})))
}
