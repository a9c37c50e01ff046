//! `GET /ui`: the status page, one self-contained HTML file (`ui.html`: inline CSS and plain
//! JavaScript, no build step) that polls this agent's `/cluster` and `/history` every second
//! and draws the topology, the members and the replicas' lag. It must fetch nothing from any
//! other host (it works without internet); the Content-Security-Policy below enforces that.

use super::Reply;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY};
use hyper::StatusCode;

const PAGE: &str = include_str!("ui.html");

/// Only this page's own inline script and style, and requests to the agent that served it.
const POLICY: &str =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:";

pub fn page() -> Reply {
    let mut r = super::reply(StatusCode::OK, "text/html; charset=utf-8", PAGE);
    r.headers_mut().insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What in a page could reach another host: absolute or scheme-relative URLs, and the
    /// attributes and CSS that load anything (a fragment `url(#id)`, an SVG marker, is local).
    fn outside_references(html: &str) -> Vec<String> {
        let lower = html.to_ascii_lowercase();
        let mut found = Vec::new();
        for needle in
            ["http:", "https:", "ws:", "wss:", "ftp:", "\"//", "'//", "(//", "src=", "href=", "@import", "url("]
        {
            for (i, _) in lower.match_indices(needle) {
                if needle == "url(" && lower[i + 4..].starts_with('#') {
                    continue;
                }
                let end = (i + 60).min(html.len());
                let start = i.saturating_sub(20);
                found.push(html.get(start..end).unwrap_or(needle).to_string());
            }
        }
        found
    }

    #[test]
    fn the_page_references_no_other_host() {
        assert_eq!(outside_references(PAGE), Vec::<String>::new());
        assert!(!outside_references("<script src=\"https://cdn.example/x.js\"></script>").is_empty());
        assert!(!outside_references("a { background: url(//cdn.example/a.png) }").is_empty());
        assert!(outside_references("marker-end=\"url(#a-wal)\"").is_empty());
    }

    #[test]
    fn the_page_only_asks_its_own_agent() {
        let fetched: Vec<&str> = PAGE.match_indices("getJson(\"").map(|(i, _)| &PAGE[i + 9..i + 18]).collect();
        assert!(!fetched.is_empty());
        assert!(fetched.iter().all(|p| p.starts_with('/')), "{fetched:?}");
    }
}
