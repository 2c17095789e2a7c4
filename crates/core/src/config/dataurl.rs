//! `data:` URLs (RFC 2397) as Ignition uses them for file contents, and bounded gzip decompression.
//!
//! The MCD never fetches remote sources; a config that names one is rejected with a clear error.

use std::io::Read;

use base64::Engine as _;

/// Largest decoded (and decompressed) size of one file. A MachineConfig lives in etcd (about 1.5 MiB per
/// object), so anything near this bound is a gzip bomb, not a configuration file.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Why a file's `contents.source` could not be turned into bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataUrlError {
    #[error(
        "remote source \"{scheme}:\" is not supported (the daemon never fetches file contents); embed the contents as a data: URL"
    )]
    Remote { scheme: String },
    #[error("unsupported source scheme \"{0}\"; only data: URLs are accepted")]
    UnsupportedScheme(String),
    #[error("malformed data URL: {0}")]
    Malformed(&'static str),
    #[error("malformed data URL: invalid base64 ({0})")]
    Base64(String),
    #[error("malformed data URL: invalid percent-encoding")]
    Percent,
    #[error("invalid gzip data: {0}")]
    Gzip(String),
    #[error("contents exceed the {limit}-byte limit after decompression")]
    TooLarge { limit: u64 },
    #[error("unsupported compression \"{0}\" (only \"gzip\" or none)")]
    UnsupportedCompression(String),
}

const REMOTE_SCHEMES: &[&str] = &["http", "https", "s3", "tftp", "gs", "arn"];

/// Decode a `data:` URL into its payload bytes. Non-data URLs are errors naming the scheme.
pub fn decode(source: &str) -> Result<Vec<u8>, DataUrlError> {
    let Some((scheme, rest)) = source.split_once(':') else {
        return Err(DataUrlError::Malformed("missing \"data:\" scheme"));
    };
    if !scheme.eq_ignore_ascii_case("data") {
        let lower = scheme.to_ascii_lowercase();
        if REMOTE_SCHEMES.contains(&lower.as_str()) {
            return Err(DataUrlError::Remote { scheme: lower });
        }
        if lower.is_empty()
            || !lower
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Err(DataUrlError::Malformed("missing \"data:\" scheme"));
        }
        return Err(DataUrlError::UnsupportedScheme(lower));
    }
    let Some((header, payload)) = rest.split_once(',') else {
        return Err(DataUrlError::Malformed(
            "missing ',' between media type and data",
        ));
    };
    let is_base64 = header
        .rsplit(';')
        .next()
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("base64"));
    let unescaped = percent_decode_strict(payload)?;
    if !is_base64 {
        return Ok(unescaped);
    }
    // Ignition's decoder tolerates missing padding and embedded whitespace (line-wrapped base64).
    let compact: Vec<u8> = unescaped
        .into_iter()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine
        .decode(&compact)
        .map_err(|e| DataUrlError::Base64(e.to_string()))
}

/// Percent-decoding that rejects a `%` not followed by two hex digits (the `percent-encoding` crate would
/// pass it through silently, which hides corrupted configs).
fn percent_decode_strict(s: &str) -> Result<Vec<u8>, DataUrlError> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err(DataUrlError::Percent);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(percent_encoding::percent_decode(bytes).collect())
}

/// Apply the Ignition `compression` field ("" / absent = none, "gzip"), never producing more than `limit`
/// bytes: a gzip bomb fails fast instead of filling memory.
pub fn decompress(
    data: Vec<u8>,
    compression: Option<&str>,
    limit: u64,
) -> Result<Vec<u8>, DataUrlError> {
    match compression.unwrap_or("") {
        "" => {
            if data.len() as u64 > limit {
                return Err(DataUrlError::TooLarge { limit });
            }
            Ok(data)
        }
        "gzip" => {
            let decoder = flate2::read::GzDecoder::new(data.as_slice());
            let mut out = Vec::new();
            decoder
                .take(limit + 1)
                .read_to_end(&mut out)
                .map_err(|e| DataUrlError::Gzip(e.to_string()))?;
            if out.len() as u64 > limit {
                return Err(DataUrlError::TooLarge { limit });
            }
            Ok(out)
        }
        other => Err(DataUrlError::UnsupportedCompression(other.to_string())),
    }
}

/// Encode bytes as a base64 data URL (used for examples, tests and ODC round trips).
pub fn encode_base64(data: &[u8]) -> String {
    format!(
        "data:;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(data)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_and_percent_encoded() {
        assert_eq!(decode("data:,hello%20world%0A").unwrap(), b"hello world\n");
        assert_eq!(decode("data:,").unwrap(), b"");
        assert_eq!(
            decode("data:text/plain;charset=utf-8,a%2Cb").unwrap(),
            b"a,b"
        );
        assert_eq!(decode("DATA:,x").unwrap(), b"x");
    }

    #[test]
    fn base64_variants() {
        assert_eq!(decode("data:;base64,aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode("data:text/plain;base64,aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode("data:;base64,aGVs%0AbG8=").unwrap(), b"hello");
        assert_eq!(decode("data:;BASE64,aGVsbG8=").unwrap(), b"hello");
    }

    #[test]
    fn remote_sources_are_rejected_by_scheme() {
        for (url, scheme) in [
            ("http://example.com/x", "http"),
            ("https://example.com/x", "https"),
            ("s3://bucket/key", "s3"),
            ("tftp://host/x", "tftp"),
            ("gs://bucket/x", "gs"),
            ("arn:aws:s3:::bucket/x", "arn"),
        ] {
            let err = decode(url).unwrap_err();
            assert_eq!(
                err,
                DataUrlError::Remote {
                    scheme: scheme.into()
                },
                "{url}"
            );
            assert!(err.to_string().contains("never fetches"));
        }
        assert_eq!(
            decode("ftp://x/y").unwrap_err(),
            DataUrlError::UnsupportedScheme("ftp".into())
        );
    }

    #[test]
    fn malformed_inputs() {
        assert!(matches!(decode("hello"), Err(DataUrlError::Malformed(_))));
        assert!(matches!(
            decode("data:text/plain"),
            Err(DataUrlError::Malformed(_))
        ));
        assert!(matches!(
            decode("data:;base64,!!!!"),
            Err(DataUrlError::Base64(_))
        ));
        assert_eq!(decode("data:,50%"), Err(DataUrlError::Percent));
        assert_eq!(decode("data:,%zz"), Err(DataUrlError::Percent));
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn gzip_roundtrip_and_bomb() {
        assert_eq!(decompress(gzip(b"abc"), Some("gzip"), 10).unwrap(), b"abc");
        assert_eq!(decompress(b"abc".to_vec(), None, 10).unwrap(), b"abc");
        assert_eq!(decompress(b"abc".to_vec(), Some(""), 10).unwrap(), b"abc");
        // 1 MiB of zeros compresses to ~1 KiB; with a 64 KiB limit it must stop early.
        let bomb = gzip(&vec![0u8; 1024 * 1024]);
        assert!(bomb.len() < 4096);
        assert_eq!(
            decompress(bomb, Some("gzip"), 64 * 1024),
            Err(DataUrlError::TooLarge { limit: 64 * 1024 })
        );
        assert!(matches!(
            decompress(b"not gzip".to_vec(), Some("gzip"), 10),
            Err(DataUrlError::Gzip(_))
        ));
        assert_eq!(
            decompress(b"x".to_vec(), Some("bzip2"), 10),
            Err(DataUrlError::UnsupportedCompression("bzip2".into()))
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(s in ".*") {
            let _ = decode(&s);
        }

        #[test]
        fn decode_data_prefix_never_panics(s in "data:[a-z/;=,%0-9A-Fa-f+]*") {
            let _ = decode(&s);
        }

        #[test]
        fn base64_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            prop_assert_eq!(decode(&encode_base64(&data)).unwrap(), data);
        }

        #[test]
        fn decompress_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decompress(data, Some("gzip"), 1024);
        }
    }
}
