//! Row predicates of `filter` steps, evaluated with Arrow's compute kernels.
//!
//! ```toml
//! filter = { and = [
//!   { gt = { column = "qty", value = 5 } },
//!   { in = { column = "region", values = ["north", "south"] } },
//!   { not = { starts_with = { column = "product", prefix = "x" } } },
//! ] }
//! ```
//!
//! SQL semantics: a comparison with a null is null, and a row whose predicate is null or
//! false is dropped.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, Scalar, StringArray,
};
use arrow_schema::{DataType, Schema};
use serde::{Deserialize, Serialize};

use super::BatchError;

/// A literal in a predicate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

/// `column OP value`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    pub column: String,
    pub value: Literal,
}

/// A row predicate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Predicate {
    Eq(Compare),
    Ne(Compare),
    Lt(Compare),
    Le(Compare),
    Gt(Compare),
    Ge(Compare),
    In {
        column: String,
        values: Vec<Literal>,
    },
    IsNull {
        column: String,
    },
    IsNotNull {
        column: String,
    },
    StartsWith {
        column: String,
        prefix: String,
    },
    Contains {
        column: String,
        substring: String,
    },
    And(Vec<Predicate>),
    Or(Vec<Predicate>),
    Not(Box<Predicate>),
}

impl Predicate {
    /// Every column the predicate reads.
    pub fn columns(&self) -> Vec<&str> {
        match self {
            Self::Eq(c) | Self::Ne(c) | Self::Lt(c) | Self::Le(c) | Self::Gt(c) | Self::Ge(c) => {
                vec![c.column.as_str()]
            }
            Self::In { column, .. }
            | Self::IsNull { column }
            | Self::IsNotNull { column }
            | Self::StartsWith { column, .. }
            | Self::Contains { column, .. } => vec![column.as_str()],
            Self::And(all) | Self::Or(all) => all.iter().flat_map(Self::columns).collect(),
            Self::Not(p) => p.columns(),
        }
    }

    /// Checks columns and literal types against `schema`; errors name the column.
    pub fn check(&self, schema: &Schema) -> Result<(), BatchError> {
        let probe = RecordBatch::new_empty(Arc::new(schema.clone()));
        self.evaluate(&probe).map(drop)
    }

    /// Keeps the rows of `batch` for which the predicate is true.
    pub fn filter(&self, batch: &RecordBatch) -> Result<RecordBatch, BatchError> {
        let mask = self.evaluate(batch)?;
        arrow_select::filter::filter_record_batch(batch, &mask).map_err(BatchError::arrow("filter"))
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<BooleanArray, BatchError> {
        use arrow_ord::cmp;
        let arrow = BatchError::arrow("filter");
        Ok(match self {
            Self::Eq(c) => compare(batch, c, cmp::eq)?,
            Self::Ne(c) => compare(batch, c, cmp::neq)?,
            Self::Lt(c) => compare(batch, c, cmp::lt)?,
            Self::Le(c) => compare(batch, c, cmp::lt_eq)?,
            Self::Gt(c) => compare(batch, c, cmp::gt)?,
            Self::Ge(c) => compare(batch, c, cmp::gt_eq)?,
            Self::In { column, values } => {
                let mut mask = BooleanArray::from(vec![false; batch.num_rows()]);
                for value in values {
                    let c = Compare {
                        column: column.clone(),
                        value: value.clone(),
                    };
                    mask = arrow_arith::boolean::or_kleene(&mask, &compare(batch, &c, cmp::eq)?)
                        .map_err(&arrow)?;
                }
                mask
            }
            Self::IsNull { column } => {
                arrow_arith::boolean::is_null(column_of(batch, column)?.as_ref()).map_err(&arrow)?
            }
            Self::IsNotNull { column } => {
                arrow_arith::boolean::is_not_null(column_of(batch, column)?.as_ref())
                    .map_err(&arrow)?
            }
            Self::StartsWith { column, prefix } => {
                let array = text_column(batch, column)?;
                arrow_string::like::starts_with(
                    &array,
                    &Scalar::new(StringArray::from(vec![prefix.as_str()])),
                )
                .map_err(&arrow)?
            }
            Self::Contains { column, substring } => {
                let array = text_column(batch, column)?;
                arrow_string::like::contains(
                    &array,
                    &Scalar::new(StringArray::from(vec![substring.as_str()])),
                )
                .map_err(&arrow)?
            }
            Self::And(all) => {
                let mut mask = BooleanArray::from(vec![true; batch.num_rows()]);
                for p in all {
                    mask = arrow_arith::boolean::and_kleene(&mask, &p.evaluate(batch)?)
                        .map_err(&arrow)?;
                }
                mask
            }
            Self::Or(any) => {
                let mut mask = BooleanArray::from(vec![false; batch.num_rows()]);
                for p in any {
                    mask = arrow_arith::boolean::or_kleene(&mask, &p.evaluate(batch)?)
                        .map_err(&arrow)?;
                }
                mask
            }
            Self::Not(p) => arrow_arith::boolean::not(&p.evaluate(batch)?).map_err(&arrow)?,
        })
    }
}

fn column_of(batch: &RecordBatch, name: &str) -> Result<ArrayRef, BatchError> {
    let schema = batch.schema();
    let index = schema
        .index_of(name)
        .map_err(|_| BatchError::UnknownColumn {
            column: name.to_string(),
            available: schema.fields().iter().map(|f| f.name().clone()).collect(),
        })?;
    Ok(batch.column(index).clone())
}

fn text_column(batch: &RecordBatch, name: &str) -> Result<ArrayRef, BatchError> {
    let array = column_of(batch, name)?;
    if array.data_type() != &DataType::Utf8 {
        return Err(mismatch(name, array.data_type(), "Utf8 for a text match"));
    }
    Ok(array)
}

fn mismatch(column: &str, found: &DataType, expected: &str) -> BatchError {
    BatchError::TypeMismatch {
        column: column.to_string(),
        found: found.to_string(),
        expected: expected.to_string(),
    }
}

type Kernel = fn(
    &dyn arrow_array::Datum,
    &dyn arrow_array::Datum,
) -> Result<BooleanArray, arrow_schema::ArrowError>;

/// `column OP value` with the literal as a scalar of the column's type (integers compare with
/// float columns as floats).
fn compare(batch: &RecordBatch, c: &Compare, kernel: Kernel) -> Result<BooleanArray, BatchError> {
    let array = column_of(batch, &c.column)?;
    let scalar: ArrayRef = match (array.data_type(), &c.value) {
        (DataType::Int64, Literal::Int(v)) => Arc::new(Int64Array::from(vec![*v])),
        (DataType::Float64, Literal::Int(v)) => Arc::new(Float64Array::from(vec![*v as f64])),
        (DataType::Float64, Literal::Float(v)) => Arc::new(Float64Array::from(vec![*v])),
        (DataType::Utf8, Literal::Text(v)) => Arc::new(StringArray::from(vec![v.as_str()])),
        (DataType::Boolean, Literal::Bool(v)) => Arc::new(BooleanArray::from(vec![*v])),
        (found, value) => {
            return Err(mismatch(
                &c.column,
                found,
                &format!("a value of that type, not {value:?}"),
            ))
        }
    };
    kernel(&array, &Scalar::new(scalar)).map_err(BatchError::arrow("filter"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "s",
                Arc::new(StringArray::from(vec![
                    Some("apple"),
                    Some("banana"),
                    None,
                    Some("apricot"),
                ])) as ArrayRef,
            ),
            (
                "i",
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)])) as ArrayRef,
            ),
            (
                "f",
                Arc::new(Float64Array::from(vec![
                    Some(0.5),
                    Some(1.5),
                    Some(2.5),
                    None,
                ])) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    fn kept(toml_predicate: &str) -> Vec<usize> {
        let predicate: Predicate = toml::from_str::<toml::Table>(&format!("p = {toml_predicate}"))
            .unwrap()["p"]
            .clone()
            .try_into()
            .unwrap();
        let b = batch();
        let mask = predicate.evaluate(&b).unwrap();
        (0..b.num_rows())
            .filter(|&r| mask.is_valid(r) && mask.value(r))
            .collect()
    }

    /// Each predicate against the rows an oracle (by hand, SQL null semantics) keeps.
    #[test]
    fn predicates_keep_what_sql_keeps() {
        assert_eq!(kept("{ gt = { column = \"i\", value = 1 } }"), [2, 3]);
        assert_eq!(kept("{ le = { column = \"f\", value = 1.5 } }"), [0, 1]);
        assert_eq!(kept("{ lt = { column = \"f\", value = 2 } }"), [0, 1]);
        assert_eq!(
            kept("{ ne = { column = \"s\", value = \"apple\" } }"),
            [1, 3]
        );
        assert_eq!(
            kept("{ in = { column = \"i\", values = [1, 4, 9] } }"),
            [0, 3]
        );
        assert_eq!(kept("{ is_null = { column = \"s\" } }"), [2]);
        assert_eq!(kept("{ is_not_null = { column = \"f\" } }"), [0, 1, 2]);
        assert_eq!(
            kept("{ starts_with = { column = \"s\", prefix = \"ap\" } }"),
            [0, 3]
        );
        assert_eq!(
            kept("{ contains = { column = \"s\", substring = \"an\" } }"),
            [1]
        );
        assert_eq!(kept("{ and = [{ starts_with = { column = \"s\", prefix = \"a\" } }, { ge = { column = \"i\", value = 2 } }] }"), [3]);
        assert_eq!(kept("{ or = [{ eq = { column = \"i\", value = 1 } }, { is_null = { column = \"i\" } }] }"), [0, 1]);
        // NOT of a null comparison stays null: the row is dropped, as in SQL.
        assert_eq!(
            kept("{ not = { eq = { column = \"i\", value = 1 } } }"),
            [2, 3]
        );
    }

    #[test]
    fn errors_name_the_column_and_the_type() {
        let schema = batch().schema();
        let p: Predicate = Predicate::Gt(Compare {
            column: "s".into(),
            value: Literal::Int(1),
        });
        let e = p.check(&schema).unwrap_err().to_string();
        assert!(e.contains("\"s\"") && e.contains("Utf8"), "{e}");
        let p = Predicate::IsNull {
            column: "nope".into(),
        };
        let e = p.check(&schema).unwrap_err().to_string();
        assert!(e.contains("\"nope\"") && e.contains("s, i, f"), "{e}");
    }
}
