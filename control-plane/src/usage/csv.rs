//! CSV cells for the usage exports, safe to open in a spreadsheet.
//!
//! Several exported columns come from clients (`user_agent`, `end_user`, `path`, `model`): a
//! cell starting with `=`, `+`, `-` or `@` (or a tab or carriage return, which some programs
//! skip before looking) is read as a formula by Excel, LibreOffice and Google Sheets. Following
//! OWASP's advice on CSV injection, such text cells get a leading `'`, which spreadsheets show
//! as text and do not evaluate; numbers are written as they are.

use serde_json::Value;

/// Characters that make a spreadsheet read a cell as a formula.
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// One CSV cell from a text value: neutralised if it could be read as a formula, then quoted
/// if it holds a separator, a quote or a line break.
pub fn cell(text: &str) -> String {
    let text = if text.starts_with(FORMULA_START) { format!("'{text}") } else { text.to_string() };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// One CSV cell from a JSON value: null is empty, text goes through [`cell`], numbers and
/// booleans are written as they are.
pub fn field(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => cell(s),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formula_starts_are_neutralised() {
        assert_eq!(cell("=HYPERLINK(\"http://x\",\"y\")"), "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"");
        assert_eq!(cell("=1+2"), "'=1+2");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-1+cmd|' /C calc'!A0"), "'-1+cmd|' /C calc'!A0");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\t=1"), "'\t=1");
        assert_eq!(cell("\r=1"), "\"'\r=1\"");
    }

    #[test]
    fn ordinary_text_and_numbers_are_unchanged() {
        assert_eq!(cell("curl/8.0"), "curl/8.0");
        assert_eq!(cell("a=b"), "a=b");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell(""), "");
        assert_eq!(field(&json!(null)), "");
        assert_eq!(field(&json!(42)), "42");
        assert_eq!(field(&json!(-3)), "-3", "a number is not a formula");
        assert_eq!(field(&json!(true)), "true");
        assert_eq!(field(&json!("-3")), "'-3", "text that looks like one is neutralised");
    }
}
