//! Where records go. Every output (JSON Lines, HAR, the terminal summary, the
//! streaming API, exporters) is a `Sink`: it is handed every record in the
//! order the processor makes them and keeps the kinds it wants.

use crate::record::Record;
use std::io;

/// An output of records.
pub trait Sink: Send {
    /// One record. An error ends the capture (the output is gone); a sink
    /// that can shed load (a subscriber, an exporter) counts what it sheds
    /// instead of failing.
    fn record(&mut self, record: &Record<'_>) -> io::Result<()>;

    /// Pushes buffered records out (once a second, and at the end).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Completes the output at the end of the capture (a HAR document is closed).
    fn finish(&mut self) -> io::Result<()> {
        self.flush()
    }
}
