//! Temporal's visibility query language: a tokenizer, a recursive-descent parser into a raw
//! syntax tree, and resolution of that tree against the namespace's search attributes into a
//! typed [`Expr`]. Errors are InvalidArgument messages worded as Temporal's SQL visibility words
//! them (`invalid query: malformed SQL query: syntax error at position N`, `invalid query:
//! invalid search attribute: X`, `invalid query: invalid expression: ...`, `invalid query:
//! operation is not supported: ...`).
//!
//! Grammar (keywords case-insensitive, attribute names case-sensitive):
//!
//! ```text
//! query      := [or] [GROUP BY name] [ORDER BY ...] [LIMIT n] [';']
//! or         := and (OR and)*
//! and        := not (AND not)*
//! not        := NOT not | '(' or ')' | predicate
//! predicate  := name op value | name [NOT] IN '(' value (',' value)* ')'
//!             | name [NOT] BETWEEN value AND value | name IS [NOT] NULL
//!             | name [NOT] STARTS_WITH value | name [NOT] LIKE value
//! name       := identifier | `backquoted`
//! value      := 'string' | "string" | [-|+] number | TRUE | FALSE
//! ```
//!
//! ORDER BY and LIMIT parse but are refused, as Temporal's SQL visibility refuses them.

use crate::attrs::{self, Registry, SaType, Source, Value};

/// The text Temporal wraps a query in before parsing it; syntax error positions count it.
const SQL_PREFIX_LEN: usize = "select * from table1 where ".len();

pub type QueryResult<T> = Result<T, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn text(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A resolved attribute of a predicate.
#[derive(Clone, Debug, PartialEq)]
pub struct Attr {
    pub name: String,
    pub ty: SaType,
    pub source: Source,
}

/// A typed filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(Attr, CmpOp, Value),
    In(Attr, Vec<Value>, bool),
    Between(Attr, Value, Value, bool),
    StartsWith(Attr, String, bool),
    IsNull(Attr, bool),
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct ParsedQuery {
    pub filter: Option<Expr>,
    /// `GROUP BY ExecutionStatus` (the only grouping there is).
    pub group_by_status: bool,
}

/// Parses and resolves `query` against the system attributes and `registry`.
pub fn parse(query: &str, registry: &Registry) -> QueryResult<ParsedQuery> {
    let raw = parse_raw(query).map_err(|e| format!("invalid query: {e}"))?;
    parse_resolved(raw, registry)
}

/// A query of ListActivityExecutions / CountActivityExecutions: `ActivityId` and
/// `ActivityType` name a standalone activity's ID and type, which its record keeps where a
/// run keeps its workflow ID and type (Temporal's business-ID alias), so they resolve to those.
pub fn parse_for_activities(query: &str, registry: &Registry) -> QueryResult<ParsedQuery> {
    let mut raw = parse_raw(query).map_err(|e| format!("invalid query: {e}"))?;
    fn alias(raw: &mut Raw) {
        match raw {
            Raw::And(a, b) | Raw::Or(a, b) => {
                alias(a);
                alias(b);
            }
            Raw::Not(a) => alias(a),
            Raw::Pred(name, _) => match name.as_str() {
                "ActivityId" => *name = "WorkflowId".into(),
                "ActivityType" => *name = "WorkflowType".into(),
                _ => {}
            },
        }
    }
    if let Some(filter) = raw.filter.as_mut() {
        alias(filter);
    }
    parse_resolved(raw, registry)
}

fn parse_resolved(raw: RawQuery, registry: &Registry) -> QueryResult<ParsedQuery> {
    let filter = match raw.filter {
        Some(f) => Some(resolve(f, registry).map_err(|e| format!("invalid query: {e}"))?),
        None => None,
    };
    if let Some(field) = &raw.group_by
        && field != "ExecutionStatus"
    {
        if attrs::lookup(registry, field).is_none() {
            return Err(format!("invalid query: invalid search attribute: {field}"));
        }
        return Err(format!(
            "invalid query: operation is not supported: 'GROUP BY' clause is not supported for search attribute {field}"
        ));
    }
    if raw.order_by {
        return Err("invalid query: operation is not supported: 'ORDER BY' clause".into());
    }
    if raw.limit {
        return Err("invalid query: operation is not supported: 'LIMIT' clause".into());
    }
    Ok(ParsedQuery {
        filter,
        group_by_status: raw.group_by.is_some(),
    })
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[derive(Clone, Debug, PartialEq)]
enum Tok {
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
struct Token {
    tok: Tok,
    /// Byte offset just past the token in the trimmed query.
    end: usize,
}

fn syntax_error(end: usize, near: Option<&str>) -> String {
    let position = SQL_PREFIX_LEN + end + 1;
    match near {
        Some(w) => format!("malformed SQL query: syntax error at position {position} near '{w}'"),
        None => format!("malformed SQL query: syntax error at position {position}"),
    }
}

fn tokenize(q: &str) -> QueryResult<Vec<Token>> {
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

// ---------------------------------------------------------------------------------------------
// Raw syntax tree

#[derive(Clone, Debug, PartialEq)]
enum Lit {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Clone, Debug, PartialEq)]
enum Pred {
    Cmp(CmpOp, Lit),
    In(Vec<Lit>, bool),
    Between(Lit, Lit, bool),
    StartsWith(Lit, bool),
    Like(bool),
    IsNull(bool),
}

#[derive(Clone, Debug, PartialEq)]
enum Raw {
    And(Box<Raw>, Box<Raw>),
    Or(Box<Raw>, Box<Raw>),
    Not(Box<Raw>),
    Pred(String, Pred),
}

struct RawQuery {
    filter: Option<Raw>,
    group_by: Option<String>,
    order_by: bool,
    limit: bool,
}

/// Words that cannot name an attribute without backquotes.
const RESERVED: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "between",
    "is",
    "null",
    "like",
    "starts_with",
    "order",
    "by",
    "group",
    "limit",
    "true",
    "false",
    "select",
    "from",
    "where",
    "asc",
    "desc",
    "having",
];

fn is_kw(tok: &Tok, kw: &str) -> bool {
    matches!(tok, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
    predicates: usize,
}

/// Nesting and size bounds: the tree is walked recursively (resolution, evaluation, drop).
const MAX_DEPTH: usize = 200;
const MAX_PREDICATES: usize = 1000;

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].tok
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        let i = (self.pos + ahead).min(self.toks.len() - 1);
        &self.toks[i].tok
    }

    fn next(&mut self) -> Token {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn error(&self) -> String {
        let t = &self.toks[self.pos];
        let near = match &t.tok {
            Tok::Word(w) => Some(w.to_ascii_lowercase()),
            _ => None,
        };
        syntax_error(t.end, near.as_deref())
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if is_kw(self.peek(), kw) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &str) -> QueryResult<()> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.error())
        }
    }

    fn query(&mut self) -> QueryResult<RawQuery> {
        let mut q = RawQuery {
            filter: None,
            group_by: None,
            order_by: false,
            limit: false,
        };
        if !self.at_clause_end() {
            q.filter = Some(self.or()?);
        }
        if self.eat_kw("group") {
            self.expect_kw("by")?;
            q.group_by = Some(self.name()?);
            while matches!(self.peek(), Tok::Comma) {
                self.next();
                self.name()?;
            }
        }
        if self.eat_kw("order") {
            self.expect_kw("by")?;
            q.order_by = true;
            loop {
                self.name()?;
                if !self.eat_kw("asc") {
                    self.eat_kw("desc");
                }
                if matches!(self.peek(), Tok::Comma) {
                    self.next();
                } else {
                    break;
                }
            }
        }
        if self.eat_kw("limit") {
            match self.next().tok {
                Tok::Int(_) => q.limit = true,
                _ => {
                    self.pos -= 1;
                    return Err(self.error());
                }
            }
        }
        if matches!(self.peek(), Tok::Semicolon) {
            self.next();
        }
        if !matches!(self.peek(), Tok::Eof) {
            return Err(self.error());
        }
        Ok(q)
    }

    fn at_clause_end(&self) -> bool {
        matches!(self.peek(), Tok::Eof | Tok::Semicolon)
            || ((is_kw(self.peek(), "order") || is_kw(self.peek(), "group"))
                && is_kw(self.peek_at(1), "by"))
            || is_kw(self.peek(), "limit")
    }

    fn or(&mut self) -> QueryResult<Raw> {
        let mut left = self.and()?;
        while self.eat_kw("or") {
            let right = self.and()?;
            left = Raw::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> QueryResult<Raw> {
        let mut left = self.not()?;
        while self.eat_kw("and") {
            let right = self.not()?;
            left = Raw::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> QueryResult<Raw> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error());
        }
        let result = if self.eat_kw("not") {
            self.not().map(|e| Raw::Not(Box::new(e)))
        } else if matches!(self.peek(), Tok::LParen) {
            self.next();
            let inner = self.or()?;
            if !matches!(self.peek(), Tok::RParen) {
                return Err(self.error());
            }
            self.next();
            Ok(inner)
        } else {
            self.predicate()
        };
        self.depth -= 1;
        result
    }

    fn name(&mut self) -> QueryResult<String> {
        match self.peek().clone() {
            Tok::Quoted(s) if !s.is_empty() => {
                self.next();
                Ok(s)
            }
            Tok::Word(w) if !RESERVED.iter().any(|r| w.eq_ignore_ascii_case(r)) => {
                self.next();
                Ok(w)
            }
            _ => Err(self.error()),
        }
    }

    fn predicate(&mut self) -> QueryResult<Raw> {
        self.predicates += 1;
        if self.predicates > MAX_PREDICATES {
            return Err(format!(
                "operation is not supported: a query may have at most {MAX_PREDICATES} conditions"
            ));
        }
        let name = self.name()?;
        let incomplete = match self.peek() {
            Tok::Eof | Tok::RParen | Tok::Semicolon => true,
            t => is_kw(t, "and") || is_kw(t, "or"),
        };
        if incomplete {
            return Err("invalid expression: incomplete expression".into());
        }
        let pred = match self.peek().clone() {
            Tok::Op(op) => {
                let op = match op {
                    "=" => CmpOp::Eq,
                    "!=" => CmpOp::Ne,
                    "<" => CmpOp::Lt,
                    "<=" => CmpOp::Le,
                    ">" => CmpOp::Gt,
                    ">=" => CmpOp::Ge,
                    _ => return Err(self.error()),
                };
                self.next();
                Pred::Cmp(op, self.value()?)
            }
            Tok::Word(w) => {
                let w = w.to_ascii_lowercase();
                match w.as_str() {
                    "is" => {
                        self.next();
                        let negated = self.eat_kw("not");
                        self.expect_kw("null")?;
                        Pred::IsNull(negated)
                    }
                    "not" | "in" | "between" | "starts_with" | "like" => {
                        self.next();
                        let negated = w == "not";
                        let kw = if negated {
                            match self.peek() {
                                Tok::Word(k) => {
                                    let k = k.to_ascii_lowercase();
                                    if !["in", "between", "starts_with", "like"]
                                        .contains(&k.as_str())
                                    {
                                        return Err(self.error());
                                    }
                                    self.next();
                                    k
                                }
                                _ => return Err(self.error()),
                            }
                        } else {
                            w
                        };
                        match kw.as_str() {
                            "in" => Pred::In(self.list()?, negated),
                            "between" => {
                                let lo = self.value()?;
                                self.expect_kw("and")?;
                                let hi = self.value()?;
                                Pred::Between(lo, hi, negated)
                            }
                            "starts_with" => Pred::StartsWith(self.value()?, negated),
                            _ => {
                                self.value()?;
                                Pred::Like(negated)
                            }
                        }
                    }
                    _ => return Err(self.error()),
                }
            }
            _ => return Err(self.error()),
        };
        Ok(Raw::Pred(name, pred))
    }

    fn list(&mut self) -> QueryResult<Vec<Lit>> {
        if !matches!(self.peek(), Tok::LParen) {
            return Err(self.error());
        }
        self.next();
        let mut values = vec![self.value()?];
        while matches!(self.peek(), Tok::Comma) {
            self.next();
            values.push(self.value()?);
        }
        if !matches!(self.peek(), Tok::RParen) {
            return Err(self.error());
        }
        self.next();
        Ok(values)
    }

    fn value(&mut self) -> QueryResult<Lit> {
        let sign = match self.peek() {
            Tok::Op("-") => {
                self.next();
                Some(-1)
            }
            Tok::Op("+") => {
                self.next();
                Some(1)
            }
            _ => None,
        };
        let lit = match self.peek().clone() {
            Tok::Str(s) if sign.is_none() => Lit::Str(s),
            Tok::Int(n) => Lit::Int(if sign == Some(-1) {
                n.saturating_neg()
            } else {
                n
            }),
            Tok::Float(f) => Lit::Float(if sign == Some(-1) { -f } else { f }),
            Tok::Word(w) if sign.is_none() && w.eq_ignore_ascii_case("true") => Lit::Bool(true),
            Tok::Word(w) if sign.is_none() && w.eq_ignore_ascii_case("false") => Lit::Bool(false),
            Tok::Word(w) | Tok::Quoted(w)
                if sign.is_none() && !RESERVED.iter().any(|r| w.eq_ignore_ascii_case(r)) =>
            {
                return Err(format!(
                    "operation is not supported: column name on the right side of comparison expression (did you forget to quote {w:?}?)"
                ));
            }
            _ => return Err(self.error()),
        };
        self.next();
        Ok(lit)
    }
}

fn parse_raw(query: &str) -> QueryResult<RawQuery> {
    let q = query.trim();
    let toks = tokenize(q)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
        predicates: 0,
    };
    p.query()
}

// ---------------------------------------------------------------------------------------------
// Resolution

fn resolve(raw: Raw, registry: &Registry) -> QueryResult<Expr> {
    Ok(match raw {
        Raw::And(a, b) => Expr::And(
            Box::new(resolve(*a, registry)?),
            Box::new(resolve(*b, registry)?),
        ),
        Raw::Or(a, b) => Expr::Or(
            Box::new(resolve(*a, registry)?),
            Box::new(resolve(*b, registry)?),
        ),
        Raw::Not(a) => Expr::Not(Box::new(resolve(*a, registry)?)),
        Raw::Pred(name, pred) => predicate(name, pred, registry)?,
    })
}

fn unsupported_op(op: &str, attr: &Attr) -> String {
    format!(
        "operation is not supported: operator '{op}' not supported for {} type search attribute '{}'",
        attr.ty.name(),
        attr.name
    )
}

fn predicate(name: String, pred: Pred, registry: &Registry) -> QueryResult<Expr> {
    let Some((ty, source)) = attrs::lookup(registry, &name) else {
        return Err(format!("invalid search attribute: {name}"));
    };
    let attr = Attr { name, ty, source };
    Ok(match pred {
        Pred::Like(negated) => {
            return Err(unsupported_op(
                if negated { "NOT LIKE" } else { "LIKE" },
                &attr,
            ));
        }
        Pred::IsNull(negated) => Expr::IsNull(attr, negated),
        Pred::Cmp(op, lit) => {
            let value = convert(&attr, lit)?;
            match attr.ty {
                SaType::Text | SaType::KeywordList if !matches!(op, CmpOp::Eq | CmpOp::Ne) => {
                    return Err(unsupported_op(op.text(), &attr));
                }
                _ => {}
            }
            Expr::Cmp(attr, op, value)
        }
        Pred::In(lits, negated) => {
            let mut values = Vec::with_capacity(lits.len());
            for lit in lits {
                values.push(convert(&attr, lit)?);
            }
            if attr.ty == SaType::Text {
                return Err(unsupported_op(if negated { "NOT IN" } else { "IN" }, &attr));
            }
            Expr::In(attr, values, negated)
        }
        Pred::Between(lo, hi, negated) => {
            if matches!(attr.ty, SaType::Text | SaType::KeywordList) {
                return Err(format!(
                    "invalid expression: cannot do range condition on search attribute '{}' of type {}",
                    attr.name,
                    attr.ty.name()
                ));
            }
            let lo = convert(&attr, lo)?;
            let hi = convert(&attr, hi)?;
            Expr::Between(attr, lo, hi, negated)
        }
        Pred::StartsWith(lit, negated) => {
            let value = convert(&attr, lit)?;
            let op = if negated {
                "NOT STARTS_WITH"
            } else {
                "STARTS_WITH"
            };
            match (attr.ty, value) {
                (SaType::Keyword, Value::Str(prefix)) => Expr::StartsWith(attr, prefix, negated),
                _ => return Err(unsupported_op(op, &attr)),
            }
        }
    })
}

fn go_type(lit: &Lit) -> &'static str {
    match lit {
        Lit::Str(_) => "string",
        Lit::Int(_) => "int64",
        Lit::Float(_) => "float64",
        Lit::Bool(_) => "bool",
    }
}

fn go_show(lit: &Lit) -> String {
    match lit {
        Lit::Str(s) => format!("{s:?}"),
        Lit::Int(n) => n.to_string(),
        Lit::Float(f) => f.to_string(),
        Lit::Bool(b) => b.to_string(),
    }
}

/// A literal as a value of the attribute's type.
fn convert(attr: &Attr, lit: Lit) -> QueryResult<Value> {
    let wrong = |lit: &Lit| {
        Err(format!(
            "invalid expression: invalid value type for search attribute {} of type {}: {} (type: {})",
            attr.name,
            attr.ty.name(),
            go_show(lit),
            go_type(lit)
        ))
    };
    if attr.name == "ExecutionStatus" {
        return match lit {
            Lit::Str(s) => status_from_name(&s)
                .map(|s| Value::Int(i64::from(s)))
                .ok_or_else(|| format!("invalid expression: invalid ExecutionStatus value '{s}'")),
            Lit::Int(n) => Ok(Value::Int(n)),
            other => wrong(&other),
        };
    }
    if attr.name == "ExecutionDuration" {
        return match lit {
            Lit::Str(s) => parse_duration(&s).map(Value::Int).ok_or_else(|| {
                format!(
                    "invalid expression: invalid duration value for search attribute ExecutionDuration: {s}"
                )
            }),
            Lit::Int(n) => Ok(Value::Int(n)),
            other => Err(format!(
                "invalid expression: unexpected value type {} for search attribute ExecutionDuration",
                go_type(&other)
            )),
        };
    }
    match (attr.ty, lit) {
        (SaType::Keyword | SaType::Text | SaType::KeywordList, Lit::Str(s)) => Ok(Value::Str(s)),
        (SaType::Int, Lit::Int(n)) => Ok(Value::Int(n)),
        (SaType::Int | SaType::Double, Lit::Float(f)) => Ok(Value::Double(f)),
        (SaType::Double, Lit::Int(n)) => Ok(Value::Double(n as f64)),
        (SaType::Bool, Lit::Bool(b)) => Ok(Value::Bool(b)),
        (SaType::Datetime, Lit::Str(s)) => attrs::parse_datetime(&s)
            .map(Value::Time)
            .ok_or_else(|| format!("invalid expression: unable to parse datetime '{s}'")),
        (SaType::Datetime, Lit::Int(n)) => Ok(Value::Time(n)),
        (_, other) => wrong(&other),
    }
}

/// `Running`, `Completed`, ... (as visibility names statuses) to the enum's value.
pub fn status_from_name(name: &str) -> Option<i32> {
    (1..=8).find(|s| status_name(*s) == name)
}

pub fn status_name(status: i32) -> &'static str {
    use chronicle_proto::temporal::api::enums::v1::WorkflowExecutionStatus as S;
    match S::try_from(status).unwrap_or(S::Unspecified) {
        S::Running => "Running",
        S::Completed => "Completed",
        S::Failed => "Failed",
        S::Canceled => "Canceled",
        S::Terminated => "Terminated",
        S::ContinuedAsNew => "ContinuedAsNew",
        S::TimedOut => "TimedOut",
        S::Paused => "Paused",
        S::Unspecified => "Unspecified",
    }
}

/// A duration as Temporal's visibility reads it, in nanoseconds: Go's `1h30m`, `1.5s`, `300ms`
/// (plus `d` for days), or `hh:mm:ss`.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s.contains(':') {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 3 {
            return None;
        }
        let mut total: i128 = 0;
        for (part, unit) in parts.iter().zip([3600i128, 60, 1]) {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || part.len() > 12 {
                return None;
            }
            total += part.parse::<i128>().ok()? * unit * 1_000_000_000;
        }
        return i64::try_from(total).ok();
    }
    let (negative, mut rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86400e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * unit;
    }
    if !total.is_finite() || total.abs() > i64::MAX as f64 {
        return None;
    }
    let n = total as i64;
    Some(if negative { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registry {
        Registry::from([
            ("Kw".to_string(), 2),
            ("Txt".to_string(), 1),
            ("Num".to_string(), 3),
            ("Dbl".to_string(), 4),
            ("Flag".to_string(), 5),
            ("When".to_string(), 6),
            ("Tags".to_string(), 7),
        ])
    }

    fn err(q: &str) -> String {
        parse(q, &reg()).unwrap_err()
    }

    #[test]
    fn parses_every_operator() {
        for q in [
            "",
            "WorkflowId = 'a'",
            "WorkflowId != \"a\" AND RunId <> 'b'",
            "`WorkflowType` = 'x' OR NOT (TaskQueue = 'q')",
            "StartTime > '2024-01-01T00:00:00Z' AND CloseTime <= '2024-01-01T00:00:00+02:00'",
            "HistoryLength BETWEEN 1 AND 5",
            "HistoryLength NOT BETWEEN 1 AND 5",
            "WorkflowId IN ('a', 'b')",
            "WorkflowId NOT IN ('a')",
            "WorkflowId STARTS_WITH 'a'",
            "WorkflowId starts_with 'a' and RunId is null or CloseTime IS NOT NULL",
            "ExecutionStatus = 'Running'",
            "ExecutionStatus = 1",
            "ExecutionDuration > '1h30m'",
            "ExecutionDuration > '01:00:00'",
            "ExecutionDuration > 1000",
            "Kw = 'x' AND Txt = 'hello world' AND Num >= -3 AND Dbl < .5 AND Flag = true",
            "When BETWEEN '2020-01-01T00:00:00Z' AND '2030-01-01T00:00:00Z'",
            "Tags = 'a' AND Tags IN ('b','c') AND Tags != 'd'",
            "Dbl = 1e3",
            "Kw = 'it''s'",
            "WorkflowId = 'a';",
            "GROUP BY ExecutionStatus",
            "WorkflowId = 'a' GROUP BY ExecutionStatus",
            "TemporalChangeVersion = 'x'",
        ] {
            assert!(parse(q, &reg()).is_ok(), "{q}: {:?}", parse(q, &reg()));
        }
        assert!(
            parse("GROUP BY ExecutionStatus", &reg())
                .unwrap()
                .group_by_status
        );
        assert_eq!(
            parse("Kw = 'it''s'", &reg()).unwrap().filter,
            Some(Expr::Cmp(
                Attr {
                    name: "Kw".into(),
                    ty: SaType::Keyword,
                    source: Source::Predefined
                },
                CmpOp::Eq,
                Value::Str("it's".into())
            ))
        );
    }

    #[test]
    fn errors_are_worded_as_temporal() {
        assert_eq!(
            err("Foo = 'x'"),
            "invalid query: invalid search attribute: Foo"
        );
        assert_eq!(
            err("WorkflowId = "),
            "invalid query: malformed SQL query: syntax error at position 40"
        );
        assert_eq!(
            err("RunId = 'a' AND"),
            "invalid query: malformed SQL query: syntax error at position 43"
        );
        assert_eq!(
            err("(WorkflowId = 'a'"),
            "invalid query: malformed SQL query: syntax error at position 45"
        );
        assert_eq!(
            err("WorkflowId == 'a'"),
            "invalid query: malformed SQL query: syntax error at position 41"
        );
        assert_eq!(
            err("SELECT * FROM x"),
            "invalid query: malformed SQL query: syntax error at position 34 near 'select'"
        );
        assert_eq!(
            err("Kw IN ()"),
            "invalid query: malformed SQL query: syntax error at position 36"
        );
        assert_eq!(
            err("StartTime > 'abc'"),
            "invalid query: invalid expression: unable to parse datetime 'abc'"
        );
        assert_eq!(
            err("HistoryLength = 'abc'"),
            "invalid query: invalid expression: invalid value type for search attribute HistoryLength of type Int: \"abc\" (type: string)"
        );
        assert_eq!(
            err("WorkflowId = 5"),
            "invalid query: invalid expression: invalid value type for search attribute WorkflowId of type Keyword: 5 (type: int64)"
        );
        assert_eq!(
            err("ExecutionStatus = 'Bogus'"),
            "invalid query: invalid expression: invalid ExecutionStatus value 'Bogus'"
        );
        assert_eq!(
            err("ExecutionDuration > 'xyz'"),
            "invalid query: invalid expression: invalid duration value for search attribute ExecutionDuration: xyz"
        );
        assert_eq!(
            err("WorkflowId LIKE 'a%'"),
            "invalid query: operation is not supported: operator 'LIKE' not supported for Keyword type search attribute 'WorkflowId'"
        );
        assert_eq!(
            err("Txt > 'a'"),
            "invalid query: operation is not supported: operator '>' not supported for Text type search attribute 'Txt'"
        );
        assert_eq!(
            err("Tags BETWEEN 'a' AND 'b'"),
            "invalid query: invalid expression: cannot do range condition on search attribute 'Tags' of type KeywordList"
        );
        assert_eq!(
            err("Kw = a"),
            "invalid query: operation is not supported: column name on the right side of comparison expression (did you forget to quote \"a\"?)"
        );
        assert_eq!(
            err("WorkflowId = 'a' ORDER BY StartTime"),
            "invalid query: operation is not supported: 'ORDER BY' clause"
        );
        assert_eq!(
            err("WorkflowId = 'a' LIMIT 5"),
            "invalid query: operation is not supported: 'LIMIT' clause"
        );
        assert_eq!(
            err("WorkflowType = 'x' GROUP BY WorkflowType"),
            "invalid query: operation is not supported: 'GROUP BY' clause is not supported for search attribute WorkflowType"
        );
        assert_eq!(
            err("Flag = 'true'"),
            "invalid query: invalid expression: invalid value type for search attribute Flag of type Bool: \"true\" (type: string)"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h"), Some(3_600_000_000_000));
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration("1d"), Some(86_400_000_000_000));
        assert_eq!(parse_duration("01:00:00"), Some(3_600_000_000_000));
        assert_eq!(parse_duration("xyz"), None);
        assert_eq!(parse_duration("5"), None);
    }

    /// No input makes the parser panic or recurse without bound (a poor man's proptest: the
    /// workspace has no proptest; seeded, so failures reproduce).
    #[test]
    fn arbitrary_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<&str> = vec![
            "WorkflowId",
            "Kw",
            "Tags",
            "Num",
            "When",
            "ExecutionStatus",
            "ExecutionDuration",
            " ",
            "=",
            "!=",
            "<",
            ">",
            "<=",
            ">=",
            "<>",
            "(",
            ")",
            ",",
            ";",
            "'",
            "\"",
            "`",
            "'a'",
            "\"b\"",
            "1",
            "-",
            "+",
            ".5",
            "1e9",
            "AND",
            "OR",
            "NOT",
            "IN",
            "BETWEEN",
            "IS",
            "NULL",
            "STARTS_WITH",
            "LIKE",
            "ORDER",
            "BY",
            "GROUP",
            "LIMIT",
            "TRUE",
            "\\",
            "é",
            "\u{0}",
            "'2024-01-01T00:00:00Z'",
            "'1h'",
            "9999999999999999999999",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        for _ in 0..20_000 {
            let n = rng.random_range(0..14);
            let q: String = (0..n)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect::<Vec<_>>()
                .join(if rng.random_bool(0.5) { " " } else { "" });
            let _ = parse(&q, &reg());
        }
        for _ in 0..5_000 {
            let bytes: Vec<u8> = (0..rng.random_range(0..40)).map(|_| rng.random()).collect();
            let _ = parse(&String::from_utf8_lossy(&bytes), &reg());
        }
        let deep = "(".repeat(10_000) + "WorkflowId = 'a'" + &")".repeat(10_000);
        assert!(parse(&deep, &reg()).is_err());
        let nots = "NOT ".repeat(10_000) + "WorkflowId = 'a'";
        assert!(parse(&nots, &reg()).is_err());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn registry() -> Registry {
        Registry::from([
            ("Kw".to_string(), 2),
            ("Tags".to_string(), 7),
            ("N".to_string(), 3),
        ])
    }

    /// Query-like text: attribute names, operators, keywords and literals in any order.
    fn tokens() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("WorkflowId".to_string()),
            Just("Kw".to_string()),
            Just("Tags".to_string()),
            Just("N".to_string()),
            Just("ExecutionStatus".to_string()),
            Just("StartTime".to_string()),
            Just("ExecutionDuration".to_string()),
            prop::sample::select(vec![
                "=",
                "!=",
                "<>",
                "<",
                "<=",
                ">",
                ">=",
                "(",
                ")",
                ",",
                ";",
                "AND",
                "OR",
                "NOT",
                "IN",
                "BETWEEN",
                "IS",
                "NULL",
                "STARTS_WITH",
                "LIKE",
                "ORDER BY",
                "GROUP BY",
                "LIMIT",
                "TRUE",
                "-",
                "`",
            ])
            .prop_map(str::to_string),
            "'[^']{0,6}'",
            "[0-9]{1,20}(\\.[0-9]{0,3})?",
            "\\PC{0,3}",
        ];
        prop::collection::vec(token, 0..16).prop_map(|t| t.join(" "))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn parsing_never_panics_on_query_like_text(q in tokens()) {
            let _ = parse(&q, &registry());
        }

        #[test]
        fn parsing_never_panics_on_any_text(q in "\\PC{0,60}") {
            let _ = parse(&q, &registry());
        }

        /// A well-formed conjunction parses, and its evaluation never panics.
        #[test]
        fn generated_filters_parse_and_evaluate(
            values in prop::collection::vec("[a-z']{0,5}", 1..6),
            n in any::<i64>(),
        ) {
            let q = values
                .iter()
                .map(|v| format!("Kw = '{}'", v.replace('\'', "''")))
                .chain(std::iter::once(format!("N >= {n}")))
                .collect::<Vec<_>>()
                .join(" OR ");
            let parsed = parse(&q, &registry());
            prop_assert!(parsed.is_ok(), "{q}: {parsed:?}");
            let state = chronicle_proto::chronicle::persistence::v1::WorkflowExecutionState::default();
            let _ = crate::eval::matches(&parsed.unwrap(), &state);
        }
    }
}
