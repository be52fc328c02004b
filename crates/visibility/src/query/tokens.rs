//! The tokenizer of the visibility query language: words, quoted names and strings, numbers,
//! operators and punctuation, each with the offset a syntax error reports.

use super::{QueryResult, SQL_PREFIX_LEN};

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Word(String),
    Quoted(String),
    Str(String),
    Int(i64),
    Float(f64),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    Semicolon,
    Other,
    Eof,
}

#[derive(Clone, Debug)]
pub(super) struct Token {
    pub(super) tok: Tok,
    /// Byte offset just past the token in the trimmed query.
    pub(super) end: usize,
}

pub(super) fn syntax_error(end: usize, near: Option<&str>) -> String {
    let position = SQL_PREFIX_LEN + end + 1;
    match near {
        Some(w) => format!("malformed SQL query: syntax error at position {position} near '{w}'"),
        None => format!("malformed SQL query: syntax error at position {position}"),
    }
}

pub(super) fn tokenize(q: &str) -> QueryResult<Vec<Token>> {
    let bytes = q.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let tok = match c {
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b';' => {
                i += 1;
                Tok::Semicolon
            }
            b'=' => {
                i += 1;
                Tok::Op("=")
            }
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                i += 2;
                Tok::Op("!=")
            }
            b'<' => match bytes.get(i + 1) {
                Some(b'=') => {
                    i += 2;
                    Tok::Op("<=")
                }
                Some(b'>') => {
                    i += 2;
                    Tok::Op("!=")
                }
                _ => {
                    i += 1;
                    Tok::Op("<")
                }
            },
            b'>' => {
                if bytes.get(i + 1) == Some(&b'=') {
                    i += 2;
                    Tok::Op(">=")
                } else {
                    i += 1;
                    Tok::Op(">")
                }
            }
            b'-' | b'+' => {
                i += 1;
                Tok::Op(if c == b'-' { "-" } else { "+" })
            }
            b'\'' | b'"' => {
                let (s, next) = quoted(q, i, c).ok_or_else(|| syntax_error(q.len(), None))?;
                i = next;
                Tok::Str(s)
            }
            b'`' => {
                let (s, next) = quoted(q, i, c).ok_or_else(|| syntax_error(q.len(), None))?;
                i = next;
                Tok::Quoted(s)
            }
            b'0'..=b'9' | b'.' => {
                let (t, next) = number(q, i).ok_or_else(|| syntax_error(i + 1, None))?;
                i = next;
                t
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || bytes[i] == b'_'
                        || bytes[i] == b'.'
                        || bytes[i] >= 0x80)
                {
                    i += 1;
                }
                Tok::Word(q[start..i].to_string())
            }
            _ => {
                // Unknown here: left for the parser, which reports the first token it
                // cannot use (Temporal's parser reads tokens lazily too).
                i += q[i..].chars().next().map(char::len_utf8).unwrap_or(1);
                Tok::Other
            }
        };
        out.push(Token { tok, end: i });
    }
    out.push(Token {
        tok: Tok::Eof,
        end: q.len(),
    });
    Ok(out)
}

/// A quoted string starting at `start` (the quote), with `''` and backslash escapes.
fn quoted(q: &str, start: usize, quote: u8) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = q[start + 1..].char_indices().peekable();
    while let Some((off, ch)) = chars.next() {
        let at = start + 1 + off;
        if ch as u32 == u32::from(quote) {
            if let Some((_, next)) = chars.peek()
                && *next as u32 == u32::from(quote)
            {
                out.push(ch);
                chars.next();
                continue;
            }
            return Some((out, at + 1));
        }
        if ch == '\\' && quote != b'`' {
            let (_, escaped) = chars.next()?;
            out.push(match escaped {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '0' => '\0',
                other => other,
            });
            continue;
        }
        out.push(ch);
    }
    None
}

fn number(q: &str, start: usize) -> Option<(Tok, usize)> {
    let bytes = q.as_bytes();
    let mut i = start;
    let mut float = false;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    if i < bytes.len() && bytes[i] == b'.' {
        float = true;
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        let mut j = i + 1;
        if j < bytes.len() && (bytes[j] == b'-' || bytes[j] == b'+') {
            j += 1;
        }
        if j < bytes.len() && bytes[j].is_ascii_digit() {
            float = true;
            i = j;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    let text = &q[start..i];
    if text == "." {
        return None;
    }
    if i < bytes.len() && (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_') {
        return None;
    }
    if float {
        text.parse::<f64>().ok().map(|f| (Tok::Float(f), i))
    } else {
        match text.parse::<i64>() {
            Ok(n) => Some((Tok::Int(n), i)),
            Err(_) => text.parse::<f64>().ok().map(|f| (Tok::Float(f), i)),
        }
    }
}
