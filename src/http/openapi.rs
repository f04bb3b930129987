//! `/openapi.json`: an OpenAPI 3.1 description of every route, built from one table. A
//! test calls each documented route on the real server to keep the table and the router
//! in step.

use serde_json::{Map, Value, json};

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
}

pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    /// The JSON body schema, for routes that take one.
    pub body: Option<fn() -> Value>,
    /// `(status, description)`.
    pub responses: &'static [(u16, &'static str)],
    pub tag: &'static str,
}

const ERR: &[(u16, &str)] = &[(400, "malformed body"), (422, "invalid field")];
/// Every portal form POST: refused unless it comes from the portal's own origin.
const CROSS_SITE: &[(u16, &str)] = &[(
    403,
    "HTML: the form was not sent from the portal's own page (Origin, else Referer)",
)];

fn requeue_body() -> Value {
    json!({
        "type": "object", "additionalProperties": false,
        "properties": { "recipient": { "type": "string", "format": "email" } }
    })
}

fn submit_body() -> Value {
    json!({
        "type": "object", "required": ["type", "identity"], "additionalProperties": false,
        "properties": {
            "type": { "enum": ["access", "portability", "erasure", "rectification", "restriction", "objection", "marketing_objection"] },
            "identity": { "type": "object", "required": ["email"], "additionalProperties": false,
                "properties": { "email": { "type": "string", "format": "email" } } },
            "details": { "type": "string", "maxLength": 4000 }
        }
    })
}

fn code_body() -> Value {
    json!({ "type": "object", "additionalProperties": false,
        "oneOf": [{ "required": ["code"] }, { "required": ["secret"] }],
        "properties": {
            "code": { "type": "string", "pattern": "^[0-9 -]{10,16}$" },
            "secret": { "type": "string", "description": "the secret of the link in the e-mail" }
        } })
}

fn extend_body() -> Value {
    json!({ "type": "object", "required": ["months", "reason"], "additionalProperties": false,
        "properties": { "months": { "type": "integer", "minimum": 1, "maximum": 2 }, "reason": { "type": "string" } } })
}

fn reason_body() -> Value {
    json!({ "type": "object", "required": ["reason"], "additionalProperties": false,
        "properties": { "reason": { "type": "string" } } })
}

fn note_body() -> Value {
    json!({ "type": "object", "required": ["note"], "additionalProperties": false,
        "properties": { "note": { "type": "string", "maxLength": 4000 } } })
}

fn opendsr_body() -> Value {
    json!({
        "type": "object",
        "required": ["regulation", "subject_request_id", "subject_request_type", "subject_identities", "submitted_time"],
        "properties": {
            "regulation": { "const": "gdpr" },
            "subject_request_id": { "type": "string", "format": "uuid" },
            "subject_request_type": { "enum": ["access", "portability", "erasure"] },
            "subject_identities": { "type": "array", "items": { "type": "object",
                "required": ["identity_type", "identity_value", "identity_format"],
                "properties": { "identity_type": { "const": "email" }, "identity_value": { "type": "string" }, "identity_format": { "const": "raw" } } } },
            "submitted_time": { "type": "string", "format": "date-time" },
            "api_version": { "type": "string" },
            "status_callback_urls": { "type": "array", "items": { "type": "string", "format": "uri" } },
            "extensions": { "type": "object" }
        }
    })
}

fn form_body() -> Value {
    json!({ "type": "object", "properties": {
        "type": { "type": "string" }, "email": { "type": "string" }, "details": { "type": "string" },
        "code": { "type": "string" }, "token": { "type": "string" } } })
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
        ),
        r(
            "get",
            "/readyz",
            "The store answers and a valid policy is loaded",
            Public,
            None,
            &[(200, "ready"), (503, "not ready")],
            "ops",
        ),
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
        ),
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
            Some(form_body),
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
            Some(form_body),
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
            Some(form_body),
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
            Some(form_body),
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
            Some(form_body),
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
            Some(submit_body),
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
        ),
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
        ),
        r(
            "post",
            "/v1/requests/{id}/verify",
            "Confirm the request with the e-mailed code or the link's secret (Art. 12(6))",
            Public,
            Some(code_body),
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
        ),
        r(
            "get",
            "/v1/requests/{id}",
            "The request's status",
            RequestToken,
            None,
            &[(200, "the request"), (401, "no or wrong token")],
            "requests",
        ),
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
        ),
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
        ),
        r(
            "get",
            "/v1/admin/mail/dead",
            "Mail the transport refused for good (dead letters), newest first, with recipient, kind, attempts and last error",
            Admin(false),
            None,
            &[(200, "dead letters"), (401, "no or bad token")],
            "admin",
        ),
        r(
            "post",
            "/v1/admin/mail/dead/{id}/requeue",
            "Put a dead letter back in the queue once the transport or the address is fixed; `{\"recipient\"}` (optional) replaces the address",
            Admin(true),
            Some(requeue_body),
            &[
                (200, "queued"),
                (401, "no or bad token"),
                (403, "not a DPO token"),
                (404, "not a dead letter"),
            ],
            "admin",
        ),
        r(
            "get",
            "/v1/admin/webhooks/failed",
            "Webhooks given up as failed after `give_up_hours`, newest first, with target, URL without its query, attempts and last status",
            Admin(false),
            None,
            &[(200, "failed webhooks"), (401, "no or bad token")],
            "admin",
        ),
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
        ),
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
        ),
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
        ),
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
        ),
        r(
            "post",
            "/v1/admin/requests/{id}/extend",
            "Extend the deadline once by 1-2 months, with a reason told to the subject",
            Admin(true),
            Some(extend_body),
            &[
                (200, "request"),
                (409, "already extended"),
                (422, "invalid extension"),
            ],
            "admin",
        ),
        r(
            "post",
            "/v1/admin/requests/{id}/reject",
            "Reject with a reason (Art. 12(5)); the subject is told of the right to complain",
            Admin(true),
            Some(reason_body),
            &[(204, "rejected"), (422, "no reason")],
            "admin",
        ),
        r(
            "post",
            "/v1/admin/requests/{id}/deny",
            "Same as reject",
            Admin(true),
            Some(reason_body),
            &[(204, "rejected")],
            "admin",
        ),
        r(
            "post",
            "/v1/admin/requests/{id}/complete",
            "Complete a task (rectification, restriction, objection) with a note to the subject",
            Admin(true),
            Some(note_body),
            &[(200, "request"), (409, "not a task")],
            "admin",
        ),
        r(
            "post",
            "/v1/admin/requests/{id}/lift",
            "Lift a restriction (Art. 18(3)) with a note to the subject",
            Admin(true),
            Some(note_body),
            &[(200, "request"), (404, "no restriction in force")],
            "admin",
        ),
        r(
            "get",
            "/v1/admin/audit/verify",
            "Verify the audit log",
            Admin(false),
            None,
            &[(200, "report")],
            "admin",
        ),
        r(
            "get",
            "/v1/admin/audit/checkpoint",
            "The latest signed checkpoint",
            Admin(false),
            None,
            &[(200, "checkpoint")],
            "admin",
        ),
        r(
            "post",
            "/v1/admin/audit/checkpoint",
            "Sign a checkpoint of the audit log now",
            Admin(true),
            None,
            &[(200, "checkpoint")],
            "admin",
        ),
        r(
            "get",
            "/v1/admin/register",
            "The record of processing activities (Art. 30(1)), one row per purpose",
            Admin(false),
            None,
            &[(200, "the register")],
            "admin",
        ),
        r(
            "get",
            "/v1/admin/retention/plan",
            "What retention would delete or mask now, per collection, changing nothing; rows of people with a restriction in force counted apart",
            Admin(false),
            None,
            &[(200, "the plan"), (503, "a system cannot be read")],
            "admin",
        ),
        r(
            "get",
            "/v1/admin/vendors/matrix",
            "Controls × agreements",
            Admin(false),
            None,
            &[(200, "matrix")],
            "admin",
        ),
        r(
            "get",
            "/v1/admin/vendors/obligations",
            "The strictest obligation per control",
            Admin(false),
            None,
            &[(200, "obligations")],
            "admin",
        ),
        r(
            "get",
            "/v1/admin/vendors/check",
            "Where our measures fall short, and flow-down gaps",
            Admin(false),
            None,
            &[(200, "findings")],
            "admin",
        ),
        r(
            "get",
            "/opendsr/v1/discovery",
            "OpenDSR discovery",
            Public,
            None,
            &[(200, "what is supported")],
            "opendsr",
        ),
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
            Some(opendsr_body),
            &[
                (201, "accepted, signed"),
                (400, "validation error in the OpenDSR format"),
                (401, "no or bad token"),
            ],
            "opendsr",
        ),
        r(
            "get",
            "/opendsr/v1/requests/{id}",
            "OpenDSR: status by subject_request_id",
            Admin(true),
            None,
            &[(200, "status, signed"), (404, "unknown")],
            "opendsr",
        ),
        r(
            "delete",
            "/opendsr/v1/requests/{id}",
            "OpenDSR: cancel a pending request",
            Admin(true),
            None,
            &[(202, "cancelled, signed"), (400, "not pending")],
            "opendsr",
        ),
    ]
}

/// The document served at `/openapi.json`.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for r in routes() {
        let mut op = json!({ "summary": r.summary, "tags": [r.tag] });
        let mut responses = Map::new();
        for (code, what) in r
            .responses
            .iter()
            .chain(if r.body.is_some() { ERR } else { &[] })
            .chain(if r.method == "post" && r.path.starts_with("/portal/") {
                CROSS_SITE
            } else {
                &[]
            })
        {
            let html = r.path == "/" || r.path == "/privacy" || r.path.starts_with("/portal/");
            let content = if html {
                // Pages, in every case: the portal answers errors with a page too.
                json!({ "text/html": { "schema": { "type": "string" } } })
            } else if *code >= 400 && r.path.starts_with("/opendsr/") {
                json!({ "application/json": { "schema": { "$ref": "#/components/schemas/OpenDsrError" } } })
            } else if *code >= 400 {
                json!({ "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } })
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
            let media = if r.path.starts_with("/portal/") {
                "application/x-www-form-urlencoded"
            } else {
                "application/json"
            };
            op["requestBody"] =
                json!({ "required": true, "content": { media: { "schema": body() } } });
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
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "lethe",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Data-subject requests (GDPR Art. 12-22), the privacy notice, audit and vendor views. Errors are {\"error\": {\"code\", \"message\"}}; OpenDSR routes use the OpenDSR error format."
        },
        "paths": paths,
        "components": {
          "schemas": {
            "Error": {
                "type": "object", "required": ["error"],
                "properties": { "error": { "type": "object", "required": ["code", "message"],
                    "properties": {
                        "code": { "type": "string", "description": "stable, for programs (`no_route`, `rate_limited`, `wrong_state`, ...)" },
                        "message": { "type": "string", "description": "for people; never personal data" }
                    } } }
            },
            "OpenDsrError": {
                "type": "object", "required": ["error"],
                "properties": { "error": { "type": "object", "required": ["code", "message"],
                    "properties": {
                        "code": { "type": "integer" },
                        "message": { "type": "string" },
                        "errors": { "type": "array", "items": { "type": "object", "properties": {
                            "domain": { "type": "string" }, "reason": { "type": "string" }, "message": { "type": "string" } } } }
                    } } }
            }
          },
          "securitySchemes": {
            "adminToken": { "type": "http", "scheme": "bearer", "description": "lethe admin token create --role dpo|auditor" },
            "requestToken": { "type": "http", "scheme": "bearer", "description": "the token returned when the request was made" },
            "downloadSecret": { "type": "http", "scheme": "bearer", "description": "the secret of the link in the completion e-mail (`?secret=`)" }
          }
        }
    })
}
