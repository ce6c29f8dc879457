//! Reading what a registry answers: blob bodies under the minimum-rate
//! rule ([`RateWindow`]), small bodies (manifests, tokens, error text)
//! whole, within a size bound and the request's deadline.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use reqwest::Response;

use super::tls::error_chain;
use super::{MAX_ERROR_BODY, RegistryError};

/// A blob's body as it downloads, under the minimum-rate rule.
pub struct BlobBody {
    pub(super) resp: Response,
    pub(super) url: String,
    pub(super) rate: RateWindow,
    pub(super) min_rate: u64,
}

impl BlobBody {
    /// Where the body comes from (after redirects).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The next piece of the body, `None` at its end; an error as soon as
    /// a whole window has passed in which the body averaged less than the
    /// minimum rate (checked at least every [`RateWindow::tick`]).
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, RegistryError> {
        loop {
            if let Err(got) = self.rate.check(Instant::now()) {
                return Err(RegistryError::TooSlow {
                    url: self.url.clone(),
                    got,
                    window: self.rate.window(),
                    min_rate: self.min_rate,
                });
            }
            match tokio::time::timeout(self.rate.tick(), self.resp.chunk()).await {
                Err(_) => continue,
                Ok(Ok(Some(b))) => {
                    self.rate.record(Instant::now(), b.len() as u64);
                    return Ok(Some(b));
                }
                Ok(Ok(None)) => return Ok(None),
                Ok(Err(e)) => {
                    return Err(RegistryError::Transport {
                        url: self.url.clone(),
                        reason: error_chain(&e),
                    });
                }
            }
        }
    }
}

/// The minimum-rate rule for blob downloads: once the first `window` has
/// passed, every `window` that ends while the download runs must have
/// brought at least `min_rate * window` bytes (at least one). Bytes are
/// counted in slots of `window / 16`, so a slot that overlaps the window's
/// start counts whole: the rule errs towards a slow link, by at most one
/// slot's bytes. A trickle cannot beat it: it is cancelled about one
/// window after it starts, however it spaces its bytes; a link that stalls
/// for a while and then catches up is not.
#[derive(Debug)]
pub struct RateWindow {
    window: Duration,
    need: u64,
    start: Instant,
    slot: Duration,
    /// (slot start, bytes received in it), oldest first.
    pub(super) slots: VecDeque<(Instant, u64)>,
}

impl RateWindow {
    pub(super) const SLOTS: u32 = 16;

    pub fn new(window: Duration, min_rate: u64, now: Instant) -> RateWindow {
        // Config refuses a zero window; a tiny one still must not spin.
        let window = window.max(Duration::from_millis(160));
        let need =
            (u128::from(min_rate) * window.as_millis() / 1000).clamp(1, u128::from(u64::MAX));
        RateWindow {
            window,
            need: need as u64,
            start: now,
            slot: window / Self::SLOTS,
            slots: VecDeque::new(),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// How often the rule is checked while nothing arrives.
    pub fn tick(&self) -> Duration {
        self.slot
    }

    /// `n` bytes arrived at `now`.
    pub fn record(&mut self, now: Instant, n: u64) {
        match self.slots.back_mut() {
            Some((t, b)) if now < *t + self.slot => *b += n,
            _ => self.slots.push_back((now, n)),
        }
        while let Some(&(t, _)) = self.slots.front()
            && t + self.slot + self.window <= now
        {
            self.slots.pop_front();
        }
    }

    /// Bytes that arrived in the window ending at `now` (whole slots).
    fn in_window(&self, now: Instant) -> u64 {
        self.slots
            .iter()
            .filter(|(t, _)| *t + self.slot + self.window > now)
            .map(|(_, b)| b)
            .sum()
    }

    /// `Err(bytes in the last window)` when that is too few.
    pub fn check(&self, now: Instant) -> Result<(), u64> {
        if now < self.start + self.window {
            return Ok(());
        }
        let got = self.in_window(now);
        if got < self.need { Err(got) } else { Ok(()) }
    }
}

pub(super) enum BodyError {
    TooLarge,
    Deadline,
    Transport(String),
}

/// A small body read whole: at most `max` bytes, by `deadline`.
pub(super) async fn read_body(
    resp: &mut Response,
    max: usize,
    deadline: Instant,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Err(_) => return Err(BodyError::Deadline),
            Ok(Err(e)) => return Err(BodyError::Transport(error_chain(&e))),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(c))) => {
                if body.len() + c.len() > max {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&c);
            }
        }
    }
}

/// The start of an error body, for the message: at most
/// [`MAX_ERROR_BODY`] bytes, whatever arrived by `deadline`.
pub(super) async fn read_error_body(resp: &mut Response, deadline: Instant) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(c))) => {
                body.extend_from_slice(&c[..c.len().min(MAX_ERROR_BODY - body.len())])
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}
