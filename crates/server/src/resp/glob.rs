//! Redis glob patterns, for `SCAN ... MATCH`.
//!
//! Same syntax as Redis's `stringmatchlen`: `*` any run of bytes, `?` one byte, `[abc]`,
//! `[^abc]` and `[a-z]` one byte from (or not from) a class, `\x` the byte `x`. An
//! unterminated `[` class runs to the end of the pattern, as in Redis.
//!
//! Redis matches recursively, which is exponential for patterns like `*a*a*a*a*b` against a
//! long key. Here the pattern is compiled once per `SCAN` call and matched with the classic
//! single-backtrack-point algorithm: every token other than `*` matches exactly one byte, so
//! on a mismatch it is enough to let the most recent `*` absorb one more byte. That is
//! O(pattern × key) in the worst case and linear in practice.

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Star,
    Any,
    Byte(u8),
    Class {
        negated: bool,
        items: Vec<ClassItem>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClassItem {
    Byte(u8),
    Range(u8, u8),
}

impl Token {
    fn matches(&self, b: u8) -> bool {
        match self {
            Token::Star | Token::Any => true,
            Token::Byte(want) => *want == b,
            Token::Class { negated, items } => {
                let hit = items.iter().any(|item| match *item {
                    ClassItem::Byte(want) => want == b,
                    ClassItem::Range(lo, hi) => (lo..=hi).contains(&b),
                });
                hit != *negated
            }
        }
    }
}

impl Pattern {
    /// Compiles `pattern`. Every byte string is a valid pattern.
    pub fn new(pattern: &[u8]) -> Pattern {
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < pattern.len() {
            match pattern[i] {
                b'*' => {
                    // Consecutive stars mean the same as one.
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                    i += 1;
                }
                b'?' => {
                    tokens.push(Token::Any);
                    i += 1;
                }
                b'[' => {
                    i += 1;
                    let negated = pattern.get(i) == Some(&b'^');
                    if negated {
                        i += 1;
                    }
                    let mut items = Vec::new();
                    while i < pattern.len() {
                        match pattern[i] {
                            b'\\' if i + 1 < pattern.len() => {
                                items.push(ClassItem::Byte(pattern[i + 1]));
                                i += 2;
                            }
                            b']' => {
                                i += 1;
                                break;
                            }
                            lo if i + 2 < pattern.len() && pattern[i + 1] == b'-' => {
                                let hi = pattern[i + 2];
                                items.push(ClassItem::Range(lo.min(hi), lo.max(hi)));
                                i += 3;
                            }
                            b => {
                                items.push(ClassItem::Byte(b));
                                i += 1;
                            }
                        }
                    }
                    tokens.push(Token::Class { negated, items });
                }
                b'\\' if i + 1 < pattern.len() => {
                    tokens.push(Token::Byte(pattern[i + 1]));
                    i += 2;
                }
                b => {
                    tokens.push(Token::Byte(b));
                    i += 1;
                }
            }
        }
        Pattern { tokens }
    }

    /// Whether the pattern matches every key (`*`), so that no filtering is needed.
    pub fn matches_everything(&self) -> bool {
        self.tokens == [Token::Star]
    }

    /// Whether `s` matches the whole pattern.
    pub fn matches(&self, s: &[u8]) -> bool {
        let tokens = &self.tokens;
        let (mut t, mut i) = (0, 0);
        // The last `*` seen and the position in `s` it has absorbed up to.
        let mut star: Option<(usize, usize)> = None;
        while i < s.len() {
            if let Some(token) = tokens.get(t) {
                if *token == Token::Star {
                    star = Some((t, i));
                    t += 1;
                    continue;
                }
                if token.matches(s[i]) {
                    t += 1;
                    i += 1;
                    continue;
                }
            }
            match star {
                Some((star_t, star_i)) => {
                    t = star_t + 1;
                    i = star_i + 1;
                    star = Some((star_t, star_i + 1));
                }
                None => return false,
            }
        }
        tokens[t..].iter().all(|token| *token == Token::Star)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, s: &str) -> bool {
        Pattern::new(pattern.as_bytes()).matches(s.as_bytes())
    }

    #[test]
    fn redis_glob_semantics() {
        assert!(m("*", "anything"));
        assert!(m("myapp:*", "myapp:abc"));
        assert!(!m("myapp:*", "other:abc"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hallo"), "reversed ranges are swapped");
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("[\\]]", "]"));
        assert!(m("*a*b", "xxaxxb"));
        assert!(!m("*a*b", "xxaxxc"));
        assert!(m("a[bc", "ab"), "an unterminated class runs to the end");
        assert!(m("**x**", "x"));
        assert!(Pattern::new(b"**").matches_everything());
    }

    #[test]
    fn pathological_patterns_are_fast() {
        let key = "a".repeat(10_000);
        let pattern = "*a".repeat(50) + "b";
        assert!(!m(&pattern, &key));
    }
}
