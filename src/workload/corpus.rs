//! The built-in corpus (English prose written for this project, in `corpus.txt`) and the seeded
//! stream of its words that synthetic prompts are cut from, so prompts are language, not random ids.

use std::sync::OnceLock;

use super::rng::Rng;

/// The corpus text, compiled into the binary: its bytes are part of what fixes a prompt set, so
/// editing it changes every synthetic prompt (and the prompts' sha256 shows it).
pub const TEXT: &str = include_str!("corpus.txt");

/// The corpus's sentences, in file order, each ending with its full stop.
pub fn sentences() -> &'static [&'static str] {
    static SENTENCES: OnceLock<Vec<&'static str>> = OnceLock::new();
    SENTENCES.get_or_init(|| {
        let mut out = Vec::new();
        for para in TEXT.split("\n\n") {
            let para = para.trim();
            let mut start = 0;
            for (i, c) in para.char_indices() {
                let next = para[i + c.len_utf8()..].chars().next();
                if matches!(c, '.' | '?' | '!') && next.map_or(true, |n| n == ' ') {
                    let s = para[start..=i].trim();
                    if !s.is_empty() {
                        out.push(s);
                    }
                    start = i + 1;
                }
            }
            let rest = para[start..].trim();
            if !rest.is_empty() {
                out.push(rest);
            }
        }
        out
    })
}

/// An endless, seeded stream of corpus words: whole sentences drawn uniformly at random, their
/// words in order. Words already looked at (`peek`) stay put until consumed (`advance`).
#[derive(Debug, Clone)]
pub struct Words {
    rng: Rng,
    buf: Vec<&'static str>,
    pos: usize,
}

impl Words {
    pub fn new(rng: Rng) -> Words {
        Words {
            rng,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// The next `k` words, without consuming them.
    pub fn peek(&mut self, k: usize) -> &[&'static str] {
        let s = sentences();
        while self.buf.len() < self.pos + k {
            let i = self.rng.below(s.len() as u64) as usize;
            self.buf.extend(s[i].split_whitespace());
        }
        &self.buf[self.pos..self.pos + k]
    }

    pub fn advance(&mut self, k: usize) {
        self.peek(k);
        self.pos += k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_splits_into_sentences_and_streams_reproducibly() {
        let s = sentences();
        assert!(s.len() >= 80, "{} sentences", s.len());
        assert!(s.iter().all(|x| x.ends_with('.')), "{s:?}");
        assert!(s[0].starts_with("The harbor town"));
        let mut a = Words::new(Rng::derive(1, &[]));
        let mut b = Words::new(Rng::derive(1, &[]));
        assert_eq!(a.peek(50), b.peek(50));
        a.advance(10);
        assert_eq!(a.peek(5), &b.peek(15)[10..]);
    }
}
