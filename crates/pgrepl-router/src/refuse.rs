//! Refusing a client the PostgreSQL way, so any driver shows a clear message: answer an SSL or
//! GSS encryption request with "no", read the startup packet, send an ErrorResponse.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Duration};

const SSL_REQUEST: u32 = 80877103;
const GSSENC_REQUEST: u32 = 80877104;
/// SQLSTATE 57P03, cannot_connect_now: what PostgreSQL itself sends while it starts up.
const CANNOT_CONNECT_NOW: &str = "57P03";
const MAX_STARTUP: usize = 10_000;

/// Reads one length-prefixed startup-phase packet; returns its code (first 4 bytes of body).
async fn read_startup_packet(client: &mut TcpStream) -> std::io::Result<u32> {
    let len = client.read_u32().await? as usize;
    if !(8..=MAX_STARTUP).contains(&len) {
        return Err(std::io::Error::other("bad startup packet length"));
    }
    let mut body = vec![0; len - 4];
    client.read_exact(&mut body).await?;
    Ok(u32::from_be_bytes([body[0], body[1], body[2], body[3]]))
}

/// The ErrorResponse message for `message`.
pub(crate) fn error_response(message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (tag, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', CANNOT_CONNECT_NOW), (b'M', message)] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&((fields.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&fields);
    out
}

pub(crate) async fn with_error(mut client: TcpStream, why: &str) {
    let message = format!("pgrepl router: {why}");
    let answer = async {
        while let SSL_REQUEST | GSSENC_REQUEST = read_startup_packet(&mut client).await? {
            client.write_all(b"N").await?;
        }
        client.write_all(&error_response(&message)).await?;
        client.shutdown().await
    };
    let _ = timeout(Duration::from_secs(5), answer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_is_well_formed() {
        let msg = error_response("no primary");
        assert_eq!(msg[0], b'E');
        let len = u32::from_be_bytes([msg[1], msg[2], msg[3], msg[4]]) as usize;
        assert_eq!(len, msg.len() - 1);
        let text = String::from_utf8_lossy(&msg[5..]);
        assert!(text.contains("SFATAL\0"));
        assert!(text.contains("C57P03\0"));
        assert!(text.contains("Mno primary\0"));
        assert_eq!(*msg.last().unwrap(), 0);
    }
}
