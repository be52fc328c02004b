//! Visibility: Temporal's list-filter query language (tokenizer, recursive-descent parser,
//! typed resolution against the namespace's search attributes, evaluation against a run's
//! state), the search-attribute registry rules (types, per-type limits, value checks) and the
//! order and page tokens of ListWorkflowExecutions.
//!
//! It depends on no storage crate: the frontend parses and checks queries and search-attribute
//! values with it, and history evaluates the same parsed queries against the runs it holds.

pub mod attrs;
pub mod eval;
pub mod order;
pub mod query;

pub use attrs::{Registry, SaType};
pub use query::{ParsedQuery, parse};
