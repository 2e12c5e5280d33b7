//! PII masking for response bodies and log lines: card numbers that pass the Luhn check,
//! US SSNs, Indian PAN numbers, bank account numbers in JSON fields, e-mail addresses.
//!
//! Every mask keeps the length (characters become `*`), so `content-length` stays right
//! and the masker never has to buffer a whole body. Streaming works on any chunking and
//! gives the same bytes as masking the whole body at once: every pattern is at most
//! [`MAX_TOKEN`] bytes long, so after each chunk everything but the last [`HOLD`] bytes is
//! final (a match that starts there ends inside the buffer) and is released; the tail is
//! kept for the next chunk, and the scan resumes exactly where a whole-body scan would.

use regex::bytes::{Captures, Regex};

/// Longest text any pattern can match.
pub const MAX_TOKEN: usize = 352;
/// Bytes held back between chunks: a longest match plus the byte after it (a boundary).
pub const HOLD: usize = MAX_TOKEN + 2;

/// What a route masks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PiiKinds {
    pub cards: bool,
    pub ssn: bool,
    pub pan_in: bool,
    pub bank_accounts: bool,
    pub emails: bool,
}

impl PiiKinds {
    pub const ALL: Self = Self {
        cards: true,
        ssn: true,
        pan_in: true,
        bank_accounts: true,
        emails: true,
    };

    /// The policy's names for the kinds, in the order the policy reference lists them.
    pub const NAMES: [&'static str; 5] = ["card", "ssn", "pan_in", "bank_account", "email"];

    pub fn with(mut self, name: &str) -> Option<Self> {
        match name {
            "card" => self.cards = true,
            "ssn" => self.ssn = true,
            "pan_in" => self.pan_in = true,
            "bank_account" => self.bank_accounts = true,
            "email" => self.emails = true,
            _ => return None,
        }
        Some(self)
    }
}

/// The compiled patterns (once per VM).
#[derive(Debug)]
pub struct PiiMasker {
    pattern: Regex,
}

// One alternation, leftmost-first: a scan is deterministic whatever the chunking. Bounded
// repetitions only, so no match is longer than MAX_TOKEN.
const PATTERN: &str = concat!(
    r"(?-u)",
    r#"(?P<bank>"(?i:account_number|accountnumber|account_no|acct_no|bank_account|bank_account_number|iban)"\s{0,4}:\s{0,4}"?)(?P<bankvalue>[A-Za-z0-9]{8,34})"#,
    r"|(?P<email>\b[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63}){0,3}\.[A-Za-z]{2,24}\b)",
    r"|(?P<ssn>\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b)",
    r"|(?P<pan>\b[A-Z]{5}[0-9]{4}[A-Z]\b)",
    r"|(?P<card>\b[0-9](?:[ \-]?[0-9]){12,18}\b)",
);

impl PiiMasker {
    pub fn new() -> Result<Self, String> {
        Regex::new(PATTERN)
            .map(|pattern| Self { pattern })
            .map_err(|e| format!("PII patterns: {e}"))
    }

    /// The process's masker, compiled on first use: the patterns do not depend on the
    /// policy, so a policy reload (a new `Engine`) does not compile them again. `None`
    /// only if they fail to compile, which a test rules out.
    pub fn shared() -> Option<&'static Self> {
        static MASKER: std::sync::OnceLock<Option<PiiMasker>> = std::sync::OnceLock::new();
        MASKER.get_or_init(|| Self::new().ok()).as_ref()
    }

    /// Masks `text` in place from `from` on; returns where the next scan must start and how
    /// much of `text` is final. With `last`, everything is final.
    fn scan(&self, kinds: PiiKinds, text: &mut [u8], from: usize, last: bool) -> usize {
        let settled = if last {
            text.len()
        } else {
            text.len().saturating_sub(HOLD)
        };
        let mut edits: Vec<(usize, usize, Kind)> = Vec::new();
        let mut release = settled;
        let mut at = from;
        while let Some(caps) = self.pattern.captures_at(text, at) {
            let Some(whole) = caps.get(0) else { break };
            if whole.start() >= settled && !last {
                break;
            }
            if let Some((start, end, kind)) = edit(&caps, kinds) {
                edits.push((start, end, kind));
            }
            release = release.max(whole.end());
            at = whole.end().max(at + 1);
        }
        for (start, end, kind) in edits {
            if let Some(span) = text.get_mut(start..end) {
                kind.mask(span);
            }
        }
        release
    }

    /// Masks a whole text (log lines, small bodies).
    pub fn mask_all(&self, kinds: PiiKinds, text: &str) -> String {
        let mut bytes = text.as_bytes().to_vec();
        self.scan(kinds, &mut bytes, 0, true);
        // Masks replace ASCII with ASCII inside ASCII-only matches: still UTF-8.
        String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Card,
    KeepLast4,
    Email,
}

impl Kind {
    fn mask(self, span: &mut [u8]) {
        match self {
            // Digits except the last four; separators stay.
            Self::Card | Self::KeepLast4 => {
                let keep_from = span
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.is_ascii_alphanumeric())
                    .map(|(i, _)| i)
                    .rev()
                    .nth(3)
                    .unwrap_or(0);
                for b in span.iter_mut().take(keep_from) {
                    if b.is_ascii_alphanumeric() {
                        *b = b'*';
                    }
                }
            }
            // The local part after its first character.
            Self::Email => {
                let at = span.iter().position(|b| *b == b'@').unwrap_or(0);
                for b in span.iter_mut().take(at).skip(1) {
                    *b = b'*';
                }
            }
        }
    }
}

/// The span to mask for one match, if its kind is on and it qualifies.
fn edit(caps: &Captures<'_>, kinds: PiiKinds) -> Option<(usize, usize, Kind)> {
    if let Some(value) = caps.name("bankvalue") {
        return kinds
            .bank_accounts
            .then_some((value.start(), value.end(), Kind::KeepLast4));
    }
    if let Some(m) = caps.name("email") {
        return kinds.emails.then_some((m.start(), m.end(), Kind::Email));
    }
    if let Some(m) = caps.name("ssn") {
        return kinds.ssn.then_some((m.start(), m.end(), Kind::KeepLast4));
    }
    if let Some(m) = caps.name("pan") {
        return kinds
            .pan_in
            .then_some((m.start(), m.end(), Kind::KeepLast4));
    }
    let m = caps.name("card")?;
    (kinds.cards && luhn(m.as_bytes())).then_some((m.start(), m.end(), Kind::Card))
}

/// The Luhn check over the digits of `text` (separators skipped).
fn luhn(text: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut count = 0;
    for digit in text.iter().rev().filter(|b| b.is_ascii_digit()) {
        let mut d = u32::from(digit - b'0');
        if count % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        count += 1;
    }
    (13..=19).contains(&count) && sum.is_multiple_of(10)
}

/// One response body in flight: feed chunks, get back what may be sent.
#[derive(Debug, Default)]
pub struct MaskStream {
    held: Vec<u8>,
    /// Where the next scan starts inside `held` (bytes before it are look-behind context).
    resume: usize,
}

/// One byte of context is kept before the resume point, for `\b`.
const CONTEXT: usize = 1;

impl MaskStream {
    /// Masks `chunk` with what was held; returns the bytes that are final. The output of all
    /// calls, in order, has the length of all input: the last call (`last`) flushes.
    pub fn push(
        &mut self,
        masker: &PiiMasker,
        kinds: PiiKinds,
        chunk: &[u8],
        last: bool,
    ) -> Vec<u8> {
        self.held.extend_from_slice(chunk);
        let release = masker.scan(kinds, &mut self.held, self.resume, last);
        let release = release.max(self.resume).min(self.held.len());
        let keep_from = release.saturating_sub(CONTEXT);
        // `held[keep_from..release]` was already sent: it stays only as context.
        let out = self.held.get(self.sent_upto()..release).map(<[u8]>::to_vec);
        self.held.drain(..keep_from);
        self.resume = release - keep_from;
        out.unwrap_or_default()
    }

    /// Bytes at the front of `held` that were already sent (the context).
    fn sent_upto(&self) -> usize {
        self.resume.min(CONTEXT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker() -> PiiMasker {
        PiiMasker::new().unwrap()
    }

    #[test]
    fn the_shared_masker_compiles_once() {
        let first = PiiMasker::shared().unwrap();
        assert!(std::ptr::eq(first, PiiMasker::shared().unwrap()));
    }

    #[test]
    fn each_kind_is_masked_with_its_last_digits_kept() {
        let m = masker();
        let all = PiiKinds::ALL;
        assert_eq!(
            m.mask_all(all, "card 4111 1111 1111 1111 ok"),
            "card **** **** **** 1111 ok"
        );
        assert_eq!(
            m.mask_all(all, "4111-1111-1111-1111"),
            "****-****-****-1111"
        );
        assert_eq!(
            m.mask_all(all, "n=4111111111111111;"),
            "n=************1111;"
        );
        // Fails Luhn: an order number, not a card.
        assert_eq!(m.mask_all(all, "4111111111111112"), "4111111111111112");
        assert_eq!(m.mask_all(all, "ssn 123-45-6789."), "ssn ***-**-6789.");
        assert_eq!(m.mask_all(all, "PAN ABCDE1234F"), "PAN ******234F");
        assert_eq!(
            m.mask_all(all, r#"{"account_number": "123456789012"}"#),
            r#"{"account_number": "********9012"}"#
        );
        assert_eq!(
            m.mask_all(all, r#"{"iban":"DE89370400440532013000"}"#),
            r#"{"iban":"******************3000"}"#
        );
        assert_eq!(
            m.mask_all(all, "mail jane.doe@example.co.uk now"),
            "mail j*******@example.co.uk now"
        );
        // Only the kinds the route asks for.
        let cards_only = PiiKinds::default().with("card").unwrap();
        assert_eq!(
            m.mask_all(cards_only, "jane@example.com 4111111111111111"),
            "jane@example.com ************1111"
        );
        assert!(PiiKinds::default().with("passport").is_none());
    }

    #[test]
    fn text_that_merely_looks_like_pii_is_left_alone() {
        let m = masker();
        for text in [
            "order 12345678 shipped",
            "version 1.2.3-45-6789x",
            "call 555-1234",
            "ABCDE12345F",
            "a@b",
            "41111111111111111111111",
        ] {
            assert_eq!(m.mask_all(PiiKinds::ALL, text), text);
        }
    }

    fn body() -> Vec<u8> {
        let mut text = String::new();
        for i in 0..40 {
            text.push_str(&format!(
                "{{\"id\":{i},\"card\":\"4111 1111 1111 1111\",\"email\":\"user{i}@example.com\",\
                 \"ssn\":\"123-45-6789\",\"pan\":\"ABCDE1234F\",\"account_number\":\"00012345{i:04}\",\
                 \"note\":\"ref 4111111111111112 and 12345678\"}}\n"
            ));
        }
        text.into_bytes()
    }

    fn streamed(m: &PiiMasker, input: &[u8], sizes: &mut dyn FnMut() -> usize) -> Vec<u8> {
        let mut stream = MaskStream::default();
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let n = sizes().clamp(1, rest.len());
            let (chunk, tail) = rest.split_at(n);
            out.extend(stream.push(m, PiiKinds::ALL, chunk, false));
            rest = tail;
        }
        out.extend(stream.push(m, PiiKinds::ALL, &[], true));
        out
    }

    #[test]
    fn any_chunking_gives_the_whole_body_answer() {
        let m = masker();
        let input = body();
        let whole = m.mask_all(PiiKinds::ALL, std::str::from_utf8(&input).unwrap());
        assert!(whole.contains("**** **** **** 1111") && !whole.contains("4111 1111 1111 1111"));
        // Every split point of a two-chunk body around the first record.
        for split in 0..400 {
            let mut sizes = [split.max(1), usize::MAX].into_iter();
            let out = streamed(&m, &input, &mut || sizes.next().unwrap_or(usize::MAX));
            assert_eq!(out, whole.as_bytes(), "split at {split}");
        }
        // Pseudo-random chunk sizes, including 1-byte chunks.
        let mut seed = 0x9e37_79b9_u64;
        for _ in 0..50 {
            let out = streamed(&m, &input, &mut || {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                (seed >> 33) as usize % 700
            });
            assert_eq!(out.len(), input.len());
            assert_eq!(out, whole.as_bytes());
        }
    }

    #[test]
    fn memory_is_bounded_by_the_hold_not_the_body() {
        let m = masker();
        let mut stream = MaskStream::default();
        let chunk = vec![b'x'; 4096];
        for _ in 0..256 {
            let out = stream.push(&m, PiiKinds::ALL, &chunk, false);
            assert!(!out.is_empty());
            assert!(
                stream.held.len() <= HOLD + CONTEXT + 1,
                "{}",
                stream.held.len()
            );
        }
    }
}
