//! A HuggingFace tokenizer loaded offline from a `tokenizer.json` (or a model folder holding one),
//! and the one place token counts are defined.
//!
//! Conventions (docs/workloads.md): a *prompt* is counted as the tokenizer encodes it with its own
//! special tokens (`add_special_tokens = true`: a BOS where its post-processor adds one, nothing
//! where it adds none), which is what an engine's completions endpoint counts for the same text.
//! The runner adds no special token of its own. A *plain* count (`add_special_tokens = false`)
//! measures pieces of a prompt and reference answers, which are generated, so carry no BOS.

use std::path::{Path, PathBuf};

use super::error::{Result, WorkloadError};

/// A loaded tokenizer and the path it came from (for errors).
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .finish()
    }
}

impl Tokenizer {
    /// Loads `path`: a `tokenizer.json` file, or a folder holding one (a model folder). Reads the
    /// file only: nothing is fetched from a hub.
    pub fn load(path: &Path) -> Result<Tokenizer> {
        let file = if path.is_dir() {
            let f = path.join("tokenizer.json");
            if !f.is_file() {
                return Err(WorkloadError::NoTokenizerJson {
                    path: path.to_path_buf(),
                });
            }
            f
        } else {
            path.to_path_buf()
        };
        let bytes = std::fs::read(&file).map_err(|source| WorkloadError::Read {
            path: file.clone(),
            source,
        })?;
        let load_error = |e: tokenizers::Error| WorkloadError::TokenizerLoad {
            path: file.clone(),
            message: e.to_string(),
        };
        let mut inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(load_error)?;
        // A tokenizer.json may carry the truncation or padding its model was trained with
        // (e.g. `max_length = 512`): counting through it would cap or pad every count.
        inner.with_padding(None);
        inner.with_truncation(None).map_err(load_error)?;
        Ok(Tokenizer { inner, path: file })
    }

    /// Wraps an already built tokenizer (tests, and callers that built one in memory).
    pub fn from_parts(inner: tokenizers::Tokenizer, path: PathBuf) -> Tokenizer {
        Tokenizer { inner, path }
    }

    /// The `tokenizer.json` this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    fn encode(&self, text: &str, special: bool) -> Result<tokenizers::Encoding> {
        self.inner
            .encode_fast(text, special)
            .map_err(|e| WorkloadError::Encode {
                path: self.path.clone(),
                message: e.to_string(),
            })
    }

    /// The token ids of a prompt, with the tokenizer's own special tokens.
    pub fn prompt_ids(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode(text, true)?.get_ids().to_vec())
    }

    /// Tokens of a prompt, with the tokenizer's own special tokens (the prompt convention).
    pub fn count(&self, text: &str) -> Result<usize> {
        Ok(self.encode(text, true)?.len())
    }

    /// Tokens of a piece of text without any special token (reference answers, hash blocks).
    pub fn count_plain(&self, text: &str) -> Result<usize> {
        Ok(self.encode(text, false)?.len())
    }

    /// How many special tokens the tokenizer adds to every prompt (e.g. 1 for a BOS).
    pub fn added_specials(&self) -> Result<usize> {
        Ok(self.encode("", true)?.len())
    }
}

/// What a length is counted in: tokens with a tokenizer, whitespace-separated words without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountUnit {
    Tokens,
    #[default]
    Words,
}

impl CountUnit {
    /// Words are the default: a resolved plan leaves the unit out then.
    pub fn is_words(&self) -> bool {
        *self == CountUnit::Words
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CountUnit::Tokens => "tokens",
            CountUnit::Words => "words",
        }
    }
}

/// How lengths are measured: by a tokenizer, or in words when the workload names none.
#[derive(Debug, Clone, Copy)]
pub enum Counter<'a> {
    Tokens(&'a Tokenizer),
    Words,
}

impl Counter<'_> {
    pub fn unit(&self) -> CountUnit {
        match self {
            Counter::Tokens(_) => CountUnit::Tokens,
            Counter::Words => CountUnit::Words,
        }
    }

    /// A whole prompt's length (tokens with the tokenizer's specials, or words).
    pub fn prompt(&self, text: &str) -> Result<usize> {
        match self {
            Counter::Tokens(t) => t.count(text),
            Counter::Words => Ok(text.split_whitespace().count()),
        }
    }

    /// A piece's length (tokens without special tokens, or words).
    pub fn plain(&self, text: &str) -> Result<usize> {
        match self {
            Counter::Tokens(t) => t.count_plain(text),
            Counter::Words => Ok(text.split_whitespace().count()),
        }
    }

    /// The client-side length of a chat: the plain lengths of the contents, summed. The chat
    /// template's tokens (role markers, BOS) are the engine's, so they are not counted here: the
    /// difference with `usage.prompt_tokens` is the template's cost.
    pub fn messages<'m>(&self, contents: impl IntoIterator<Item = &'m str>) -> Result<usize> {
        let mut n = 0;
        for c in contents {
            n += self.plain(c)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The committed test tokenizer (tests/fixtures/tiny-tokenizer/, made by
    /// `write_tiny_tokenizer_fixture` below): a byte-level BPE trained on the built-in corpus whose
    /// post-processor adds a `<s>` BOS, like Llama's.
    pub fn fixture_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-tokenizer")
    }

    pub fn tiny() -> Tokenizer {
        match Tokenizer::load(&fixture_dir()) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    /// The same tokenizer without its BOS post-processor: prompts carry no special token at all.
    pub fn tiny_without_bos() -> Tokenizer {
        let t = tiny();
        let mut inner = t.inner.clone();
        inner.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
        Tokenizer::from_parts(inner, t.path)
    }

    /// Regenerates the fixture: `cargo test --lib write_tiny_tokenizer_fixture -- --ignored`.
    #[test]
    #[ignore = "writes tests/fixtures/tiny-tokenizer/tokenizer.json"]
    fn write_tiny_tokenizer_fixture() {
        use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        use tokenizers::processors::template::TemplateProcessing;
        use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, TokenizerBuilder};

        let specials = ["<s>", "</s>", "<pad>"];
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(600)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(
                specials
                    .iter()
                    .map(|s| AddedToken::from(*s, true))
                    .collect(),
            )
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut tk = TokenizerBuilder::<
            BPE,
            NormalizerWrapper,
            ByteLevel,
            TemplateProcessing,
            DecoderWrapper,
        >::new()
        .with_model(BPE::default())
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_decoder(Some(ByteLevel::default().into()))
        .build()
        .expect("builder");
        tk.train(
            &mut trainer,
            super::super::corpus::TEXT.lines().filter(|l| !l.is_empty()),
        )
        .expect("train");
        let bos = tk.token_to_id("<s>").expect("bos");
        let post = TemplateProcessing::builder()
            .try_single("<s> $A")
            .expect("template")
            .try_pair("<s> $A <s> $B")
            .expect("template")
            .special_tokens(vec![("<s>", bos)])
            .build()
            .expect("post");
        tk.with_post_processor(Some(post));
        let dir = fixture_dir();
        std::fs::create_dir_all(&dir).expect("mkdir");
        let json = tk.to_string(false).expect("json");
        std::fs::write(dir.join("tokenizer.json"), json).expect("write");
    }

    #[test]
    fn the_fixture_loads_from_its_folder_and_counts_with_its_bos() {
        let t = tiny();
        assert!(t.path().ends_with("tokenizer.json"));
        assert_eq!(t.added_specials().expect("count"), 1);
        let text = "The harbor town woke slowly.";
        let with = t.count(text).expect("count");
        assert_eq!(with, t.count_plain(text).expect("count") + 1);
        assert_eq!(tiny_without_bos().count(text).expect("count"), with - 1);
        assert_eq!(Counter::Words.prompt(text).expect("words"), 5);
    }

    #[test]
    fn a_tokenizer_saved_with_truncation_still_counts_whole_prompts() {
        let mut inner = tiny().inner.clone();
        inner
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: 8,
                ..Default::default()
            }))
            .expect("truncation");
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("tokenizer.json");
        inner.save(&p, false).expect("save");
        let text = super::super::corpus::sentences()[..5].join(" ");
        assert_eq!(
            Tokenizer::load(&p)
                .expect("load")
                .count(&text)
                .expect("count"),
            tiny().count(&text).expect("count")
        );
        assert!(tiny().count(&text).expect("count") > 8);
    }

    #[test]
    fn missing_and_broken_tokenizers_name_their_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = Tokenizer::load(dir.path()).expect_err("no tokenizer.json");
        assert!(matches!(e, WorkloadError::NoTokenizerJson { .. }), "{e}");
        assert!(e.to_string().contains(&dir.path().display().to_string()));
        let bad = dir.path().join("tokenizer.json");
        std::fs::write(&bad, "{not json").expect("write");
        let e = Tokenizer::load(&bad).expect_err("bad json");
        assert!(matches!(e, WorkloadError::TokenizerLoad { .. }), "{e}");
        assert!(e.to_string().contains("tokenizer.json"), "{e}");
        let e = Tokenizer::load(&dir.path().join("nope.json")).expect_err("absent");
        assert!(matches!(e, WorkloadError::Read { .. }), "{e}");
    }
}
