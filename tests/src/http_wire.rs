//! HTTP/1.1 read off the wire, for the hand-written endpoints that stand in
//! for AWS where moto falls short (a Security Hub that refuses a region):
//! the Security Hub sink's unit tests (a dev-dependency of the processor:
//! tokio types only, no processor types, so the two copies of the processor
//! never meet) and the end-to-end refusing proxy.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// One HTTP/1.1 request or response as read.
pub struct Message {
    /// The head, lower-cased (header names and values).
    pub head: String,
    /// The whole message as received (to forward it).
    pub bytes: Vec<u8>,
    head_len: usize,
}

impl Message {
    pub fn body(&self) -> &[u8] {
        &self.bytes[self.head_len..]
    }
}

/// Reads one HTTP/1.1 message (head, then a `content-length` body) from
/// `sock`, `buf` holding what was read past the previous one. None when the
/// connection ends first.
pub async fn read_message(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Message> {
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        fill(sock, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while buf.len() < head_end + len {
        fill(sock, buf).await?;
    }
    Some(Message { head, bytes: buf.drain(..head_end + len).collect(), head_len: head_end })
}

async fn fill(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16384];
    match sock.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

/// The region a request was signed for: its SigV4 credential scope
/// (`Credential=KEY/DATE/REGION/service/...`) in a lower-cased head.
pub fn signed_region(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("authorization:"))
        .and_then(|a| a.split("credential=").nth(1))
        .and_then(|c| c.split('/').nth(2))
        .unwrap_or_default()
        .to_string()
}
