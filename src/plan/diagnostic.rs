//! Plan errors that point into the file: `path:line:col`, the source line, a caret under the
//! offending span, and a hint the user can act on.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// How serious a finding is: errors stop the run, warnings are printed and the run goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a plan, with its location when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub location: Option<Location>,
    pub hint: Option<String>,
}

/// A resolved position in a file, with the text needed to draw the caret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub col: usize,
    pub source_line: String,
    /// Width of the caret, in characters (at least 1).
    pub width: usize,
}

impl Location {
    /// Locates a byte span within `source`.
    pub fn from_span(path: &Path, source: &str, span: Range<usize>) -> Location {
        let start = span.start.min(source.len());
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        let source_line = source[line_start..line_end].trim_end_matches('\r');
        let line = source[..start].matches('\n').count() + 1;
        let col = source[line_start..start].chars().count() + 1;
        let end = span.end.clamp(start, line_end);
        let width = source[start..end].chars().count().max(1);
        Location {
            path: path.to_path_buf(),
            line,
            col,
            source_line: source_line.to_string(),
            width,
        }
    }
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            location: None,
            hint: None,
        }
    }

    pub fn warning(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message)
        }
    }

    pub fn at(mut self, location: Location) -> Diagnostic {
        self.location = Some(location);
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(f, "{label}: {}", self.message)?;
        if let Some(loc) = &self.location {
            let gutter = loc.line.to_string().len();
            let pad = " ".repeat(gutter);
            writeln!(
                f,
                "{pad}--> {}:{}:{}",
                loc.path.display(),
                loc.line,
                loc.col
            )?;
            writeln!(f, "{pad} |")?;
            writeln!(f, "{} | {}", loc.line, loc.source_line)?;
            let lead: String = loc
                .source_line
                .chars()
                .take(loc.col - 1)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            writeln!(f, "{pad} | {lead}{}", "^".repeat(loc.width))?;
        }
        if let Some(hint) = &self.hint {
            let pad = self
                .location
                .as_ref()
                .map_or(String::new(), |l| " ".repeat(l.line.to_string().len()));
            writeln!(f, "{pad} = hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every finding about one plan, errors first in file order.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    pub fn error_count(&self) -> usize {
        self.0.iter().filter(|d| d.is_error()).count()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_line_and_column_of_a_span() {
        let src = "a = 1\nbc = \"x\"\n";
        let loc = Location::from_span(Path::new("p.toml"), src, 6..8);
        assert_eq!((loc.line, loc.col, loc.width), (2, 1, 2));
        assert_eq!(loc.source_line, "bc = \"x\"");
    }

    #[test]
    fn renders_caret_under_the_span() {
        let src = "name = \"x\"\nconcurency = [1]\n";
        let d = Diagnostic::error("unknown key `concurency`")
            .at(Location::from_span(Path::new("p.toml"), src, 11..21))
            .hint("did you mean `concurrency`?");
        let text = d.to_string();
        assert!(text.contains("--> p.toml:2:1"), "{text}");
        assert!(text.contains("2 | concurency = [1]"), "{text}");
        assert!(text.contains("  | ^^^^^^^^^^\n"), "{text}");
    }
}
