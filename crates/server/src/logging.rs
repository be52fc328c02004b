//! Process logging: text or JSON on stderr, every line naming the node that wrote it.
//!
//! Operators grep one stream holding many nodes' lines (`kubectl logs -l`, a log shipper, the
//! local cluster's files side by side), so each line carries `node`: the node's name, which
//! defaults to its roles and address. A span entered at start would not do: tasks spawned onto
//! the runtime do not inherit it. The formatter adds the field to every event instead.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

/// Installs the process's logger. `log_format`: `json`, or anything else for text.
pub fn init(log_level: &str, log_format: &str, node: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{log_level},openraft=warn"))
    });
    // Colour codes only on a terminal: log files and `kubectl logs` get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if log_format == "json" {
        builder
            .event_format(WithNode::new(format().json(), node, true))
            .fmt_fields(format::JsonFields::new())
            .init();
    } else {
        builder
            .event_format(WithNode::new(format().with_ansi(ansi), node, false))
            .init();
    }
}

fn format() -> format::Format {
    format::Format::default()
}

/// Wraps an event format: the line it writes gains the `node` field (JSON: a top-level key
/// after the opening brace; text: `node=NAME` after the event's own fields).
pub struct WithNode<F> {
    inner: F,
    /// The field as it is spliced in, quoted for its format.
    field: String,
    json: bool,
}

impl<F> WithNode<F> {
    pub fn new(inner: F, node: &str, json: bool) -> Self {
        let field = if json {
            // A JSON string: serde quotes and escapes the name.
            format!("\"node\":{},", serde_json::Value::String(node.to_string()))
        } else if node.chars().all(|c| c.is_ascii_graphic() && c != '"') {
            format!(" node={node}")
        } else {
            format!(" node={node:?}")
        };
        Self { inner, field, json }
    }

    /// The formatted line with the field spliced in.
    fn splice(&self, line: &mut String) {
        if self.json {
            if let Some(brace) = line.find('{') {
                line.insert_str(brace + 1, &self.field);
            }
        } else {
            let end = line.trim_end_matches('\n').len();
            line.insert_str(end, &self.field);
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithNode<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        self.splice(&mut line);
        writer.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_field_is_spliced_into_json_and_text_lines() {
        let json = WithNode::<()>::new((), "history-2", true);
        let mut line = "{\"timestamp\":\"t\",\"level\":\"INFO\"}\n".to_string();
        json.splice(&mut line);
        let parsed: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(parsed["node"], "history-2");
        assert_eq!(parsed["level"], "INFO");

        let odd = WithNode::<()>::new((), "a \"b\"", true);
        let mut line = "{\"level\":\"INFO\"}".to_string();
        odd.splice(&mut line);
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["node"], "a \"b\"");

        let text = WithNode::<()>::new((), "history@127.0.0.11:7234", false);
        let mut line = "2026-12-07T01:00:00Z  INFO chronicle: started shard=3\n".to_string();
        text.splice(&mut line);
        assert_eq!(
            line,
            "2026-12-07T01:00:00Z  INFO chronicle: started shard=3 node=history@127.0.0.11:7234\n"
        );
    }
}
