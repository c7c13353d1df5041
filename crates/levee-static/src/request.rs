//! Turning a request path into a path inside a root, or refusing it.

use percent_encoding::percent_decode_str;

/// Longest path served, decoded.
const MAX_PATH: usize = 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not a path a client should send: bad encoding, `..`, `\`, NUL (400).
    Malformed,
    /// A hidden file such as `.levee/` or `.git` (404, as if it weren't there).
    Hidden,
}

/// Decode the request path once and check every segment. `/` and paths ending in `/`
/// name their `index.html`. Decoding before checking means `%2e%2e` and `..%2f` are seen
/// as the `..` they are; invalid UTF-8 (which includes overlong forms such as `%c0%ae`)
/// is refused outright.
pub fn decode(raw: &str) -> Result<String, Refused> {
    let bytes: Vec<u8> = percent_decode_str(raw).collect();
    let decoded = String::from_utf8(bytes).map_err(|_| Refused::Malformed)?;
    let Some(rest) = decoded.strip_prefix('/') else {
        return Err(Refused::Malformed);
    };
    if rest.len() > MAX_PATH
        || rest
            .chars()
            .any(|c| c.is_control() || c == '\\' || c == '#')
    {
        return Err(Refused::Malformed);
    }
    let path = if rest.is_empty() || rest.ends_with('/') {
        format!("{rest}index.html")
    } else {
        rest.to_owned()
    };
    for segment in path.split('/') {
        match segment {
            "" | "." | ".." => return Err(Refused::Malformed),
            ".well-known" => {}
            s if s.starts_with('.') => return Err(Refused::Hidden),
            _ => {}
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths() {
        assert_eq!(decode("/").unwrap(), "index.html");
        assert_eq!(decode("/zip/37415.json").unwrap(), "zip/37415.json");
        assert_eq!(decode("/blog/").unwrap(), "blog/index.html");
        assert_eq!(decode("/a%20b.json").unwrap(), "a b.json");
        assert_eq!(
            decode("/.well-known/security.txt").unwrap(),
            ".well-known/security.txt"
        );
    }

    #[test]
    fn traversal_in_every_spelling_is_refused() {
        for raw in [
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/etc/passwd",
            "/..%2fetc%2fpasswd",
            "/a/%2e%2e%2f%2e%2e%2fetc/passwd",
            "/%c0%ae%c0%ae/etc/passwd",
            "/%e0%80%ae%e0%80%ae/etc/passwd",
            "/..%5cetc%5cpasswd",
            "/a\\..\\b",
            "/a%00.json",
            "//etc/passwd",
            "/a//b",
            "/./a",
            "/a#b",
            "/a%23b",
            "/%ff",
        ] {
            assert_eq!(decode(raw), Err(Refused::Malformed), "{raw}");
        }
    }

    #[test]
    fn hidden_files_are_not_there() {
        for raw in [
            "/.levee/manifest.json",
            "/.git/config",
            "/a/.env",
            "/%2elevee/x",
        ] {
            assert_eq!(decode(raw), Err(Refused::Hidden), "{raw}");
        }
    }
}
