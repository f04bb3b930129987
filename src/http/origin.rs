//! Portal forms are accepted only from the portal's own pages: a POST must name its origin
//! (`Origin`, or without one the `Referer`), and that origin must be the service's own,
//! the configured public URL's, or without one the host the request was sent to. A form
//! on another site, posting into a person's browser session, gets 403.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// Whether a form came from the allowed origin: `public_url`'s when configured, else the
/// `host` the request was addressed to (with the scheme the browser named). The origin is
/// read from `origin`, or, when that is missing or opaque (`null`), from `referer`; with
/// neither, nothing says where the form came from and it is refused.
pub fn same_origin(
    origin: Option<&str>,
    referer: Option<&str>,
    host: Option<&str>,
    public_url: Option<&str>,
) -> bool {
    let named = origin
        .filter(|o| o.trim() != "null")
        .or(referer)
        .and_then(|u| url::Url::parse(u.trim()).ok())
        .map(|u| u.origin())
        .filter(url::Origin::is_tuple);
    let Some(named) = named else {
        return false;
    };
    let allowed = match (public_url, host) {
        (Some(p), _) => url::Url::parse(p).ok().map(|u| u.origin()),
        (None, Some(h)) => {
            // The scheme is the one the browser named: lethe may sit behind TLS it does
            // not see. Host and port must match exactly.
            let scheme = match &named {
                url::Origin::Tuple(s, ..) => s.clone(),
                url::Origin::Opaque(_) => return false,
            };
            url::Url::parse(&format!("{scheme}://{h}"))
                .ok()
                .filter(|u| u.path() == "/" && u.username().is_empty())
                .map(|u| u.origin())
        }
        (None, None) => None,
    };
    allowed.is_some_and(|a| a == named)
}

/// Refuses a portal POST from another origin with a page that says why.
pub async fn check(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let allowed = {
        let h = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        same_origin(
            h(header::ORIGIN),
            h(header::REFERER),
            h(header::HOST),
            state.settings.public_url.as_deref(),
        )
    };
    if allowed {
        return next.run(req).await;
    }
    super::portal::message(
        &state,
        StatusCode::FORBIDDEN,
        "We could not do that",
        "This form was not sent from this site's own page, or your browser did not say where it came from. Open the form on this site and send it again.",
    )
}

#[cfg(test)]
mod tests {
    use super::same_origin;

    #[test]
    fn only_the_services_own_origin_may_post() {
        let host = Some("privacy.example.com");
        let ok = |o, r, h, p| assert!(same_origin(o, r, h, p), "{o:?} {r:?} {h:?} {p:?}");
        let no = |o, r, h, p| assert!(!same_origin(o, r, h, p), "{o:?} {r:?} {h:?} {p:?}");
        // Without a public URL, the host the request was sent to.
        ok(Some("https://privacy.example.com"), None, host, None);
        ok(
            Some("http://127.0.0.1:8080"),
            None,
            Some("127.0.0.1:8080"),
            None,
        );
        ok(
            None,
            Some("https://privacy.example.com/portal/requests/r_1?token=x"),
            host,
            None,
        );
        ok(
            Some("null"),
            Some("https://privacy.example.com/"),
            host,
            None,
        );
        no(Some("https://evil.example.net"), None, host, None);
        no(
            Some("https://privacy.example.com.evil.net"),
            None,
            host,
            None,
        );
        no(
            Some("http://127.0.0.1:8081"),
            None,
            Some("127.0.0.1:8080"),
            None,
        );
        no(
            Some("https://evil.example.net"),
            Some("https://privacy.example.com/"),
            host,
            None,
        );
        no(None, None, host, None);
        no(Some("null"), None, host, None);
        no(Some("not a url"), None, host, None);
        no(Some("https://privacy.example.com"), None, None, None);
        no(
            Some("https://privacy.example.com"),
            None,
            Some("privacy.example.com/x"),
            None,
        );
        // With one, exactly its origin: scheme, host and port.
        let public = Some("https://privacy.example.com/");
        ok(
            Some("https://privacy.example.com"),
            None,
            Some("10.0.0.5:8080"),
            public,
        );
        ok(Some("https://privacy.example.com:443"), None, None, public);
        no(Some("http://privacy.example.com"), None, host, public);
        no(Some("https://privacy.example.com:8443"), None, host, public);
        no(
            Some("http://10.0.0.5:8080"),
            None,
            Some("10.0.0.5:8080"),
            public,
        );
    }
}
