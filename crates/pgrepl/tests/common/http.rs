//! A small HTTP/1.1 client for the API tests: one request per connection (`Connection:
//! close`), the answer read to its end, bounded by a timeout so a stopped agent reads as one
//! that does not answer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An answer: its status code and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The value of header `name` (any case), when the answer has it.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Sends one request to `addr` (`host:port`) and reads the answer, within `timeout`.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> std::io::Result<Reply> {
    let socket = addr.parse().map_err(|e| std::io::Error::other(format!("{addr}: {e}")))?;
    let mut stream = TcpStream::connect_timeout(&socket, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    Ok(Reply { status, headers: headers.to_string(), body: body.to_string() })
}

/// `GET path`, which must be answered within 5 s.
pub fn get(addr: &str, path: &str) -> Reply {
    request(addr, "GET", path, &[], "", Duration::from_secs(5)).unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"))
}

/// `POST path` with a JSON `body`, and `Authorization: Bearer TOKEN` when given, answered within
/// `timeout` (an action may wait for a switchover).
pub fn post(addr: &str, path: &str, token: Option<&str>, body: &str, timeout: Duration) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    request(addr, "POST", path, &headers, body, timeout).unwrap_or_else(|e| panic!("POST {addr}{path}: {e}"))
}

/// The status code of `method path`, which must be answered within 5 s.
pub fn code(addr: &str, method: &str, path: &str) -> u16 {
    request(addr, method, path, &[], "", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{method} {addr}{path}: {e}"))
        .status
}
