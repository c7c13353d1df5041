//! Who is asking: the admin bearer token (scripts, chat bots) or a login session (the admin
//! UI). Passwords are argon2 hashes; sessions are random tokens kept in memory, sent as an
//! HttpOnly, SameSite=Strict cookie (Secure behind TLS), each with its own CSRF token;
//! logins are rate-limited per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::http::{HeaderMap, header};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::RngCore;
use subtle::ConstantTimeEq;

pub const COOKIE: &str = "levee_session";
/// A session ends after this long without use.
const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Content: blogs, posts, alerts, collections.
    Editor,
    /// Also users and pause/resume.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "editor" => Some(Role::Editor),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Editor => "editor",
        }
    }
}

/// The person (or script) behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub role: Role,
    /// The session's CSRF token; `None` for the bearer token, which a browser never sends
    /// on its own.
    pub csrf: Option<String>,
}

struct Session {
    actor: Actor,
    last_used: Instant,
}

pub struct Auth {
    token: String,
    sessions: Mutex<HashMap<String, Session>>,
    logins: DefaultKeyedRateLimiter<IpAddr>,
    /// A one-time link to create the first admin, while there is no user.
    setup_token: Mutex<Option<String>>,
}

impl Auth {
    /// `token`: the admin bearer token.
    pub fn new(token: String) -> Auth {
        Auth {
            token,
            sessions: Mutex::default(),
            // Five attempts, then one more every 12 s, per client address.
            logins: RateLimiter::keyed(
                Quota::per_minute(NonZeroU32::new(5).expect("non-zero"))
                    .allow_burst(NonZeroU32::new(5).expect("non-zero")),
            ),
            setup_token: Mutex::default(),
        }
    }

    /// The actor a request authenticates as, if any.
    pub fn actor(&self, headers: &HeaderMap) -> Option<Actor> {
        if let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            let ok =
                !self.token.is_empty() && bool::from(given.as_bytes().ct_eq(self.token.as_bytes()));
            return ok.then(|| Actor {
                name: "api".into(),
                role: Role::Admin,
                csrf: None,
            });
        }
        let session = cookie(headers, COOKIE)?;
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let entry = sessions.get_mut(&session)?;
        if entry.last_used.elapsed() > SESSION_IDLE {
            sessions.remove(&session);
            return None;
        }
        entry.last_used = Instant::now();
        Some(entry.actor.clone())
    }

    /// Whether `ip` may try to log in now.
    pub fn may_try_login(&self, ip: IpAddr) -> bool {
        self.logins.check_key(&ip).is_ok()
    }

    /// Start a session; returns its cookie token.
    pub fn start_session(&self, name: &str, role: Role) -> String {
        let token = random_token();
        let actor = Actor {
            name: name.to_owned(),
            role,
            csrf: Some(random_token()),
        };
        let mut sessions = self.sessions.lock().expect("sessions lock");
        sessions.retain(|_, s| s.last_used.elapsed() <= SESSION_IDLE);
        sessions.insert(
            token.clone(),
            Session {
                actor,
                last_used: Instant::now(),
            },
        );
        token
    }

    pub fn end_session(&self, headers: &HeaderMap) {
        if let Some(token) = cookie(headers, COOKIE) {
            self.sessions.lock().expect("sessions lock").remove(&token);
        }
    }

    /// A new one-time setup token (printed at start when there is no user yet).
    pub fn new_setup_token(&self) -> String {
        let token = random_token();
        *self.setup_token.lock().expect("setup lock") = Some(token.clone());
        token
    }

    /// Use the setup token: true once, for the right token.
    pub fn take_setup_token(&self, given: &str) -> bool {
        let mut slot = self.setup_token.lock().expect("setup lock");
        match slot.as_deref() {
            Some(t) if bool::from(t.as_bytes().ct_eq(given.as_bytes())) => {
                *slot = None;
                true
            }
            _ => false,
        }
    }

    pub fn setup_open(&self, given: &str) -> bool {
        matches!(self.setup_token.lock().expect("setup lock").as_deref(), Some(t) if bool::from(t.as_bytes().ct_eq(given.as_bytes())))
    }
}

/// The `Set-Cookie` value for a session; `Secure` when the request came over TLS.
pub fn session_cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200{secure}")
}

pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Whether the client reached us over TLS (directly or through a proxy that says so).
pub fn is_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Check a CSRF token from a form or header against the session's.
pub fn csrf_ok(actor: &Actor, given: Option<&str>) -> bool {
    match (&actor.csrf, given) {
        (None, _) => true,
        (Some(expected), Some(given)) => bool::from(expected.as_bytes().ct_eq(given.as_bytes())),
        (Some(_), None) => false,
    }
}

pub fn hash_password(password: &str) -> String {
    // A random salt of the recommended length comes with each hash.
    Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2 hashes")
        .to_string()
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse");
        assert!(hash.starts_with("$argon2"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn logins_are_rate_limited_per_address() {
        let auth = Auth::new("t".into());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!((0..5).all(|_| auth.may_try_login(ip)));
        assert!(!auth.may_try_login(ip));
        assert!(auth.may_try_login("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn the_setup_token_works_once() {
        let auth = Auth::new("t".into());
        let token = auth.new_setup_token();
        assert!(!auth.take_setup_token("nope"));
        assert!(auth.take_setup_token(&token));
        assert!(!auth.take_setup_token(&token));
    }
}
