//! Where a config came from, so that every validation error, from any part of the config, can name the file
//! and the line.

use super::pbtxt::line_of_offset;
use crate::Error;

/// Where a config came from, so that validation errors can name the file and the line.
#[derive(Debug, Clone, Copy)]
pub struct ConfigSource<'a> {
    /// The path of `config.pbtxt` (or of the model folder when there is none).
    pub path: &'a str,
    /// The file's text, when there is a file.
    pub text: Option<&'a str>,
}

impl ConfigSource<'_> {
    /// A config error at the line of the last of `locate`, each searched after the previous one.
    pub(super) fn error(&self, locate: &[&str], message: impl Into<String>) -> Error {
        Error::Config {
            path: self.path.to_owned(),
            line: self.text.map_or(0, |text| locate_line(text, locate)),
            message: message.into(),
        }
    }
}

/// The line of the last of `terms`, each searched after the previous one; 0 when the first is absent.
pub(crate) fn locate_line(text: &str, terms: &[&str]) -> usize {
    let mut at = None;
    let mut from = 0;
    for term in terms {
        match text[from..].find(term) {
            Some(found) => {
                at = Some(from + found);
                from += found + term.len();
            }
            None => break,
        }
    }
    at.map_or(0, |offset| line_of_offset(text, offset))
}
