//! Raw BYTES contents split into length-prefixed elements. The first two bytes are the element count the
//! shape promises; a split that succeeds must give that many elements, which re-encode to the input.

#![no_main]

use bytes::Bytes;
use ferry_server::request::split_length_prefixed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((count, raw)) = data.split_first_chunk::<2>() else {
        return;
    };
    let elements = usize::from(u16::from_le_bytes(*count));
    let raw = Bytes::copy_from_slice(raw);
    match split_length_prefixed(raw.clone(), "x", elements) {
        Ok(items) => {
            assert_eq!(items.len(), elements);
            let mut encoded = Vec::with_capacity(raw.len());
            for item in &items {
                encoded.extend((item.len() as u32).to_le_bytes());
                encoded.extend(&item[..]);
            }
            assert_eq!(encoded, raw);
        }
        Err(error) => assert!(error.to_string().contains("'x'"), "{error}"),
    }
});
