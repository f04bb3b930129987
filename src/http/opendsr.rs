//! OpenDSR (formerly OpenGDPR) under `/opendsr/v1/`: a controller system (a consent
//! platform, a CRM, the company's own front end) hands lethe requests it has already
//! verified. `discovery` and `public-key` are open; `requests` needs a DPO admin token.
//! Responses and status callbacks are signed with the server's Ed25519 key
//! (`X-OpenDSR-Signature`, base64 over the body); errors use the specification's format.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::requests::{BODY_LIMIT, service};
use super::{ApiError, AppState};
use crate::audit::{Actor, Identity};
use crate::requests::{Kind, OPENDSR_API_VERSION, RequestError, opendsr_status};
use crate::store::Role;

pub fn routes() -> super::Routes {
    super::Routes::new()
        .route("/opendsr/v1/discovery", get(discovery))
        .route("/opendsr/v1/public-key", get(public_key))
        .route("/opendsr/v1/requests", axum::routing::post(create))
        .route("/opendsr/v1/requests/{id}", get(status).delete(cancel))
        .map(|r| r.route_layer(axum::middleware::from_fn(json_only)))
}

/// A write with a body that is not JSON: 415, in the OpenDSR format.
async fn json_only(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if super::json_only::refused(&req) {
        return SpecError::from(super::json_only::unsupported()).into_response();
    }
    next.run(req).await
}

/// An error in the OpenDSR format: `{"error": {"code", "message", "errors": [...]}}`.
struct SpecError {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl SpecError {
    fn bad(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            reason,
            message: message.into(),
        }
    }
}

impl IntoResponse for SpecError {
    fn into_response(self) -> Response {
        let domain = if matches!(
            self.status,
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY
        ) {
            "Validation"
        } else {
            "Request"
        };
        let body = json!({ "error": {
            "code": self.status.as_u16(),
            "message": self.message,
            "errors": [{ "domain": domain, "reason": self.reason, "message": self.message }],
        }});
        (
            self.status,
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            Json(body),
        )
            .into_response()
    }
}

impl From<ApiError> for SpecError {
    fn from(e: ApiError) -> Self {
        let status = e.status();
        let reason = match status {
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
            _ => "ServiceError",
        };
        Self {
            status,
            reason,
            message: e.public_message(),
        }
    }
}

impl From<RequestError> for SpecError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::NotFound => Self {
                status: StatusCode::NOT_FOUND,
                reason: "NotFound",
                message: "no request with this subject_request_id".into(),
            },
            RequestError::WrongState { .. } => {
                Self::bad("NotCancellable", "only a pending request can be cancelled")
            }
            other => ApiError::from(other).into(),
        }
    }
}

/// The caller's admin token id: a DPO token is needed to hand over requests.
async fn controller(state: &AppState, headers: &HeaderMap) -> Result<String, SpecError> {
    Ok(super::admin::admin(state, headers, Role::Dpo).await?)
}

/// Signs `body` with the server's Ed25519 key and names the processor domain.
fn signed(state: &AppState, status: StatusCode, body: Value) -> Response {
    let bytes = body.to_string();
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        bytes.clone(),
    )
        .into_response();
    let domain = crate::notify::webhook::domain(state.settings.public_url.as_deref(), "localhost");
    if let Ok(v) = HeaderValue::from_str(&domain) {
        resp.headers_mut().insert("X-OpenDSR-Processor-Domain", v);
    }
    let sig = base64::engine::general_purpose::STANDARD.encode(state.signer.sign(bytes.as_bytes()));
    if let Ok(v) = HeaderValue::from_str(&sig) {
        resp.headers_mut().insert("X-OpenDSR-Signature", v);
    }
    resp
}

async fn discovery(State(state): State<AppState>) -> Response {
    signed(
        &state,
        StatusCode::OK,
        json!({
            "api_version": OPENDSR_API_VERSION,
            "supported_identities": [{ "identity_type": "email", "identity_format": "raw" }],
            "supported_subject_request_types": ["access", "portability", "erasure"],
            "processor_certificate": state.settings.link("/opendsr/v1/public-key"),
        }),
    )
}

/// The Ed25519 key that signs responses and callbacks, as a PEM public key.
async fn public_key(State(state): State<AppState>) -> Result<Response, ApiError> {
    let signer = &state.signer;
    // SubjectPublicKeyInfo for Ed25519 (RFC 8410): a fixed prefix, then the 32-byte key.
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(&signer.public_key());
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    );
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response())
}

#[derive(Deserialize)]
struct IdentityBody {
    identity_type: String,
    identity_value: String,
    identity_format: String,
}

#[derive(Deserialize)]
struct CreateBody {
    regulation: Option<String>,
    subject_request_id: Option<String>,
    subject_request_type: Option<String>,
    subject_identities: Option<Vec<IdentityBody>>,
    submitted_time: Option<String>,
    #[serde(default)]
    status_callback_urls: Vec<String>,
    // `api_version` and `extensions` are accepted and not needed.
}

/// Status callbacks one request may ask for.
const MAX_CALLBACKS: usize = 10;

/// A lowercase UUID (8-4-4-4-12 hex digits), as the specification demands.
fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')))
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, SpecError> {
    let ctrl = controller(&state, &headers).await?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            SpecError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                reason: "BodyTooLarge",
                message: format!("the body may be at most {BODY_LIMIT} bytes"),
            }
        } else {
            SpecError::bad("UnreadableBody", "the body could not be read")
        }
    })?;
    let req: CreateBody = serde_json::from_slice(&body).map_err(|e| {
        let at = format!("line {}, column {}", e.line(), e.column());
        if e.is_data() {
            SpecError::bad("InvalidField", format!("a field has the wrong type ({at})"))
        } else {
            SpecError::bad(
                "MalformedJson",
                format!("the body is not valid JSON ({at})"),
            )
        }
    })?;
    let required = |name: &str| SpecError::bad("MissingField", format!("{name} field is required"));
    let regulation = req.regulation.ok_or_else(|| required("regulation"))?;
    if regulation != "gdpr" {
        return Err(SpecError::bad(
            "UnsupportedRegulation",
            "regulation must be \"gdpr\"",
        ));
    }
    let external = req
        .subject_request_id
        .ok_or_else(|| required("subject_request_id"))?;
    if !is_uuid(&external) {
        return Err(SpecError::bad(
            "InvalidField",
            "subject_request_id must be a lowercase UUID",
        ));
    }
    let kind = req
        .subject_request_type
        .ok_or_else(|| required("subject_request_type"))?;
    let kind = match Kind::parse(&kind) {
        Some(k @ (Kind::Access | Kind::Portability | Kind::Erasure)) => k,
        _ => {
            return Err(SpecError::bad(
                "UnsupportedRequestType",
                "subject_request_type must be access, portability or erasure",
            ));
        }
    };
    let identities = req
        .subject_identities
        .ok_or_else(|| required("subject_identities"))?;
    let identity = identities
        .iter()
        .find(|i| i.identity_type == "email" && i.identity_format == "raw")
        .ok_or_else(|| {
            SpecError::bad(
                "UnsupportedIdentity",
                "subject_identities must hold an identity of type email in format raw",
            )
        })?;
    // The mail transport must be able to write to the person: checked with its parser.
    let identity = Identity::parse(&format!("email={}", identity.identity_value))
        .ok()
        .filter(|i| crate::notify::recipient(i.value()).is_some())
        .ok_or_else(|| {
            SpecError::bad(
                "InvalidIdentity",
                "the email identity is not an e-mail address",
            )
        })?;
    let submitted = req
        .submitted_time
        .ok_or_else(|| required("submitted_time"))?;
    let submitted = chrono::DateTime::parse_from_rfc3339(&submitted)
        .map_err(|_| SpecError::bad("InvalidField", "submitted_time must be an RFC 3339 time"))?
        .with_timezone(&chrono::Utc);
    if req.status_callback_urls.len() > MAX_CALLBACKS {
        return Err(SpecError::bad(
            "InvalidField",
            format!("at most {MAX_CALLBACKS} status_callback_urls"),
        ));
    }
    for (i, u) in req.status_callback_urls.iter().enumerate() {
        if let Err(e) = state.webhook_rules.check_url(u) {
            return Err(SpecError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                reason: "InvalidCallbackUrl",
                message: format!("status_callback_urls[{i}]: {e}"),
            });
        }
    }
    let svc = service(&state);
    let now = chrono::Utc::now();
    let (id, _existing) = svc
        .submit_trusted(
            kind,
            &identity,
            &external,
            &req.status_callback_urls,
            submitted,
            &ctrl,
            now,
        )
        .await?;
    state.work_queued();
    let full = svc.full(&id).await?;
    Ok(signed(
        &state,
        StatusCode::CREATED,
        json!({
            "controller_id": ctrl,
            "expected_completion_time": full.due_at,
            "received_time": crate::store::timestamp(now),
            "encoded_request": base64::engine::general_purpose::STANDARD.encode(&body),
            "subject_request_id": external,
            "api_version": OPENDSR_API_VERSION,
        }),
    ))
}

async fn status(
    State(state): State<AppState>,
    Path(external): Path<String>,
    headers: HeaderMap,
) -> Result<Response, SpecError> {
    let ctrl = controller(&state, &headers).await?;
    let svc = service(&state);
    let full = svc.by_external_id(&external).await?;
    let mut body = json!({
        "controller_id": ctrl,
        "expected_completion_time": full.due_at,
        "subject_request_id": external,
        "request_status": opendsr_status(&full.status),
        "lethe_status": full.status,
        "api_version": OPENDSR_API_VERSION,
    });
    if let Some(rows) = full
        .result
        .as_ref()
        .and_then(|r| r.get("rows"))
        .and_then(Value::as_object)
    {
        body["results_count"] = json!(rows.values().filter_map(Value::as_u64).sum::<u64>());
    }
    Ok(signed(&state, StatusCode::OK, body))
}

async fn cancel(
    State(state): State<AppState>,
    Path(external): Path<String>,
    headers: HeaderMap,
) -> Result<Response, SpecError> {
    let ctrl = controller(&state, &headers).await?;
    let svc = service(&state);
    let full = svc.by_external_id(&external).await?;
    let now = chrono::Utc::now();
    svc.cancel(&full.id, Actor::Admin(ctrl.clone()), now)
        .await?;
    Ok(signed(
        &state,
        StatusCode::ACCEPTED,
        json!({
            "controller_id": ctrl,
            "received_time": crate::store::timestamp(now),
            "subject_request_id": external,
            "api_version": OPENDSR_API_VERSION,
        }),
    ))
}
