//! Bearer tokens and roles.
//!
//! The tokens file (TOML) holds, per token, a name, a role and the BLAKE3 hash of the secret:
//! the secret itself is never stored. `cledger token --name N --role R` makes one. A
//! presented token is hashed and compared with every stored hash in constant time.
//!
//! ```toml
//! [[tokens]]
//! name = "ci-writer"
//! role = "writer"
//! blake3 = "9f0c…"                  # hex of BLAKE3(secret)
//! expires = "2027-03-01T00:00:00Z"   # optional: refused after (401 token_expired)
//! ```
//!
//! The file is read again on SIGHUP: removing an entry revokes its token. Every refusal is
//! counted (`http_auth_refused_total{reason}`) and logged with the token's name, or a hash
//! prefix for an unknown one; never the secret.

use super::error::ApiError;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use subtle::ConstantTimeEq;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Appends events.
    Writer,
    /// Reads contracts, revenue and the portfolio.
    Finance,
    /// Reads events, the chain, proofs and exports; subscribes to the stream; reads
    /// figures and reports too (read-only), since auditors test them.
    Auditor,
    /// Everything.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Writer => "writer",
            Role::Finance => "finance",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

/// Who may call a route (admin always may).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Write,
    Finance,
    Audit,
}

impl Access {
    fn allows(self, role: Role) -> bool {
        matches!(
            (self, role),
            (_, Role::Admin)
                | (Access::Write, Role::Writer)
                | (Access::Finance, Role::Finance | Role::Auditor)
                | (Access::Audit, Role::Auditor)
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    blake3: String,
    /// RFC 3339 instant after which the token is refused (`token_expired`).
    #[serde(default)]
    expires: Option<String>,
}

struct Token {
    name: String,
    role: Role,
    hash: [u8; 32],
    expires: Option<jiff::Timestamp>,
}

/// Why a tokens file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read tokens file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("tokens file {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// The configured tokens; without a file the server runs open (loopback only). The file is
/// read again by `reload` (SIGHUP): removing a line revokes its token.
pub struct Auth {
    file: Option<PathBuf>,
    tokens: RwLock<Arc<Vec<Token>>>,
}

/// The caller: a token's name and role, or anyone at all on an open server.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    /// `None` on an open server: no one is authenticated, and no role applies.
    pub role: Option<Role>,
}

impl Caller {
    /// May act as anyone: an admin token, or anyone on an open server.
    pub fn is_admin(&self) -> bool {
        matches!(self.role, None | Some(Role::Admin))
    }
}

pub fn hash_token(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

/// Why a presented credential was refused; the label of `http_auth_refused_total`.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    Missing,
    Malformed,
    Unknown,
    Expired,
    Forbidden,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::Unknown => "unknown",
            Refusal::Expired => "expired",
            Refusal::Forbidden => "forbidden",
        }
    }
}

/// Counts and logs a refusal. `who` is a token's name, or a short prefix of the presented
/// secret's hash (never the secret) so repeated attempts can be told apart.
fn refused(reason: Refusal, who: &str) {
    metrics::counter!("http_auth_refused_total", "reason" => reason.as_str()).increment(1);
    tracing::warn!(reason = reason.as_str(), token = who, "refused authentication");
}

fn load_tokens(path: &Path) -> Result<Vec<Token>, TokensError> {
    let invalid = |reason: String| TokensError::Invalid { path: path.to_path_buf(), reason };
    let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read { path: path.to_path_buf(), source })?;
    let file: TokensFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let mut tokens = vec![];
    for entry in file.tokens {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&entry.blake3, &mut hash).map_err(|_| invalid(format!("token `{}`: blake3 must be 64 hex digits", entry.name)))?;
        events::check_text("name", &entry.name).map_err(|r| invalid(format!("token name: {}", r.message)))?;
        let expires = entry
            .expires
            .map(|e| e.parse::<jiff::Timestamp>().map_err(|err| invalid(format!("token `{}`: expires `{e}` is not an RFC 3339 instant: {err}", entry.name))))
            .transpose()?;
        tokens.push(Token { name: entry.name, role: entry.role, hash, expires });
    }
    if tokens.is_empty() {
        return Err(invalid("lists no tokens".into()));
    }
    Ok(tokens)
}

impl Auth {
    pub fn open() -> Auth {
        Auth { file: None, tokens: RwLock::new(Arc::new(vec![])) }
    }

    pub fn load(path: &Path) -> Result<Auth, TokensError> {
        let tokens = load_tokens(path)?;
        Ok(Auth { file: Some(path.to_path_buf()), tokens: RwLock::new(Arc::new(tokens)) })
    }

    /// Reads the tokens file again; a file that does not load leaves the tokens in force
    /// (and says why). Returns how many tokens are in force.
    pub fn reload(&self) -> Result<usize, TokensError> {
        let Some(path) = &self.file else { return Ok(0) };
        let tokens = load_tokens(path)?;
        let n = tokens.len();
        *self.tokens.write().expect("tokens lock") = Arc::new(tokens);
        Ok(n)
    }

    pub fn is_open(&self) -> bool {
        self.file.is_none()
    }

    /// The caller, if it may use a route of `access`.
    pub fn authorize(&self, headers: &HeaderMap, access: Access) -> Result<Caller, ApiError> {
        if self.is_open() {
            return Ok(Caller { name: "anonymous".into(), role: None });
        }
        let tokens = self.tokens.read().expect("tokens lock").clone();
        let unauthorized = |reason: Refusal, who: &str, code: &'static str, message: String| {
            refused(reason, who);
            ApiError::new(StatusCode::UNAUTHORIZED, code, message).with("hint", "send Authorization: Bearer <token>".into())
        };
        let Some(header) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(unauthorized(Refusal::Missing, "-", "unauthorized", "no bearer token".into()));
        };
        let Some(secret) = header.to_str().ok().and_then(|h| h.strip_prefix("Bearer ")) else {
            return Err(unauthorized(Refusal::Malformed, "-", "unauthorized", "the Authorization header must be `Bearer <token>`".into()));
        };
        let presented = hash_token(secret.trim());
        // Compare with every token, without stopping early, so timing says nothing about
        // which (or whether a) token matched.
        let mut found: Option<&Token> = None;
        for token in tokens.iter() {
            if bool::from(token.hash.ct_eq(&presented)) {
                found = Some(token);
            }
        }
        let Some(token) = found else {
            let who = format!("unknown:{}", &hex::encode(presented)[..8]);
            return Err(unauthorized(Refusal::Unknown, &who, "unauthorized", "unknown token".into()));
        };
        if let Some(expires) = token.expires
            && jiff::Timestamp::now() >= expires
        {
            return Err(unauthorized(Refusal::Expired, &token.name, "token_expired", format!("the token `{}` expired at {expires}; ask for a new one", token.name)));
        }
        if !access.allows(token.role) {
            refused(Refusal::Forbidden, &token.name);
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("role `{}` may not use this route", token.role.as_str()),
            ));
        }
        Ok(Caller { name: token.name.clone(), role: Some(token.role) })
    }
}

/// When a token made now with `--expires` ends: `90d`, `12h`, `30m` from now, or an RFC 3339
/// instant.
pub fn expiry(text: &str) -> Result<jiff::Timestamp, String> {
    let now = jiff::Timestamp::now();
    let units: [(char, i64); 3] = [('d', 86_400), ('h', 3_600), ('m', 60)];
    for (unit, seconds) in units {
        if let Some(n) = text.strip_suffix(unit).and_then(|n| n.parse::<i64>().ok()) {
            if n <= 0 {
                return Err(format!("--expires {text}: must be in the future"));
            }
            let span = jiff::SignedDuration::from_secs(n.checked_mul(seconds).ok_or_else(|| format!("--expires {text}: too far"))?);
            return now.checked_add(span).map_err(|e| format!("--expires {text}: {e}"));
        }
    }
    let at: jiff::Timestamp = text.parse().map_err(|_| format!("--expires {text}: give 90d, 12h, 30m or an RFC 3339 instant such as 2027-01-01T00:00:00Z"))?;
    if at <= now {
        return Err(format!("--expires {text}: that is in the past"));
    }
    Ok(at)
}

/// A new random token (32 bytes, hex) and the tokens-file entry that admits it.
pub fn new_token(name: &str, role: Role, expires: Option<jiff::Timestamp>) -> Result<(String, String), String> {
    events::check_text("name", name).map_err(|r| format!("--name: {}", r.message))?;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| format!("no randomness available: {e}"))?;
    let secret = hex::encode(secret);
    let mut entry = format!(
        "[[tokens]]\nname = {}\nrole = \"{}\"\nblake3 = \"{}\"\n",
        toml_string(name),
        role.as_str(),
        hex::encode(hash_token(&secret))
    );
    if let Some(at) = expires {
        entry.push_str(&format!("expires = \"{at}\"\n"));
    }
    Ok((secret, entry))
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
