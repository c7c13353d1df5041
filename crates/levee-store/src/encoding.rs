//! Compressed forms of stored files: made once, by deploy (stored with `Content-Encoding`)
//! or by the static server (kept in memory beside the plain bytes).

use std::io::{Read, Write};

/// A `Content-Encoding` levee writes and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    Brotli,
}

/// How hard to compress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    /// For files compressed once and served for a long time.
    Best,
    /// For files compressed each time they change, on the serving path.
    Fast,
}

impl Encoding {
    /// The name in `Content-Encoding`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
        }
    }

    pub fn from_name(name: &str) -> Option<Encoding> {
        match name {
            "gzip" => Some(Encoding::Gzip),
            "br" => Some(Encoding::Brotli),
            _ => None,
        }
    }

    pub fn compress(self, data: &[u8], effort: Effort) -> Vec<u8> {
        match self {
            Encoding::Gzip => {
                let level = match effort {
                    Effort::Best => flate2::Compression::best(),
                    Effort::Fast => flate2::Compression::new(6),
                };
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
                encoder.write_all(data).expect("writing to memory");
                encoder.finish().expect("writing to memory")
            }
            Encoding::Brotli => {
                let params = brotli::enc::BrotliEncoderParams {
                    quality: match effort {
                        Effort::Best => 11,
                        Effort::Fast => 6,
                    },
                    ..Default::default()
                };
                let mut out = Vec::new();
                brotli::BrotliCompress(&mut &data[..], &mut out, &params)
                    .expect("writing to memory");
                out
            }
        }
    }

    /// Decompress, refusing to expand past `limit` bytes.
    pub fn decompress(self, data: &[u8], limit: u64) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        match self {
            Encoding::Gzip => flate2::read::GzDecoder::new(data)
                .take(limit)
                .read_to_end(&mut out)?,
            Encoding::Brotli => brotli::Decompressor::new(data, 4096)
                .take(limit)
                .read_to_end(&mut out)?,
        };
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let data = "{\"city\":\"Chattanooga\"}".repeat(50);
        for encoding in [Encoding::Gzip, Encoding::Brotli] {
            for effort in [Effort::Best, Effort::Fast] {
                let packed = encoding.compress(data.as_bytes(), effort);
                assert!(packed.len() < data.len());
                let unpacked = encoding.decompress(&packed, 1 << 20).unwrap();
                assert_eq!(unpacked, data.as_bytes());
            }
            assert_eq!(Encoding::from_name(encoding.name()), Some(encoding));
        }
    }
}
