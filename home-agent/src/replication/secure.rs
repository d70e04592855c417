//! The pair's authenticated channel: both members prove that they know
//! the pair's token without sending it, and every frame after the
//! handshake carries a MAC that only the two members of this session can
//! make, over a sequence number that neither side sends (a frame replayed,
//! dropped, reordered or taken from another session fails its MAC).
//!
//! ```text
//! standby                                        active
//!   Hello { Ns }                       ---->
//!                                      <----     Challenge { Na, Pa }
//!   checks Pa                                    Pa = HMAC(token, "active" | Ns | Na)
//!   Proof { t, Ps }                    ---->     checks Ps
//!   Ps = HMAC(token, "standby" | Na | Ns | t)
//!
//! keys:  K(a->s) = HMAC(token, "key active->standby" | Ns | Na)
//!        K(s->a) = HMAC(token, "key standby->active" | Ns | Na)
//! mac of the n-th frame in a direction (n from 0):
//!        HMAC(K(dir), n:u64 | length:u32 | kind | body), first 16 octets
//! ```
//!
//! An impostor at the peer's address learns a nonce and nothing else; one
//! that connects to the active gets a proof over nonces it cannot reuse
//! (the labels differ by role, the active's nonce is fresh). A token is at
//! least 16 characters (the config refuses shorter ones); a weak token
//! can be guessed offline from a recorded handshake, so tokens should be
//! random (OPERATIONS). TLS with mutual certificates would do the same with
//! a PKI the operator would have to run for two machines; this needs the
//! one secret the pair already shares.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::wire::{
    binding_octets, read_frame, runs, Frame, WireError, MAX_FRAME, NONCE_LEN, SNAPSHOT_CHUNK,
};
use nemo::ha::Binding;

/// Octets of the MAC each frame carries.
pub const MAC_LEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 under `key` of `parts`, in order.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes a key of any length.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Which side of the handshake a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Active,
    Standby,
}

/// The keys of one session, one per direction.
#[derive(Clone)]
struct SessionKeys {
    active_to_standby: [u8; 32],
    standby_to_active: [u8; 32],
}

impl SessionKeys {
    fn derive(token: &[u8], standby_nonce: &[u8], active_nonce: &[u8]) -> SessionKeys {
        SessionKeys {
            active_to_standby: hmac(
                token,
                &[
                    b"nemo pair key active->standby",
                    standby_nonce,
                    active_nonce,
                ],
            ),
            standby_to_active: hmac(
                token,
                &[
                    b"nemo pair key standby->active",
                    standby_nonce,
                    active_nonce,
                ],
            ),
        }
    }

    /// (the key this side sends with, the key it receives with)
    fn for_side(&self, side: Side) -> ([u8; 32], [u8; 32]) {
        match side {
            Side::Active => (self.active_to_standby, self.standby_to_active),
            Side::Standby => (self.standby_to_active, self.active_to_standby),
        }
    }
}

fn active_proof(token: &[u8], standby_nonce: &[u8], active_nonce: &[u8]) -> [u8; 32] {
    hmac(token, &[b"nemo pair active", standby_nonce, active_nonce])
}

fn standby_proof(
    token: &[u8],
    standby_nonce: &[u8],
    active_nonce: &[u8],
    in_step_until: std::time::SystemTime,
) -> [u8; 32] {
    let until = crate::store::unix_millis(in_step_until).to_be_bytes();
    hmac(
        token,
        &[b"nemo pair standby", active_nonce, standby_nonce, &until],
    )
}

fn nonce() -> Result<[u8; NONCE_LEN], WireError> {
    Ok(nemo_daemon::secret::random_octets::<NONCE_LEN>()?)
}

/// A proof compared in constant time.
fn proven(expected: &[u8; 32], presented: &[u8; 32]) -> bool {
    nemo_daemon::secret::same_secret(expected, presented)
}

/// The sending half of a session: seals each frame with its MAC.
pub struct SealedWriter<W> {
    inner: W,
    key: [u8; 32],
    sent: u64,
}

impl<W: AsyncWrite + Unpin> SealedWriter<W> {
    /// Sends `frame` (as [`Frame::encode`] makes it) sealed.
    pub async fn send_encoded(&mut self, encoded: &[u8]) -> Result<(), WireError> {
        let sealed = seal(encoded, &self.key, self.sent);
        self.sent += 1;
        self.inner.write_all(&sealed).await?;
        Ok(())
    }

    /// The stream under the seal, to send what a forger would.
    #[cfg(test)]
    pub fn inner_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Sends `frame` sealed.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), WireError> {
        self.send_encoded(&frame.encode()).await
    }

    /// Sends `bindings` as frames of at most [`SNAPSHOT_CHUNK`] bindings
    /// and [`FRAME_BUDGET`](super::wire::FRAME_BUDGET) octets each, made by
    /// `part` (a snapshot or an offer), the last one marked; one empty last
    /// frame when there are none.
    pub async fn send_parts(
        &mut self,
        bindings: &[impl std::borrow::Borrow<Binding>],
        part: impl Fn(Vec<Binding>, bool) -> Frame,
    ) -> Result<(), WireError> {
        let owned: Vec<&Binding> = bindings.iter().map(std::borrow::Borrow::borrow).collect();
        let mut runs = runs(owned, SNAPSHOT_CHUNK, |b| binding_octets(b))
            .into_iter()
            .peekable();
        while let Some(run) = runs.next() {
            let run = run.into_iter().cloned().collect();
            self.send(&part(run, runs.peek().is_none())).await?;
        }
        Ok(())
    }
}

/// The receiving half of a session: checks each frame's MAC.
pub struct SealedReader<R> {
    inner: R,
    key: [u8; 32],
    received: u64,
}

impl<R: AsyncReadExt + Unpin> SealedReader<R> {
    /// Reads the next frame; one whose MAC fails (forged, replayed,
    /// reordered, from another session) ends the session.
    pub async fn receive(&mut self) -> Result<Frame, WireError> {
        let sealed = read_frame(&mut self.inner, MAX_FRAME + MAC_LEN).await?;
        let frame = open(&sealed, &self.key, self.received)?;
        self.received += 1;
        Frame::decode(frame)
    }
}

/// `encoded` (length, kind, body) with its length grown by the MAC and
/// the MAC of the `n`-th frame appended.
fn seal(encoded: &[u8], key: &[u8; 32], n: u64) -> Vec<u8> {
    let content = encoded.get(4..).unwrap_or_default();
    let length = ((content.len() + MAC_LEN) as u32).to_be_bytes();
    let mac = hmac(key, &[&n.to_be_bytes(), &length, content]);
    let mut sealed = Vec::with_capacity(4 + content.len() + MAC_LEN);
    sealed.extend_from_slice(&length);
    sealed.extend_from_slice(content);
    sealed.extend_from_slice(&mac[..MAC_LEN]);
    sealed
}

/// The kind and body of `sealed` (a frame's octets after its length), if
/// its MAC is the `n`-th frame's.
fn open<'a>(sealed: &'a [u8], key: &[u8; 32], n: u64) -> Result<&'a [u8], WireError> {
    let Some(split) = sealed.len().checked_sub(MAC_LEN).filter(|at| *at > 0) else {
        return Err(WireError::Malformed("a frame too short for its mac"));
    };
    let (content, mac) = sealed.split_at(split);
    let length = (sealed.len() as u32).to_be_bytes();
    let expected = hmac(key, &[&n.to_be_bytes(), &length, content]);
    if !nemo_daemon::secret::same_secret(&expected[..MAC_LEN], mac) {
        return Err(WireError::Forged);
    }
    Ok(content)
}

// The keys stay out of logs.
impl<W> std::fmt::Debug for SealedWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedWriter")
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl<R> std::fmt::Debug for SealedReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedReader")
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

/// A session's two halves.
pub type Session<R, W> = (SealedReader<R>, SealedWriter<W>);

/// The standby's side of the handshake over `reader`/`writer` (a fresh
/// connection to the active): proves the token, checks the active's
/// proof, and returns the session.
pub async fn as_standby<R, W>(
    mut reader: R,
    mut writer: W,
    token: &str,
    in_step_until: std::time::SystemTime,
) -> Result<Session<R, W>, WireError>
where
    R: AsyncReadExt + Unpin,
    W: AsyncWrite + Unpin,
{
    let token = token.as_bytes();
    let standby_nonce = nonce()?;
    writer
        .write_all(
            &Frame::Hello {
                nonce: standby_nonce,
            }
            .encode(),
        )
        .await?;
    let Frame::Challenge {
        nonce: active_nonce,
        proof,
    } = Frame::read_handshake(&mut reader).await?
    else {
        return Err(WireError::Malformed("expected a challenge"));
    };
    if !proven(&active_proof(token, &standby_nonce, &active_nonce), &proof) {
        return Err(WireError::Unauthenticated(
            "the peer does not know the pair's token",
        ));
    }
    let proof = standby_proof(token, &standby_nonce, &active_nonce, in_step_until);
    writer
        .write_all(
            &Frame::Proof {
                in_step_until,
                proof,
            }
            .encode(),
        )
        .await?;
    Ok(halves(
        reader,
        writer,
        SessionKeys::derive(token, &standby_nonce, &active_nonce),
        Side::Standby,
    ))
}

/// The active's side of the handshake, the standby's hello read: answers
/// the challenge, checks the standby's proof, and returns the session and
/// until when the standby was in step.
pub async fn as_active<R, W>(
    mut reader: R,
    mut writer: W,
    token: &str,
) -> Result<(Session<R, W>, std::time::SystemTime), WireError>
where
    R: AsyncReadExt + Unpin,
    W: AsyncWrite + Unpin,
{
    let token = token.as_bytes();
    let Frame::Hello {
        nonce: standby_nonce,
    } = Frame::read_handshake(&mut reader).await?
    else {
        return Err(WireError::Malformed("expected a hello"));
    };
    let active_nonce = nonce()?;
    let challenge = Frame::Challenge {
        nonce: active_nonce,
        proof: active_proof(token, &standby_nonce, &active_nonce),
    };
    writer.write_all(&challenge.encode()).await?;
    let Frame::Proof {
        in_step_until,
        proof,
    } = Frame::read_handshake(&mut reader).await?
    else {
        return Err(WireError::Malformed("expected a proof"));
    };
    if !proven(
        &standby_proof(token, &standby_nonce, &active_nonce, in_step_until),
        &proof,
    ) {
        return Err(WireError::Unauthenticated(
            "the standby does not know the pair's token",
        ));
    }
    let session = halves(
        reader,
        writer,
        SessionKeys::derive(token, &standby_nonce, &active_nonce),
        Side::Active,
    );
    Ok((session, in_step_until))
}

fn halves<R, W>(reader: R, writer: W, keys: SessionKeys, side: Side) -> Session<R, W> {
    let (sending, receiving) = keys.for_side(side);
    (
        SealedReader {
            inner: reader,
            key: receiving,
            received: 0,
        },
        SealedWriter {
            inner: writer,
            key: sending,
            sent: 0,
        },
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const TOKEN: &str = "the-pairs-token-0123456789";

    /// Runs both sides of a handshake over an in-memory stream, each with
    /// its own token.
    async fn handshake(
        standby_token: &str,
        active_token: &str,
    ) -> (
        Result<Session<impl AsyncReadExt + Unpin, impl AsyncWrite + Unpin>, WireError>,
        Result<
            (
                Session<impl AsyncReadExt + Unpin, impl AsyncWrite + Unpin>,
                std::time::SystemTime,
            ),
            WireError,
        >,
    ) {
        let (standby_end, active_end) = tokio::io::duplex(4096);
        let (sr, sw) = tokio::io::split(standby_end);
        let (ar, aw) = tokio::io::split(active_end);
        let until = UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        let (standby_token, active_token) = (standby_token.to_owned(), active_token.to_owned());
        tokio::join!(
            async move { as_standby(sr, sw, &standby_token, until).await },
            async move { as_active(ar, aw, &active_token).await },
        )
    }

    #[tokio::test]
    async fn both_members_with_the_token_talk_and_sealed_frames_flow_both_ways() {
        let (standby, active) = handshake(TOKEN, TOKEN).await;
        let (mut s_reader, mut s_writer) = standby.unwrap();
        let ((mut a_reader, mut a_writer), until) = active.unwrap();
        assert_eq!(until, UNIX_EPOCH + Duration::from_millis(1_800_000_000_123));
        for id in 1..=3 {
            a_writer
                .send(&Frame::Batch {
                    id,
                    changes: Vec::new(),
                })
                .await
                .unwrap();
            let frame = s_reader.receive().await.unwrap();
            assert_eq!(
                frame,
                Frame::Batch {
                    id,
                    changes: Vec::new()
                }
            );
            s_writer.send(&Frame::Ack { id }).await.unwrap();
            assert_eq!(a_reader.receive().await.unwrap(), Frame::Ack { id });
        }
    }

    #[tokio::test]
    async fn a_peer_without_the_token_gets_nothing() {
        // An impostor active: the standby refuses its challenge (and has
        // sent only a nonce).
        let (standby, _) = handshake(TOKEN, "an-impostors-guess-0123456789").await;
        assert!(matches!(standby, Err(WireError::Unauthenticated(_))));
        // An impostor standby, proving on its guess whatever the
        // challenge: the active refuses its proof.
        let (mut impostor, active_end) = tokio::io::duplex(4096);
        let (ar, aw) = tokio::io::split(active_end);
        let impostor = async move {
            let nonce = [9u8; NONCE_LEN];
            impostor
                .write_all(&Frame::Hello { nonce }.encode())
                .await
                .unwrap();
            let Frame::Challenge {
                nonce: active_nonce,
                ..
            } = Frame::read_handshake(&mut impostor).await.unwrap()
            else {
                panic!("no challenge")
            };
            let proof = standby_proof(b"a-guess-0123456789", &nonce, &active_nonce, UNIX_EPOCH);
            impostor
                .write_all(
                    &Frame::Proof {
                        in_step_until: UNIX_EPOCH,
                        proof,
                    }
                    .encode(),
                )
                .await
                .unwrap();
            impostor
        };
        let (_held, active) = tokio::join!(impostor, as_active(ar, aw, TOKEN));
        assert!(matches!(active, Err(WireError::Unauthenticated(_))));
    }

    #[test]
    fn a_frame_replayed_reordered_or_altered_fails_its_mac() {
        let key = [7u8; 32];
        let ack = |id| Frame::Ack { id }.encode();
        let first = seal(&ack(1), &key, 0);
        let second = seal(&ack(2), &key, 1);
        assert_eq!(open(&first[4..], &key, 0).unwrap(), &ack(1)[4..]);
        // Replayed (the first again, where the second is due).
        assert!(matches!(open(&first[4..], &key, 1), Err(WireError::Forged)));
        // Reordered.
        assert!(matches!(
            open(&second[4..], &key, 0),
            Err(WireError::Forged)
        ));
        // Under another session's key.
        assert!(matches!(
            open(&first[4..], &[8u8; 32], 0),
            Err(WireError::Forged)
        ));
        // Any octet altered.
        for at in 4..first.len() {
            let mut altered = first.clone();
            altered[at] ^= 1;
            assert!(open(&altered[4..], &key, 0).is_err(), "octet {at}");
        }
        // Too short to hold a mac.
        assert!(open(&[4u8; MAC_LEN], &key, 0).is_err());
    }
}
