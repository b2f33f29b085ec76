//! Topics and patterns: one syntax everywhere.
//!
//! A **topic** is one or more segments separated by dots: `sensors.kitchen.temp`. A segment is
//! non-empty UTF-8 without `*` or control characters. A topic is at most [`MAX_TOPIC_LEN`]
//! bytes and [`MAX_SEGMENTS`] segments long.
//!
//! A **pattern** is written the same way, and a segment of it may also be a wildcard, always a
//! whole segment:
//!
//! - `*` matches exactly one segment: `sensors.*.temp` matches `sensors.kitchen.temp`, not
//!   `sensors.temp` nor `sensors.a.b.temp`;
//! - `**` matches any number of segments, zero included, anywhere in the pattern: `sensors.**`
//!   matches `sensors`, `sensors.kitchen` and `sensors.kitchen.temp`; `**.temp` matches `temp`
//!   and `a.b.temp`; `a.**.z` matches `a.z` and `a.b.c.z`.
//!
//! A pattern without wildcards matches exactly the topic it spells. Matching is linear in the
//! product of the two lengths (at most 32 × 32 steps), whatever the wildcards.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

/// Longest topic or pattern, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// Most segments in a topic or pattern.
pub const MAX_SEGMENTS: usize = 32;

/// Why a string is not a valid topic or pattern; each names the rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicError {
    /// The string is empty.
    Empty,
    /// Longer than [`MAX_TOPIC_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// More than [`MAX_SEGMENTS`] segments.
    TooManySegments {
        /// How many it has.
        count: usize,
    },
    /// A segment is empty (two dots in a row, or a dot at either end).
    EmptySegment {
        /// The segment's position, from 0.
        index: usize,
    },
    /// A topic has a wildcard; only patterns may.
    WildcardInTopic {
        /// The segment's position, from 0.
        index: usize,
    },
    /// A `*` is part of a segment rather than the whole of it (`temp*`, `***`).
    PartialWildcard {
        /// The segment's position, from 0.
        index: usize,
    },
    /// A segment has a control character.
    ControlCharacter {
        /// The segment's position, from 0.
        index: usize,
    },
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::Empty => f.write_str("a topic or pattern must not be empty"),
            TopicError::TooLong { len } => write!(
                f,
                "a topic or pattern is at most {MAX_TOPIC_LEN} bytes long, this one is {len}"
            ),
            TopicError::TooManySegments { count } => write!(
                f,
                "a topic or pattern has at most {MAX_SEGMENTS} dot-separated segments, \
                 this one has {count}"
            ),
            TopicError::EmptySegment { index } => write!(
                f,
                "segment {index} is empty: segments are separated by single dots, \
                 with none at either end"
            ),
            TopicError::WildcardInTopic { index } => write!(
                f,
                "segment {index} is a wildcard: a topic names one subject, only a \
                 subscription pattern may use `*` or `**`"
            ),
            TopicError::PartialWildcard { index } => write!(
                f,
                "segment {index} mixes `*` with other characters: a wildcard is a whole \
                 segment, `*` (one segment) or `**` (any number)"
            ),
            TopicError::ControlCharacter { index } => {
                write!(f, "segment {index} has a control character")
            }
        }
    }
}

impl core::error::Error for TopicError {}

/// A valid topic. See the [module documentation](self). Cloning it is cheap: a topic of up
/// to [`Topic::INLINE`] bytes is held in place, a longer one is shared, so one message's copies
/// all hold the same text.
#[derive(Clone)]
pub struct Topic(Text);

/// A topic's text. Short topics, the common case, are kept in place: a message handed from the
/// node's thread to the application's then carries no count shared between the two threads.
#[derive(Clone)]
enum Text {
    Inline { len: u8, bytes: [u8; Topic::INLINE] },
    Shared(Arc<str>),
}

impl Topic {
    /// The longest topic held in place (longer ones are shared).
    pub const INLINE: usize = 22;

    /// Checks `text` against the rules for topics.
    ///
    /// # Errors
    /// The [`TopicError`] naming the first rule it breaks.
    pub fn new(text: &str) -> Result<Self, TopicError> {
        check(text, false)?;
        Ok(Topic::from_text(text, || text.into()))
    }

    /// Checks shared `text` against the rules for topics, keeping it shared if it is long.
    pub(crate) fn from_shared(text: &Arc<str>) -> Result<Self, TopicError> {
        check(text, false)?;
        Ok(Topic::from_checked(text))
    }

    /// A topic already checked (its text came from a `Topic`, or passed [`Topic::new`]).
    pub(crate) fn from_checked(text: &Arc<str>) -> Self {
        Topic::from_text(text, || text.clone())
    }

    fn from_text(text: &str, shared: impl FnOnce() -> Arc<str>) -> Self {
        if text.len() <= Topic::INLINE {
            let mut bytes = [0; Topic::INLINE];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            Topic(Text::Inline {
                len: text.len() as u8,
                bytes,
            })
        } else {
            Topic(Text::Shared(shared()))
        }
    }

    /// Its text's bytes (what comparisons use: no UTF-8 check).
    fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Text::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Text::Shared(text) => text.as_bytes(),
        }
    }

    /// The topic as written.
    ///
    /// # Panics
    /// Never: a topic's bytes are always those of the `str` it was made from.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Text::Inline { len, bytes } => {
                core::str::from_utf8(&bytes[..usize::from(*len)]).expect("made from a str")
            }
            Text::Shared(text) => text,
        }
    }

    /// Its segments, in order.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.as_str().split('.')
    }

    /// Its prefixes of one segment, two, ..., the whole topic, then the empty prefix: the names
    /// under which the subscriptions that may match it are announced (see
    /// [`Pattern::literal_prefix`]).
    pub fn prefixes(&self) -> impl Iterator<Item = &str> {
        let text = self.as_str();
        text.match_indices('.')
            .map(move |(at, _)| &text[..at])
            .chain(core::iter::once(text))
            .chain(core::iter::once(""))
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Topic {
    fn eq(&self, other: &Topic) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Topic {}

impl PartialOrd for Topic {
    fn partial_cmp(&self, other: &Topic) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Topic {
    fn cmp(&self, other: &Topic) -> core::cmp::Ordering {
        // UTF-8 bytes sort as their text does.
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl core::hash::Hash for Topic {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for Topic {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Topic {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Topic").field(&self.as_str()).finish()
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One segment of a pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Segment {
    Literal(String),
    /// `*`
    One,
    /// `**`
    Any,
}

/// A valid subscription pattern. See the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
    /// Whether it has no wildcard (then it matches only the topic it spells).
    literal: bool,
}

impl Pattern {
    /// Checks `text` against the rules for patterns.
    ///
    /// # Errors
    /// The [`TopicError`] naming the first rule it breaks.
    pub fn new(text: &str) -> Result<Self, TopicError> {
        check(text, true)?;
        let segments: Vec<Segment> = text
            .split('.')
            .map(|s| match s {
                "*" => Segment::One,
                "**" => Segment::Any,
                literal => Segment::Literal(literal.into()),
            })
            .collect();
        let literal = segments.iter().all(|s| matches!(s, Segment::Literal(_)));
        Ok(Pattern {
            text: text.into(),
            segments,
            literal,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it has a wildcard.
    pub fn is_wildcard(&self) -> bool {
        !self.literal
    }

    /// The segments before its first wildcard, joined by dots (empty for a pattern that starts
    /// with one; the whole pattern for one without). Every topic the pattern matches starts with
    /// it, so a subscription is announced under it and a publisher looks up each prefix of its
    /// topic ([`Topic::prefixes`]).
    pub fn literal_prefix(&self) -> &str {
        let literal = self
            .segments
            .iter()
            .take_while(|s| matches!(s, Segment::Literal(_)))
            .count();
        if literal == self.segments.len() {
            return &self.text;
        }
        let mut end = 0;
        for (i, segment) in self.text.split('.').take(literal).enumerate() {
            end += segment.len() + usize::from(i > 0);
        }
        &self.text[..end]
    }

    /// Whether `topic` matches.
    pub fn matches(&self, topic: &Topic) -> bool {
        if self.literal {
            return self.text == topic.as_str();
        }
        let mut segments = [""; MAX_SEGMENTS];
        let mut n = 0;
        for s in topic.segments() {
            segments[n] = s;
            n += 1;
        }
        let topic = &segments[..n];
        // reach[j]: the pattern's segments so far match the topic's first j segments.
        let mut reach = [false; MAX_SEGMENTS + 1];
        reach[0] = true;
        for segment in &self.segments {
            let mut next = [false; MAX_SEGMENTS + 1];
            match segment {
                Segment::Literal(literal) => {
                    for j in 0..n {
                        next[j + 1] = reach[j] && topic[j] == literal;
                    }
                }
                Segment::One => next[1..=n].copy_from_slice(&reach[..n]),
                Segment::Any => {
                    let mut any = false;
                    for j in 0..=n {
                        any |= reach[j];
                        next[j] = any;
                    }
                }
            }
            reach = next;
            if !reach[..=n].contains(&true) {
                return false;
            }
        }
        reach[n]
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Checks the rules common to topics and patterns (and, for topics, that there are no
/// wildcards).
fn check(text: &str, pattern: bool) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    if text.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: text.len() });
    }
    let count = text.split('.').count();
    if count > MAX_SEGMENTS {
        return Err(TopicError::TooManySegments { count });
    }
    for (index, segment) in text.split('.').enumerate() {
        if segment.is_empty() {
            return Err(TopicError::EmptySegment { index });
        }
        if segment.chars().any(char::is_control) {
            return Err(TopicError::ControlCharacter { index });
        }
        match segment {
            "*" | "**" if pattern => {}
            "*" | "**" => return Err(TopicError::WildcardInTopic { index }),
            s if s.contains('*') => return Err(TopicError::PartialWildcard { index }),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    fn t(s: &str) -> Topic {
        Topic::new(s).unwrap()
    }

    fn p(s: &str) -> Pattern {
        Pattern::new(s).unwrap()
    }

    /// The matcher spelled out by recursion, for comparison.
    fn reference(pattern: &[&str], topic: &[&str]) -> bool {
        match pattern.split_first() {
            None => topic.is_empty(),
            Some((&"**", rest)) => (0..=topic.len()).any(|k| reference(rest, &topic[k..])),
            Some((&"*", rest)) => !topic.is_empty() && reference(rest, &topic[1..]),
            Some((literal, rest)) => topic.first() == Some(literal) && reference(rest, &topic[1..]),
        }
    }

    #[test]
    fn examples_match_as_documented() {
        assert!(p("sensors.*.temp").matches(&t("sensors.kitchen.temp")));
        assert!(!p("sensors.*.temp").matches(&t("sensors.temp")));
        assert!(!p("sensors.*.temp").matches(&t("sensors.a.b.temp")));
        for topic in ["sensors", "sensors.kitchen", "sensors.kitchen.temp"] {
            assert!(p("sensors.**").matches(&t(topic)), "{topic}");
        }
        assert!(p("**.temp").matches(&t("temp")));
        assert!(p("**.temp").matches(&t("a.b.temp")));
        assert!(p("a.**.z").matches(&t("a.z")));
        assert!(p("a.**.z").matches(&t("a.b.c.z")));
        assert!(!p("a.**.z").matches(&t("a.b.c")));
        assert!(p("**").matches(&t("anything.at.all")));
        assert!(!p("*").matches(&t("two.segments")));
        assert!(p("exact.topic").matches(&t("exact.topic")));
        assert!(!p("exact.topic").matches(&t("exact.topic.more")));
    }

    #[test]
    fn literal_prefixes_and_topic_prefixes_meet() {
        assert_eq!(p("sensors.*.temp").literal_prefix(), "sensors");
        assert_eq!(p("a.b.**").literal_prefix(), "a.b");
        assert_eq!(p("**.temp").literal_prefix(), "");
        assert_eq!(p("a.b.c").literal_prefix(), "a.b.c");
        let topic = t("a.b.c");
        let prefixes: Vec<&str> = topic.prefixes().collect();
        assert_eq!(prefixes, vec!["a", "a.b", "a.b.c", ""]);
    }

    #[test]
    fn invalid_topics_and_patterns_name_the_rule() {
        assert_eq!(Topic::new(""), Err(TopicError::Empty));
        assert_eq!(
            Topic::new("a..b"),
            Err(TopicError::EmptySegment { index: 1 })
        );
        assert_eq!(Topic::new(".a"), Err(TopicError::EmptySegment { index: 0 }));
        assert_eq!(Topic::new("a."), Err(TopicError::EmptySegment { index: 1 }));
        assert_eq!(
            Topic::new("a.*"),
            Err(TopicError::WildcardInTopic { index: 1 })
        );
        assert_eq!(
            Pattern::new("a.b*"),
            Err(TopicError::PartialWildcard { index: 1 })
        );
        assert_eq!(
            Pattern::new("***"),
            Err(TopicError::PartialWildcard { index: 0 })
        );
        assert_eq!(
            Topic::new("a.b\nc"),
            Err(TopicError::ControlCharacter { index: 1 })
        );
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(
            Topic::new(&long),
            Err(TopicError::TooLong {
                len: MAX_TOPIC_LEN + 1
            })
        );
        let many = vec!["a"; MAX_SEGMENTS + 1].join(".");
        assert_eq!(
            Pattern::new(&many),
            Err(TopicError::TooManySegments {
                count: MAX_SEGMENTS + 1
            })
        );
        assert!(Topic::new(&vec!["a"; MAX_SEGMENTS].join(".")).is_ok());
        assert!(Topic::new("ünïcode.✓").is_ok());
        let message = TopicError::WildcardInTopic { index: 1 }.to_string();
        assert!(message.contains("only a subscription pattern"), "{message}");
    }

    #[test]
    fn short_topics_are_held_in_place_long_ones_shared_and_both_read_alike() {
        let short = "a".repeat(Topic::INLINE);
        let long = "a".repeat(Topic::INLINE + 1);
        for text in [short.as_str(), long.as_str(), "ünïcode.✓"] {
            let shared: Arc<str> = text.into();
            let (made, from_shared) = (Topic::new(text).unwrap(), Topic::from_checked(&shared));
            assert_eq!(made.as_str(), text);
            assert_eq!(made, from_shared);
            assert_eq!(made.cmp(&from_shared), core::cmp::Ordering::Equal);
            assert_eq!(
                alloc::format!("{made:?}"),
                alloc::format!("Topic({text:?})")
            );
            // A long topic made from shared text keeps sharing it.
            let shares = matches!(&from_shared.0, Text::Shared(t) if Arc::ptr_eq(t, &shared));
            assert_eq!(shares, text.len() > Topic::INLINE, "{text}");
        }
        assert!(Topic::new("a.b").unwrap() < Topic::new(&long).unwrap());
    }

    fn segment() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("a"), Just("b"), Just("c")]
    }

    fn pattern_segment() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("a"), Just("b"), Just("*"), Just("**"), Just("**")]
    }

    proptest! {
        #[test]
        fn the_matcher_agrees_with_the_reference(
            topic in proptest::collection::vec(segment(), 1..7),
            pattern in proptest::collection::vec(pattern_segment(), 1..7),
        ) {
            let t = Topic::new(&topic.join(".")).unwrap();
            let p = Pattern::new(&pattern.join(".")).unwrap();
            prop_assert_eq!(p.matches(&t), reference(&pattern, &topic));
            if p.matches(&t) {
                // Every topic a pattern matches starts with its literal prefix, so looking up
                // the topic's prefixes finds the subscription.
                let prefix = p.literal_prefix();
                prop_assert!(t.prefixes().any(|q| q == prefix));
            }
        }

        #[test]
        fn a_pattern_without_wildcards_matches_only_its_own_topic(
            a in proptest::collection::vec(segment(), 1..5),
            b in proptest::collection::vec(segment(), 1..5),
        ) {
            let p = Pattern::new(&a.join(".")).unwrap();
            prop_assert!(!p.is_wildcard());
            prop_assert_eq!(p.matches(&Topic::new(&b.join(".")).unwrap()), a == b);
        }
    }
}
