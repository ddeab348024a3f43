//! The built-in engine's prefix cache (`--prefix-cache`): what part of a prompt an earlier
//! request (its prompt and its answer) already holds, counted as the sim counts prompts.

use std::collections::VecDeque;

/// One message of a prompt (a completions prompt is one message with no role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub role: String,
    pub content: String,
}

/// How the sim counts a prompt, so cached counts are in the same units as `prompt_tokens`.
pub struct Units<'a> {
    /// Counts a piece of text (no special tokens), or its words.
    pub count: &'a dyn Fn(&str) -> usize,
    /// Tokens counted once per prompt (a BOS), 0 in words.
    pub specials: usize,
    /// Tokens a chat message costs besides its content (the sim's template), 0 in words.
    pub per_message: usize,
}

/// The last requests the cache remembers, each as its prompt and then its answer.
#[derive(Debug, Default)]
pub struct PrefixCache {
    entries: VecDeque<Vec<Msg>>,
}

/// Prompts remembered (the oldest forgotten first).
const CAPACITY: usize = 512;

impl PrefixCache {
    /// The cached part of `prompt` (at most `prompt_tokens - 1`: the last token is always
    /// computed), then remembers `then`: the prompt with the engine's answer after it.
    pub fn lookup_and_insert(
        &mut self,
        prompt: &[Msg],
        then: Vec<Msg>,
        prompt_tokens: usize,
        units: &Units,
    ) -> usize {
        let cached = self
            .entries
            .iter()
            .map(|e| shared(e, prompt, units))
            .max()
            .unwrap_or(0)
            .min(prompt_tokens.saturating_sub(1));
        if self.entries.len() == CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(then);
        cached
    }
}

/// The units `now` shares with the start of `then`: whole leading messages, then the common
/// start of the next message's content up to its last whitespace (a word or token boundary).
fn shared(then: &[Msg], now: &[Msg], u: &Units) -> usize {
    let whole = then.iter().zip(now).take_while(|(a, b)| a == b).count();
    let mut n: usize = now[..whole]
        .iter()
        .map(|m| u.per_message + (u.count)(&m.content))
        .sum();
    if let (Some(a), Some(b)) = (then.get(whole), now.get(whole)) {
        if a.role == b.role {
            let common = a
                .content
                .char_indices()
                .zip(b.content.chars())
                .take_while(|((_, x), y)| x == y)
                .last()
                .map_or(0, |((i, c), _)| i + c.len_utf8());
            let cut = b.content[..common].rfind(char::is_whitespace).unwrap_or(0);
            if cut > 0 {
                n += u.per_message + (u.count)(&b.content[..cut]);
            }
        }
    }
    if n > 0 {
        n + u.specials
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: &str, content: &str) -> Msg {
        Msg {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn a_later_turn_finds_the_earlier_turn_and_its_answer_cached() {
        let words = |t: &str| t.split_whitespace().count();
        let u = Units {
            count: &words,
            specials: 0,
            per_message: 0,
        };
        let mut c = PrefixCache::default();
        let first = [m("user", "hello there friend")];
        assert_eq!(
            c.lookup_and_insert(
                &first,
                vec![first[0].clone(), m("assistant", "hi you")],
                3,
                &u
            ),
            0
        );
        let second = [
            m("user", "hello there friend"),
            m("assistant", "hi you"),
            m("user", "and now"),
        ];
        assert_eq!(c.lookup_and_insert(&second, second.to_vec(), 7, &u), 5);
        // A prompt sharing the first words of a content: the common words up to a boundary.
        let other = [m("user", "hello there stranger")];
        assert_eq!(c.lookup_and_insert(&other, other.to_vec(), 3, &u), 2);
        // Nothing in common, or everything: never the whole prompt.
        assert_eq!(
            c.lookup_and_insert(&[m("user", "zzz")], vec![m("user", "zzz")], 1, &u),
            0
        );
        assert_eq!(
            c.lookup_and_insert(&[m("user", "zzz")], vec![m("user", "zzz")], 1, &u),
            0
        );
        let t = Units {
            count: &words,
            specials: 1,
            per_message: 3,
        };
        assert_eq!(
            c.lookup_and_insert(&second, Vec::new(), 40, &t),
            1 + (3 + 3) + (3 + 2) + (3 + 2)
        );
    }
}
