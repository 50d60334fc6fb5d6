//! The handshake every connection between cluster processes starts with: mutual
//! challenge-response over a shared secret, before any other message is read.
//!
//! ```text
//! client → server   "MLRC" version(1) client_nonce(32)
//! server → client   server_nonce(32) HMAC(secret, "server" ‖ client_nonce ‖ server_nonce)
//! client → server   HMAC(secret, "client" ‖ server_nonce ‖ client_nonce)
//! server → client   1 (accepted)
//! ```
//!
//! Nonces come from the operating system's random source, so a recorded answer is worth
//! nothing on another connection; MACs are compared in constant time (`hmac`'s `verify`); the
//! secret never crosses the wire. Each side proves it knows the secret before the other
//! proves anything more, and the whole exchange is bounded by a timeout, so a silent or slow
//! peer cannot hold a connection open.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MAGIC: &[u8; 4] = b"MLRC";
const VERSION: u8 = 1;
const NONCE: usize = 32;
const MAC: usize = 32;
const ACCEPTED: u8 = 1;

/// The cluster's shared secret (at least 16 bytes).
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret of `bytes`; refused when shorter than 16 bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Self, AuthError> {
        if bytes.len() < 16 {
            return Err(AuthError::WeakSecret { bytes: bytes.len() });
        }
        Ok(Self(bytes))
    }

    /// 32 random bytes from the operating system.
    pub fn generate() -> Result<Self, AuthError> {
        let mut bytes = vec![0; 32];
        getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
        Ok(Self(bytes))
    }

    /// The secret's bytes (to write it to its 0600 file).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self, role: &[u8], first: &[u8], second: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(role);
        mac.update(first);
        mac.update(second);
        mac
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Why a handshake failed. The connection is then closed; nothing else was read from it.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the peer does not know the cluster's secret (authentication failed)")]
    Rejected,
    #[error("the peer does not speak millrace's protocol (or another version of it)")]
    NotMillrace,
    #[error("the peer did not finish the handshake within {0:?}")]
    TimedOut(Duration),
    #[error("a cluster secret must have at least 16 bytes, not {bytes}")]
    WeakSecret { bytes: usize },
    #[error("no random bytes from the operating system: {0}")]
    Random(String),
    #[error("the connection failed during the handshake: {0}")]
    Io(#[from] std::io::Error),
}

fn nonce() -> Result<[u8; NONCE], AuthError> {
    let mut nonce = [0; NONCE];
    getrandom::fill(&mut nonce).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(nonce)
}

async fn bounded<T>(
    timeout: Duration,
    work: impl std::future::Future<Output = Result<T, AuthError>>,
) -> Result<T, AuthError> {
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| AuthError::TimedOut(timeout))?
}

/// The connecting side: proves the secret to the server and checks the server's proof.
pub async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
    timeout: Duration,
) -> Result<(), AuthError> {
    bounded(timeout, async {
        let ours = nonce()?;
        let mut hello = Vec::with_capacity(4 + 1 + NONCE);
        hello.extend_from_slice(MAGIC);
        hello.push(VERSION);
        hello.extend_from_slice(&ours);
        stream.write_all(&hello).await?;
        let mut reply = [0u8; NONCE + MAC];
        stream.read_exact(&mut reply).await?;
        let (theirs, proof) = reply.split_at(NONCE);
        secret
            .mac(b"server", &ours, theirs)
            .verify_slice(proof)
            .map_err(|_| AuthError::Rejected)?;
        let answer = secret.mac(b"client", theirs, &ours).finalize().into_bytes();
        stream.write_all(&answer).await?;
        let mut accepted = [0u8; 1];
        stream.read_exact(&mut accepted).await?;
        match accepted[0] {
            ACCEPTED => Ok(()),
            _ => Err(AuthError::Rejected),
        }
    })
    .await
}

/// The accepting side: checks the client's hello and proof, proving the secret in between.
pub async fn server<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
    timeout: Duration,
) -> Result<(), AuthError> {
    bounded(timeout, async {
        // The magic and version first: a stranger is told apart from its first five bytes.
        let mut hello = [0u8; 4 + 1 + NONCE];
        stream.read_exact(&mut hello[..5]).await?;
        if &hello[..4] != MAGIC || hello[4] != VERSION {
            return Err(AuthError::NotMillrace);
        }
        stream.read_exact(&mut hello[5..]).await?;
        let theirs = &hello[5..];
        let ours = nonce()?;
        let proof = secret.mac(b"server", theirs, &ours).finalize().into_bytes();
        let mut reply = Vec::with_capacity(NONCE + MAC);
        reply.extend_from_slice(&ours);
        reply.extend_from_slice(&proof);
        stream.write_all(&reply).await?;
        let mut answer = [0u8; MAC];
        stream.read_exact(&mut answer).await?;
        secret
            .mac(b"client", &ours, theirs)
            .verify_slice(&answer)
            .map_err(|_| AuthError::Rejected)?;
        stream.write_all(&[ACCEPTED]).await?;
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(5);

    fn secret(byte: u8) -> Secret {
        Secret::new(vec![byte; 32]).unwrap()
    }

    /// Both sides of a handshake over an in-process pipe.
    async fn handshake(
        client_secret: Secret,
        server_secret: Secret,
    ) -> (Result<(), AuthError>, Result<(), AuthError>) {
        let (mut a, mut b) = tokio::io::duplex(256);
        let server = tokio::spawn(async move { server(&mut b, &server_secret, SECOND).await });
        let client = client(&mut a, &client_secret, SECOND).await;
        drop(a);
        (client, server.await.unwrap())
    }

    #[tokio::test]
    async fn the_same_secret_is_accepted_by_both() {
        let (client, server) = handshake(secret(7), secret(7)).await;
        client.unwrap();
        server.unwrap();
    }

    #[tokio::test]
    async fn another_secret_is_rejected_by_both() {
        let (client, server) = handshake(secret(7), secret(8)).await;
        // The client checks the server's proof first: it refuses and hangs up, so the server
        // never gets an answer (its read fails); neither side accepts.
        assert!(matches!(client, Err(AuthError::Rejected)), "{client:?}");
        assert!(server.is_err(), "{server:?}");
    }

    #[tokio::test]
    async fn a_replayed_answer_is_rejected() {
        // A client that answers with a proof from another connection (other nonces).
        let (mut a, mut b) = tokio::io::duplex(256);
        let server = tokio::spawn(async move { server(&mut b, &secret(7), SECOND).await });
        let mut hello = MAGIC.to_vec();
        hello.push(VERSION);
        hello.extend_from_slice(&[1; NONCE]);
        a.write_all(&hello).await.unwrap();
        let mut reply = [0u8; NONCE + MAC];
        a.read_exact(&mut reply).await.unwrap();
        let stale = secret(7)
            .mac(b"client", &[2; NONCE], &[1; NONCE])
            .finalize()
            .into_bytes();
        a.write_all(&stale).await.unwrap();
        assert!(matches!(server.await.unwrap(), Err(AuthError::Rejected)));
    }

    #[tokio::test]
    async fn strangers_and_silent_peers_are_turned_away() {
        let (mut a, mut b) = tokio::io::duplex(256);
        a.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(matches!(
            server(&mut b, &secret(7), SECOND).await,
            Err(AuthError::NotMillrace)
        ));
        let (_quiet, mut b) = tokio::io::duplex(256);
        let short = Duration::from_millis(50);
        assert!(matches!(
            server(&mut b, &secret(7), short).await,
            Err(AuthError::TimedOut(_))
        ));
    }

    #[test]
    fn secrets_are_long_and_random() {
        assert!(matches!(
            Secret::new(vec![1; 15]),
            Err(AuthError::WeakSecret { bytes: 15 })
        ));
        let (a, b) = (Secret::generate().unwrap(), Secret::generate().unwrap());
        assert_eq!(a.bytes().len(), 32);
        assert_ne!(a.bytes(), b.bytes());
        assert_eq!(format!("{a:?}"), "Secret(…)");
    }
}
