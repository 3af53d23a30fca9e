//! A statement built piece by piece, its placeholders numbered `$1, $2, …`
//! as values are bound: both engines accept that spelling, while sqlx's own
//! `QueryBuilder` for `Any` writes `?`, which PostgreSQL refuses. The
//! methods of sqlx's builder that Kiln used (`push`, `push_bind`,
//! `push_values`, `separated`, `build`) keep their names and shapes.

use crate::Db;

/// A value bound to a placeholder. Flags are integers 0/1 on both engines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_string()))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(Some(v.clone()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Int(Some(i64::from(v)))
    }
}

/// SQL text and the values of its placeholders, in order.
#[derive(Debug, Default, Clone)]
pub struct Sql {
    text: String,
    args: Vec<Arg>,
}

/// The query a [`Sql`] becomes.
pub type Query = sqlx::query::Query<'static, Db, <Db as sqlx::Database>::Arguments>;

impl Sql {
    pub fn new(text: impl Into<String>) -> Sql {
        Sql {
            text: text.into(),
            args: Vec::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    /// Appends the next placeholder (`$n`) and its value.
    pub fn bind(&mut self, v: impl Into<Arg>) -> &mut Sql {
        self.args.push(v.into());
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self
    }

    /// `(v, v, …)` of `values`, comma-separated: one row of a `VALUES` list.
    pub fn bind_row(&mut self, values: impl IntoIterator<Item = Arg>) -> &mut Sql {
        self.push("(");
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(v);
        }
        self.push(")")
    }

    /// [`Sql::bind`], by sqlx's `QueryBuilder` name.
    pub fn push_bind(&mut self, v: impl Into<Arg>) -> &mut Sql {
        self.bind(v)
    }

    /// `VALUES (…), (…)`: one row per item, its values bound by `row`.
    pub fn push_values<I: IntoIterator>(
        &mut self,
        items: I,
        mut row: impl FnMut(Separated<'_>, I::Item),
    ) -> &mut Sql {
        self.push("VALUES ");
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.push("(");
            row(self.separated(", "), item);
            self.push(")");
        }
        self
    }

    /// Pieces pushed through the result are separated by `separator`.
    pub fn separated(&mut self, separator: &'static str) -> Separated<'_> {
        Separated {
            sql: self,
            separator,
            first: true,
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The query, ready to run (sqlx's `QueryBuilder::build` name).
    pub fn build(self) -> Query {
        self.query()
    }

    pub fn query(self) -> Query {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(self.text));
        for v in self.args {
            q = match v {
                Arg::Text(t) => q.bind(t),
                Arg::Int(i) => q.bind(i),
            };
        }
        q
    }
}

/// A list being pushed into a [`Sql`], as sqlx's `Separated`.
pub struct Separated<'a> {
    sql: &'a mut Sql,
    separator: &'static str,
    first: bool,
}

impl Separated<'_> {
    fn separate(&mut self) {
        if !self.first {
            self.sql.push(self.separator);
        }
        self.first = false;
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.separate();
        self.sql.push(text);
        self
    }

    pub fn push_unseparated(&mut self, text: &str) -> &mut Self {
        self.sql.push(text);
        self
    }

    pub fn push_bind(&mut self, v: impl Into<Arg>) -> &mut Self {
        self.separate();
        self.sql.bind(v);
        self
    }

    pub fn push_bind_unseparated(&mut self, v: impl Into<Arg>) -> &mut Self {
        self.sql.bind(v);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_binding_order() {
        let mut q = Sql::new("INSERT INTO t (a, b) VALUES ");
        q.bind_row(["x".into(), 1i64.into()]);
        q.push(", ");
        q.bind_row([Arg::Text(None), true.into()]);
        q.push(" ON CONFLICT DO NOTHING WHERE c = ").bind("y");
        assert_eq!(
            q.text(),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING WHERE c = $5"
        );
        let mut q = Sql::new("INSERT INTO t (a, b) ");
        q.push_values([("x", 1i64), ("y", 2)], |mut row, (a, b)| {
            row.push_bind(a).push_bind(b);
        });
        q.push(" WHERE (a, b) IN (VALUES ");
        let mut list = q.separated(", ");
        for (a, b) in [("p", 3i64), ("q", 4)] {
            list.push("(");
            list.push_bind_unseparated(a);
            list.push_unseparated(", ");
            list.push_bind_unseparated(b);
            list.push_unseparated(")");
        }
        q.push(")");
        assert_eq!(
            q.text(),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) WHERE (a, b) IN (VALUES ($5, $6), ($7, $8))"
        );
    }
}
