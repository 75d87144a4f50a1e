//! JSON Lines (CONTRACT.md): one record per line into a buffered writer.
//! Without `raw`, data records are the connection's bytes no parser took;
//! with it, every chunk as captured (`--raw`).

use super::{Body, DataKind, Record};
use crate::sink::Sink;
use std::io::{self, Write};

/// Writes records as JSON Lines.
pub struct JsonlWriter<W: Write> {
    out: W,
    /// Whole lines not yet written to `out`.
    buf: Vec<u8>,
    raw: bool,
}

/// Lines are written to `out` once this many bytes gathered: records arrive in bursts.
const BUFFER: usize = 1 << 20;

impl<W: Write> JsonlWriter<W> {
    /// Writes to `out` in large pieces. With `raw`, every captured chunk is
    /// a `data` record.
    pub fn new(out: W, raw: bool) -> Self {
        Self { out, buf: Vec::with_capacity(BUFFER + (64 << 10)), raw }
    }

    /// Appends one record (nothing of it when it cannot be written whole).
    pub fn write(&mut self, record: &Record<'_>) -> io::Result<()> {
        super::write_record(&mut self.buf, record)?;
        self.buf.push(b'\n');
        if self.buf.len() >= BUFFER {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> io::Result<()> {
        let result = self.out.write_all(&self.buf);
        self.buf.clear();
        result
    }

    /// Pushes buffered records out.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.out.flush()
    }
}

impl<W: Write> Drop for JsonlWriter<W> {
    /// What is buffered is written, as a `BufWriter` would (errors are lost with it).
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Whether JSON Lines output (with `--raw` or without) has a line for `body`:
/// data records are either every chunk as captured (raw) or the bytes no
/// parser took, never both.
pub fn in_jsonl(body: &Body<'_>, raw: bool) -> bool {
    !matches!(
        (body, raw),
        (Body::Data { kind: DataKind::Captured, .. }, false)
            | (Body::Data { kind: DataKind::Unparsed, .. }, true)
    )
}

impl<W: Write + Send> Sink for JsonlWriter<W> {
    fn record(&mut self, r: &Record<'_>) -> io::Result<()> {
        if in_jsonl(&r.body, self.raw) {
            self.write(r)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        JsonlWriter::flush(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Body, DropRecord, Origin};

    #[test]
    fn one_json_object_per_line() {
        let mut buf = Vec::new();
        {
            let mut w = JsonlWriter::new(&mut buf, false);
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
