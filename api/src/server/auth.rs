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
//! blake3 = "9f0c…"   # hex of BLAKE3(secret)
//! ```

use super::error::ApiError;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use std::path::Path;
use subtle::ConstantTimeEq;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Appends events.
    Writer,
    /// Reads contracts, revenue and the portfolio.
    Finance,
    /// Reads events, the chain, proofs and exports; subscribes to the stream.
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
            (_, Role::Admin) | (Access::Write, Role::Writer) | (Access::Finance, Role::Finance) | (Access::Audit, Role::Auditor)
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
}

struct Token {
    name: String,
    role: Role,
    hash: [u8; 32],
}

/// The configured tokens; `None` runs the server open (loopback only).
pub struct Auth {
    tokens: Option<Vec<Token>>,
}

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
}

pub fn hash_token(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

impl Auth {
    pub fn open() -> Auth {
        Auth { tokens: None }
    }

    pub fn load(path: &Path) -> Result<Auth, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read tokens file {}: {e}", path.display()))?;
        let file: TokensFile = toml::from_str(&text).map_err(|e| format!("tokens file {}: {e}", path.display()))?;
        let mut tokens = vec![];
        for entry in file.tokens {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&entry.blake3, &mut hash)
                .map_err(|_| format!("tokens file {}: token `{}`: blake3 must be 64 hex digits", path.display(), entry.name))?;
            events::check_text("name", &entry.name).map_err(|r| format!("tokens file: token name: {}", r.message))?;
            tokens.push(Token { name: entry.name, role: entry.role, hash });
        }
        if tokens.is_empty() {
            return Err(format!("tokens file {} lists no tokens", path.display()));
        }
        Ok(Auth { tokens: Some(tokens) })
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_none()
    }

    /// The caller, if it may use a route of `access`.
    pub fn authorize(&self, headers: &HeaderMap, access: Access) -> Result<Caller, ApiError> {
        let Some(tokens) = &self.tokens else {
            return Ok(Caller { name: "anonymous".into() });
        };
        let unauthorized = |message: &str| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).with("hint", "send Authorization: Bearer <token>".into())
        };
        let header = headers.get(axum::http::header::AUTHORIZATION).ok_or_else(|| unauthorized("no bearer token"))?;
        let secret = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let presented = hash_token(secret.trim());
        // Compare with every token, without stopping early, so timing says nothing about
        // which (or whether a) token matched.
        let mut found: Option<&Token> = None;
        for token in tokens {
            if bool::from(token.hash.ct_eq(&presented)) {
                found = Some(token);
            }
        }
        let token = found.ok_or_else(|| unauthorized("unknown token"))?;
        if !access.allows(token.role) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("role `{}` may not use this route", token.role.as_str()),
            ));
        }
        Ok(Caller { name: token.name.clone() })
    }
}

/// A new random token (32 bytes, hex) and the tokens-file entry that admits it.
pub fn new_token(name: &str, role: Role) -> Result<(String, String), String> {
    events::check_text("name", name).map_err(|r| format!("--name: {}", r.message))?;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| format!("no randomness available: {e}"))?;
    let secret = hex::encode(secret);
    let entry = format!(
        "[[tokens]]\nname = {}\nrole = \"{}\"\nblake3 = \"{}\"\n",
        toml_string(name),
        role.as_str(),
        hex::encode(hash_token(&secret))
    );
    Ok((secret, entry))
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
