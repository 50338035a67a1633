//! The server's cache flags, with Triton's names and syntax: `--cache-config local,size=BYTES`, and the
//! older `--response-cache-byte-size BYTES`, which Triton still accepts as a deprecated spelling of the same
//! (`command_line_parser.cc`), refusing the two together.

use std::sync::Arc;

use super::ResponseCache;

/// The cache Ferry implements: Triton's `local` cache, in the server's memory.
const LOCAL: &str = "local";

/// The response cache flags, flattened into the server's.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct CacheFlags {
    /// The response cache, as Triton's flag: `local,size=BYTES` keeps up to BYTES of answers in memory for
    /// the models whose config has `response_cache { enable: true }`. Size 0, or no flag, means no cache.
    /// Only the `local` cache exists in Ferry.
    #[arg(long = "cache-config", value_name = "local,size=BYTES", value_parser = CacheSetting::parse)]
    pub cache_config: Vec<CacheSetting>,

    /// Deprecated in Triton, still accepted: the same as `--cache-config local,size=BYTES`.
    #[arg(long, value_name = "BYTES", conflicts_with = "cache_config")]
    pub response_cache_byte_size: Option<u64>,
}

/// One `--cache-config` value: a setting of the local cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSetting {
    /// `local,size=BYTES`: the most bytes the cache may hold.
    Size(u64),
}

impl CacheSetting {
    /// Reads `<cache>,<key>=<value>` as Triton does; the error names what is wrong and what is expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (cache, setting) = text.split_once(',').ok_or_else(|| {
            format!("expected <cache>,<key>=<value> such as local,size=1048576, got '{text}'")
        })?;
        if cache != LOCAL {
            return Err(format!(
                "Ferry has only the '{LOCAL}' response cache (in the server's memory), got '{cache}'"
            ));
        }
        let (key, value) = setting.split_once('=').ok_or_else(|| {
            format!("expected <key>=<value> after '{LOCAL},' such as size=1048576, got '{setting}'")
        })?;
        match key {
            "size" => value
                .parse()
                .map(CacheSetting::Size)
                .map_err(|_| format!("the local cache's size is a number of bytes, got '{value}'")),
            _ => Err(format!(
                "the local cache has one setting, 'size' (in bytes), got '{key}'"
            )),
        }
    }
}

impl CacheFlags {
    /// The cache these flags ask for: `None` without a flag or with size 0. A size beyond the machine's
    /// address space is an error.
    pub fn cache(&self) -> Result<Option<Arc<ResponseCache>>, String> {
        let size = self.response_cache_byte_size.or_else(|| {
            self.cache_config
                .iter()
                .rev()
                .map(|CacheSetting::Size(size)| *size)
                .next()
        });
        let bytes = match size {
            None | Some(0) => return Ok(None),
            Some(size) => usize::try_from(size).map_err(|_| {
                format!("the response cache size {size} is larger than this machine's memory")
            })?,
        };
        Ok(Some(Arc::new(ResponseCache::new(bytes))))
    }

    /// Whether the deprecated `--response-cache-byte-size` was used, so that the server can say what to
    /// write instead, as Triton does.
    pub fn deprecated_size(&self) -> Option<u64> {
        self.response_cache_byte_size
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        cache: CacheFlags,
    }

    fn capacity(args: &[&str]) -> Result<Option<usize>, String> {
        let flags = Flags::try_parse_from(std::iter::once("ferry").chain(args.iter().copied()))
            .map_err(|error| error.to_string())?;
        Ok(flags.cache.cache()?.map(|cache| cache.usage().capacity))
    }

    #[test]
    fn tritons_spellings_set_the_size_and_zero_or_nothing_means_no_cache() {
        assert_eq!(capacity(&[]), Ok(None));
        assert_eq!(
            capacity(&["--cache-config", "local,size=1048576"]),
            Ok(Some(1_048_576))
        );
        assert_eq!(capacity(&["--cache-config=local,size=0"]), Ok(None));
        assert_eq!(capacity(&["--response-cache-byte-size", "4096"]), Ok(Some(4096)));
        assert_eq!(
            capacity(&["--cache-config", "local,size=1", "--cache-config", "local,size=2"]),
            Ok(Some(2)),
            "the last setting wins"
        );
    }

    #[test]
    fn other_caches_keys_and_values_are_refused_naming_them() {
        for (value, named) in [
            ("redis,host=localhost", "'redis'"),
            ("local,max_size=10", "'max_size'"),
            ("local,size=ten", "'ten'"),
            ("local,size=-1", "'-1'"),
            ("local", "'local'"),
            ("local,size", "'size'"),
        ] {
            let error = capacity(&["--cache-config", value]).expect_err(value);
            assert!(error.contains(named), "{value}: {error}");
        }
    }

    /// Triton's `TritonParser::Parse`: "Incompatible flags --response-cache-byte-size and --cache-config".
    #[test]
    fn the_old_and_new_flags_together_are_refused() {
        let error = capacity(&[
            "--cache-config",
            "local,size=10",
            "--response-cache-byte-size",
            "10",
        ])
        .expect_err("both flags");
        assert!(error.contains("--response-cache-byte-size"), "{error}");
    }
}
