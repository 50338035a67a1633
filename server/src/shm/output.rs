//! Outputs in shared memory: the requested outputs' regions are resolved before the model runs, every
//! result is checked to fit its slice before any is written, then the bytes are written and the response
//! echoes the parameters instead of carrying the bytes.

use std::collections::HashMap;

use ferry_proto::inference::{InferParameter, model_infer_request::InferRequestedOutputTensor};

use super::{SharedMemoryRegistry, TensorRegion, registry::Slice};
use crate::Error;
/// The requested outputs that go to shared memory, resolved before the model runs so that a bad region
/// fails the request without spending compute on it.
#[derive(Debug, Default)]
pub struct OutputRegions {
    outputs: Vec<(String, TensorRegion, Slice)>,
}

impl OutputRegions {
    /// Resolves the shared memory parameters of `outputs` against `registry`.
    pub fn resolve(
        registry: &SharedMemoryRegistry,
        outputs: &[InferRequestedOutputTensor],
    ) -> Result<Self, Error> {
        let mut resolved = Vec::new();
        for output in outputs {
            if let Some(tensor) = TensorRegion::from_parameters(&output.parameters, &output.name)? {
                let slice = registry.slice(&tensor)?;
                resolved.push((output.name.clone(), tensor, slice));
            }
        }
        Ok(OutputRegions { outputs: resolved })
    }

    /// Checks that `output`'s `needed` bytes fit its slice; outputs not in shared memory always fit.
    pub fn check_fits(&self, output: &str, needed: usize) -> Result<(), Error> {
        match self.find(output) {
            Some((_, slice)) => slice.check_fits(needed, output),
            None => Ok(()),
        }
    }

    /// Writes `data` into `output`'s slice and returns the parameters the response echoes for it; `None`
    /// for an output not in shared memory, whose bytes travel in the response.
    pub fn write(&self, output: &str, data: &[u8]) -> Result<Option<HashMap<String, InferParameter>>, Error> {
        let Some((tensor, slice)) = self.find(output) else {
            return Ok(None);
        };
        slice.write(data, output)?;
        Ok(Some(tensor.parameters()))
    }

    fn find(&self, output: &str) -> Option<(&TensorRegion, &Slice)> {
        self.outputs
            .iter()
            .find(|(name, ..)| name == output)
            .map(|(_, tensor, slice)| (tensor, slice))
    }
}

impl Slice {
    /// Copies `data` to the start of the slice, which holds the output named `output`.
    pub fn write(&self, data: &[u8], output: &str) -> Result<(), Error> {
        self.check_fits(data.len(), output)?;
        self.copy_in(data)
    }

    /// Whether `needed` bytes of the output named `output` fit in the slice; Triton's `INTERNAL` error
    /// (`ResponseAllocatorHelper`) when they do not.
    pub fn check_fits(&self, needed: usize, output: &str) -> Result<(), Error> {
        if needed > self.byte_size() {
            return Err(Error::Internal(format!(
                "shared memory size specified with the request for output '{output}' ({} bytes) should be at \
                 least {needed} bytes to hold the results",
                self.byte_size()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ferry_proto::inference::infer_parameter::ParameterChoice;

    use super::*;
    use crate::shm::{BYTE_SIZE, OFFSET, REGION, testing::Object};

    fn requested(name: &str, region: &str, offset: i64, byte_size: i64) -> InferRequestedOutputTensor {
        let int = |value| InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(value)),
        };
        let region = InferParameter {
            parameter_choice: Some(ParameterChoice::StringParam(region.into())),
        };
        InferRequestedOutputTensor {
            name: name.into(),
            parameters: HashMap::from([
                (REGION.to_owned(), region),
                (OFFSET.to_owned(), int(offset)),
                (BYTE_SIZE.to_owned(), int(byte_size)),
            ]),
        }
    }

    #[test]
    fn outputs_are_written_at_their_offset_and_echo_their_parameters() {
        let object = Object::new("out", &[0; 32]);
        let registry = SharedMemoryRegistry::default();
        registry.register("o", &object.key, 8, 24).expect("register");
        let outputs = [
            requested("y", "o", 4, 8),
            InferRequestedOutputTensor {
                name: "z".into(),
                parameters: HashMap::new(),
            },
        ];
        let regions = OutputRegions::resolve(&registry, &outputs).expect("resolved");
        regions.check_fits("y", 8).expect("fits");
        regions.check_fits("z", 1 << 20).expect("not in shared memory");
        let echoed = regions
            .write("y", &[3; 8])
            .expect("written")
            .expect("in shared memory");
        assert_eq!(echoed, outputs[0].parameters);
        assert_eq!(&object.contents()[12..20], &[3; 8]);
        assert_eq!(regions.write("z", &[1; 4]).expect("not written"), None);
        let unknown =
            OutputRegions::resolve(&registry, &[requested("y", "nope", 0, 8)]).expect_err("unknown region");
        assert!(matches!(unknown, Error::NotFound(_)), "{unknown:?}");
    }

    #[test]
    fn an_output_larger_than_its_slice_is_tritons_internal_error() {
        let object = Object::new("small", &[0; 16]);
        let registry = SharedMemoryRegistry::default();
        registry.register("o", &object.key, 0, 16).expect("register");
        let regions = OutputRegions::resolve(&registry, &[requested("y", "o", 0, 8)]).expect("resolved");
        let error = regions.write("y", &[1; 9]).expect_err("too big");
        // Triton's INTERNAL error (`ResponseAllocatorHelper` in grpc/infer_handler.cc).
        assert!(matches!(error, Error::Internal(_)), "{error:?}");
        assert_eq!(
            error.to_string(),
            "shared memory size specified with the request for output 'y' (8 bytes) should be at least 9 \
             bytes to hold the results"
        );
        assert_eq!(regions.check_fits("y", 9), Err(error));
        assert_eq!(object.contents(), [0; 16], "a refused output writes nothing");
    }
}
