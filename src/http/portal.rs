//! The portal: server-rendered pages for data subjects (submit, confirm with the code,
//! follow the status, download, withdraw). Plain HTML forms, no JavaScript; every field
//! has a label and a hint, errors are announced (`role="alert"`).

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::{AutoEscape, Environment, context};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::requests::service;
use crate::audit::Identity;
use crate::requests::{CODE_TTL_MINUTES, Kind, RequestError};

pub fn routes() -> super::Routes {
    super::Routes::new()
        .route("/", get(form))
        .route("/portal/requests", post(submit))
        .route("/portal/requests/{id}", get(status))
        .route(
            "/portal/requests/{id}/verify",
            get(verify_page).post(verify),
        )
        .route(
            "/portal/requests/{id}/confirm",
            get(confirm_page).post(confirm),
        )
        .route("/portal/requests/{id}/cancel", post(cancel))
        .route("/portal/requests/{id}/code", post(resend))
        .route(
            "/portal/requests/{id}/download",
            get(download_page).post(download),
        )
}

/// The cookie that carries a request's token between the portal's pages: never a URL.
const TOKEN_COOKIE: &str = "lethe_request";
/// How long a browser keeps it (the longest browsers allow).
const TOKEN_COOKIE_SECONDS: u32 = 400 * 24 * 3600;

/// The `Set-Cookie` value that gives this browser the request's token: only sent back
/// to this request's pages, never to scripts, never from another site's link or form.
fn token_cookie(state: &AppState, id: &str, token: &str) -> Option<HeaderValue> {
    let secure = state
        .settings
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    HeaderValue::from_str(&format!(
        "{TOKEN_COOKIE}={token}; Path=/portal/requests/{id}; Max-Age={TOKEN_COOKIE_SECONDS}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    ))
    .ok()
}

/// The request token this browser holds, from its cookie.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// `response` with the token cookie set.
fn with_cookie(state: &AppState, id: &str, token: &str, mut response: Response) -> Response {
    if let Some(v) = token_cookie(state, id, token) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

fn templates() -> &'static Environment<'static> {
    static ENV: std::sync::OnceLock<Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        for (name, text) in [
            (
                "base.html",
                include_str!("../../templates/portal/base.html"),
            ),
            (
                "form.html",
                include_str!("../../templates/portal/form.html"),
            ),
            (
                "verify.html",
                include_str!("../../templates/portal/verify.html"),
            ),
            (
                "confirm.html",
                include_str!("../../templates/portal/confirm.html"),
            ),
            (
                "status.html",
                include_str!("../../templates/portal/status.html"),
            ),
            (
                "download.html",
                include_str!("../../templates/portal/download.html"),
            ),
            (
                "message.html",
                include_str!("../../templates/portal/message.html"),
            ),
        ] {
            // The templates are part of the binary and checked by the tests.
            if let Err(e) = env.add_template(name, text) {
                tracing::error!(template = name, error = %e, "portal template");
            }
        }
        env
    })
}

/// A rendered page; a template error is logged and answered with a plain 500.
fn page(status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
    match templates().get_template(name).and_then(|t| t.render(ctx)) {
        // Pages about a request are never kept by a cache.
        Ok(html) => (
            status,
            [(axum::http::header::CACHE_CONTROL, "no-store")],
            Html(html),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "portal page");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// The page asking for the e-mailed code.
fn code_page(
    state: &AppState,
    status: StatusCode,
    id: &str,
    due_at: &str,
    error: Option<String>,
) -> Response {
    page(
        status,
        "verify.html",
        context! {
            controller => state.settings.controller,
            id, due => due_at.get(..10).unwrap_or(due_at),
            ttl => CODE_TTL_MINUTES, error,
        },
    )
}

fn unreadable(state: &AppState) -> Response {
    message(
        state,
        StatusCode::BAD_REQUEST,
        "We could not do that",
        "The form could not be read.",
    )
}

pub(super) fn message(state: &AppState, status: StatusCode, heading: &str, text: &str) -> Response {
    page(
        status,
        "message.html",
        context! { controller => state.settings.controller, heading, message => text },
    )
}

/// What a subject reads for each failure: never a cause from inside.
fn failure(state: &AppState, e: RequestError) -> Response {
    let (status, text) = match &e {
        RequestError::NotFound | RequestError::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            "This browser does not hold this request. Open it in the browser you made it with, or confirm it with the link in the e-mail.".to_owned(),
        ),
        RequestError::Store(_) | RequestError::Audit(_) | RequestError::Mail(_) => {
            tracing::error!(error = %e, "portal");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side. Please try again later.".to_owned(),
            )
        }
        _ => (StatusCode::CONFLICT, e.to_string()),
    };
    message(state, status, "We could not do that", &text)
}

#[derive(Serialize)]
struct TypeChoice {
    key: &'static str,
    label: &'static str,
    hint: &'static str,
}

fn types() -> Vec<TypeChoice> {
    let t = |key, label, hint| TypeChoice { key, label, hint };
    vec![
        t(
            "access",
            "A copy of my data",
            "Everything we hold about you, why, where it comes from, who receives it and how long we keep it (Art. 15).",
        ),
        t(
            "portability",
            "My data in a machine-readable file",
            "The data you gave us, as JSON, to take elsewhere (Art. 20).",
        ),
        t(
            "erasure",
            "Erase my data",
            "We erase what we may; what the law makes us keep, we tell you with the reason and until when (Art. 17).",
        ),
        t(
            "rectification",
            "Correct my data",
            "Tell us in the details what is wrong (Art. 16).",
        ),
        t(
            "restriction",
            "Restrict the use of my data",
            "We keep your data but stop using it, and do not erase it, until the restriction is lifted (Art. 18).",
        ),
        t(
            "objection",
            "Object to a use of my data",
            "Tell us in the details which use you object to (Art. 21).",
        ),
        t(
            "marketing_objection",
            "Stop all direct marketing to me",
            "We stop at once, with no questions, and keep your address only to make sure no marketing reaches you again (Art. 21(2) and (3)).",
        ),
    ]
}

/// The request form.
#[derive(Deserialize, Default, schemars::JsonSchema)]
pub(crate) struct SubmitForm {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    details: String,
}

fn form_page(
    state: &AppState,
    status: StatusCode,
    f: &SubmitForm,
    error: Option<&str>,
) -> Response {
    page(
        status,
        "form.html",
        context! {
            controller => state.settings.controller,
            types => types(),
            selected => f.kind,
            email => f.email,
            details => f.details,
            error,
        },
    )
}

async fn form(State(state): State<AppState>) -> Response {
    form_page(&state, StatusCode::OK, &SubmitForm::default(), None)
}

async fn submit(
    State(state): State<AppState>,
    form: Result<Form<SubmitForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return form_page(
            &state,
            StatusCode::BAD_REQUEST,
            &SubmitForm::default(),
            Some("The form could not be read; please fill it in again."),
        );
    };
    let Some(kind) = Kind::parse(&f.kind) else {
        return form_page(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            &f,
            Some("Choose what you ask for."),
        );
    };
    let Ok(identity) = Identity::parse(&format!("email={}", f.email.trim())) else {
        return form_page(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            &f,
            Some("Enter a valid e-mail address."),
        );
    };
    if f.details.chars().count() > 4000 {
        return form_page(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            &f,
            Some("The details may be at most 4000 characters."),
        );
    }
    let svc = service(&state);
    let details = Some(f.details.trim()).filter(|d| !d.is_empty());
    match svc
        .submit(kind, &identity, details, chrono::Utc::now())
        .await
    {
        Ok(s) => with_cookie(
            &state,
            &s.id,
            &s.token,
            code_page(&state, StatusCode::CREATED, &s.id, &s.due_at, None),
        ),
        Err(RequestError::Undeliverable) => form_page(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            &f,
            Some("We cannot send e-mail to this address. Enter a valid e-mail address."),
        ),
        Err(e) => failure(&state, e),
    }
}

/// A token in the address (`?token=`), from links of earlier versions: taken once,
/// moved to the cookie, and the page loaded again without it.
#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The code form.
#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct VerifyForm {
    #[serde(default)]
    code: String,
}

/// The request service, and the token of the browser asking; else the page saying why not.
fn holder<'s>(
    state: &'s AppState,
    headers: &HeaderMap,
) -> Result<(crate::requests::Service<'s>, String), Box<Response>> {
    let svc = service(state);
    let token = cookie_token(headers)
        .ok_or_else(|| Box::new(failure(state, RequestError::Unauthorized)))?;
    Ok((svc, token))
}

/// A link of an earlier version with `?token=`: the token goes to the cookie and the
/// browser to the same page without it, so it stays in no address bar or history.
fn upgrade_link(state: &AppState, id: &str, page: &str, q: &TokenQuery) -> Option<Response> {
    let token = q.token.as_deref()?;
    Some(with_cookie(
        state,
        id,
        token,
        Redirect::to(&format!("/portal/requests/{id}{page}")).into_response(),
    ))
}

async fn verify_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = upgrade_link(&state, &id, "/verify", &q) {
        return r;
    }
    let (svc, token) = match holder(&state, &headers) {
        Ok(h) => h,
        Err(page) => return *page,
    };
    match svc.status(&id, &token).await {
        Ok(v) => code_page(&state, StatusCode::OK, &id, &v.due_at, None),
        Err(e) => failure(&state, e),
    }
}

async fn verify(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<Form<VerifyForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return unreadable(&state);
    };
    let (svc, token) = match holder(&state, &headers) {
        Ok(h) => h,
        Err(page) => return *page,
    };
    // The token proves this is the maker's page before any code is tried.
    let view = match svc.status(&id, &token).await {
        Ok(v) => v,
        Err(e) => return failure(&state, e),
    };
    match svc.verify(&id, &f.code, chrono::Utc::now()).await {
        Ok(_) => {
            state.work_queued();
            Redirect::to(&format!("/portal/requests/{id}")).into_response()
        }
        Err(
            e @ (RequestError::WrongCode { .. }
            | RequestError::Expired
            | RequestError::TooManyAttempts
            | RequestError::UseTheLink),
        ) => code_page(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            &id,
            &view.due_at,
            Some(e.to_string()),
        ),
        Err(e) => failure(&state, e),
    }
}

/// The button of a link from an e-mail: the link's secret.
#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct SecretForm {
    #[serde(default)]
    secret: String,
}

/// The link from the e-mail: a page with one button, so that a mail scanner fetching the
/// link confirms nothing.
async fn confirm_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<SecretForm>,
) -> Response {
    page(
        StatusCode::OK,
        "confirm.html",
        context! { controller => state.settings.controller, id, secret => q.secret },
    )
}

async fn confirm(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: Result<Form<SecretForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return unreadable(&state);
    };
    let svc = service(&state);
    match svc.verify_link(&id, &f.secret, chrono::Utc::now()).await {
        Ok(v) => {
            state.work_queued();
            page(
                StatusCode::OK,
                "confirm.html",
                context! {
                    controller => state.settings.controller, id, confirmed => true,
                    due => v.due_at.get(..10).unwrap_or(&v.due_at),
                },
            )
        }
        Err(RequestError::Unauthorized | RequestError::NotPending) => message(
            &state,
            StatusCode::UNAUTHORIZED,
            "We could not do that",
            "This link does not confirm a request: it was replaced by a newer e-mail, or the request was already confirmed or withdrawn.",
        ),
        Err(RequestError::Expired) => message(
            &state,
            StatusCode::GONE,
            "We could not do that",
            "This link has expired. Ask for a new code on the page where you made the request, or make the request again.",
        ),
        Err(e) => failure(&state, e),
    }
}

fn status_text(status: &str) -> &'static str {
    crate::requests::Status::parse(status).map_or("in progress", |s| s.words())
}

async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = upgrade_link(&state, &id, "", &q) {
        return r;
    }
    let (svc, token) = match holder(&state, &headers) {
        Ok(h) => h,
        Err(page) => return *page,
    };
    let v = match svc.status(&id, &token).await {
        Ok(v) => v,
        Err(e) => return failure(&state, e),
    };
    // The token was checked by `status` above.
    let download = matches!(v.kind.as_str(), "access" | "portability")
        && v.status == "completed"
        && svc
            .package_ready(&id, chrono::Utc::now())
            .await
            .unwrap_or(false);
    page(
        StatusCode::OK,
        "status.html",
        context! {
            controller => state.settings.controller,
            status_text => status_text(&v.status),
            pending_code => v.status == "identity_pending",
            cancellable => matches!(v.status.as_str(), "identity_pending" | "verified" | "awaiting_approval"),
            download,
            package_days => state.settings.package_days,
            authority => state.settings.authority,
            r => v,
        },
    )
}

async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (svc, token) = match holder(&state, &headers) {
        Ok(h) => h,
        Err(page) => return *page,
    };
    match svc.withdraw(&id, &token, chrono::Utc::now()).await {
        Ok(()) => Redirect::to(&format!("/portal/requests/{id}")).into_response(),
        Err(e) => failure(&state, e),
    }
}

async fn resend(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (svc, token) = match holder(&state, &headers) {
        Ok(h) => h,
        Err(page) => return *page,
    };
    match svc.resend_code(&id, &token, chrono::Utc::now()).await {
        Ok(v) => code_page(&state, StatusCode::OK, &id, &v.due_at, None),
        Err(e @ (RequestError::ResendTooSoon(_) | RequestError::NoMoreCodes)) => message(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            "No new code yet",
            &e.to_string(),
        ),
        Err(e) => failure(&state, e),
    }
}

/// The link in the completion e-mail: a page whose one button downloads the package, so
/// that a mail scanner fetching the link takes nothing away.
async fn download_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<SecretForm>,
) -> Response {
    page(
        StatusCode::OK,
        "download.html",
        context! {
            controller => state.settings.controller, id, secret => q.secret,
            package_days => state.settings.package_days,
        },
    )
}

/// The package, for the secret of the completion e-mail's link (posted by its page).
async fn download(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: Result<Form<SecretForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return unreadable(&state);
    };
    let svc = service(&state);
    match svc.package(&id, &f.secret, chrono::Utc::now()).await {
        Ok(d) => super::requests::download(&id, d),
        Err(RequestError::Unauthorized) => message(
            &state,
            StatusCode::UNAUTHORIZED,
            "We could not do that",
            "This link does not open a package. Use the link of the e-mail telling you that your data is ready.",
        ),
        Err(RequestError::Expired) => message(
            &state,
            StatusCode::GONE,
            "We could not do that",
            "This package is no longer kept. Make a new request to receive your data again.",
        ),
        Err(e) => failure(&state, e),
    }
}
