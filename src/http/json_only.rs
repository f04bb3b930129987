//! The JSON API reads JSON only: a write that carries a body under any other content
//! type is answered 415 before any handler runs. A form on another site can post
//! `application/x-www-form-urlencoded`, `multipart/form-data` or `text/plain` without
//! asking the browser's permission, never `application/json`; so no cross-site form can
//! reach the API.

use axum::body::HttpBody;
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Whether `req` is a write with a body whose content type is not `application/json`
/// (parameters such as `; charset=utf-8` aside).
pub fn refused(req: &Request) -> bool {
    let write = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if !write {
        return false;
    }
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let has_body = match length {
        Some(n) => n > 0,
        None => {
            req.headers().contains_key(header::TRANSFER_ENCODING) || !req.body().is_end_stream()
        }
    };
    has_body && !is_json(req.headers().get(header::CONTENT_TYPE))
}

/// `application/json`, in any case, with or without parameters.
fn is_json(value: Option<&axum::http::HeaderValue>) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// The error of a refused write, in the API's format.
pub fn unsupported() -> ApiError {
    ApiError::client(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "a body must be sent as Content-Type: application/json",
    )
}

/// Refuses a write with a body that is not JSON (see [`refused`]).
pub async fn require(req: Request, next: Next) -> Response {
    if refused(&req) {
        return unsupported().into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn req(method: &str, ct: Option<&str>, body: &'static str) -> Request {
        let mut b = axum::http::Request::builder().method(method).uri("/v1/x");
        if let Some(ct) = ct {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        if !body.is_empty() {
            b = b.header(header::CONTENT_LENGTH, body.len());
        }
        b.body(Body::from(body)).unwrap()
    }

    #[test]
    fn only_json_bodies_pass() {
        assert!(!refused(&req("POST", Some("application/json"), "{}")));
        assert!(!refused(&req(
            "POST",
            Some("Application/JSON; charset=utf-8"),
            "{}"
        )));
        for ct in [
            None,
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("text/plain"),
            Some("application/jsonp"),
            Some("text/json"),
        ] {
            for m in ["POST", "PUT", "PATCH", "DELETE"] {
                assert!(refused(&req(m, ct, "{}")), "{m} {ct:?}");
            }
        }
        // No body: nothing to read, nothing refused (a DPO's approve, a withdrawal).
        assert!(!refused(&req("POST", None, "")));
        assert!(!refused(&req("DELETE", Some("text/plain"), "")));
        assert!(!refused(&req("GET", Some("text/plain"), "x")));
    }
}
