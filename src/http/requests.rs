//! The public request API: submit, verify, status. Bodies are parsed here so that every
//! malformed one gets the JSON error format; bodies over 64 KiB are refused.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::audit::Identity;
use crate::requests::{Kind, RequestError, Service};

pub const BODY_LIMIT: usize = 64 * 1024;

pub fn routes() -> super::Routes {
    super::Routes::new()
        .route("/v1/requests", post(submit))
        .route("/v1/requests/{id}/verify", post(verify))
        .route("/v1/requests/{id}/code", post(resend))
        .route("/v1/requests/{id}", get(status).delete(cancel))
        .route("/v1/requests/{id}/package", get(package))
        .map(|r| r.layer(DefaultBodyLimit::max(BODY_LIMIT)))
}

/// The request service over the server's store, audit log and mailer.
pub(super) fn service(state: &AppState) -> Service<'_> {
    Service {
        store: &state.store,
        audit: &state.audit,
        mailer: &state.mailer,
        settings: (*state.settings).clone(),
    }
}

/// The body as JSON of type `T`, or the right client error.
pub(super) fn parse<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::client(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body may be at most {BODY_LIMIT} bytes"),
            )
        } else {
            ApiError::client(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                "the body could not be read",
            )
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        // serde's own text may quote what was sent (an e-mail address, say): the answer
        // names only the kind of problem and where it is.
        let at = format!("line {}, column {}", e.line(), e.column());
        if e.is_data() {
            ApiError::client(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                format!("a field is missing, unknown or of the wrong type ({at})"),
            )
        } else {
            ApiError::client(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON ({at})"),
            )
        }
    })
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::NotFound => ApiError::NotFound,
            RequestError::Undeliverable => ApiError::client(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_identity",
                "identity.email is not a valid e-mail address",
            ),
            RequestError::Unauthorized => ApiError::client(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid request token is needed",
            ),
            RequestError::WrongCode { .. } => ApiError::client(
                StatusCode::UNPROCESSABLE_ENTITY,
                "wrong_code",
                e.to_string(),
            ),
            RequestError::Expired => {
                ApiError::client(StatusCode::GONE, "code_expired", e.to_string())
            }
            RequestError::TooManyAttempts => ApiError::client(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                e.to_string(),
            ),
            RequestError::UseTheLink => {
                ApiError::client(StatusCode::TOO_MANY_REQUESTS, "use_the_link", e.to_string())
            }
            RequestError::NotPending => {
                ApiError::client(StatusCode::CONFLICT, "not_pending", e.to_string())
            }
            RequestError::AlreadyExtended => {
                ApiError::client(StatusCode::CONFLICT, "already_extended", e.to_string())
            }
            RequestError::ExtensionTooLate { .. } => {
                ApiError::client(StatusCode::CONFLICT, "extension_too_late", e.to_string())
            }
            RequestError::WrongState { .. } => {
                ApiError::client(StatusCode::CONFLICT, "wrong_state", e.to_string())
            }
            RequestError::NoMoreCodes => ApiError::client(
                StatusCode::TOO_MANY_REQUESTS,
                "no_more_codes",
                e.to_string(),
            ),
            RequestError::ResendTooSoon(_) => ApiError::client(
                StatusCode::TOO_MANY_REQUESTS,
                "resend_too_soon",
                e.to_string(),
            ),
            RequestError::Erased => ApiError::client(StatusCode::GONE, "erased", e.to_string()),
            RequestError::NotATask => {
                ApiError::client(StatusCode::CONFLICT, "not_a_task", e.to_string())
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

/// A request, as a person or a front end makes it.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitBody {
    #[serde(rename = "type")]
    #[schemars(schema_with = "crate::requests::kind_schema")]
    kind: String,
    identity: IdentityBody,
    /// What the person wants, in their words (a rectification's correct value, say).
    #[serde(default)]
    #[schemars(length(max = DETAILS_MAX))]
    details: Option<String>,
}

/// The longest `details`, in characters.
const DETAILS_MAX: usize = 4000;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct IdentityBody {
    #[schemars(email)]
    email: String,
}

async fn submit(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<crate::requests::Submitted>), ApiError> {
    let body: SubmitBody = parse(body)?;
    let kind = Kind::parse(&body.kind).ok_or_else(|| {
        ApiError::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_type",
            "type must be access, portability, erasure, rectification, restriction or objection",
        )
    })?;
    let identity = Identity::parse(&format!("email={}", body.identity.email)).map_err(|_| {
        ApiError::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_identity",
            "identity.email is not a valid e-mail address",
        )
    })?;
    if body
        .details
        .as_ref()
        .is_some_and(|d| d.chars().count() > DETAILS_MAX)
    {
        return Err(ApiError::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            "details_too_long",
            format!("details may be at most {DETAILS_MAX} characters"),
        ));
    }
    let svc = service(&state);
    let s = svc
        .submit(kind, &identity, body.details.as_deref(), chrono::Utc::now())
        .await?;
    // The same answer whatever was open for the address: it tells nobody what exists.
    Ok((StatusCode::CREATED, Json(s)))
}

/// The code or the link's secret that confirms a request: one of the two.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{ "required": ["code"] }, { "required": ["secret"] }]))]
pub(crate) struct VerifyBody {
    /// The ten-digit code from the e-mail (spaces and dashes ignored), or
    #[serde(default)]
    #[schemars(regex(pattern = r"^[0-9 -]{10,16}$"))]
    code: Option<String>,
    /// the secret of the link in the e-mail.
    #[serde(default)]
    secret: Option<String>,
}

async fn verify(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<crate::requests::View>, ApiError> {
    let body: VerifyBody = parse(body)?;
    let svc = service(&state);
    let now = chrono::Utc::now();
    let view = match (body.code, body.secret) {
        (Some(code), None) => svc.verify(&id, &code, now).await?,
        (None, Some(secret)) => svc.verify_link(&id, &secret, now).await?,
        _ => {
            return Err(ApiError::client(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "give either code or secret",
            ));
        }
    };
    state.work_queued();
    Ok(Json(view))
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The `Authorization: Bearer` value, if any.
fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

/// The request token: `Authorization: Bearer ...`, or `?token=` for clients of earlier
/// versions (request logs print paths only, never a query).
fn token(headers: &HeaderMap, q: TokenQuery) -> Result<String, ApiError> {
    bearer(headers).or(q.token).ok_or_else(|| {
        ApiError::client(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid request token is needed",
        )
    })
}

async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Json<crate::requests::View>, ApiError> {
    let token = token(&headers, q)?;
    let svc = service(&state);
    Ok(Json(svc.status(&id, &token).await?))
}

/// The package, for `Authorization: Bearer <download secret>`: the secret of the link in
/// the completion e-mail. The request's status token does not open it.
async fn package(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    let secret = bearer(&headers).ok_or_else(|| {
        ApiError::client(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the download secret of the completion e-mail is needed",
        )
    })?;
    let svc = service(&state);
    match svc.package(&id, &secret, chrono::Utc::now()).await {
        Err(RequestError::Unauthorized) => Err(ApiError::client(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the download secret of the completion e-mail is needed",
        )),
        Err(RequestError::Expired) => Err(ApiError::client(
            StatusCode::GONE,
            "package_expired",
            "the package is no longer kept",
        )),
        other => Ok(download(&id, other?)),
    }
}

/// A package as a download.
pub(super) fn download(id: &str, d: crate::requests::Download) -> axum::response::Response {
    use axum::response::IntoResponse;
    let name = if d.content_type == "application/zip" {
        format!("{id}.zip")
    } else {
        format!("{id}.json")
    };
    (
        [
            (header::CONTENT_TYPE, d.content_type),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        d.bytes,
    )
        .into_response()
}

/// The subject withdraws a request that is not being executed yet.
async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Json<crate::requests::View>, ApiError> {
    let token = token(&headers, q)?;
    let svc = service(&state);
    svc.withdraw(&id, &token, chrono::Utc::now()).await?;
    Ok(Json(svc.status(&id, &token).await?))
}

/// Sends a new verification code to the holder of the request's token.
async fn resend(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Json<crate::requests::View>, ApiError> {
    let token = token(&headers, q)?;
    let svc = service(&state);
    Ok(Json(
        svc.resend_code(&id, &token, chrono::Utc::now()).await?,
    ))
}
