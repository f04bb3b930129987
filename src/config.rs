//! Configuration: defaults < `lethe.toml` < `LETHE_*` environment < command-line flags.
//! Every secret may also come from a file named by `LETHE_<KEY>_FILE`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Keys read from `LETHE_<KEY>` (and `LETHE_<KEY>_FILE`).
const ENV_KEYS: &[&str] = &[
    "policies",
    "database",
    "bind",
    "log_format",
    "jobs",
    "demo_data",
    "smtp_url",
    "smtp_password",
    "mail_from",
    "master_key",
    "signing_key",
    "key_dir",
    "approval",
    "public_url",
    "rate_limit",
    "package_days",
    "verification_mails",
    "trusted_proxies",
    "workers",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The policy directory.
    pub policies: PathBuf,
    /// The engine's own store: `sqlite://...` or `postgres://...`.
    pub database: SecretString,
    /// Where `lethe serve` listens.
    pub bind: String,
    pub log_format: LogFormat,
    /// The job definitions directory.
    pub jobs: PathBuf,
    /// Create and fill the demo application database when a system's default is used.
    pub demo_data: bool,
    pub smtp_url: Option<SecretString>,
    pub smtp_password: Option<SecretString>,
    pub mail_from: Option<String>,
    pub master_key: Option<SecretString>,
    /// The Ed25519 checkpoint signing key, PKCS#8 in hex.
    pub signing_key: Option<SecretString>,
    /// Where generated keys are written (`master.key`, `signing.key`).
    pub key_dir: PathBuf,
    /// Request types that wait for the DPO's approval once verified, comma-separated
    /// (`erasure,portability`); none by default.
    pub approval: String,
    /// The service's address as the outside sees it, for links in e-mails and for the
    /// OpenDSR processor domain.
    pub public_url: Option<String>,
    /// Requests per minute one client IP may make to the public routes (the request API
    /// and the portal; OpenDSR and the admin API take a token and are not limited).
    pub rate_limit: u32,
    /// Requests `serve` runs side by side (default: one per core, at least two).
    pub workers: Option<usize>,
    /// Days an access package can be downloaded (1 to 90).
    pub package_days: i64,
    /// Verification e-mails one address receives in 24 hours, all its requests together
    /// (1 to 20); further submissions are answered alike but mail nothing.
    pub verification_mails: i64,
    /// Reverse proxies (IP addresses or CIDRs, comma-separated) whose `X-Forwarded-For`
    /// names the client; none by default.
    pub trusted_proxies: String,
    /// How webhooks and OpenDSR callbacks are delivered (`[webhooks]`).
    pub webhooks: WebhookConfig,
    /// Where e-mails are written as `.eml` files when no SMTP server is configured.
    pub outbox: PathBuf,
}

/// The `[webhooks]` section: where webhooks may go and how hard lethe tries.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Hosts (names or IP addresses) that may be called over plain `http`.
    pub allow_http_hosts: Vec<String>,
    /// Addresses or networks (`10.8.0.0/16`) that may be called although they are
    /// loopback, private, link-local and the like.
    pub allow_addresses: Vec<String>,
    /// Seconds to wait for a connection.
    pub connect_timeout_seconds: u64,
    /// Seconds one attempt may take in all.
    pub timeout_seconds: u64,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Hours after which a webhook still not acknowledged is given up as failed.
    pub give_up_hours: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            allow_http_hosts: Vec::new(),
            allow_addresses: Vec::new(),
            connect_timeout_seconds: 5,
            timeout_seconds: 10,
            concurrency: 4,
            give_up_hours: 72,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            policies: PathBuf::from("./policies"),
            database: SecretString::from("sqlite://lethe.db?mode=rwc"),
            bind: "127.0.0.1:8080".to_owned(),
            log_format: LogFormat::Text,
            jobs: PathBuf::from("./jobs"),
            demo_data: true,
            smtp_url: None,
            smtp_password: None,
            mail_from: None,
            master_key: None,
            signing_key: None,
            key_dir: PathBuf::from(".lethe"),
            outbox: PathBuf::from("outbox"),
            approval: String::new(),
            public_url: None,
            rate_limit: 60,
            workers: None,
            package_days: PACKAGE_DAYS,
            verification_mails: VERIFICATION_MAILS_PER_DAY,
            trusted_proxies: String::new(),
            webhooks: WebhookConfig::default(),
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers in force.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policies: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// Loads the layers. `file` is the `--config` path: when given it must exist;
    /// otherwise `lethe.toml` is read if present.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Self> {
        let toml_path = match file {
            Some(p) if !p.is_file() => anyhow::bail!("config file {} not found", p.display()),
            Some(p) => p.to_path_buf(),
            None => PathBuf::from("lethe.toml"),
        };
        let mut figment = Figment::new()
            .merge(Toml::file(&toml_path))
            .merge(secret_files()?)
            .merge(Env::prefixed("LETHE_").only(ENV_KEYS));
        figment = figment.merge(Serialized::defaults(overrides));
        figment
            .extract()
            .map_err(|e| anyhow::anyhow!("configuration error: {e}"))
    }

    pub fn key_source(&self) -> crate::audit::KeySource {
        crate::audit::KeySource {
            master: self.master_key.clone(),
            signing: self.signing_key.clone(),
            dir: self.key_dir.clone(),
        }
    }

    /// The store URL with any password replaced, for logs and messages.
    pub fn database_display(&self) -> String {
        redact_url(self.database.expose_secret())
    }
}

/// `LETHE_<KEY>_FILE` for each key: the file's content, trimmed of the final newline.
fn secret_files() -> anyhow::Result<Serialized<serde_json::Map<String, serde_json::Value>>> {
    let mut map = serde_json::Map::new();
    for key in ENV_KEYS {
        let var = format!("LETHE_{}_FILE", key.to_ascii_uppercase());
        if let Some(path) = std::env::var_os(&var) {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {var} ({})", Path::new(&path).display()))?;
            map.insert(
                (*key).to_owned(),
                serde_json::Value::String(text.trim_end_matches(['\n', '\r']).to_owned()),
            );
        }
    }
    Ok(Serialized::defaults(map))
}

pub use crate::redact::redact_url;

/// Days an access package can be downloaded, unless `package_days` says otherwise.
pub const PACKAGE_DAYS: i64 = 7;

/// Verification e-mails one address receives in 24 hours, all its requests together,
/// unless `verification_mails` says otherwise.
pub const VERIFICATION_MAILS_PER_DAY: i64 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        let cases = [
            // (URL, what must not print, what it prints as)
            (
                "postgres://lethe:s3cret@db.internal:5432/lethe",
                "s3cret",
                "postgres://lethe:***@db.internal:5432/lethe",
            ),
            (
                "postgres://db.internal/lethe?user=lethe&password=s3cret",
                "s3cret",
                "postgres://db.internal/lethe?user=lethe&password=***",
            ),
            (
                "postgres://lethe:s3cret@db/lethe?sslmode=verify-full&sslpassword=k3y&application_name=lethe",
                "k3y",
                "postgres://lethe:***@db/lethe?sslmode=verify-full&sslpassword=***&application_name=lethe",
            ),
            (
                "postgresql://lethe:p%40ss%2Fw0rd@db/lethe",
                "p%40ss",
                "postgresql://lethe:***@db/lethe",
            ),
            (
                "postgres://db/lethe?pass%77ord=s3cret",
                "s3cret",
                "postgres://db/lethe?pass%77ord=***",
            ),
            (
                "mysql://root:hunter2@127.0.0.1:3306/app?PASSWORD=hunter2",
                "hunter2",
                "mysql://root:***@127.0.0.1:3306/app?PASSWORD=***",
            ),
            (
                "smtp://mailer:s3cret@smtp.example.com:587?tls=starttls",
                "s3cret",
                "smtp://mailer:***@smtp.example.com:587?tls=starttls",
            ),
            (
                "postgres://:s3cret@db/lethe",
                "s3cret",
                "postgres://:***@db/lethe",
            ),
            (
                "postgres://db/lethe?sslmode=require&auth_token=abc123",
                "abc123",
                "postgres://db/lethe?sslmode=require&auth_token=***",
            ),
        ];
        for (raw, secret, shown) in cases {
            let got = redact_url(raw);
            assert!(!got.contains(secret), "{raw} printed as {got}");
            assert_eq!(got, shown, "{raw}");
        }
        // Nothing secret: printed as given.
        for raw in [
            "sqlite://lethe.db?mode=rwc",
            "postgres://lethe@db.internal:5432/lethe?sslmode=require",
            "sqlite:///var/lib/lethe/lethe.db",
        ] {
            assert_eq!(redact_url(raw), raw);
        }
        assert_eq!(redact_url("not a url s3cret"), "<unparsable URL>");
        assert_eq!(redact_url("postgres://u:s3cret@[::1"), "<unparsable URL>");
    }

    #[test]
    fn flags_win_over_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lethe.toml");
        std::fs::write(
            &file,
            "bind = \"127.0.0.1:9999\"\npolicies = \"/etc/lethe\"\n",
        )
        .unwrap();
        let over = Overrides {
            policies: Some("/srv/policies".into()),
            ..Default::default()
        };
        let cfg = Config::load(Some(&file), &over).unwrap();
        assert_eq!(cfg.bind, "127.0.0.1:9999");
        assert_eq!(cfg.policies, PathBuf::from("/srv/policies"));
        assert!(Config::load(Some(&dir.path().join("missing.toml")), &over).is_err());
        std::fs::write(&file, "bnd = 1\n").unwrap();
        let err = Config::load(Some(&file), &over).unwrap_err().to_string();
        assert!(err.contains("bnd"), "{err}");
    }

    #[test]
    fn request_settings_are_checked() {
        let policy =
            crate::policy::Policy::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
                .unwrap()
                .into_valid()
                .unwrap();
        let settings = |c: &Config| crate::requests::Settings::from_config(c, &policy);
        let ok = settings(&Config {
            approval: "erasure, portability".into(),
            public_url: Some("https://privacy.example.com/".into()),
            ..Config::default()
        })
        .unwrap();
        assert_eq!(
            ok.approval,
            [
                crate::requests::Kind::Erasure,
                crate::requests::Kind::Portability
            ]
        );
        assert_eq!(
            ok.link("/v1/requests/r_1"),
            "https://privacy.example.com/v1/requests/r_1"
        );
        assert_eq!(ok.package_days, 7);
        assert_eq!(ok.verification_mails, 3);
        for bad in [
            Config {
                approval: "erasure,deletion".into(),
                ..Config::default()
            },
            Config {
                approval: "rectification".into(),
                ..Config::default()
            },
            Config {
                public_url: Some("privacy.example.com".into()),
                ..Config::default()
            },
            Config {
                package_days: 0,
                ..Config::default()
            },
            Config {
                verification_mails: 0,
                ..Config::default()
            },
        ] {
            let e = settings(&bad).unwrap_err().to_string();
            assert!(e.starts_with("configuration error"), "{e}");
        }
        let proxies = |list: &str| {
            crate::http::TrustedProxies::from_config(&Config {
                trusted_proxies: list.into(),
                ..Config::default()
            })
        };
        assert!(proxies("10.0.0.0/8, ::1").is_ok());
        let e = proxies("10.0.0.0/8, proxy").unwrap_err().to_string();
        assert!(
            e.contains("trusted_proxies") && e.contains("`proxy`"),
            "{e}"
        );
    }
}
