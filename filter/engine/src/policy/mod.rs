//! Loading a policy: parse (strict), validate (every error, each with its field path),
//! compile into ready structures. Runs once per `on_configure`, never per request.

pub(crate) mod compile;
pub mod document;

use std::fmt;

pub use compile::Policy;
pub use document::PolicyDocument;

/// One thing wrong with a policy, located by the path of the field
/// (`routes[2].match.path.regex`), or `policy` for the document as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub path: String,
    pub message: String,
}

impl PolicyError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every error found in a policy: route by route, each route's fields in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Parses a YAML or JSON text into any document type, errors located by field path.
/// JSON is read by the YAML parser too (JSON documents are YAML flow documents): a second
/// deserializer would instantiate every document type's parser again, about 150 KB of
/// the .wasm for code that runs once per policy load.
pub(crate) fn parse_document_part<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<T, PolicyError> {
    serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
        .map_err(|e| located(e.path().to_string(), e.inner().to_string()))
}

/// Parses a policy document, YAML or JSON. Unknown fields are errors.
pub fn parse_document(text: &str) -> Result<PolicyDocument, PolicyError> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(PolicyError::new("policy", "the policy is empty"));
    }
    parse_document_part(text)
}

fn located(path: String, message: String) -> PolicyError {
    // serde_path_to_error names the root "."; say "policy" instead.
    let path = if path == "." || path.is_empty() {
        "policy".to_string()
    } else {
        path
    };
    // serde_yaml starts its message with its own (shorter) path; ours is enough.
    let message = match message.split_once(": ") {
        Some((prefix, rest)) if !prefix.contains(' ') && path.starts_with(prefix) => {
            rest.to_string()
        }
        _ => message,
    };
    PolicyError::new(path, message)
}

impl Policy {
    /// Parses, validates and compiles a policy document.
    pub fn load(text: &str) -> Result<Self, PolicyErrors> {
        let document = parse_document(text).map_err(|e| PolicyErrors(vec![e]))?;
        Self::compile(&document)
    }

    /// The JSON Schema of the policy document, for editors.
    pub fn json_schema() -> serde_json::Value {
        let schema = schemars::schema_for!(PolicyDocument);
        serde_json::to_value(&schema).unwrap_or(serde_json::Value::Null)
    }
}
