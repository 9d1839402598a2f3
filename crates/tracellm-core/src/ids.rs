//! Trace and span identifiers.

use rand::Rng;
use rand::distr::Alphanumeric;

/// Longest id accepted from clients.
pub const MAX_ID_LEN: usize = 128;

fn random_suffix(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(|b| (b as char).to_ascii_lowercase())
        .collect()
}

/// A new trace id such as `tr_2kf9q3m1x0ab`.
pub fn new_trace_id() -> String {
    format!("tr_{}", random_suffix(12))
}

/// A new span id such as `sp_9d0qk2m1c7zt`.
pub fn new_span_id() -> String {
    format!("sp_{}", random_suffix(12))
}

/// Checks a client-supplied id: 1 to 128 characters from `[A-Za-z0-9_.:-]`, so that it is safe in
/// URLs, file names and log lines.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!("is {} characters long, the limit is {MAX_ID_LEN}", id.len()));
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || "_.:-".contains(*c))) {
        return Err(format!("contains {c:?}; ids may use letters, digits and _ . : -"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = new_trace_id();
        let b = new_trace_id();
        assert!(a.starts_with("tr_") && a.len() == 15);
        assert_ne!(a, b);
        check_id(&a).unwrap();
        check_id(&new_span_id()).unwrap();
    }

    #[test]
    fn bad_ids_are_refused() {
        assert!(check_id("").is_err());
        assert!(check_id("a/b").is_err());
        assert!(check_id(&"x".repeat(129)).is_err());
        check_id("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    }
}
