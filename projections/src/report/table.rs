//! The one CSV shape of every report: named sections, each a table with fixed columns, one
//! record per line, amounts as plain decimals in the row's currency. Totals are a section of
//! their own, never rows among the data. `cledger report --format table` prints the same
//! tables for people, with thousands grouped.

use std::borrow::Cow;

/// One section of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// `rows`, `totals`, ... (`section=` over HTTP, `--section` on the command line).
    pub section: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Columns that hold amounts besides the figures of SPEC section 4 (all amounts are grouped
/// by thousands in tables for people).
const MONEY_COLUMNS: &[&str] = &["amount", "next_12_months", "thereafter", "scheduled", "before", "after", "delta"];

/// Does the column hold amounts?
pub fn is_money_column(name: &str) -> bool {
    MONEY_COLUMNS.contains(&name) || super::figure_pairs(&crate::Figures::default()).iter().any(|(figure, _)| *figure == name)
}

impl Table {
    pub fn new(section: &str, columns: &[&str]) -> Table {
        Table { section: section.to_string(), columns: columns.iter().map(|c| c.to_string()).collect(), rows: vec![] }
    }

    pub fn push(&mut self, row: Vec<String>) {
        assert_eq!(row.len(), self.columns.len(), "a row of section {} has one cell per column", self.section);
        self.rows.push(row);
    }

    /// RFC 4180: header line, then one line per row, CRLF-free (`\n`), fields quoted only
    /// when they need it.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let line = |cells: &mut dyn Iterator<Item = &str>, out: &mut String| {
            let mut first = true;
            for cell in cells {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&csv_field(cell));
            }
            out.push('\n');
        };
        line(&mut self.columns.iter().map(String::as_str), &mut out);
        for row in &self.rows {
            line(&mut row.iter().map(String::as_str), &mut out);
        }
        out
    }

    /// Parses what [`Table::to_csv`] wrote (the command line reads a server's CSV back).
    pub fn from_csv(section: &str, text: &str) -> Result<Table, CsvError> {
        let mut records = parse_csv(text)?.into_iter();
        let columns = records.next().ok_or(CsvError::Empty)?;
        let mut table = Table { section: section.to_string(), columns, rows: vec![] };
        for (i, record) in records.enumerate() {
            if record.len() != table.columns.len() {
                return Err(CsvError::FieldCount { line: i + 2, fields: record.len(), header: table.columns.len() });
            }
            table.rows.push(record);
        }
        Ok(table)
    }

    /// Aligned text for people: amounts right-aligned with thousands grouped; columns whose
    /// value is the same on every row are printed once above the table.
    pub fn to_text(&self) -> String {
        let mut out = format!("{}:\n", self.section);
        if self.rows.is_empty() {
            out.push_str("  (none)\n");
            return out;
        }
        if self.rows.len() == 1 {
            // One record reads best as a list of name and value.
            let width = self.columns.iter().map(String::len).max().unwrap_or(0);
            let money = is_money_column;
            let values: Vec<String> = self.columns.iter().zip(&self.rows[0]).map(|(c, v)| if money(c) { group_thousands(v) } else { v.clone() }).collect();
            let value_width = values.iter().map(String::len).max().unwrap_or(0);
            for (c, v) in self.columns.iter().zip(&values) {
                if money(c) {
                    out.push_str(&format!("  {c:<width$}  {v:>value_width$}\n"));
                } else {
                    out.push_str(&format!("  {c:<width$}  {v}\n"));
                }
            }
            return out;
        }
        let constant: Vec<bool> = (0..self.columns.len())
            .map(|i| self.rows.len() > 1 && self.rows.iter().all(|r| r[i] == self.rows[0][i]))
            .collect();
        let shared: Vec<String> =
            (0..self.columns.len()).filter(|i| constant[*i]).map(|i| format!("{} {}", self.columns[i], self.rows[0][i])).collect();
        if !shared.is_empty() {
            out.push_str(&format!("  {}\n", shared.join(", ")));
        }
        let shown: Vec<usize> = (0..self.columns.len()).filter(|i| !constant[*i]).collect();
        let money: Vec<bool> = self.columns.iter().map(|c| is_money_column(c)).collect();
        let cell = |row: &[String], i: usize| if money[i] { group_thousands(&row[i]) } else { row[i].clone() };
        let widths: Vec<usize> = shown
            .iter()
            .map(|&i| self.rows.iter().map(|r| cell(r, i).chars().count()).max().unwrap_or(0).max(self.columns[i].len()))
            .collect();
        let render = |cells: Vec<String>, out: &mut String| {
            let parts: Vec<String> = cells
                .iter()
                .zip(&shown)
                .zip(&widths)
                .map(|((c, &i), &w)| if money[i] { format!("{c:>w$}") } else { format!("{c:<w$}") })
                .collect();
            out.push_str(&format!("  {}\n", parts.join("  ").trim_end()));
        };
        render(shown.iter().map(|&i| self.columns[i].to_string()).collect(), &mut out);
        for row in &self.rows {
            render(shown.iter().map(|&i| cell(row, i)).collect(), &mut out);
        }
        out
    }
}

fn csv_field(cell: &str) -> Cow<'_, str> {
    if cell.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", cell.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(cell)
    }
}

/// Why a text is not a table as [`Table::to_csv`] writes them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    #[error("an empty CSV")]
    Empty,
    #[error("a quoted CSV field is not closed")]
    UnclosedQuote,
    #[error("CSV line {line}: {fields} fields, the header has {header}")]
    FieldCount { line: usize, fields: usize, header: usize },
}

fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, CsvError> {
    let mut records = vec![];
    let mut record = vec![];
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                any = false;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(CsvError::UnclosedQuote);
    }
    if any {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

/// `-1234567.89` → `-1,234,567.89`: for people, never for machines.
pub fn group_thousands(decimal: &str) -> String {
    let (sign, rest) = decimal.strip_prefix('-').map_or(("", decimal), |r| ("-", r));
    let (whole, fraction) = rest.split_once('.').map_or((rest, None), |(w, f)| (w, Some(f)));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return decimal.to_string();
    }
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match fraction {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips_and_quotes_only_what_needs_it() {
        let mut t = Table::new("rows", &["actor", "amount"]);
        t.push(vec!["ops, \"finance\"".into(), "-12.50".into()]);
        t.push(vec!["plain".into(), "0.00".into()]);
        let csv = t.to_csv();
        assert_eq!(csv, "actor,amount\n\"ops, \"\"finance\"\"\",-12.50\nplain,0.00\n");
        let back = Table::from_csv("rows", &csv).unwrap();
        assert_eq!(Table::from_csv("rows", ""), Err(CsvError::Empty));
        assert_eq!(Table::from_csv("rows", "a,b\n\"1,2\n"), Err(CsvError::UnclosedQuote));
        assert_eq!(Table::from_csv("rows", "a,b\n1,2\n3\n"), Err(CsvError::FieldCount { line: 3, fields: 1, header: 2 }));
        assert_eq!(back.rows, t.rows);
        assert_eq!(back.columns, t.columns);
    }

    #[test]
    fn thousands_are_grouped_for_people() {
        assert_eq!(group_thousands("45000000000.00"), "45,000,000,000.00");
        assert_eq!(group_thousands("-1234567.891"), "-1,234,567.891");
        assert_eq!(group_thousands("999"), "999");
        assert_eq!(group_thousands("2026-Q1"), "2026-Q1");
    }
}
