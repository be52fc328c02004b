//! The recursive-descent parser of the visibility query language into a raw syntax tree
//! (names not yet resolved against the search attributes).

use super::tokens::{Tok, Token, syntax_error, tokenize};
use super::{CmpOp, QueryResult};

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Lit {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Pred {
    Cmp(CmpOp, Lit),
    In(Vec<Lit>, bool),
    Between(Lit, Lit, bool),
    StartsWith(Lit, bool),
    Like(bool),
    IsNull(bool),
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Raw {
    And(Box<Raw>, Box<Raw>),
    Or(Box<Raw>, Box<Raw>),
    Not(Box<Raw>),
    Pred(String, Pred),
}

pub(super) struct RawQuery {
    pub(super) filter: Option<Raw>,
    pub(super) group_by: Option<String>,
    pub(super) order_by: bool,
    pub(super) limit: bool,
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

pub(super) fn parse_raw(query: &str) -> QueryResult<RawQuery> {
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
