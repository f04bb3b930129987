//! The DPO workspace under `/admin`: pages rendered on the server, no JavaScript. A DPO
//! or an auditor signs in with an admin token (`lethe admin token create`) and gets a
//! session cookie (HttpOnly, SameSite=Strict, Secure behind an https `public_url`) whose
//! secret the store keeps only as a hash; the session ends after
//! [`SESSION_IDLE_MINUTES`] without a page, on sign-out, and with its token. Every form
//! carries a token derived from the session's secret, checked on POST (with the origin
//! check the portal's forms have). An auditor reads everything and is offered no action;
//! an action posted by an auditor is 403. Every action is audited under the token's id,
//! through the same request service as the JSON API.

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use minijinja::{AutoEscape, Environment, context};
use serde::Deserialize;

use super::requests::service;
use super::{ApiError, AppState};
use crate::audit::{Actor, NewEntry};
use crate::requests::{Kind, Listing, PAGE_SIZE, Status, StatusFilter};
use crate::store::{Role, SESSION_IDLE_MINUTES, Session};

/// The cookie carrying the session's secret.
const COOKIE: &str = "lethe_admin";

/// What a DPO does to a request from its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Approve,
    Retry,
    Extend,
    Reject,
    Complete,
    Lift,
}

impl Action {
    const ALL: [Action; 6] = [
        Self::Approve,
        Self::Retry,
        Self::Extend,
        Self::Reject,
        Self::Complete,
        Self::Lift,
    ];

    fn key(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Retry => "retry",
            Self::Extend => "extend",
            Self::Reject => "reject",
            Self::Complete => "complete",
            Self::Lift => "lift",
        }
    }

    /// What the page says once it is done.
    fn done(self) -> &'static str {
        match self {
            Self::Approve => "Approved: the request runs now.",
            Self::Retry => "The request runs again.",
            Self::Extend => "The deadline is extended; the person is told why.",
            Self::Reject => "Rejected; the person is told why and of their right to complain.",
            Self::Complete => "Completed; the person is told what was done.",
            Self::Lift => {
                "The lift is announced to the person; the restriction ends once the message is sent."
            }
        }
    }
}

/// A page's path asked with a method it does not take: a page saying so.
async fn not_allowed(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let signed = signed_in(&state, &headers).await.ok();
    message(
        &state,
        signed.as_ref(),
        StatusCode::METHOD_NOT_ALLOWED,
        "Not like this",
        "This address is a page to open or a form to send from the workspace's own pages.",
        Some("/admin"),
    )
}

pub fn routes() -> super::Routes {
    let act = |a: Action| {
        post(
            move |state: State<AppState>,
                  headers: HeaderMap,
                  id: Path<String>,
                  form: Result<Form<ActionForm>, FormRejection>| {
                act(state, headers, id, form, a)
            },
        )
    };
    super::Routes::new()
        .route("/admin/logout", post(logout))
        .route("/admin", get(overview))
        .route("/admin/requests", get(queue))
        .route("/admin/requests/{id}", get(request_page))
        .route("/admin/requests/{id}/approve", act(Action::Approve))
        .route("/admin/requests/{id}/retry", act(Action::Retry))
        .route("/admin/requests/{id}/extend", act(Action::Extend))
        .route("/admin/requests/{id}/reject", act(Action::Reject))
        .route("/admin/requests/{id}/complete", act(Action::Complete))
        .route("/admin/requests/{id}/lift", act(Action::Lift))
        .route("/admin/register", get(register))
        .route("/admin/register.csv", get(register_csv))
        .route("/admin/register.json", get(register_json))
        .route("/admin/register/map", get(data_map))
        .route("/admin/vendors", get(vendors))
        .route("/admin/retention", get(retention))
        .route("/admin/audit", get(audit))
        .route("/admin/audit/export.jsonl", get(audit_export))
        .route("/admin/jobs", get(jobs))
        .route("/admin/tokens", get(tokens).post(create_token))
        .route("/admin/tokens/{id}/revoke", post(revoke_token))
        .map(|r| r.method_not_allowed_fallback(not_allowed))
}

/// The sign-in page, which anyone may call (and which is limited per client address).
pub fn sign_in_routes() -> super::Routes {
    super::Routes::new()
        .route("/admin/login", get(login_page).post(login))
        .map(|r| r.method_not_allowed_fallback(not_allowed))
}

fn templates() -> &'static Environment<'static> {
    static ENV: std::sync::OnceLock<Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        for (name, text) in [
            (
                "base.html",
                include_str!("../../templates/workspace/base.html"),
            ),
            (
                "login.html",
                include_str!("../../templates/workspace/login.html"),
            ),
            (
                "message.html",
                include_str!("../../templates/workspace/message.html"),
            ),
            (
                "overview.html",
                include_str!("../../templates/workspace/overview.html"),
            ),
            (
                "requests.html",
                include_str!("../../templates/workspace/requests.html"),
            ),
            (
                "request.html",
                include_str!("../../templates/workspace/request.html"),
            ),
            (
                "tokens.html",
                include_str!("../../templates/workspace/tokens.html"),
            ),
            (
                "retention.html",
                include_str!("../../templates/workspace/retention.html"),
            ),
            (
                "audit.html",
                include_str!("../../templates/workspace/audit.html"),
            ),
            (
                "vendors.html",
                include_str!("../../templates/workspace/vendors.html"),
            ),
            (
                "register.html",
                include_str!("../../templates/workspace/register.html"),
            ),
            (
                "map.html",
                include_str!("../../templates/workspace/map.html"),
            ),
            (
                "jobs.html",
                include_str!("../../templates/workspace/jobs.html"),
            ),
        ] {
            // The templates are part of the binary and checked by the tests.
            if let Err(e) = env.add_template(name, text) {
                tracing::error!(template = name, error = %e, "workspace template");
            }
        }
        env
    })
}

/// A rendered page, never kept by a cache; a template error is logged and answered with
/// a plain 500.
fn page(status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
    match templates().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "workspace page");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

fn controller(state: &AppState) -> String {
    state
        .policy
        .controller
        .as_ref()
        .map_or_else(|| "the controller".to_owned(), |c| c.name.clone())
}

/// A page saying what went wrong (or right), with a way back.
fn message(
    state: &AppState,
    signed: Option<&Signed>,
    status: StatusCode,
    heading: &str,
    text: &str,
    back: Option<&str>,
) -> Response {
    let kind = if status.is_success() { "ok" } else { "error" };
    page(
        status,
        "message.html",
        context! {
            controller => controller(state),
            who => signed.map(Signed::who),
            csrf => signed.map(|s| csrf(&s.secret)),
            heading, text, back, kind,
        },
    )
}

/// The signed-in session of a page's request.
struct Signed {
    session: Session,
    secret: String,
}

impl Signed {
    fn who(&self) -> minijinja::Value {
        context! { token_id => self.session.token_id, role => self.session.role.key() }
    }

    fn actor(&self) -> Actor {
        Actor::Admin(self.session.token_id.clone())
    }
}

/// The form token of a session: derived from its secret, which only the session's
/// browser holds (in an HttpOnly cookie another site cannot read).
fn csrf(secret: &str) -> String {
    hex::encode(crate::crypto::sha256(&[
        b"lethe-admin-csrf:",
        secret.as_bytes(),
    ]))
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// `Set-Cookie` for the session `secret`; an empty secret clears it.
fn session_cookie(state: &AppState, secret: &str) -> Option<HeaderValue> {
    let secure = state
        .settings
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    let mut v = format!("{COOKIE}={secret}; Path=/admin; HttpOnly; SameSite=Strict");
    if secret.is_empty() {
        v.push_str("; Max-Age=0");
    }
    if secure {
        v.push_str("; Secure");
    }
    HeaderValue::from_str(&v).ok()
}

fn to_login() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/admin/login")]).into_response()
}

fn internal(state: &AppState, e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "workspace");
    message(
        state,
        None,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The page could not be made; the operator can find the cause in the log.",
        Some("/admin"),
    )
}

/// The session of this browser, if it is signed in; else the answer to give (to the
/// sign-in page).
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Signed, Box<Response>> {
    let Some(secret) = cookie(headers) else {
        return Err(Box::new(to_login()));
    };
    match state.store.session(&secret, Utc::now()).await {
        Ok(Some(session)) => Ok(Signed { session, secret }),
        Ok(None) => Err(Box::new(to_login())),
        Err(e) => Err(Box::new(internal(state, e))),
    }
}

/// A form posted by the session's own pages, by a DPO: else the page saying why not.
fn may_act(state: &AppState, signed: &Signed, form_csrf: &str) -> Result<(), Box<Response>> {
    let expected = csrf(&signed.secret);
    if !crate::crypto::constant_time_eq(expected.as_bytes(), form_csrf.as_bytes()) {
        return Err(Box::new(message(
            state,
            Some(signed),
            StatusCode::FORBIDDEN,
            "The form has expired",
            "This form does not belong to your session. Open the page again and repeat.",
            Some("/admin"),
        )));
    }
    if signed.session.role != Role::Dpo {
        return Err(Box::new(message(
            state,
            Some(signed),
            StatusCode::FORBIDDEN,
            "Not allowed",
            "You are signed in as an auditor: you can read everything and change nothing.",
            Some("/admin"),
        )));
    }
    Ok(())
}

async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if signed_in(&state, &headers).await.is_ok() {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/admin")]).into_response();
    }
    login_form(&state, StatusCode::OK, None)
}

fn login_form(state: &AppState, status: StatusCode, error: Option<&str>) -> Response {
    page(
        status,
        "login.html",
        context! { controller => controller(state), error, idle_minutes => SESSION_IDLE_MINUTES },
    )
}

/// The sign-in form.
#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct LoginForm {
    /// An admin token.
    #[serde(default)]
    token: String,
}

async fn login(
    State(state): State<AppState>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return login_form(
            &state,
            StatusCode::BAD_REQUEST,
            Some("The form could not be read. Paste the token and try again."),
        );
    };
    let now = Utc::now();
    let opened = match state.store.open_session(form.token.trim(), now).await {
        Ok(o) => o,
        Err(e) => return internal(&state, e),
    };
    let Some((secret, session)) = opened else {
        return login_form(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("This token does not open the workspace: it is unknown, revoked or expired."),
        );
    };
    let entry = NewEntry::new(Actor::Admin(session.token_id.clone()), "admin.signed_in")
        .summary(serde_json::json!({ "role": session.role.key() }));
    if let Err(e) = state.audit.append(entry).await {
        return internal(&state, e);
    }
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/admin")]).into_response();
    if let Some(v) = session_cookie(&state, &secret) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// A form with nothing but the session's form token.
#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let signed = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let given = form.map(|Form(f)| f.csrf).unwrap_or_default();
    if !crate::crypto::constant_time_eq(csrf(&signed.secret).as_bytes(), given.as_bytes()) {
        return message(
            &state,
            Some(&signed),
            StatusCode::FORBIDDEN,
            "The form has expired",
            "This form does not belong to your session. Open the page again and repeat.",
            Some("/admin"),
        );
    }
    if let Err(e) = state.store.close_session(&signed.secret).await {
        return internal(&state, e);
    }
    let entry = NewEntry::new(signed.actor(), "admin.signed_out");
    if let Err(e) = state.audit.append(entry).await {
        return internal(&state, e);
    }
    let mut resp = to_login();
    if let Some(v) = session_cookie(&state, "") {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// The overdue, failed and soon-due requests the overview lists, at most.
const URGENT_SHOWN: i64 = 20;

async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let signed = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let now = Utc::now();
    let svc = service(&state);
    let (counts, urgent) = match tokio::try_join!(svc.counts(now), svc.urgent(now, URGENT_SHOWN)) {
        Ok(v) => v,
        Err(e) => return internal(&state, e),
    };
    let week = now + chrono::Duration::days(crate::requests::DUE_SOON_DAYS);
    let today = now.date_naive();
    let findings = crate::vendors::check(&state.policy, today);
    let reviews = crate::vendors::reviews_due(&state.policy, today, 30);
    let runs = match state.store.job_runs(200).await {
        Ok(r) => r,
        Err(e) => return internal(&state, e),
    };
    let last = |kind: &str| runs.iter().find(|r| r.kind == kind);
    let jobs = [
        ("Retention", last("retention")),
        ("Audit checkpoint", last("audit_checkpoint")),
    ]
    .map(|(what, run)| context! { what, run });
    page(
        StatusCode::OK,
        "overview.html",
        context! {
            controller => controller(&state),
            who => signed.who(),
            csrf => csrf(&signed.secret),
            here => "overview",
            counts, urgent, findings, reviews, jobs,
            more => urgent.len() as i64 == URGENT_SHOWN,
            week => week.date_naive().to_string(),
        },
    )
}

/// A request the DPO carries out by hand once verified (the service's tasks).
fn is_task(kind: &str) -> bool {
    Kind::parse(kind).is_some_and(crate::requests::is_manual)
}

#[derive(Deserialize, Default)]
struct QueueQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    due_by: Option<String>,
    #[serde(default)]
    page: Option<String>,
}

/// The queue's filter from the query; what is wrong with it, in words.
fn listing(q: &QueueQuery) -> Result<Listing, String> {
    let status = match q.status.as_deref().unwrap_or("open") {
        "" | "open" => StatusFilter::Open,
        "all" => StatusFilter::All,
        s => StatusFilter::Is(Status::parse(s).ok_or_else(|| {
            format!(
                "`status` is open, all, or one of: {}",
                Status::ALL.map(Status::key).join(", ")
            )
        })?),
    };
    let kind =
        match q.kind.as_deref().unwrap_or("") {
            "" => None,
            k => Some(Kind::parse(k).ok_or_else(|| {
                format!("`type` is one of: {}", Kind::ALL.map(Kind::key).join(", "))
            })?),
        };
    let due_by = match q.due_by.as_deref().unwrap_or("") {
        "" => None,
        d => Some(
            chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map_err(|_| "`due_by` is a date, YYYY-MM-DD".to_owned())?,
        ),
    };
    let page = match q.page.as_deref().unwrap_or("") {
        "" => 1,
        p => p
            .parse::<u32>()
            .ok()
            .filter(|p| (1..=1_000_000).contains(p))
            .ok_or_else(|| "`page` is a page number, from 1".to_owned())?,
    };
    Ok(Listing {
        status,
        kind,
        due_by,
        page,
    })
}

async fn queue(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<QueueQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let signed = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let which = match query
        .map_err(|_| "Each filter may be given once: status, type, due_by, page.".to_owned())
        .and_then(|Query(q)| listing(&q))
    {
        Ok(w) => w,
        Err(why) => {
            return message(
                &state,
                Some(&signed),
                StatusCode::BAD_REQUEST,
                "Those filters do not work",
                &why,
                Some("/admin/requests"),
            );
        }
    };
    let (rows, total) = match service(&state).list(&which, Utc::now()).await {
        Ok(r) => r,
        Err(e) => return internal(&state, e),
    };
    let status = match which.status {
        StatusFilter::Open => "open".to_owned(),
        StatusFilter::All => "all".to_owned(),
        StatusFilter::Is(s) => s.key().to_owned(),
    };
    let kind = which.kind.map(Kind::key).unwrap_or("");
    let due_by = which.due_by.map(|d| d.to_string()).unwrap_or_default();
    let mut statuses = vec![
        ("open".to_owned(), "open (not ended)".to_owned()),
        ("all".to_owned(), "every state".to_owned()),
    ];
    statuses.extend(Status::ALL.map(|s| (s.key().to_owned(), s.key().replace('_', " "))));
    let link = format!("/admin/requests?status={status}&type={kind}&due_by={due_by}");
    let pages = ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
    page(
        StatusCode::OK,
        "requests.html",
        context! {
            controller => controller(&state),
            who => signed.who(),
            csrf => csrf(&signed.secret),
            here => "requests",
            rows, total, pages, link, statuses,
            page => which.page,
            kinds => Kind::ALL.map(Kind::key),
            filter => context! { status, type => kind, due_by },
        },
    )
}

/// The actions a request's state allows.
fn actions(r: &crate::requests::Full, now: DateTime<Utc>) -> Vec<&'static str> {
    let status = Status::parse(&r.status);
    let open = status.is_some_and(|s| !s.is_final());
    let held = r
        .result
        .as_ref()
        .is_some_and(|v| v["waiting_for"] == "restriction");
    let mut out = Vec::new();
    if status == Some(Status::AwaitingApproval) && !held {
        out.push(Action::Approve);
    }
    if status == Some(Status::Failed) {
        out.push(Action::Retry);
    }
    // Once, and before the first deadline (Art. 12(3)).
    if open && r.extended_at.is_none() && r.due_at > crate::store::timestamp(now) {
        out.push(Action::Extend);
    }
    if status == Some(Status::Failed) || (status == Some(Status::InProgress) && is_task(&r.kind)) {
        out.push(Action::Complete);
    }
    if r.restriction_in_force {
        out.push(Action::Lift);
    }
    if open {
        out.push(Action::Reject);
    }
    out.into_iter().map(Action::key).collect()
}

async fn request_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<DoneQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let signed = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    // `done` only says what the last action did: an odd one is left out.
    let done = query.ok().and_then(|Query(q)| q.done);
    request_view(&state, &signed, &id, done.as_deref(), StatusCode::OK).await
}

#[derive(Deserialize, Default)]
struct DoneQuery {
    #[serde(default)]
    done: Option<String>,
}

async fn request_view(
    state: &AppState,
    signed: &Signed,
    id: &str,
    done: Option<&str>,
    status: StatusCode,
) -> Response {
    let r = match service(state).full(id).await {
        Ok(r) => r,
        Err(crate::requests::RequestError::NotFound) => {
            return message(
                state,
                Some(signed),
                StatusCode::NOT_FOUND,
                "No such request",
                "There is no request with this id.",
                Some("/admin/requests"),
            );
        }
        Err(e) => return internal(state, e),
    };
    let filter = crate::audit::Filter {
        request_id: Some(id.to_owned()),
        ..Default::default()
    };
    let entries = match state.audit.entries(&filter).await {
        Ok(e) => e,
        Err(e) => return internal(state, e),
    };
    let timeline: Vec<minijinja::Value> = entries
        .iter()
        .map(|e| {
            let payload = match &e.payload {
                crate::audit::Payload::Clear(v) if v.is_null() => String::new(),
                crate::audit::Payload::Clear(v) => v.to_string(),
                crate::audit::Payload::Shredded => {
                    "(the person's details: shredded with their key)".to_owned()
                }
            };
            context! {
                seq => e.header.seq,
                recorded_at => e.header.recorded_at,
                actor => e.header.actor,
                action => e.header.action,
                summary => e.header.summary,
                payload,
            }
        })
        .collect();
    let now = Utc::now();
    let overdue = Status::parse(&r.status).is_some_and(|s| !s.is_final())
        && r.due_at < crate::store::timestamp(now);
    let result_json = r
        .result
        .as_ref()
        .and_then(|v| serde_json::to_string_pretty(v).ok())
        .unwrap_or_default();
    let done = done.and_then(|d| Action::ALL.into_iter().find(|a| a.key() == d));
    page(
        status,
        "request.html",
        context! {
            controller => controller(state),
            who => signed.who(),
            csrf => csrf(&signed.secret),
            here => "requests",
            actions => actions(&r, now),
            can_act => signed.session.role == Role::Dpo,
            done => done.map(Action::done),
            r, timeline, overdue, result_json,
        },
    )
}

/// The form of an action on a request: the session's form token, and what the action
/// needs (`reason` to extend or reject, `note` to complete or lift, `months` to extend).
#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    months: String,
}

/// The longest reason or note, in characters (as in the JSON API).
const TEXT_MAX: usize = 4000;

async fn act(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
    action: Action,
) -> Response {
    let signed = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let back = format!("/admin/requests/{id}");
    let Ok(Form(form)) = form else {
        return message(
            &state,
            Some(&signed),
            StatusCode::BAD_REQUEST,
            "The form could not be read",
            "Open the request's page again and repeat.",
            Some(&back),
        );
    };
    if let Err(r) = may_act(&state, &signed, &form.csrf) {
        return *r;
    }
    let text = match action {
        Action::Reject | Action::Extend => form.reason.trim(),
        _ => form.note.trim(),
    };
    let needs_text = !matches!(action, Action::Approve | Action::Retry);
    if needs_text
        && (text.is_empty() || text.chars().count() > TEXT_MAX || !super::printable(text, true))
    {
        return message(
            &state,
            Some(&signed),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Something is missing",
            &format!(
                "Write what the person will read: 1 to {TEXT_MAX} characters, without control characters."
            ),
            Some(&back),
        );
    }
    let svc = service(&state);
    let now = Utc::now();
    let actor = signed.actor();
    let done = match action {
        Action::Approve => svc.approve(&id, actor, now).await,
        Action::Retry => svc.retry(&id, actor, now).await,
        Action::Extend => {
            let Some(months) = form
                .months
                .parse::<u32>()
                .ok()
                .filter(|m| (1..=2).contains(m))
            else {
                return message(
                    &state,
                    Some(&signed),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Something is missing",
                    "Extend by 1 or 2 months (Art. 12(3)).",
                    Some(&back),
                );
            };
            svc.extend(&id, months, text, actor, now).await.map(|_| ())
        }
        Action::Reject => {
            let authority = state.authority();
            svc.reject(&id, text, authority.as_deref(), actor, now)
                .await
        }
        Action::Complete => svc.complete_task(&id, text, actor, now).await,
        Action::Lift => svc.lift_restriction(&id, text, actor, now).await,
    };
    match done {
        Ok(()) => {
            if matches!(action, Action::Approve | Action::Retry | Action::Lift) {
                state.work_queued();
            }
            let to = format!("{back}?done={}", action.key());
            match HeaderValue::from_str(&to) {
                Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
                Err(e) => internal(&state, e),
            }
        }
        Err(e) => {
            let e = ApiError::from(e);
            let status = e.status();
            if status.is_server_error() {
                return internal(&state, e.public_message());
            }
            message(
                &state,
                Some(&signed),
                status,
                "That cannot be done",
                &e.public_message(),
                Some(&back),
            )
        }
    }
}

/// A file to download, never cached.
fn download(content_type: &'static str, name: &str, body: Vec<u8>) -> Response {
    let disposition = format!("attachment; filename=\"{name}\"");
    let mut resp = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

async fn register(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let signed = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let rows = crate::register::rows(&state.policy);
    let (controller_line, dpo) = match &state.policy.controller {
        Some(c) => (
            format!("{}, {}, {}", c.name, c.address, c.contact_email),
            c.dpo.as_ref().map(|d| format!("{} <{}>", d.name, d.email)),
        ),
        None => ("not stated in the policy".to_owned(), None),
    };
    page(
        StatusCode::OK,
        "register.html",
        context! {
            controller => controller(&state),
            who => signed.who(),
            csrf => csrf(&signed.secret),
            here => "register",
            policy_hash => state.policy.hash,
            measures => crate::register::view::measures_text(&state.policy),
            rows, controller_line, dpo,
        },
    )
}

async fn register_csv(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = signed_in(&state, &headers).await {
        return *r;
    }
    match crate::register::to_csv(&crate::register::rows(&state.policy)) {
        Ok(csv) => download("text/csv; charset=utf-8", "register.csv", csv),
        Err(e) => internal(&state, e),
    }
}

async fn register_json(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = signed_in(&state, &headers).await {
        return *r;
    }
    match serde_json::to_vec_pretty(&crate::register::rows(&state.policy)) {
        Ok(json) => download("application/json", "register.json", json),
        Err(e) => internal(&state, e),
    }
}

async fn vendors(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let signed = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let today = Utc::now().date_naive();
    let findings = crate::vendors::check(&state.policy, today);
    let matrix = crate::vendors::matrix(&state.policy);
    // A cell is a gap where a finding names its agreement and its parameter.
    let gap = |column: &str, parameter: &str| {
        findings.iter().any(|f| {
            f.agreement.as_deref() == Some(column) && f.parameter.as_deref() == Some(parameter)
        })
    };
    let rows: Vec<minijinja::Value> = matrix
        .rows
        .iter()
        .map(|r| {
            let cells: Vec<minijinja::Value> = r
                .cells
                .iter()
                .zip(&matrix.columns)
                .map(|(text, c)| context! { text, gap => gap(&c.id, &r.parameter) })
                .collect();
            context! { label => r.label, cells }
        })
        .collect();
    page(
        StatusCode::OK,
        "vendors.html",
        context! {
            controller => controller(&state),
            who => signed.who(),
            csrf => csrf(&signed.secret),
            here => "vendors",
            reviews => crate::vendors::reviews_due(&state.policy, today, 90),
            obligations => crate::vendors::obligations(&state.policy),
            columns => matrix.columns,
            findings, rows,
        },
    )
}

async fn retention(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let signed = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let sources = crate::sources::db::Sources::default();
    let planned = async {
        let requested =
            crate::retention::requested_in(&state.policy, &sources, &state.audit).await?;
        let due = crate::retention::plan(&state.policy, &sources, Utc::now(), &requested).await?;
        Ok::<_, anyhow::Error>(due)
    }
    .await;
    sources.close().await;
    // A system that cannot be read is named; the cause goes to the log.
    let (plan, plan_error) = match planned {
        Ok(p) => (p, None),
        Err(e) => {
            tracing::warn!(error = %e, "workspace: retention plan");
            (
                Vec::new(),
                Some("The plan could not be made: a system cannot be read. The log names it."),
            )
        }
    };
    let runs: Vec<crate::store::JobRun> = match state.store.job_runs(200).await {
        Ok(r) => r
            .into_iter()
            .filter(|r| r.kind == "retention")
            .take(10)
            .collect(),
        Err(e) => return internal(&state, e),
    };
    page(
        StatusCode::OK,
        "retention.html",
        context! {
            controller => controller(&state),
            who => signed.who(),
            csrf => csrf(&signed.secret),
            here => "retention",
            plan, plan_error, runs,
        },
    )
}

async fn audit(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let signed = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let report = match state.audit.verify().await {
        Ok(r) => r,
        Err(e) => return internal(&state, e),
    };
    let mut checkpoints = match state.audit.checkpoints().await {
        Ok(c) => c,
        Err(e) => return internal(&state, e),
    };
    checkpoints.reverse();
    checkpoints.truncate(20);
    page(
        StatusCode::OK,
        "audit.html",
        context! {
            controller => controller(&state),
            who => signed.who(),
            csrf => csrf(&signed.secret),
            here => "audit",
            report, checkpoints,
        },
    )
}

async fn audit_export(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let signed = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let entries = match state.audit.entries(&crate::audit::Filter::default()).await {
        Ok(e) => e,
        Err(e) => return internal(&state, e),
    };
    let mut buf = Vec::new();
    for e in &entries {
        if let Err(e) = serde_json::to_writer(&mut buf, e) {
            return internal(&state, e);
        }
        buf.push(b'\n');
    }
    let entry = NewEntry::new(signed.actor(), "admin.audit_exported")
        .summary(serde_json::json!({ "entries": entries.len() }));
    if let Err(e) = state.audit.append(entry).await {
        return internal(&state, e);
    }
    download("application/x-ndjson", "audit.jsonl", buf)
}

/// The tokens page is the DPO's: an auditor gets 403.
async fn dpo_only(state: &AppState, headers: &HeaderMap) -> Result<Signed, Box<Response>> {
    let signed = signed_in(state, headers).await?;
    if signed.session.role != Role::Dpo {
        return Err(Box::new(message(
            state,
            Some(&signed),
            StatusCode::FORBIDDEN,
            "Not allowed",
            "Only a DPO's session manages tokens.",
            Some("/admin"),
        )));
    }
    Ok(signed)
}

#[derive(Deserialize, Default)]
struct TokensQuery {
    #[serde(default)]
    done: Option<String>,
}

async fn tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<TokensQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let signed = match dpo_only(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let revoked = query.is_ok_and(|Query(q)| q.done.as_deref() == Some("revoked"));
    let done = revoked.then_some("The token is revoked: it opens nothing from now on.");
    tokens_page(&state, &signed, StatusCode::OK, None, done).await
}

async fn tokens_page(
    state: &AppState,
    signed: &Signed,
    status: StatusCode,
    created: Option<minijinja::Value>,
    done: Option<&str>,
) -> Response {
    let list = match state.store.admin_tokens().await {
        Ok(l) => l,
        Err(e) => return internal(state, e),
    };
    let now = crate::store::timestamp(Utc::now());
    let tokens: Vec<minijinja::Value> = list
        .iter()
        .map(|t| {
            let state = if t.revoked_at.is_some() {
                "revoked"
            } else if t.expires_at.as_ref().is_some_and(|e| *e <= now) {
                "expired"
            } else {
                "valid"
            };
            context! {
                id => t.id, role => t.role, label => t.label, created_at => t.created_at,
                expires_at => t.expires_at, last_used_at => t.last_used_at, state,
            }
        })
        .collect();
    page(
        status,
        "tokens.html",
        context! {
            controller => controller(state),
            who => signed.who(),
            csrf => csrf(&signed.secret),
            here => "tokens",
            tokens, created, done,
        },
    )
}

/// The form creating a token.
#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct TokenForm {
    #[serde(default)]
    csrf: String,
    /// `auditor` or `dpo`.
    #[serde(default)]
    role: String,
    #[serde(default)]
    label: String,
    /// `90d`, `12h`, ... or `never`.
    #[serde(default)]
    expires: String,
}

async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    let signed = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let back = Some("/admin/tokens");
    let Ok(Form(form)) = form else {
        return message(
            &state,
            Some(&signed),
            StatusCode::BAD_REQUEST,
            "The form could not be read",
            "Open the page again and repeat.",
            back,
        );
    };
    if let Err(r) = may_act(&state, &signed, &form.csrf) {
        return *r;
    }
    let role = match form.role.as_str() {
        "dpo" => Role::Dpo,
        "auditor" => Role::Auditor,
        _ => {
            return message(
                &state,
                Some(&signed),
                StatusCode::UNPROCESSABLE_ENTITY,
                "Something is missing",
                "Choose a role: auditor or dpo.",
                back,
            );
        }
    };
    let lifetime = match form.expires.trim() {
        "" => crate::store::TokenLifetime::DEFAULT,
        e => match e.parse::<crate::store::TokenLifetime>() {
            Ok(l) => l,
            Err(why) => {
                return message(
                    &state,
                    Some(&signed),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Something is missing",
                    &why,
                    back,
                );
            }
        },
    };
    let label = form.label.trim();
    if label.chars().count() > 200 || !super::printable(label, false) {
        return message(
            &state,
            Some(&signed),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Something is missing",
            "A label has at most 200 characters, without control characters.",
            back,
        );
    }
    let label = (!label.is_empty()).then_some(label);
    let now = Utc::now();
    let (id, token) = match state
        .store
        .create_admin_token_with(role, label, lifetime, now)
        .await
    {
        Ok(t) => t,
        Err(e) => return internal(&state, e),
    };
    let entry = NewEntry::new(signed.actor(), "admin.token_created")
        .summary(serde_json::json!({ "token_id": id, "role": role.key() }));
    if let Err(e) = state.audit.append(entry).await {
        return internal(&state, e);
    }
    let created = context! { id, token, role => role.key() };
    tokens_page(&state, &signed, StatusCode::CREATED, Some(created), None).await
}

async fn revoke_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let signed = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let given = form.map(|Form(f)| f.csrf).unwrap_or_default();
    if let Err(r) = may_act(&state, &signed, &given) {
        return *r;
    }
    match state.store.revoke_admin_token(&id, Utc::now()).await {
        Ok(true) => {}
        Ok(false) => {
            return message(
                &state,
                Some(&signed),
                StatusCode::NOT_FOUND,
                "No such token",
                "There is no token in force with this id.",
                Some("/admin/tokens"),
            );
        }
        Err(e) => return internal(&state, e),
    }
    let entry = NewEntry::new(signed.actor(), "admin.token_revoked")
        .summary(serde_json::json!({ "token_id": id }));
    if let Err(e) = state.audit.append(entry).await {
        return internal(&state, e);
    }
    // Had the session been opened with that token, the page leads to the sign-in page.
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, "/admin/tokens?done=revoked")],
    )
        .into_response()
}

async fn data_map(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let signed = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (nodes, flows) = crate::register::map::build(&state.policy);
    let label = |key: &str| {
        nodes
            .iter()
            .find(|n| n.key == key)
            .map_or_else(|| key.to_owned(), |n| n.label.clone())
    };
    let column = |key: &str| nodes.iter().find(|n| n.key == key).map(|n| n.column);
    let columns = crate::register::map::COLUMNS;
    let links: Vec<minijinja::Value> = (0..columns.len() - 1)
        .map(|c| {
            let items: Vec<(String, String)> = flows
                .iter()
                .filter(|f| column(&f.from) == Some(c))
                .map(|f| (label(&f.from), label(&f.to)))
                .collect();
            context! { heading => format!("{} → {}", columns[c], columns[c + 1]), items }
        })
        .collect();
    let leaving: Vec<&str> = nodes
        .iter()
        .filter(|n| n.leaves_eea)
        .map(|n| n.label.as_str())
        .collect();
    page(
        StatusCode::OK,
        "map.html",
        context! {
            controller => controller(&state),
            who => signed.who(),
            csrf => csrf(&signed.secret),
            here => "register",
            svg => crate::register::map::svg(&state.policy),
            links, leaving,
        },
    )
}

async fn jobs(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let signed = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let runs = match state.store.job_runs(500).await {
        Ok(r) => r,
        Err(e) => return internal(&state, e),
    };
    let now = Utc::now();
    let jobs: Vec<minijinja::Value> = state
        .jobs
        .iter()
        .map(|j| {
            let name = j.name.as_str();
            let mine = || runs.iter().filter(move |r| r.job == name);
            let next = crate::policy::jobs::parse_schedule(&j.schedule)
                .ok()
                .and_then(|c| c.find_next_occurrence(&now, false).ok())
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string());
            context! {
                name, kind => j.kind.key(), schedule => j.schedule.as_str(), next,
                last => mine().next(),
                success => mine().find(|r| r.status == "completed"),
            }
        })
        .collect();
    let runs: Vec<&crate::store::JobRun> = runs.iter().take(50).collect();
    page(
        StatusCode::OK,
        "jobs.html",
        context! {
            controller => controller(&state),
            who => signed.who(),
            csrf => csrf(&signed.secret),
            here => "jobs",
            jobs, runs,
        },
    )
}
