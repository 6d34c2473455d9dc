//! Query parameters: parsed by hand so every mistake is a 400 in our error shape naming the
//! parameter, and unknown parameters are refused rather than ignored.

use super::error::ApiError;
use events::Date;
use std::collections::BTreeMap;

/// Largest page of any list.
pub const LIMIT_MAX: usize = 1_000;
pub const LIMIT_DEFAULT: usize = 100;

pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parses a raw query string, allowing only `allowed` names, each at most once.
    pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Params, ApiError> {
        let mut map = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let (name, value) = (name.into_owned(), value.into_owned());
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::bad_parameter(&name, format!("unknown parameter `{name}`; this route takes: {}", allowed.join(", "))));
            }
            if map.insert(name.clone(), value).is_some() {
                return Err(ApiError::bad_parameter(&name, format!("`{name}` given twice")));
            }
        }
        Ok(Params(map))
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.str(name)
            .map(|v| v.parse::<u64>().map_err(|_| ApiError::bad_parameter(name, format!("`{v}` is not a non-negative integer"))))
            .transpose()
    }

    pub fn date(&self, name: &str) -> Result<Option<Date>, ApiError> {
        self.str(name).map(|v| Date::parse(v).map_err(|e| ApiError::bad_parameter(name, e.to_string()))).transpose()
    }

    /// `limit`, defaulting to 100, at most 1,000.
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.u64("limit")? {
            None => Ok(LIMIT_DEFAULT),
            Some(0) => Err(ApiError::bad_parameter("limit", "limit must be at least 1")),
            Some(n) if n as usize > LIMIT_MAX => Err(ApiError::bad_parameter("limit", format!("limit is at most {LIMIT_MAX}"))),
            Some(n) => Ok(n as usize),
        }
    }
}
