//! A model's reply as a typed value, and text cut to a token limit.

use serde_json::Value;

use crate::run::validate::Validators;
use crate::types::Ty;

/// Cuts text that reaches a prompt to a token limit (4 characters a token).
pub fn cut(text: &str, limit: Option<u64>) -> String {
    match limit {
        Some(tokens) if text.chars().count() as u64 > tokens * 4 => {
            text.chars().take((tokens * 4) as usize).collect()
        }
        _ => text.to_string(),
    }
}

/// A model's reply as a value of its declared type: text for `string`,
/// otherwise JSON (a ```json fence around it is tolerated), validated.
pub fn parse_output(
    text: &str,
    ty: &Ty,
    types: &crate::types::TypeTable,
    validators: &Validators,
) -> Result<Value, Vec<String>> {
    validators.accept(types, ty, reply_value(text, ty, types)?)
}

/// A model's reply as a value, not yet validated: text for `string`,
/// otherwise JSON (a ```json fence around it is tolerated).
pub fn reply_value(
    text: &str,
    ty: &Ty,
    types: &crate::types::TypeTable,
) -> Result<Value, Vec<String>> {
    Ok(match types.resolve(ty) {
        Ty::String(_) => Value::String(text.to_string()),
        _ => {
            let trimmed = text.trim();
            let body = trimmed
                .strip_prefix("```json")
                .or_else(|| trimmed.strip_prefix("```"))
                .and_then(|s| s.strip_suffix("```"))
                .unwrap_or(trimmed)
                .trim();
            serde_json::from_str(body).map_err(|e| vec![format!("the reply is not JSON: {e}")])?
        }
    })
}
