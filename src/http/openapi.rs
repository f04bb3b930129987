//! `/openapi.json`: an OpenAPI 3.1 description of every route, built from one table whose
//! bodies and answers are the schemas of the handlers' own types (schemars). Tests walk the
//! router against the table, and check the answers of every JSON route against their
//! schemas.

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

use super::{admin, opendsr, portal, requests, workspace};
use crate::requests::{AdminView, Full, Submitted, View};

/// Who may call a route.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Public,
    /// The request's own token (bearer or `?token=`).
    RequestToken,
    /// The secret of the completion e-mail's link, as a bearer token.
    DownloadSecret,
    /// An admin token; `true` when it must be a DPO's.
    Admin(bool),
    /// A workspace session (its cookie); `true` when it must be a DPO's. Without one the
    /// page redirects to the sign-in page.
    Session(bool),
}

impl Auth {
    /// The answers of a call without the right credentials.
    fn refusals(self) -> &'static [(u16, &'static str)] {
        match self {
            Self::Public => &[],
            Self::Session(false) => &[(303, "not signed in: to /admin/login")],
            Self::Session(true) => &[
                (303, "not signed in: to /admin/login"),
                (
                    403,
                    "HTML: an auditor's session, or a form of another session",
                ),
            ],
            Self::RequestToken => &[(401, "no or wrong token")],
            Self::DownloadSecret => &[(401, "no or wrong download secret")],
            Self::Admin(false) => &[(401, "no or bad token")],
            Self::Admin(true) => &[(401, "no or bad token"), (403, "not a DPO token")],
        }
    }
}

pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    /// The body's schema (JSON, or the portal's form fields), for routes that take one.
    pub body: Option<SchemaFn>,
    /// The schema of a JSON success (2xx) answer.
    pub ok: Option<SchemaFn>,
    /// `(status, description)`.
    pub responses: &'static [(u16, &'static str)],
    pub tag: &'static str,
}

const ERR: &[(u16, &str)] = &[(400, "malformed body"), (422, "invalid field")];
/// Any route, when something fails on the server's side; the cause goes to its log.
const INTERNAL: &[(u16, &str)] = &[(500, "internal error; the operator's log has the cause")];
/// Every portal form POST: refused unless it comes from the portal's own origin.
const CROSS_SITE: &[(u16, &str)] = &[(
    403,
    "HTML: the form was not sent from the portal's own page (Origin, else Referer)",
)];

/// A schema generated from a handler's own type, its named parts going to
/// `#/components/schemas`.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The schema of `T`: a reference to its component when it has a name.
fn of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// This document: an OpenAPI 3.1 object.
fn openapi_document(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "object", "required": ["openapi", "info", "paths"],
        "properties": { "openapi": { "const": "3.1.0" } }
    })
}

impl Route {
    /// The JSON its success answers with.
    fn returns(mut self, schema: SchemaFn) -> Self {
        self.ok = Some(schema);
        self
    }
}

/// Every route `lethe serve` answers.
pub fn routes() -> Vec<Route> {
    use Auth::*;
    let r = |method, path, summary, auth, body, responses, tag| Route {
        method,
        path,
        summary,
        auth,
        body,
        ok: None,
        responses,
        tag,
    };
    vec![
        r(
            "get",
            "/healthz",
            "The process is up",
            Public,
            None,
            &[(200, "ok")],
            "ops",
        )
        .returns(of::<super::Health>),
        r(
            "get",
            "/readyz",
            "The store answers and a valid policy is loaded",
            Public,
            None,
            &[(200, "ready"), (503, "not ready")],
            "ops",
        )
        .returns(of::<super::Ready>),
        r(
            "get",
            "/metrics",
            "Prometheus text: requests by type and status, unsent mail and webhooks, audit entries (auditor or DPO token)",
            Admin(false),
            None,
            &[(200, "metrics"), (401, "no or bad token")],
            "ops",
        ),
        r(
            "get",
            "/openapi.json",
            "This description",
            Public,
            None,
            &[(200, "OpenAPI 3.1")],
            "ops",
        )
        .returns(openapi_document),
        r(
            "get",
            "/privacy",
            "The privacy notice (Art. 13/14), HTML",
            Public,
            None,
            &[(200, "HTML")],
            "public",
        ),
        r(
            "get",
            "/",
            "Portal: the request form (HTML, no JavaScript)",
            Public,
            None,
            &[(200, "HTML")],
            "portal",
        ),
        r(
            "post",
            "/portal/requests",
            "Portal: make a request (form)",
            Public,
            Some(of::<portal::SubmitForm>),
            &[
                (201, "HTML: enter the code"),
                (422, "HTML: the form again, with the error"),
            ],
            "portal",
        ),
        r(
            "get",
            "/portal/requests/{id}",
            "Portal: the request's status, download link, withdrawal",
            RequestToken,
            None,
            &[
                (200, "HTML"),
                (401, "HTML: the link does not open a request"),
            ],
            "portal",
        ),
        r(
            "get",
            "/portal/requests/{id}/verify",
            "Portal: the code form",
            RequestToken,
            None,
            &[(200, "HTML")],
            "portal",
        ),
        r(
            "post",
            "/portal/requests/{id}/verify",
            "Portal: confirm with the e-mailed code (form)",
            RequestToken,
            Some(of::<portal::VerifyForm>),
            &[
                (303, "to the status page"),
                (422, "HTML: wrong or expired code"),
            ],
            "portal",
        ),
        r(
            "post",
            "/portal/requests/{id}/code",
            "Portal: send a new code (the old one stops working); at most one a minute, a few per request",
            RequestToken,
            None,
            &[
                (200, "HTML: enter the new code"),
                (429, "HTML: no new code yet"),
            ],
            "portal",
        ),
        r(
            "get",
            "/portal/requests/{id}/confirm",
            "Portal: the link from the e-mail (`?secret=`): a page with a confirm button",
            Public,
            None,
            &[(200, "HTML")],
            "portal",
        ),
        r(
            "post",
            "/portal/requests/{id}/confirm",
            "Portal: confirm with the link's secret (form)",
            Public,
            Some(of::<portal::SecretForm>),
            &[
                (200, "HTML: confirmed"),
                (401, "HTML: the link does not confirm a request"),
                (410, "HTML: the link expired"),
            ],
            "portal",
        ),
        r(
            "get",
            "/portal/requests/{id}/download",
            "Portal: the link from the completion e-mail (`?secret=`): a page with a download button (a GET downloads nothing)",
            Public,
            None,
            &[(200, "HTML")],
            "portal",
        ),
        r(
            "post",
            "/portal/requests/{id}/download",
            "Portal: download the package with the link's secret (form field `secret`)",
            Public,
            Some(of::<portal::SecretForm>),
            &[
                (200, "application/zip or application/json"),
                (401, "HTML: the secret does not open a package"),
                (410, "HTML: the package is no longer kept"),
            ],
            "portal",
        ),
        r(
            "post",
            "/portal/requests/{id}/cancel",
            "Portal: withdraw the request (form)",
            RequestToken,
            None,
            &[
                (303, "to the status page"),
                (409, "HTML: too late to withdraw"),
            ],
            "portal",
        ),
        r(
            "post",
            "/v1/requests",
            "Make a request; a verification code is e-mailed",
            Public,
            Some(of::<requests::SubmitBody>),
            &[
                (
                    201,
                    "{id, status, due_at, token}: always a new request, whatever is open for the address",
                ),
                (400, "malformed JSON"),
                (413, "body over 64 KiB"),
                (422, "invalid field"),
                (429, "rate limited"),
            ],
            "requests",
        )
        .returns(of::<Submitted>),
        r(
            "post",
            "/v1/requests/{id}/code",
            "Send a new code and link to the holder of the request's token (the old ones stop working)",
            RequestToken,
            None,
            &[
                (200, "the request"),
                (401, "no or wrong token"),
                (409, "not waiting for a code"),
                (
                    429,
                    "too soon after the last code, or no more codes for this request",
                ),
            ],
            "public",
        )
        .returns(of::<View>),
        r(
            "post",
            "/v1/requests/{id}/verify",
            "Confirm the request with the e-mailed code or the link's secret (Art. 12(6))",
            Public,
            Some(of::<requests::VerifyBody>),
            &[
                (200, "the request"),
                (401, "the secret does not confirm this request"),
                (409, "not waiting for a code"),
                (410, "code or link expired"),
                (422, "wrong code"),
                (
                    429,
                    "too many wrong codes for the request, or for the person today: use the link",
                ),
            ],
            "requests",
        )
        .returns(of::<View>),
        r(
            "get",
            "/v1/requests/{id}",
            "The request's status",
            RequestToken,
            None,
            &[(200, "the request"), (401, "no or wrong token")],
            "requests",
        )
        .returns(of::<View>),
        r(
            "delete",
            "/v1/requests/{id}",
            "Withdraw a request not yet executed",
            RequestToken,
            None,
            &[
                (200, "the request, cancelled"),
                (401, "no or wrong token"),
                (409, "too late"),
            ],
            "requests",
        )
        .returns(of::<View>),
        r(
            "get",
            "/v1/requests/{id}/package",
            "Download the access or portability package (7 days) with the secret of the completion e-mail's link as the bearer token (the request token does not open it)",
            DownloadSecret,
            None,
            &[
                (200, "application/zip or application/json"),
                (401, "no or wrong download secret"),
                (410, "expired"),
            ],
            "requests",
        ),
        r(
            "get",
            "/v1/admin/requests",
            "Open requests, soonest due first; `?due_within=7d`",
            Admin(false),
            None,
            &[(200, "requests"), (401, "no or bad token")],
            "admin",
        )
        .returns(of::<Vec<AdminView>>),
        r(
            "get",
            "/v1/admin/mail/dead",
            "Mail the transport refused for good (dead letters), newest first, with recipient, kind, attempts and last error",
            Admin(false),
            None,
            &[(200, "dead letters"), (401, "no or bad token")],
            "admin",
        )
        .returns(of::<Vec<crate::notify::DeadLetter>>),
        r(
            "post",
            "/v1/admin/mail/dead/{id}/requeue",
            "Put a dead letter back in the queue once the transport or the address is fixed; `{\"recipient\"}` (optional) replaces the address",
            Admin(true),
            Some(of::<admin::RequeueBody>),
            &[
                (200, "queued"),
                (401, "no or bad token"),
                (403, "not a DPO token"),
                (404, "not a dead letter"),
            ],
            "admin",
        )
        .returns(of::<admin::Requeued>),
        r(
            "get",
            "/v1/admin/webhooks/failed",
            "Webhooks given up as failed after `give_up_hours`, newest first, with target, URL without its query, attempts and last status",
            Admin(false),
            None,
            &[(200, "failed webhooks"), (401, "no or bad token")],
            "admin",
        )
        .returns(of::<Vec<crate::notify::webhook::Failed>>),
        r(
            "get",
            "/v1/admin/suppression",
            "The suppression list: people who objected to direct marketing (Art. 21(2)), with their address, when and by which request",
            Admin(true),
            None,
            &[
                (200, "the list"),
                (401, "no or bad token"),
                (403, "not a DPO token"),
            ],
            "admin",
        )
        .returns(of::<Vec<crate::requests::Suppressed>>),
        r(
            "post",
            "/v1/admin/webhooks/{id}/requeue",
            "Put a failed webhook back in the queue, due now, with a new time window",
            Admin(true),
            None,
            &[
                (204, "re-queued"),
                (403, "not a DPO token"),
                (404, "no failed webhook with this id"),
            ],
            "admin",
        ),
        r(
            "get",
            "/v1/admin/requests/{id}",
            "One request, with the person's details",
            Admin(false),
            None,
            &[(200, "request"), (404, "no such request")],
            "admin",
        )
        .returns(of::<Full>),
        r(
            "post",
            "/v1/admin/requests/{id}/approve",
            "Approve a request waiting for the DPO",
            Admin(true),
            None,
            &[
                (200, "request"),
                (403, "not a DPO token"),
                (409, "not waiting for approval"),
            ],
            "admin",
        )
        .returns(of::<Full>),
        r(
            "post",
            "/v1/admin/requests/{id}/retry",
            "Run a failed request again, its attempts counted afresh",
            Admin(true),
            None,
            &[
                (200, "request"),
                (403, "not a DPO token"),
                (409, "not failed"),
            ],
            "admin",
        )
        .returns(of::<Full>),
        r(
            "post",
            "/v1/admin/requests/{id}/extend",
            "Extend the deadline once by 1-2 months, with a reason told to the subject",
            Admin(true),
            Some(of::<admin::ExtendBody>),
            &[
                (200, "request"),
                (409, "already extended"),
                (422, "invalid extension"),
            ],
            "admin",
        )
        .returns(of::<AdminView>),
        r(
            "post",
            "/v1/admin/requests/{id}/reject",
            "Reject with a reason (Art. 12(5)); the subject is told of the right to complain",
            Admin(true),
            Some(of::<admin::RejectBody>),
            &[(204, "rejected"), (422, "no reason")],
            "admin",
        ),
        r(
            "post",
            "/v1/admin/requests/{id}/deny",
            "Same as reject",
            Admin(true),
            Some(of::<admin::RejectBody>),
            &[(204, "rejected")],
            "admin",
        ),
        r(
            "post",
            "/v1/admin/requests/{id}/complete",
            "Complete a task (rectification, restriction, objection) with a note to the subject",
            Admin(true),
            Some(of::<admin::NoteBody>),
            &[(200, "request"), (409, "not a task")],
            "admin",
        )
        .returns(of::<Full>),
        r(
            "post",
            "/v1/admin/requests/{id}/lift",
            "Lift a restriction (Art. 18(3)) with a note to the subject",
            Admin(true),
            Some(of::<admin::NoteBody>),
            &[(200, "request"), (404, "no restriction in force")],
            "admin",
        )
        .returns(of::<Full>),
        r(
            "get",
            "/v1/admin/audit/verify",
            "Verify the audit log",
            Admin(false),
            None,
            &[(200, "report")],
            "admin",
        )
        .returns(of::<crate::audit::VerifyReport>),
        r(
            "get",
            "/v1/admin/audit/checkpoint",
            "The latest signed checkpoint",
            Admin(false),
            None,
            &[(200, "checkpoint")],
            "admin",
        )
        .returns(of::<crate::audit::Checkpoint>),
        r(
            "post",
            "/v1/admin/audit/checkpoint",
            "Sign a checkpoint of the audit log now",
            Admin(true),
            None,
            &[(200, "checkpoint")],
            "admin",
        )
        .returns(of::<crate::audit::Checkpoint>),
        r(
            "get",
            "/v1/admin/register",
            "The record of processing activities (Art. 30(1)), one row per purpose",
            Admin(false),
            None,
            &[(200, "the register")],
            "admin",
        )
        .returns(of::<Vec<crate::register::RegisterRow>>),
        r(
            "get",
            "/v1/admin/retention/plan",
            "What retention would delete or mask now, per collection, changing nothing; rows of people with a restriction in force counted apart",
            Admin(false),
            None,
            &[(200, "the plan"), (503, "a system cannot be read")],
            "admin",
        )
        .returns(of::<Vec<crate::retention::Due>>),
        r(
            "get",
            "/v1/admin/vendors/matrix",
            "Controls × agreements",
            Admin(false),
            None,
            &[(200, "matrix")],
            "admin",
        )
        .returns(of::<crate::vendors::Matrix>),
        r(
            "get",
            "/v1/admin/vendors/obligations",
            "The strictest obligation per control",
            Admin(false),
            None,
            &[(200, "obligations")],
            "admin",
        )
        .returns(of::<Vec<crate::vendors::Obligation>>),
        r(
            "get",
            "/v1/admin/vendors/check",
            "Where our measures fall short, and flow-down gaps",
            Admin(false),
            None,
            &[(200, "findings")],
            "admin",
        )
        .returns(of::<admin::VendorCheck>),
        r(
            "get",
            "/admin/login",
            "Workspace: the sign-in page",
            Public,
            None,
            &[(200, "HTML")],
            "workspace",
        ),
        r(
            "post",
            "/admin/login",
            "Workspace: sign in with an admin token (form field `token`); the session cookie is set",
            Public,
            Some(of::<workspace::LoginForm>),
            &[(303, "signed in: to /admin"), (401, "HTML: the token is unknown, revoked or expired")],
            "workspace",
        ),
        r(
            "post",
            "/admin/logout",
            "Workspace: sign out (the session ends)",
            Session(false),
            Some(of::<workspace::CsrfForm>),
            &[(303, "to /admin/login")],
            "workspace",
        ),
        r(
            "get",
            "/admin",
            "Workspace: the overview (requests due, overdue, failed, waiting; vendor findings; agreements to review; the last retention and checkpoint runs)",
            Session(false),
            None,
            &[(200, "HTML")],
            "workspace",
        ),
        r(
            "get",
            "/admin/requests",
            "Workspace: every request, filtered by `status` (open, all, or a state), `type` and `due_by`, soonest due first, 50 a `page`",
            Session(false),
            None,
            &[(200, "HTML"), (400, "HTML: a filter that does not work")],
            "workspace",
        ),
        r(
            "get",
            "/admin/requests/{id}",
            "Workspace: one request: the person, the outcome, the timeline from the audit log, and the actions its state allows",
            Session(false),
            None,
            &[(200, "HTML"), (404, "HTML: no such request")],
            "workspace",
        ),
        r(
            "post",
            "/admin/requests/{id}/approve",
            "Workspace: approve a request waiting for the DPO",
            Session(true),
            Some(of::<workspace::ActionForm>),
            &[(303, "done: to the request's page"), (409, "HTML: not in a state that allows it"), (422, "HTML: something missing")],
            "workspace",
        ),
        r(
            "post",
            "/admin/requests/{id}/retry",
            "Workspace: run a failed request again",
            Session(true),
            Some(of::<workspace::ActionForm>),
            &[(303, "done: to the request's page"), (409, "HTML: not in a state that allows it"), (422, "HTML: something missing")],
            "workspace",
        ),
        r(
            "post",
            "/admin/requests/{id}/extend",
            "Workspace: extend the deadline once by `months` (1-2) with a `reason`",
            Session(true),
            Some(of::<workspace::ActionForm>),
            &[(303, "done: to the request's page"), (409, "HTML: not in a state that allows it"), (422, "HTML: something missing")],
            "workspace",
        ),
        r(
            "post",
            "/admin/requests/{id}/reject",
            "Workspace: reject with a `reason`",
            Session(true),
            Some(of::<workspace::ActionForm>),
            &[(303, "done: to the request's page"), (409, "HTML: not in a state that allows it"), (422, "HTML: something missing")],
            "workspace",
        ),
        r(
            "post",
            "/admin/requests/{id}/complete",
            "Workspace: complete a task or a failed request with a `note`",
            Session(true),
            Some(of::<workspace::ActionForm>),
            &[(303, "done: to the request's page"), (409, "HTML: not in a state that allows it"), (422, "HTML: something missing")],
            "workspace",
        ),
        r(
            "post",
            "/admin/requests/{id}/lift",
            "Workspace: lift a restriction with a `note`",
            Session(true),
            Some(of::<workspace::ActionForm>),
            &[(303, "done: to the request's page"), (409, "HTML: not in a state that allows it"), (422, "HTML: something missing")],
            "workspace",
        ),
        r(
            "get",
            "/admin/register",
            "Workspace: the Art. 30(1) register, one row per purpose, with its downloads",
            Session(false),
            None,
            &[(200, "HTML")],
            "workspace",
        ),
        r(
            "get",
            "/admin/register.csv",
            "Workspace: the register as CSV (a download)",
            Session(false),
            None,
            &[(200, "text/csv")],
            "workspace",
        ),
        r(
            "get",
            "/admin/register.json",
            "Workspace: the register as JSON (a download)",
            Session(false),
            None,
            &[(200, "application/json")],
            "workspace",
        ),
        r(
            "get",
            "/admin/register/map",
            "Workspace: the data map: systems → collections → categories → purposes → recipients and their countries, as an SVG drawn on the server, with the transfers out of the EEA marked and the same links as text",
            Session(false),
            None,
            &[(200, "HTML")],
            "workspace",
        ),
        r(
            "get",
            "/admin/vendors",
            "Workspace: vendor findings, agreements to review, what the agreements demand of us, and the controls × agreements matrix",
            Session(false),
            None,
            &[(200, "HTML")],
            "workspace",
        ),
        r(
            "get",
            "/admin/retention",
            "Workspace: what retention would delete or mask now, per collection, and the recent runs",
            Session(false),
            None,
            &[(200, "HTML")],
            "workspace",
        ),
        r(
            "get",
            "/admin/audit",
            "Workspace: the audit log's verification, its signed checkpoints, and its download",
            Session(false),
            None,
            &[(200, "HTML")],
            "workspace",
        ),
        r(
            "get",
            "/admin/audit/export.jsonl",
            "Workspace: every audit entry, one JSON object per line (a download; audited)",
            Session(false),
            None,
            &[(200, "application/x-ndjson")],
            "workspace",
        ),
        r(
            "get",
            "/admin/jobs",
            "Workspace: the scheduled jobs with their next run, last run and last success, and the history of runs",
            Session(false),
            None,
            &[(200, "HTML")],
            "workspace",
        ),
        r(
            "get",
            "/admin/tokens",
            "Workspace: the admin tokens (never their secrets), with forms to create and revoke (DPO)",
            Session(false),
            None,
            &[(200, "HTML"), (403, "HTML: an auditor's session")],
            "workspace",
        ),
        r(
            "post",
            "/admin/tokens",
            "Workspace: create an admin token (`role`, `label`, `expires`); shown once (DPO)",
            Session(true),
            Some(of::<workspace::TokenForm>),
            &[(201, "HTML: the new token, once"), (422, "HTML: something missing")],
            "workspace",
        ),
        r(
            "post",
            "/admin/tokens/{id}/revoke",
            "Workspace: revoke an admin token (DPO)",
            Session(true),
            Some(of::<workspace::CsrfForm>),
            &[(303, "to /admin/tokens"), (404, "HTML: no token in force with this id")],
            "workspace",
        ),
        r(
            "get",
            "/opendsr/v1/discovery",
            "OpenDSR discovery",
            Public,
            None,
            &[(200, "what is supported")],
            "opendsr",
        )
        .returns(of::<opendsr::Discovery>),
        r(
            "get",
            "/opendsr/v1/public-key",
            "The Ed25519 key signing OpenDSR responses and callbacks (PEM)",
            Public,
            None,
            &[(200, "PEM")],
            "opendsr",
        ),
        r(
            "post",
            "/opendsr/v1/requests",
            "OpenDSR: hand over a verified request",
            Admin(true),
            Some(of::<opendsr::CreateBody>),
            &[
                (201, "accepted, signed"),
                (400, "validation error in the OpenDSR format"),
                (401, "no or bad token"),
            ],
            "opendsr",
        )
        .returns(of::<opendsr::Accepted>),
        r(
            "get",
            "/opendsr/v1/requests/{id}",
            "OpenDSR: status by subject_request_id",
            Admin(true),
            None,
            &[(200, "status, signed"), (404, "unknown")],
            "opendsr",
        )
        .returns(of::<opendsr::RequestStatus>),
        r(
            "delete",
            "/opendsr/v1/requests/{id}",
            "OpenDSR: cancel a pending request",
            Admin(true),
            None,
            &[(202, "cancelled, signed"), (400, "not pending")],
            "opendsr",
        )
        .returns(of::<opendsr::Cancelled>),
    ]
}

/// The document served at `/openapi.json`.
pub fn document() -> Value {
    let (mut bodies, mut answers) = generators();
    let mut paths: Map<String, Value> = Map::new();
    for r in routes() {
        let mut op = json!({ "summary": r.summary, "tags": [r.tag] });
        let mut responses = Map::new();
        for (code, what) in r
            .responses
            .iter()
            .chain(if r.body.is_some() { ERR } else { &[] })
            .chain(if r.method == "post" && is_page(r.path) {
                CROSS_SITE
            } else {
                &[]
            })
            .chain(r.auth.refusals())
            .chain(INTERNAL)
        {
            let html = is_page(r.path);
            let media = (*code < 300).then(|| other_media(r.path)).flatten();
            let content = if let Some(media) = media {
                media
            } else if html {
                // Pages, in every case: the portal answers errors with a page too.
                json!({ "text/html": { "schema": { "type": "string" } } })
            } else if *code >= 400 && r.path.starts_with("/opendsr/") {
                json!({ "application/json": { "schema": { "$ref": "#/components/schemas/OpenDsrError" } } })
            } else if *code >= 400 {
                json!({ "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } })
            } else if let Some(ok) = r.ok {
                json!({ "application/json": { "schema": ok(&mut answers) } })
            } else {
                Value::Null
            };
            let mut response = json!({ "description": what });
            if !content.is_null() {
                response["content"] = content;
            }
            responses.entry(code.to_string()).or_insert(response);
        }
        op["responses"] = Value::Object(responses);
        if let Some(body) = r.body {
            let media = if is_page(r.path) {
                "application/x-www-form-urlencoded"
            } else {
                "application/json"
            };
            op["requestBody"] =
                json!({ "required": true, "content": { media: { "schema": body(&mut bodies) } } });
        }
        let mut params = Vec::new();
        if r.path.contains("{id}") {
            params.push(json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }));
        }
        match r.auth {
            Auth::Public => {}
            Auth::RequestToken => {
                params.push(json!({ "name": "token", "in": "query", "required": false, "schema": { "type": "string" },
                    "description": "the request token, unless sent as a bearer token" }));
                op["security"] = json!([{ "requestToken": [] }, {}]);
            }
            Auth::DownloadSecret => {
                op["security"] = json!([{ "downloadSecret": [] }]);
            }
            Auth::Session(dpo) => {
                op["security"] = json!([{ "workspaceSession": [] }]);
                op["description"] = json!(if dpo {
                    "Needs a DPO's session; the form carries the session's `csrf` token."
                } else {
                    "A DPO's or an auditor's session."
                });
            }
            Auth::Admin(dpo) => {
                op["security"] = json!([{ "adminToken": [] }]);
                op["description"] = json!(if dpo {
                    "Needs a DPO token."
                } else {
                    "An auditor or DPO token."
                });
            }
        }
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        let item = paths
            .entry(r.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        item[r.method] = op;
    }
    // The error formats, named whether or not a route's table entry mentions them.
    of::<super::error::ErrorBody>(&mut answers);
    of::<opendsr::SpecErrorBody>(&mut answers);
    let mut schemas = answers.take_definitions(true);
    // No type is both a body and an answer (a test keeps it so): the names do not meet.
    schemas.extend(bodies.take_definitions(true));
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "lethe",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Data-subject requests (GDPR Art. 12-22), the privacy notice, audit and vendor views. Errors are {\"error\": {\"code\", \"message\"}}; OpenDSR routes use the OpenDSR error format."
        },
        "paths": paths,
        "components": {
          "schemas": schemas,
          "securitySchemes": {
            "adminToken": { "type": "http", "scheme": "bearer", "description": "lethe admin token create --role dpo|auditor" },
            "requestToken": { "type": "http", "scheme": "bearer", "description": "the token returned when the request was made" },
            "downloadSecret": { "type": "http", "scheme": "bearer", "description": "the secret of the link in the completion e-mail (`?secret=`)" },
            "workspaceSession": { "type": "apiKey", "in": "cookie", "name": "lethe_admin", "description": "the session of the DPO workspace, opened at /admin/login with an admin token" }
          }
        }
    })
}

/// The generators of the bodies' schemas (how they are read) and of the answers' (how
/// they are written: a field left out when empty is not required).
fn generators() -> (SchemaGenerator, SchemaGenerator) {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    });
    (
        settings.clone().for_deserialize().into_generator(),
        settings.for_serialize().into_generator(),
    )
}

/// Whether a path serves pages (HTML), the portal's or the workspace's.
fn is_page(path: &str) -> bool {
    path == "/"
        || path == "/privacy"
        || path.starts_with("/portal/")
        || path == "/admin"
        || path.starts_with("/admin/")
}

/// The media type of a success that is not JSON, by path.
fn other_media(path: &str) -> Option<Value> {
    let string = json!({ "schema": { "type": "string" } });
    let binary = json!({ "schema": { "type": "string", "contentEncoding": "binary" } });
    Some(match path {
        "/metrics" => json!({ "text/plain; version=0.0.4": string }),
        "/opendsr/v1/public-key" => json!({ "application/x-pem-file": string }),
        "/admin/register.csv" => json!({ "text/csv": string }),
        "/admin/register.json" => json!({ "application/json": { "schema": { "type": "array" } } }),
        "/admin/audit/export.jsonl" => json!({ "application/x-ndjson": string }),
        p if p.ends_with("/package") || p.ends_with("/download") => {
            json!({ "application/zip": binary, "application/json": { "schema": { "type": "object" } } })
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A type named both among the bodies and among the answers would have one schema
    /// where two are needed.
    #[test]
    fn bodies_and_answers_do_not_share_a_name() {
        let (mut bodies, mut answers) = generators();
        for r in routes() {
            if let Some(b) = r.body {
                b(&mut bodies);
            }
            if let Some(ok) = r.ok {
                ok(&mut answers);
            }
        }
        let bodies = bodies.take_definitions(true);
        let answers = answers.take_definitions(true);
        assert!(bodies.len() >= 8 && answers.len() >= 20);
        let shared: Vec<&String> = bodies.keys().filter(|k| answers.contains_key(*k)).collect();
        assert!(shared.is_empty(), "{shared:?}");
    }
}
