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
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// The body of an OpenDSR error.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "OpenDsrError")]
pub(crate) struct SpecErrorBody {
    error: SpecErrorDetail,
}

#[derive(Serialize, JsonSchema)]
struct SpecErrorDetail {
    /// The HTTP status.
    code: u16,
    message: String,
    errors: Vec<SpecErrorItem>,
}

#[derive(Serialize, JsonSchema)]
struct SpecErrorItem {
    /// `Validation` for a bad body, else `Request`.
    domain: &'static str,
    /// Stable, for programs (`MissingField`, `NotFound`, ...).
    reason: &'static str,
    message: String,
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
        let body = SpecErrorBody {
            error: SpecErrorDetail {
                code: self.status.as_u16(),
                errors: vec![SpecErrorItem {
                    domain,
                    reason: self.reason,
                    message: self.message.clone(),
                }],
                message: self.message,
            },
        };
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
fn signed(state: &AppState, status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = match serde_json::to_string(body) {
        Ok(b) => b,
        Err(e) => return ApiError::Internal(e.into()).into_response(),
    };
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

/// What `discovery` answers.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Discovery {
    api_version: &'static str,
    supported_identities: Vec<SupportedIdentity>,
    supported_subject_request_types: Vec<&'static str>,
    /// Where the key signing responses and callbacks is published.
    processor_certificate: String,
}

#[derive(Serialize, JsonSchema)]
struct SupportedIdentity {
    identity_type: &'static str,
    identity_format: &'static str,
}

/// A request handed over: the answer to `POST /opendsr/v1/requests`.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Accepted {
    controller_id: String,
    expected_completion_time: String,
    received_time: String,
    /// The body as received, base64.
    encoded_request: String,
    subject_request_id: String,
    api_version: &'static str,
}

/// A request's status in OpenDSR's words, and in lethe's.
#[derive(Serialize, JsonSchema)]
pub(crate) struct RequestStatus {
    controller_id: String,
    expected_completion_time: String,
    subject_request_id: String,
    request_status: &'static str,
    #[schemars(schema_with = "crate::requests::status_schema")]
    lethe_status: String,
    api_version: &'static str,
    /// Rows found, once an access or portability request has run.
    #[serde(skip_serializing_if = "Option::is_none")]
    results_count: Option<u64>,
}

/// A request withdrawn by its controller system.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Cancelled {
    controller_id: String,
    received_time: String,
    subject_request_id: String,
    api_version: &'static str,
}

async fn discovery(State(state): State<AppState>) -> Response {
    let body = Discovery {
        api_version: OPENDSR_API_VERSION,
        supported_identities: vec![SupportedIdentity {
            identity_type: "email",
            identity_format: "raw",
        }],
        supported_subject_request_types: [Kind::Access, Kind::Portability, Kind::Erasure]
            .map(Kind::key)
            .to_vec(),
        processor_certificate: state.settings.link("/opendsr/v1/public-key"),
    };
    signed(&state, StatusCode::OK, &body)
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

#[derive(Deserialize, JsonSchema)]
struct IdentityBody {
    #[schemars(extend("const" = "email"))]
    identity_type: String,
    identity_value: String,
    #[schemars(extend("const" = "raw"))]
    identity_format: String,
}

/// A request handed over. The fields are read one by one so that a missing one gets the
/// specification's `MissingField`; the schema says which are required.
#[derive(Deserialize, JsonSchema)]
#[schemars(extend("required" = ["regulation", "subject_request_id", "subject_request_type", "subject_identities", "submitted_time"]))]
pub(crate) struct CreateBody {
    #[schemars(extend("const" = "gdpr"))]
    regulation: Option<String>,
    /// A lowercase UUID.
    #[schemars(extend("format" = "uuid"))]
    subject_request_id: Option<String>,
    #[schemars(extend("enum" = ["access", "portability", "erasure"]))]
    subject_request_type: Option<String>,
    subject_identities: Option<Vec<IdentityBody>>,
    #[schemars(extend("format" = "date-time"))]
    submitted_time: Option<String>,
    #[serde(default)]
    #[schemars(length(max = MAX_CALLBACKS))]
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
    let accepted = Accepted {
        controller_id: ctrl,
        expected_completion_time: full.due_at,
        received_time: crate::store::timestamp(now),
        encoded_request: base64::engine::general_purpose::STANDARD.encode(&body),
        subject_request_id: external,
        api_version: OPENDSR_API_VERSION,
    };
    Ok(signed(&state, StatusCode::CREATED, &accepted))
}

async fn status(
    State(state): State<AppState>,
    Path(external): Path<String>,
    headers: HeaderMap,
) -> Result<Response, SpecError> {
    let ctrl = controller(&state, &headers).await?;
    let svc = service(&state);
    let full = svc.by_external_id(&external).await?;
    let results_count = full
        .result
        .as_ref()
        .and_then(|r| r.get("rows"))
        .and_then(Value::as_object)
        .map(|rows| rows.values().filter_map(Value::as_u64).sum());
    let body = RequestStatus {
        controller_id: ctrl,
        expected_completion_time: full.due_at,
        subject_request_id: external,
        request_status: opendsr_status(&full.status),
        lethe_status: full.status,
        api_version: OPENDSR_API_VERSION,
        results_count,
    };
    Ok(signed(&state, StatusCode::OK, &body))
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
    let body = Cancelled {
        controller_id: ctrl,
        received_time: crate::store::timestamp(now),
        subject_request_id: external,
        api_version: OPENDSR_API_VERSION,
    };
    Ok(signed(&state, StatusCode::ACCEPTED, &body))
}
