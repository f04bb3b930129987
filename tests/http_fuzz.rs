//! Every body the request API, the admin actions, OpenDSR and the portal read, fuzzed on
//! the real server: random bytes, random JSON, the valid bodies with fields changed or
//! dropped, random forms, under every content type. The answer is always a success or a
//! 4xx in the route's error format (JSON, or an HTML page on the portal), never a 5xx,
//! and the server stays up.

mod common;

use std::sync::LazyLock;

use lethe::store::Role;
use proptest::prelude::*;
use serde_json::{Value, json};

/// One server for all cases, with a real request to act on and a DPO token.
struct Fixture {
    rt: tokio::runtime::Runtime,
    base: String,
    id: String,
    token: String,
    dpo: String,
    _app: common::TestApp,
    _dir: tempfile::TempDir,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (app, base, id, token, dpo) = rt.block_on(async {
        let app = common::TestApp::demo(tmp.path(), None).await;
        let (base, store) = (app.base.clone(), app.store.clone());
        let created: Value = reqwest::Client::new()
            .post(format!("{base}/v1/requests"))
            .json(&json!({ "type": "erasure", "identity": { "email": "fuzz@example.org" } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let (_, dpo) = store.create_admin_token(Role::Dpo).await.unwrap();
        (
            app,
            base,
            created["id"].as_str().unwrap().to_owned(),
            created["token"].as_str().unwrap().to_owned(),
            dpo,
        )
    });
    Fixture {
        rt,
        base,
        id,
        token,
        dpo,
        _app: app,
        _dir: tmp,
    }
});

/// How a route reads its body and answers errors.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Json,
    /// OpenDSR's own error format, `{"error": {"code": 400, ...}}`.
    OpenDsr,
    Form,
}

/// A route that reads a body: method, path (`{id}` is the fixture's request), what it
/// reads, whether it needs the DPO token, and a valid body to mutate.
struct Route {
    path: &'static str,
    kind: Kind,
    dpo: bool,
    valid: fn() -> Value,
}

fn routes() -> Vec<Route> {
    let r = |path, kind, dpo, valid| Route {
        path,
        kind,
        dpo,
        valid,
    };
    use Kind::*;
    vec![
        r(
            "/v1/requests",
            Json,
            false,
            || json!({ "type": "access", "identity": { "email": "someone@example.org" }, "details": "x" }),
        ),
        r(
            "/v1/requests/{id}/verify",
            Json,
            false,
            || json!({ "code": "12345 67890" }),
        ),
        r(
            "/v1/requests/{id}/verify",
            Json,
            false,
            || json!({ "secret": "00ff" }),
        ),
        r("/v1/requests/{id}/code", Json, false, || json!({})),
        r(
            "/v1/admin/requests/{id}/extend",
            Json,
            true,
            || json!({ "months": 1, "reason": "many systems" }),
        ),
        r(
            "/v1/admin/requests/{id}/reject",
            Json,
            true,
            || json!({ "reason": "r" }),
        ),
        r(
            "/v1/admin/requests/{id}/deny",
            Json,
            true,
            || json!({ "reason": "r" }),
        ),
        r(
            "/v1/admin/requests/{id}/complete",
            Json,
            true,
            || json!({ "note": "n" }),
        ),
        r(
            "/v1/admin/requests/{id}/lift",
            Json,
            true,
            || json!({ "note": "n" }),
        ),
        r(
            "/v1/admin/mail/dead/1/requeue",
            Json,
            true,
            || json!({ "recipient": "fixed@example.org" }),
        ),
        r("/opendsr/v1/requests", OpenDsr, true, || {
            json!({
                "subject_request_id": "a7551968-d5d6-44b2-9831-815ac9017798",
                "regulation": "gdpr",
                "subject_request_type": "erasure",
                "submitted_time": "2018-10-02T15:00:00Z",
                "subject_identities": [
                    { "identity_type": "email", "identity_value": "johndoe@example.com", "identity_format": "raw" }
                ],
                "api_version": "2.0",
                "status_callback_urls": ["http://127.0.0.1:9/opendsr/callbacks"]
            })
        }),
        r(
            "/portal/requests",
            Form,
            false,
            || json!({ "type": "access", "email": "someone@example.org", "details": "" }),
        ),
        r(
            "/portal/requests/{id}/verify",
            Form,
            false,
            || json!({ "token": "{token}", "code": "12345 67890" }),
        ),
        r(
            "/portal/requests/{id}/confirm",
            Form,
            false,
            || json!({ "secret": "00ff" }),
        ),
        r(
            "/portal/requests/{id}/cancel",
            Form,
            false,
            || json!({ "token": "0000" }),
        ),
        r(
            "/portal/requests/{id}/code",
            Form,
            false,
            || json!({ "token": "{token}" }),
        ),
    ]
}

/// Field names the bodies use, and strings that mean something to them.
const KEYS: &[&str] = &[
    "type",
    "identity",
    "email",
    "details",
    "code",
    "secret",
    "token",
    "months",
    "reason",
    "note",
    "recipient",
    "subject_request_id",
    "subject_request_type",
    "submitted_time",
    "subject_identities",
    "identity_type",
    "identity_value",
    "identity_format",
    "api_version",
    "regulation",
    "status_callback_urls",
];
const WORDS: &[&str] = &[
    "",
    " ",
    "access",
    "erasure",
    "rectification",
    "portability",
    "email",
    "raw",
    "md5",
    "sha256",
    "gdpr",
    "ccpa",
    "2.0",
    "someone@example.org",
    "poison,1@example.com",
    "a@b",
    "@",
    "12345 67890",
    "1234567890",
    "0",
    "-1",
    "2018-10-02T15:00:00Z",
    "9999-99-99",
    "http://127.0.0.1:9/x",
    "ftp://127.0.0.1/",
    "{token}",
    "\u{0}",
    "é\u{202e}",
    "%00",
    "<script>",
    "r_0",
    "lt_x_y",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(WORDS).prop_map(str::to_owned),
        1 => any::<String>(),
        1 => "[a-z@. ]{0,300}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        (0i64..4).prop_map(Value::from),
        word().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A change to a valid body: a field (top level or one down) set to anything, dropped,
/// or added.
#[derive(Debug, Clone)]
enum Edit {
    Set(String, Value),
    SetInner(String, Value),
    Drop(String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (key(), json_value()).prop_map(|(k, v)| Edit::Set(k, v)),
        (key(), json_value()).prop_map(|(k, v)| Edit::SetInner(k, v)),
        key().prop_map(Edit::Drop),
    ]
}

fn apply(mut v: Value, edits: &[Edit]) -> Value {
    for e in edits {
        let Some(obj) = v.as_object_mut() else { break };
        match e {
            Edit::Set(k, x) => {
                obj.insert(k.clone(), x.clone());
            }
            Edit::Drop(k) => {
                obj.remove(k);
            }
            Edit::SetInner(k, x) => {
                for inner in obj.values_mut() {
                    match inner {
                        Value::Object(o) => {
                            o.insert(k.clone(), x.clone());
                        }
                        Value::Array(a) => {
                            for o in a.iter_mut().filter_map(Value::as_object_mut) {
                                o.insert(k.clone(), x.clone());
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    v
}

/// What is sent.
#[derive(Debug, Clone)]
enum Body {
    Bytes(Vec<u8>),
    Json(Value),
    Edited(Vec<Edit>),
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..400).prop_map(Body::Bytes),
        2 => json_value().prop_map(Body::Json),
        4 => prop::collection::vec(edit(), 0..4).prop_map(Body::Edited),
    ]
}

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("text/plain"),
    Some("multipart/form-data; boundary=x"),
    Some("application/json; charset=latin1"),
];

/// A form body from a JSON object: each field as text, nested values as JSON text.
fn form(v: &Value) -> Vec<u8> {
    let pairs: Vec<(String, String)> = match v {
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                )
            })
            .collect(),
        other => vec![("value".to_owned(), other.to_string())],
    };
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(&k, &v);
    }
    s.finish().into_bytes()
}

fn send(
    route: &Route,
    body: &Body,
    content_type: Option<&str>,
    method: &str,
) -> (u16, String, String) {
    let f = &*FIXTURE;
    let encode = |v: &Value| {
        let text = v.to_string().replace("{token}", &f.token);
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if route.kind == Kind::Form {
            form(&v)
        } else {
            text.into_bytes()
        }
    };
    let bytes = match body {
        Body::Bytes(b) => b.clone(),
        Body::Json(v) => encode(v),
        Body::Edited(edits) => encode(&apply((route.valid)(), edits)),
    };
    let default_type = match route.kind {
        Kind::Form => "application/x-www-form-urlencoded",
        _ => "application/json",
    };
    let url = format!("{}{}", f.base, route.path.replace("{id}", &f.id));
    f.rt.block_on(async {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut r = http
            .request(method.parse().unwrap(), &url)
            .header("origin", &f.base)
            .body(bytes);
        if let Some(ct) = content_type
            .or(Some(default_type))
            .filter(|_| content_type != Some(""))
        {
            r = r.header("content-type", ct);
        }
        if route.dpo {
            r = r.bearer_auth(&f.dpo);
        } else if route.kind != Kind::Form {
            r = r.bearer_auth(&f.token);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (status, ct, r.text().await.unwrap_or_default())
    })
}

/// The answer is a success or a client error in the route's own format.
fn check(route: &Route, (status, ct, text): (u16, String, String)) -> Result<(), TestCaseError> {
    prop_assert!(status < 500, "{} answered {status}: {text}", route.path);
    if status >= 400 {
        match route.kind {
            Kind::Form => prop_assert!(ct.starts_with("text/html"), "{}: {ct} {text}", route.path),
            Kind::Json | Kind::OpenDsr => {
                prop_assert!(
                    ct.starts_with("application/json"),
                    "{}: {ct} {text}",
                    route.path
                );
                let v: Value = serde_json::from_str(&text)
                    .map_err(|e| TestCaseError::fail(format!("{}: {e}: {text}", route.path)))?;
                let code = &v["error"]["code"];
                let ok = match route.kind {
                    Kind::OpenDsr => code.is_u64() || code.is_string(),
                    _ => code.is_string(),
                };
                prop_assert!(ok, "{}: {text}", route.path);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_body_makes_a_server_error(
        route in 0usize..64,
        body in body(),
        content_type in prop::sample::select(CONTENT_TYPES),
    ) {
        let routes = routes();
        let route = &routes[route % routes.len()];
        check(route, send(route, &body, content_type, "POST"))?;
    }
}

/// Bodies at and over the 64 KiB limit, empty bodies, and the server still up afterwards.
#[test]
fn edges_are_client_errors_and_the_server_stays_up() {
    for route in &routes() {
        for body in [
            Body::Bytes(Vec::new()),
            Body::Bytes(vec![b'{'; 70 * 1024]),
            Body::Bytes(b"[".repeat(10_000)),
            Body::Json(json!({ "details": "x".repeat(5000), "note": "x".repeat(5000) })),
        ] {
            for ct in [None, Some("application/json")] {
                let answer = send(route, &body, ct, "POST");
                if let Err(e) = check(route, answer) {
                    panic!("{e}");
                }
            }
        }
    }
    let f = &*FIXTURE;
    let up = f.rt.block_on(async {
        reqwest::get(format!("{}/healthz", f.base))
            .await
            .unwrap()
            .status()
    });
    assert_eq!(up, 200);
}
