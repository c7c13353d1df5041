//! The headers a published file carries: its Content-Type, from its name, and its
//! Cache-Control, from the path rules in config.

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

/// What a reader gets with a file besides its bytes. Stored with every file (S3 object
/// attributes, or a sidecar in the local store), so the server or CDN needn't guess.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headers {
    pub content_type: String,
    pub cache_control: String,
    /// `gzip` or `br` when the stored bytes are compressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
}

/// Cache-Control for files that may change: browsers and CDNs keep them briefly, serve a
/// stale copy while they revalidate, and keep serving it if the origin fails.
pub const CHANGING: &str = "public, max-age=10, stale-while-revalidate=60, stale-if-error=86400";
/// Cache-Control for files that never change once published.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The Content-Type for a path, by its extension: web-correct for what sites ship, with
/// `charset=utf-8` on text.
pub fn content_type(path: &str) -> String {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let known = match ext.as_str() {
        "json" | "map" => "application/json; charset=utf-8",
        "geojson" => "application/geo+json; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "txt" | "md" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml; charset=utf-8",
        "rss" => "application/rss+xml; charset=utf-8",
        "atom" => "application/atom+xml; charset=utf-8",
        "svg" => "image/svg+xml",
        "webmanifest" => "application/manifest+json; charset=utf-8",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "avif" => "image/avif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        _ => "",
    };
    if !known.is_empty() {
        return known.to_owned();
    }
    mime_guess::from_ext(&ext)
        .first()
        .map(|m| m.to_string())
        .unwrap_or_else(|| "application/octet-stream".to_owned())
}

/// Whether compressing a file of this type is worth it (text, not images or fonts that
/// are compressed already).
pub fn compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type.starts_with("application/json")
        || content_type.starts_with("application/geo+json")
        || content_type.starts_with("application/manifest+json")
        || content_type.starts_with("application/xml")
        || content_type.starts_with("application/rss+xml")
        || content_type.starts_with("application/atom+xml")
        || content_type.starts_with("application/wasm")
        || content_type.starts_with("image/svg+xml")
}

/// Cache-Control by path glob; the first match wins, and a path no rule matches is
/// [`CHANGING`].
#[derive(Debug, Clone, Default)]
pub struct CacheRules {
    rules: Vec<(GlobMatcher, String)>,
}

impl CacheRules {
    /// Rules from `(glob, cache_control)` pairs, in order.
    pub fn new<'a>(
        rules: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<CacheRules, String> {
        let rules = rules
            .into_iter()
            .map(|(glob, value)| {
                let matcher = Glob::new(glob)
                    .map_err(|e| format!("{glob:?}: {e}"))?
                    .compile_matcher();
                Ok((matcher, value.to_owned()))
            })
            .collect::<Result<_, String>>()?;
        Ok(CacheRules { rules })
    }

    /// The Cache-Control for `path`.
    pub fn cache_control(&self, path: &str) -> &str {
        self.rules
            .iter()
            .find(|(glob, _)| glob.is_match(path))
            .map(|(_, value)| value.as_str())
            .unwrap_or(CHANGING)
    }

    /// The headers a file at `path` gets by default.
    pub fn headers(&self, path: &str) -> Headers {
        Headers {
            content_type: content_type(path),
            cache_control: self.cache_control(path).to_owned(),
            content_encoding: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_types() {
        assert_eq!(content_type("a/b.json"), "application/json; charset=utf-8");
        assert_eq!(content_type("f.woff2"), "font/woff2");
        assert_eq!(
            content_type("site.webmanifest"),
            "application/manifest+json; charset=utf-8"
        );
        assert_eq!(content_type("m.mjs"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("i.AVIF"), "image/avif");
        assert_eq!(content_type("i.svg"), "image/svg+xml");
        assert_eq!(content_type("p.png"), "image/png");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }

    #[test]
    fn first_matching_rule_wins() {
        let rules = CacheRules::new([
            ("assets/**", IMMUTABLE),
            ("**/*.html", "no-cache"),
            ("**", "public, max-age=60"),
        ])
        .unwrap();
        assert_eq!(rules.cache_control("assets/app.1234.js"), IMMUTABLE);
        assert_eq!(rules.cache_control("blog/index.html"), "no-cache");
        assert_eq!(rules.cache_control("zip/37415.json"), "public, max-age=60");
        assert_eq!(CacheRules::default().cache_control("x.json"), CHANGING);
        assert!(CacheRules::new([("a/[", "x")]).is_err());
    }
}
