//! What the whole app adds around the routes, through a real process and real sockets:
//! JSON 404/405, the body timeout, and load shedding past max_concurrent_requests.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{Levee, write_config};

fn address(url: &str) -> &str {
    url.strip_prefix("http://").unwrap()
}

/// Send raw bytes and return the response's status line and body.
fn raw(url: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address(url)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[test]
fn unknown_routes_and_methods_answer_json() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let levee = Levee::start(dir.path());
    let response = raw(
        &levee.url,
        b"GET /v1/nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(response.contains(r#""code":"not_found""#), "{response}");
    // Outside the API, the static server answers.
    let response = raw(
        &levee.url,
        b"GET /nowhere.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(response.contains("404 Not Found"), "{response}");
    let response = raw(
        &levee.url,
        b"DELETE /v1/streams/signups HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    assert!(
        response.contains(r#""code":"method_not_allowed""#),
        "{response}"
    );
}

#[test]
fn a_body_that_stalls_gets_408_and_a_full_house_gets_503() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let levee = Levee::start_with_env(
        dir.path(),
        &[
            ("LEVEE_SERVER__REQUEST_TIMEOUT_SECONDS", "2"),
            ("LEVEE_SERVER__MAX_CONCURRENT_REQUESTS", "1"),
        ],
    );
    // Promise 100 bytes, send 10, and stall: this request holds the only slot…
    let mut slow = TcpStream::connect(address(&levee.url)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(
        b"POST /v1/streams/signups HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"email\":",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // …so another request is shed at once.
    let response = raw(
        &levee.url,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("retry-after"),
        "{response}"
    );

    let mut response = String::new();
    let _ = slow.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains(r#""code":"timeout""#), "{response}");

    // The slot is free again.
    let response = raw(
        &levee.url,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}
