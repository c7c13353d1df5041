//! `levee deploy DIR --to URL`: publish a built site (Jekyll or Hugo output).

use std::path::Path;

use bytes::Bytes;
use levee_store::{CacheRules, Effort, Encoding, Headers, check_path, compressible, content_type};

use crate::sync::SyncFile;

/// Read every file under `dir` (hidden files skipped, except `.well-known/`), with its
/// headers; HTML pages are marked to go after the assets they name.
pub fn collect(
    dir: &Path,
    rules: &CacheRules,
    compress: Option<Encoding>,
) -> Result<Vec<SyncFile>, String> {
    let mut files = Vec::new();
    walk(dir, "", rules, compress, &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn walk(
    dir: &Path,
    prefix: &str,
    rules: &CacheRules,
    compress: Option<Encoding>,
    files: &mut Vec<SyncFile>,
) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(format!(
                "{}: file name is not UTF-8",
                entry.path().display()
            ));
        };
        if name.starts_with('.') && name != ".well-known" {
            continue;
        }
        let path = format!("{prefix}{name}");
        // Follows symlinks, as a web server would.
        let meta = std::fs::metadata(entry.path())
            .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        if meta.is_dir() {
            walk(&entry.path(), &format!("{path}/"), rules, compress, files)?;
            continue;
        }
        check_path(&path).map_err(|e| e.to_string())?;
        let raw =
            std::fs::read(entry.path()).map_err(|e| format!("{}: {e}", entry.path().display()))?;
        let mut headers = rules.headers(&path);
        let body = match compress {
            Some(encoding) if compressible(&headers.content_type) && !raw.is_empty() => {
                headers.content_encoding = Some(encoding.name().to_owned());
                // Compressed once, served many times: the best ratio is worth it.
                encoding.compress(&raw, Effort::Best)
            }
            _ => raw,
        };
        let lower = path.to_ascii_lowercase();
        files.push(SyncFile {
            pointer: lower.ends_with(".html") || lower.ends_with(".htm"),
            path,
            body: Bytes::from(body),
            headers,
        });
    }
    Ok(())
}

/// The headers a file of a site gets when it is served straight from a folder.
pub fn site_headers(path: &str, rules: &CacheRules) -> Headers {
    Headers {
        content_type: content_type(path),
        cache_control: rules.cache_control(path).to_owned(),
        content_encoding: None,
    }
}

/// Ask a CDN to forget `paths`: one POST per path to `template` with `{path}` replaced.
/// Returns the paths whose purge failed, with why.
pub async fn purge_urls(template: &str, paths: &[String]) -> Vec<(String, String)> {
    use futures::StreamExt;
    let client = reqwest::Client::new();
    futures::stream::iter(paths)
        .map(|path| {
            let url = template.replace("{path}", path);
            let client = client.clone();
            async move {
                match client.post(&url).send().await {
                    Ok(r) if r.status().is_success() => None,
                    Ok(r) => Some((path.clone(), format!("{url}: {}", r.status()))),
                    Err(e) => Some((path.clone(), format!("{url}: {e}"))),
                }
            }
        })
        .buffer_unordered(8)
        .filter_map(|r| async move { r })
        .collect()
        .await
}
