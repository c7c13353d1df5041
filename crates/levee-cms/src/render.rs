//! Markdown to HTML that is safe to put in a page: rendered by pulldown-cmark, then cleaned
//! by ammonia's allow-list, so `<script>`, `javascript:` links and `on…` attributes never
//! reach a published file, whatever an editor (or a stolen session) types.

use pulldown_cmark::{Options, Parser, html};

pub fn markdown_to_html(markdown: &str) -> String {
    let mut options = Options::empty();
    options.insert(Options::ENABLE_TABLES);
    options.insert(Options::ENABLE_STRIKETHROUGH);
    let mut raw = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut raw, Parser::new_ext(markdown, options));
    ammonia::Builder::default()
        .link_rel(Some("noopener noreferrer"))
        .clean(&raw)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_renders() {
        assert_eq!(
            markdown_to_html("**Polls close** at [8pm](https://example.org/polls)."),
            "<p><strong>Polls close</strong> at <a href=\"https://example.org/polls\" rel=\"noopener noreferrer\">8pm</a>.</p>\n"
        );
    }

    #[test]
    fn scripts_handlers_and_javascript_links_never_survive() {
        let hostile = [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "[click](javascript:alert(1))",
            "<a href=\"javascript:alert(1)\">x</a>",
            "<a href=\"JaVaScRiPt:alert(1)\">x</a>",
            "<iframe src=\"https://evil.example\"></iframe>",
            "<svg onload=alert(1)>",
            "<div style=\"background:url(javascript:alert(1))\">x</div>",
            "<object data=\"x\"></object>",
        ];
        for input in hostile {
            let out = markdown_to_html(input).to_ascii_lowercase();
            for bad in [
                "<script",
                "onerror",
                "onload",
                "javascript:",
                "<iframe",
                "<object",
                "style=",
            ] {
                assert!(!out.contains(bad), "{input:?} gave {out:?}");
            }
        }
    }
}
