//! The few messages of PostgreSQL's frontend/backend protocol that pgrepl writes and reads by
//! hand, where tokio-postgres cannot serve: a replication connection (`Instance::replay_timeline`)
//! and a probe that leaves before authenticating (`up` waiting for the router).

/// A protocol 3.0 startup message carrying `params` (such as `user`, `database`, `replication`).
pub fn startup_message(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec(); // protocol 3.0
    for (key, value) in params {
        for part in [key, value] {
            body.extend_from_slice(part.as_bytes());
            body.push(0);
        }
    }
    body.push(0);
    let mut message = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    message
}

/// The field tagged `tag` (`C` the SQLSTATE, `M` the message) of an ErrorResponse body.
pub fn error_field(body: &[u8], tag: u8) -> Option<&str> {
    let mut rest = body;
    while let Some((&found, tail)) = rest.split_first().filter(|(t, _)| **t != 0) {
        let end = tail.iter().position(|b| *b == 0)?;
        if found == tag {
            return std::str::from_utf8(&tail[..end]).ok();
        }
        rest = &tail[end + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_startup_message_is_its_length_the_protocol_and_the_parameters() {
        let message = startup_message(&[("user", "postgres"), ("database", "postgres")]);
        let params = b"user\0postgres\0database\0postgres\0\0";
        assert_eq!(&message[..4], &((8 + params.len()) as u32).to_be_bytes());
        assert_eq!(&message[4..8], &196_608u32.to_be_bytes());
        assert_eq!(&message[8..], params);
    }

    #[test]
    fn the_fields_of_an_error_response_are_found() {
        assert_eq!(error_field(b"SFATAL\0C57P03\0Mpgrepl router: no primary\0\0", b'C'), Some("57P03"));
        assert_eq!(error_field(b"SFATAL\0VFATAL\0C28000\0\0", b'C'), Some("28000"));
        assert_eq!(error_field(b"SFATAL\0\0", b'C'), None);
        assert_eq!(error_field(b"C5", b'C'), None, "unterminated");
        assert_eq!(error_field(b"SERROR\0C28000\0Mno pg_hba.conf entry\0\0", b'M'), Some("no pg_hba.conf entry"));
    }
}
