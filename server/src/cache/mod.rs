//! Triton's response cache: a model whose config has `response_cache { enable: true }`, on a server started
//! with a cache (`--cache-config local,size=BYTES`), answers a request it has answered before from memory,
//! without running the model. Both switches are needed, as in Triton (`DynamicBatchScheduler` caches only
//! when the model and the server enable it); a model that enables it on a server without a cache loads
//! and runs uncached.
//!
//! - `key`: what an answer depends on (model version, inputs, requested outputs) and its hash.
//! - `store`: the byte-bounded LRU map the answers live in.
//! - `flags`: the server's flags.
//!
//! [`infer`] is the one place the request path meets the cache: after a request is parsed against its
//! model and before it is queued. What is cached is the model's outputs, before classification ranks them
//! and before they are written to shared memory; so a hit is answered like a miss from there on, and a
//! request asking for classes, or for outputs in shared memory, hits the same entry as one that does not.
//! Inputs read from system shared memory are part of the key by their bytes, as Triton hashes inputs in
//! CPU memory (`TritonCache::HashInputBuffers`). Never cached: models with state ([`ModelSpec::response_cache`]
//! is false for them), and failed requests.
//!
//! Two identical requests that both miss at the same moment both run the model; the first answer is
//! stored, the second finds it there and is not counted as a miss, as Triton counts an insertion that finds
//! the key present (`DynamicBatchScheduler::DelegateResponse`).
//!
//! [`ModelSpec::response_cache`]: crate::config::ModelSpec::response_cache

mod flags;
mod key;
mod store;

use std::{
    sync::{Arc, Weak},
    time::Instant,
};

pub use flags::{CacheFlags, CacheSetting};
use key::{ModelId, hash_of, matches, material, material_len};
use store::Store;
pub use store::{Inserted, Usage};

use crate::{Error, model::ModelVersion, onnx::OutputTensor, request::InferRequest};

/// What an entry costs beyond its key and output bytes, for the map, the list and the entry's own fields.
pub const ENTRY_OVERHEAD_BYTES: usize = 256;
/// What each cached output costs beyond its bytes and its shape.
pub const OUTPUT_OVERHEAD_BYTES: usize = 64;
/// Requests with more key bytes than this are looked up and stored on a blocking thread: hashing (about
/// 0.5 ms per 600 KB with SHA extensions) and copying them would hold an async worker too long.
const BLOCKING_KEY_BYTES: usize = 1024 * 1024;

/// The server's response cache, shared by every model that enables it.
#[derive(Debug)]
pub struct ResponseCache {
    store: Store<Entry>,
}

/// One cached answer.
#[derive(Debug)]
pub struct Entry {
    /// The key's material, compared in full before the answer is served.
    material: Box<[u8]>,
    /// The model's outputs: owned copies, so that an entry never keeps a whole batch's output alive.
    outputs: Vec<OutputTensor>,
    /// The version that answered. Holding it keeps that version's allocation, and so its address, from
    /// being reused while the entry lives: the address in the key then names one loaded version, and a
    /// version unloaded and loaded again (perhaps from another file) never meets its predecessor's answers.
    model: Weak<ModelVersion>,
}

/// The outcome of a lookup.
enum Lookup {
    /// The stored outputs.
    Hit(Vec<OutputTensor>),
    /// Not there; the hash and material to store the answer under, unless the request is too large to be
    /// stored at all.
    Miss(Option<(u128, Vec<u8>)>),
}

impl Entry {
    /// Whether this entry is the answer of `model`, whose address is `identity`, to `request`.
    fn answers(&self, identity: *const ModelVersion, model: ModelId<'_>, request: &InferRequest) -> bool {
        std::ptr::eq(self.model.as_ptr(), identity) && matches(&self.material, model, request)
    }
}

impl ResponseCache {
    /// An empty cache that may hold `capacity` bytes of keys and answers.
    pub fn new(capacity: usize) -> Self {
        ResponseCache {
            store: Store::new(capacity),
        }
    }

    /// How full the cache is, for the metrics endpoint.
    pub fn usage(&self) -> Usage {
        self.store.usage()
    }

    fn lookup(&self, model: &Arc<ModelVersion>, request: &InferRequest) -> Lookup {
        let id = model_id(model);
        if material_len(id, request) > self.store.capacity() {
            return Lookup::Miss(None);
        }
        let hash = hash_of(id, request);
        match self.store.get(hash) {
            // Clones of the stored `Bytes`: the answer's bytes are shared, not copied.
            Some(entry) if entry.answers(Arc::as_ptr(model), id, request) => {
                Lookup::Hit(entry.outputs.clone())
            }
            _ => Lookup::Miss(Some((hash, material(id, request)))),
        }
    }

    fn insert(
        &self,
        model: &Arc<ModelVersion>,
        key: Option<(u128, Vec<u8>)>,
        outputs: &[OutputTensor],
    ) -> Inserted {
        let Some((hash, material)) = key else {
            return Inserted::TooLarge;
        };
        let weight = entry_weight(material.len(), outputs);
        if weight > self.store.capacity() {
            return Inserted::TooLarge;
        }
        let entry = Entry {
            material: material.into_boxed_slice(),
            outputs: outputs
                .iter()
                .map(|output| OutputTensor {
                    index: output.index,
                    shape: output.shape.clone(),
                    data: bytes::Bytes::copy_from_slice(&output.data),
                })
                .collect(),
            model: Arc::downgrade(model),
        };
        self.store.insert(hash, Arc::new(entry), weight)
    }
}

/// The bytes an entry of `key_bytes` of key and `outputs` counts against the cache's size.
pub fn entry_weight(key_bytes: usize, outputs: &[OutputTensor]) -> usize {
    outputs
        .iter()
        .fold(ENTRY_OVERHEAD_BYTES.saturating_add(key_bytes), |total, output| {
            total
                .saturating_add(output.data.len())
                .saturating_add(output.shape.len() * 8)
                .saturating_add(OUTPUT_OVERHEAD_BYTES)
        })
}

fn model_id(model: &Arc<ModelVersion>) -> ModelId<'_> {
    ModelId {
        identity: Arc::as_ptr(model) as usize,
        spec: &model.spec,
        version: model.version,
    }
}

/// Runs `request`, received at `received`, on `model`, through `cache` when the server has one and the
/// model enables it: a hit answers at once, without the model's queue, and counts as a success and a cache
/// hit; a miss runs the model, stores a successful answer, and counts as a cache miss.
pub async fn infer(
    cache: Option<&Arc<ResponseCache>>,
    model: &Arc<ModelVersion>,
    request: InferRequest,
    received: Instant,
) -> Result<Vec<OutputTensor>, Error> {
    let Some(cache) = cache.filter(|_| model.spec.response_cache) else {
        return model.infer(request).await;
    };
    let started = Instant::now();
    let span = tracing::info_span!(
        target: crate::telemetry::REQUEST_SPANS,
        "cache",
        model = %model.spec.name,
        version = model.version,
        hit = tracing::field::Empty
    );
    let large = material_len(model_id(model), &request) > BLOCKING_KEY_BYTES;
    let (request, lookup) = if large {
        let (cache, model, span) = (Arc::clone(cache), Arc::clone(model), span.clone());
        tokio::task::spawn_blocking(move || {
            let lookup = span.in_scope(|| cache.lookup(&model, &request));
            (request, lookup)
        })
        .await
        .map_err(|error| Error::Internal(format!("the cache lookup failed: {error}")))?
    } else {
        let lookup = span.in_scope(|| cache.lookup(model, &request));
        (request, lookup)
    };
    span.record("hit", matches!(lookup, Lookup::Hit(_)));
    drop(span);
    let key = match lookup {
        Lookup::Hit(outputs) => {
            model
                .stats
                .record_cache_hit(started.elapsed(), received.elapsed());
            return Ok(outputs);
        }
        Lookup::Miss(key) => key,
    };
    let looked_up = started.elapsed();
    let outputs = model.infer(request).await?;
    let inserting = Instant::now();
    let inserted = if large {
        let (cache, model, outputs) = (Arc::clone(cache), Arc::clone(model), outputs.clone());
        tokio::task::spawn_blocking(move || cache.insert(&model, key, &outputs))
            .await
            .unwrap_or(Inserted::TooLarge)
    } else {
        cache.insert(model, key, &outputs)
    };
    if inserted != Inserted::Present {
        model
            .stats
            .record_cache_miss(looked_up.saturating_add(inserting.elapsed()));
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::request::{InputTensor, TensorData};

    fn request(byte: u8) -> InferRequest {
        InferRequest {
            id: String::new(),
            inputs: vec![InputTensor {
                index: 0,
                shape: vec![1, 4],
                model_shape: vec![1, 4],
                data: TensorData::Fixed(Bytes::from(vec![byte; 16])),
            }],
            outputs: Vec::new(),
            batch_size: 1,
            priority: 0,
            timeout: None,
            classifications: Vec::new(),
            sequence: None,
        }
    }

    /// An entry for `request` to a version that was never loaded (its `Weak` dangles, as every `Weak::new`).
    fn entry(model: ModelId<'_>, request: &InferRequest) -> Entry {
        Entry {
            material: material(model, request).into_boxed_slice(),
            outputs: vec![OutputTensor {
                index: 0,
                shape: vec![1, 4],
                data: Bytes::from(vec![9u8; 16]),
            }],
            model: Weak::new(),
        }
    }

    #[test]
    fn an_entry_answers_only_its_own_request_to_its_own_version() {
        let spec = crate::classification::tests::spec(8);
        let identity = Weak::<ModelVersion>::new().as_ptr();
        let model = ModelId {
            identity: identity as usize,
            spec: &spec,
            version: 1,
        };
        let stored = entry(model, &request(1));
        assert!(stored.answers(identity, model, &request(1)));
        // Found under the same hash (a collision, or a stale slot) but asked by another request: a miss.
        assert!(!stored.answers(identity, model, &request(2)));
        let reloaded = ModelId {
            identity: 0x1000,
            ..model
        };
        assert!(!stored.answers(0x1000 as *const ModelVersion, reloaded, &request(1)));
    }

    #[test]
    fn a_hit_shares_the_stored_bytes() {
        let spec = crate::classification::tests::spec(8);
        let model = ModelId {
            identity: 1,
            spec: &spec,
            version: 1,
        };
        let stored = entry(model, &request(1));
        let answer = stored.outputs.clone();
        assert_eq!(answer, stored.outputs);
        assert_eq!(
            answer[0].data.as_ptr(),
            stored.outputs[0].data.as_ptr(),
            "the same bytes, not a copy"
        );
    }

    #[test]
    fn an_entry_weighs_its_key_outputs_shapes_and_bookkeeping() {
        let outputs = [OutputTensor {
            index: 0,
            shape: vec![2, 3],
            data: Bytes::from(vec![0u8; 100]),
        }];
        assert_eq!(
            entry_weight(50, &outputs),
            ENTRY_OVERHEAD_BYTES + 50 + 100 + 2 * 8 + OUTPUT_OVERHEAD_BYTES
        );
    }
}
