//! Content-Encoding decoding (gzip, deflate, br), bounded so a small
//! compressed body cannot grow without limit.

use std::io::Read;

/// Decodes `body` sent with Content-Encoding `encoding` (a list, applied in
/// order, so undone in reverse). `Ok(None)`: identity or nothing to do.
/// `Ok(Some((decoded, cut)))`: at most `max` bytes, `cut` more not kept.
pub fn decode(encoding: &str, body: &[u8], max: usize) -> Result<Option<(Vec<u8>, u64)>, String> {
    let codings: Vec<String> = encoding
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    if codings.is_empty() {
        return Ok(None);
    }
    let mut data = body.to_vec();
    let mut cut = 0;
    for coding in codings.iter().rev() {
        let reader: Box<dyn Read + '_> = match coding.as_str() {
            "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(data.as_slice())),
            // "deflate" means zlib-wrapped, but some servers send raw deflate.
            "deflate" if data.first().is_some_and(|b| b & 0x0f == 8) => {
                Box::new(flate2::read::ZlibDecoder::new(data.as_slice()))
            }
            "deflate" => Box::new(flate2::read::DeflateDecoder::new(data.as_slice())),
            "br" => Box::new(brotli::Decompressor::new(data.as_slice(), 8192)),
            other => return Err(format!("unsupported content encoding {other:?}")),
        };
        let (out, more) = read_bounded(reader, max).map_err(|e| format!("{coding}: {e}"))?;
        data = out;
        cut = more;
    }
    Ok(Some((data, cut)))
}

fn read_bounded(mut r: impl Read, max: usize) -> std::io::Result<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    (&mut r).take(max as u64).read_to_end(&mut out)?;
    let more = std::io::copy(&mut r, &mut std::io::sink())?;
    Ok((out, more))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn each_coding_round_trips() {
        let text = b"the quick brown fox ".repeat(20);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&text).unwrap();
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zl.write_all(&text).unwrap();
        let mut br = Vec::new();
        brotli::BrotliCompress(&mut text.as_slice(), &mut br, &Default::default()).unwrap();
        for (enc, body) in [("gzip", gz.finish().unwrap()), ("deflate", zl.finish().unwrap()), ("br", br)] {
            assert_eq!(decode(enc, &body, 1 << 20).unwrap(), Some((text.clone(), 0)), "{enc}");
        }
        assert_eq!(decode("identity", b"x", 10).unwrap(), None);
    }

    #[test]
    fn bombs_are_cut_and_garbage_is_an_error() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 1 << 20]).unwrap();
        let (out, cut) = decode("gzip", &gz.finish().unwrap(), 1000).unwrap().unwrap();
        assert_eq!((out.len(), cut), (1000, (1 << 20) - 1000));
        assert!(decode("gzip", b"not gzip", 100).is_err());
        assert!(decode("zstd", b"x", 100).is_err());
    }
}
