//! JSON Lines: one record per line into a buffered writer.

use super::Record;
use std::io::{self, Write};

/// Writes records as JSON Lines.
pub struct JsonlWriter<W: Write> {
    out: io::BufWriter<W>,
}

impl<W: Write> JsonlWriter<W> {
    /// Wraps `out` in a large buffer: records arrive in bursts.
    pub fn new(out: W) -> Self {
        Self { out: io::BufWriter::with_capacity(1 << 20, out) }
    }

    /// Appends one record.
    pub fn write(&mut self, record: &Record<'_>) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")
    }

    /// Pushes buffered records out.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Body, DropRecord, Origin};

    #[test]
    fn one_json_object_per_line() {
        let mut buf = Vec::new();
        {
            let mut w = JsonlWriter::new(&mut buf);
            for n in 0..3 {
                w.write(&Record {
                    origin: Origin { ts_ns: n, pid: 0, comm: "", source: "kernel", probe: "ringbuf:events" },
                    conn: None,
                    body: Body::Drop(DropRecord { count: n, bytes: 0, reason: "ringbuf_full" }),
                })
                .unwrap();
            }
            w.flush().unwrap();
        }
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["count"], 2);
    }
}
