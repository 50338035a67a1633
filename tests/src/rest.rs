//! A bare HTTP/1.1 client for REST tests: one request per connection, written exactly as given, so that
//! tests can send what a well-behaved client library never would.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// An HTTP answer: its status, its headers (names in lower case) and its body.
#[derive(Debug)]
pub struct RestReply {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, as long as its `Content-Length` said.
    pub body: Vec<u8>,
}

impl RestReply {
    /// Header `name` (lower case), if the answer has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method path` with `body` and `Connection: close` to `address`, and reads the whole answer.
pub async fn rest_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<RestReply> {
    rest_request_with_headers(address, method, path, &[], body).await
}

/// [`rest_request`] with extra header lines, written as given (`Content-Encoding`, `Accept-Encoding`, ...).
pub async fn rest_request_with_headers(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<RestReply> {
    let mut stream = TcpStream::connect(address).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("the answer has no complete head"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| invalid("the head is not text"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("the status line has no code"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let reply = RestReply {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    };
    let length: Option<usize> = reply.header("content-length").and_then(|l| l.parse().ok());
    if length != Some(reply.body.len()) {
        return Err(invalid(&format!(
            "the body has {} bytes but Content-Length says {length:?}",
            reply.body.len()
        )));
    }
    Ok(reply)
}
