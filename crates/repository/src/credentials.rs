//! Credentials for the network backends, kept apart from the repository URL so that a
//! URL can be logged: they come from a config file (serde) and/or the environment, and
//! their `Debug` hides every secret.

use std::fmt;

/// What the object store needs to know who we are. Which fields are read depends on
/// the URL's scheme:
///
/// | scheme | fields | environment (see [`Credentials::with_env`]) |
/// |---|---|---|
/// | `swift+tempauth` | `user`, `key` | `ST_USER`, `ST_KEY` |
/// | `swift+keystone` | `username`, `password`, `project_name`, `user_domain_name`, `project_domain_name` (both default `Default`), `region_name`, `interface` (default `public`) | `OS_USERNAME`, `OS_PASSWORD`, `OS_PROJECT_NAME`, `OS_USER_DOMAIN_NAME`, `OS_PROJECT_DOMAIN_NAME`, `OS_REGION_NAME`, `OS_INTERFACE` |
/// | `s3` | `access_key_id`, `secret_access_key`, `session_token`, `region_name` | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` |
///
/// `Debug` prints `***` for `key`, `password`, `secret_access_key` and `session_token`.
/// Credentials never appear in a [`Store`](crate::Store)'s location, its errors or its
/// log lines.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// tempauth user, `account:user` (e.g. `test:tester`).
    pub user: Option<String>,
    /// tempauth key (secret).
    pub key: Option<String>,
    /// Keystone user name.
    pub username: Option<String>,
    /// Keystone password (secret).
    pub password: Option<String>,
    /// Keystone project the token is scoped to.
    pub project_name: Option<String>,
    /// Keystone domain of the user (default `Default`).
    pub user_domain_name: Option<String>,
    /// Keystone domain of the project (default `Default`).
    pub project_domain_name: Option<String>,
    /// Keystone: the catalog region to take the object-store endpoint from (any when
    /// unset and the catalog offers one region only). S3: the signing region when the
    /// URL names none.
    pub region_name: Option<String>,
    /// Keystone: the endpoint interface, `public` (default), `internal` or `admin`.
    pub interface: Option<String>,
    /// S3 access key id.
    pub access_key_id: Option<String>,
    /// S3 secret access key (secret).
    pub secret_access_key: Option<String>,
    /// S3 session token for temporary credentials (secret).
    pub session_token: Option<String>,
}

impl Credentials {
    /// Fills every field that is `None` from the environment (see the table above);
    /// fields already set are kept, and empty variables count as unset.
    #[must_use]
    pub fn with_env(self) -> Self {
        self.with_vars(|name| std::env::var(name).ok())
    }

    /// [`Credentials::with_env`] with the variables looked up by `var` (testable
    /// without touching the process environment).
    pub(crate) fn with_vars(mut self, var: impl Fn(&str) -> Option<String>) -> Self {
        let fill = |field: &mut Option<String>, name: &str| {
            if field.is_none() {
                *field = var(name).filter(|v| !v.is_empty());
            }
        };
        fill(&mut self.user, "ST_USER");
        fill(&mut self.key, "ST_KEY");
        fill(&mut self.username, "OS_USERNAME");
        fill(&mut self.password, "OS_PASSWORD");
        fill(&mut self.project_name, "OS_PROJECT_NAME");
        fill(&mut self.user_domain_name, "OS_USER_DOMAIN_NAME");
        fill(&mut self.project_domain_name, "OS_PROJECT_DOMAIN_NAME");
        fill(&mut self.region_name, "OS_REGION_NAME");
        fill(&mut self.interface, "OS_INTERFACE");
        fill(&mut self.access_key_id, "AWS_ACCESS_KEY_ID");
        fill(&mut self.secret_access_key, "AWS_SECRET_ACCESS_KEY");
        fill(&mut self.session_token, "AWS_SESSION_TOKEN");
        self
    }
}

/// Shows whether a secret is set, never what it is.
struct Secret<'a>(&'a Option<String>);

impl fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Some(***)"),
            None => f.write_str("None"),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("key", &Secret(&self.key))
            .field("username", &self.username)
            .field("password", &Secret(&self.password))
            .field("project_name", &self.project_name)
            .field("user_domain_name", &self.user_domain_name)
            .field("project_domain_name", &self.project_domain_name)
            .field("region_name", &self.region_name)
            .field("interface", &self.interface)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &Secret(&self.secret_access_key))
            .field("session_token", &Secret(&self.session_token))
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_every_secret() {
        let creds = Credentials {
            user: Some("test:tester".into()),
            key: Some("k-hush".into()),
            password: Some("p-hush".into()),
            secret_access_key: Some("s-hush".into()),
            session_token: Some("t-hush".into()),
            ..Credentials::default()
        };
        let shown = format!("{creds:?}");
        assert!(!shown.contains("hush"), "{shown}");
        assert!(shown.contains("test:tester"), "{shown}");
        assert!(shown.contains("key: Some(***)"), "{shown}");
        assert!(shown.contains("session_token: Some(***)"), "{shown}");
        assert!(shown.contains("username: None"), "{shown}");
    }

    #[test]
    fn env_fills_only_what_is_missing() {
        let vars = |name: &str| match name {
            "ST_USER" => Some("env-user".to_owned()),
            "ST_KEY" => Some("env-key".to_owned()),
            "OS_REGION_NAME" => Some("RegionTwo".to_owned()),
            "AWS_SESSION_TOKEN" => Some(String::new()),
            "AWS_ACCESS_KEY_ID" => Some("AKIA".to_owned()),
            _ => None,
        };
        let creds = Credentials {
            user: Some("file-user".into()),
            ..Credentials::default()
        }
        .with_vars(vars);
        assert_eq!(creds.user.as_deref(), Some("file-user"));
        assert_eq!(creds.key.as_deref(), Some("env-key"));
        assert_eq!(creds.region_name.as_deref(), Some("RegionTwo"));
        assert_eq!(creds.access_key_id.as_deref(), Some("AKIA"));
        assert_eq!(creds.session_token, None, "an empty variable is unset");
        assert_eq!(creds.password, None);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let ok: Credentials =
            serde_json::from_str(r#"{"user": "test:tester", "key": "testing"}"#).unwrap();
        assert_eq!(ok.user.as_deref(), Some("test:tester"));
        let err = serde_json::from_str::<Credentials>(r#"{"usr": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `usr`"), "{err}");
    }
}
