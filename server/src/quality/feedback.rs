//! A posted truth, parsed once at the edge from either front end's form into [`FeedbackItem`]s within
//! their bounds (docs/limits.md), and what became of each ([`ItemStatus`]).

use crate::Error;

/// The most items one post may carry.
pub const MAX_FEEDBACK_ITEMS: usize = 1000;
/// The longest request id a truth may name, in bytes; a prediction whose id is longer is not kept.
pub const MAX_REQUEST_ID_BYTES: usize = 256;
/// The most rows (classes, labels or values) one item may give.
pub const MAX_FEEDBACK_ROWS: usize = 4096;
/// The longest label, in bytes.
pub const MAX_LABEL_BYTES: usize = 1024;

/// The true outcome of a request as it was posted, one entry per row of its prediction.
#[derive(Debug, Clone, PartialEq)]
pub enum PostedTruth {
    /// True classes, as column indices of the output.
    Classes(Vec<i64>),
    /// True classes, as labels of the output's label file (or class labels).
    Labels(Vec<String>),
    /// True values (regression).
    Values(Vec<f64>),
}

/// One posted truth: the request it belongs to and its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackItem {
    /// The id the request was sent with, or the one its response carried.
    pub request_id: String,
    /// Its true outcome.
    pub truth: PostedTruth,
}

impl FeedbackItem {
    /// Item `index` of a post, from its fields as both front ends carry them: exactly one of `classes`,
    /// `labels` and `values` given, within the bounds. The error names the field, the bound and the value.
    pub fn parse(
        index: usize,
        request_id: String,
        classes: Vec<i64>,
        labels: Vec<String>,
        values: Vec<f64>,
    ) -> Result<Self, Error> {
        let field = |name: &str| format!("feedback item {index}: '{name}'");
        if request_id.is_empty() || request_id.len() > MAX_REQUEST_ID_BYTES {
            return Err(Error::invalid(format!(
                "{} must be 1 to {MAX_REQUEST_ID_BYTES} bytes, got {} bytes",
                field("request_id"),
                request_id.len()
            )));
        }
        let given = [!classes.is_empty(), !labels.is_empty(), !values.is_empty()];
        if given.iter().filter(|&&g| g).count() != 1 {
            return Err(Error::invalid(format!(
                "feedback item {index} must give exactly one of 'classes', 'labels' and 'values', got {}",
                given.iter().filter(|&&g| g).count()
            )));
        }
        let rows = classes.len().max(labels.len()).max(values.len());
        if rows > MAX_FEEDBACK_ROWS {
            return Err(Error::invalid(format!(
                "feedback item {index} gives {rows} rows, over the {MAX_FEEDBACK_ROWS} an item may give"
            )));
        }
        if let Some(label) = labels.iter().find(|label| label.len() > MAX_LABEL_BYTES) {
            return Err(Error::invalid(format!(
                "{} holds a label of {} bytes, over the {MAX_LABEL_BYTES} a label may have",
                field("labels"),
                label.len()
            )));
        }
        if let Some(value) = values.iter().find(|value| !value.is_finite()) {
            return Err(Error::invalid(format!(
                "{} must hold finite numbers, got {value}",
                field("values")
            )));
        }
        if let Some(class) = classes.iter().find(|&&class| class < 0) {
            return Err(Error::invalid(format!(
                "{} must hold class indices from 0, got {class}",
                field("classes")
            )));
        }
        let truth = if !classes.is_empty() {
            PostedTruth::Classes(classes)
        } else if !labels.is_empty() {
            PostedTruth::Labels(labels)
        } else {
            PostedTruth::Values(values)
        };
        Ok(FeedbackItem { request_id, truth })
    }

    /// Checks a post's item count before its items are parsed.
    pub fn check_count(count: usize) -> Result<(), Error> {
        if count == 0 || count > MAX_FEEDBACK_ITEMS {
            return Err(Error::invalid(format!(
                "a feedback post must carry 1 to {MAX_FEEDBACK_ITEMS} items, got {count}"
            )));
        }
        Ok(())
    }
}

/// What became of one posted truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemStatus {
    /// Joined with its prediction and scored.
    Joined,
    /// Kept until its prediction arrives (it has not yet, or the id is unknown): joined then, or counted
    /// as unmatched after `ferry.quality.feedback_wait_seconds`.
    Waiting,
    /// A truth for this id was joined already, or is waiting already: ignored.
    Duplicate,
    /// Refused, for the reason given: a label or class the output does not have, a kind of truth the metric
    /// does not score, or rows that do not match the prediction.
    Invalid(String),
}

impl ItemStatus {
    /// The status's name in both front ends' answers.
    pub fn name(&self) -> &'static str {
        match self {
            ItemStatus::Joined => "joined",
            ItemStatus::Waiting => "waiting",
            ItemStatus::Duplicate => "duplicate",
            ItemStatus::Invalid(_) => "invalid",
        }
    }

    /// Why it was refused; empty otherwise.
    pub fn reason(&self) -> &str {
        match self {
            ItemStatus::Invalid(reason) => reason,
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(result: Result<FeedbackItem, Error>) -> String {
        match result {
            Err(Error::InvalidRequest(message)) => message,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn items_are_parsed_within_their_bounds_naming_the_field() {
        let item = FeedbackItem::parse(0, "r".into(), vec![2], Vec::new(), Vec::new()).expect("valid");
        assert_eq!(item.truth, PostedTruth::Classes(vec![2]));
        let cases = [
            (
                FeedbackItem::parse(3, String::new(), vec![0], Vec::new(), Vec::new()),
                "feedback item 3: 'request_id' must be 1 to 256 bytes, got 0 bytes",
            ),
            (
                FeedbackItem::parse(0, "x".repeat(257), vec![0], Vec::new(), Vec::new()),
                "got 257 bytes",
            ),
            (
                FeedbackItem::parse(1, "r".into(), Vec::new(), Vec::new(), Vec::new()),
                "exactly one of 'classes', 'labels' and 'values', got 0",
            ),
            (
                FeedbackItem::parse(1, "r".into(), vec![0], vec!["a".into()], Vec::new()),
                "got 2",
            ),
            (
                FeedbackItem::parse(
                    0,
                    "r".into(),
                    vec![0; MAX_FEEDBACK_ROWS + 1],
                    Vec::new(),
                    Vec::new(),
                ),
                "gives 4097 rows, over the 4096",
            ),
            (
                FeedbackItem::parse(0, "r".into(), Vec::new(), vec!["l".repeat(1025)], Vec::new()),
                "label of 1025 bytes, over the 1024",
            ),
            (
                FeedbackItem::parse(0, "r".into(), Vec::new(), Vec::new(), vec![f64::NAN]),
                "'values' must hold finite numbers, got NaN",
            ),
            (
                FeedbackItem::parse(0, "r".into(), vec![-1], Vec::new(), Vec::new()),
                "class indices from 0, got -1",
            ),
        ];
        for (result, expected) in cases {
            let message = refused(result);
            assert!(message.contains(expected), "{message}");
        }
        assert!(FeedbackItem::check_count(1000).is_ok());
        for count in [0, 1001] {
            let error = FeedbackItem::check_count(count).expect_err("refused");
            assert!(
                error
                    .to_string()
                    .contains(&format!("1 to 1000 items, got {count}")),
                "{error}"
            );
        }
    }
}
