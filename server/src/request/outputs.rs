//! Which of the model's outputs a request asks for.

use crate::{Error, config::ModelSpec};

/// Positions of the requested outputs; all outputs, in config order, when none is named. An unknown output
/// is Triton's error (`Model::GetOutput`); one named twice is refused (Triton merges them).
pub(super) fn requested_outputs<'a>(
    names: impl Iterator<Item = &'a str>,
    spec: &ModelSpec,
) -> Result<Vec<usize>, Error> {
    let mut outputs = Vec::new();
    for name in names {
        let Some((index, _)) = spec.output(name) else {
            return Err(Error::invalid(format!(
                "unexpected inference output '{name}' for model '{}'",
                spec.name
            )));
        };
        if outputs.contains(&index) {
            return Err(Error::invalid(format!(
                "output '{name}' is requested more than once"
            )));
        }
        outputs.push(index);
    }
    if outputs.is_empty() {
        outputs = (0..spec.outputs.len()).collect();
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use ferry_proto::inference::model_infer_request::InferRequestedOutputTensor;

    use crate::{
        DataType,
        request::{
            InferRequest,
            tests::{message, raw_request, spec, tensor, wire},
        },
    };

    #[test]
    fn requested_outputs_are_checked() {
        let spec = spec(0, vec![tensor("a", DataType::Fp32, &[1])]);
        let requested = |names: &[&str]| {
            let mut request = raw_request(vec![wire("a", DataType::Fp32, &[1], None)], vec![vec![0; 4]]);
            request.outputs = names
                .iter()
                .map(|n| InferRequestedOutputTensor {
                    name: (*n).into(),
                    parameters: Default::default(),
                })
                .collect();
            InferRequest::parse(request, &spec)
        };
        assert_eq!(requested(&["aux"]).expect("known").outputs, [1]);
        assert!(message(requested(&["nope"])).contains("'nope'"));
        assert!(message(requested(&["out", "out"])).contains("more than once"));
    }
}
