"""Classical ML models as their users convert them, served by Ferry and compared with the original library.

The models are trained here, on the iris data scikit-learn ships, and converted with the converters users
run: `skl2onnx` for scikit-learn (a RandomForest fit on string classes, and a StandardScaler +
LogisticRegression Pipeline fit on integer classes, each with the converter's default ZipMap output and with
`zipmap: False`), and `onnxmltools` for XGBoost and LightGBM. They are written without a config.pbtxt into
the empty repository of a Ferry started in explicit mode with `--backend-config=onnxruntime,default-max-
batch-size=64`, loaded through tritonclient, and every probability and label Ferry answers is compared with
the library's own `predict_proba` and `predict`, over gRPC and REST, in one batch and row by row.

Triton itself cannot load a ZipMap output (its ONNX Runtime backend refuses non-tensor outputs, see
`onnxruntime/src/onnxruntime.cc`, `ModelState::AutoCompleteIO`); its `default-max-batch-size` backend setting
(`backend/src/backend_model.cc`, `BackendModel::SetModelConfig` / onnxruntime's `AutoCompleteMaxBatch`) is the
one Ferry accepts.

Environment (all required: without them the run FAILS, it is never skipped):
    FERRY_GRPC_URL, FERRY_HTTP_URL  host:port of the Ferry under test (explicit model control)
    FERRY_CLASSICAL_REPOSITORY      the empty model repository that Ferry serves
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import lightgbm
import mlflow.onnx
import numpy as np
import onnx
import onnxmltools
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import xgboost
from onnxmltools.convert.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType as SklFloatTensorType
from tritonclient.utils import InferenceServerException

MAX_BATCH = 64
# float32 inference against the libraries' float64: the converters' own tests accept this much.
ATOL = 1e-5


def _env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.exit(f"FAILED: {name} is not set; start Ferry and point the tests at it", returncode=1)
    return value


class Served:
    """A trained model, whether its converted form ends in ZipMap, and (once loaded) its tensor names."""

    def __init__(self, model, zipmap: bool):
        self.model = model
        self.zipmap = zipmap
        self.input = self.label = self.probabilities = ""


def _save(repository: Path, name: str, onnx_model) -> None:
    folder = repository / name / "1"
    folder.mkdir(parents=True)
    onnx.save_model(onnx_model, str(folder / "model.onnx"))


def _build(repository: Path, features: np.ndarray, species: np.ndarray) -> dict[str, Served]:
    names = np.array(["setosa", "versicolor", "virginica"])[species]
    codes = species * 10 + 3  # integer classes that are not 0..n-1
    forest = RandomForestClassifier(n_estimators=12, max_depth=4, random_state=0).fit(features, names)
    pipeline = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=500))])
    pipeline.fit(features, codes)
    boosted = xgboost.XGBClassifier(n_estimators=12, max_depth=3, random_state=0).fit(features, species)
    light = lightgbm.LGBMClassifier(n_estimators=12, num_leaves=7, random_state=0, verbose=-1)
    light.fit(features, species)
    sample = features[:1]
    no_zipmap = {"zipmap": False}
    _save(repository, "forest", to_onnx(forest, sample))
    _save(repository, "forest_tensor", to_onnx(forest, sample, options={id(forest): no_zipmap}))
    _save(repository, "pipeline", to_onnx(pipeline, sample))
    _save(repository, "pipeline_tensor", to_onnx(pipeline, sample, options={id(pipeline): no_zipmap}))
    initial = [("input", FloatTensorType([None, features.shape[1]]))]
    _save(repository, "xgboost", onnxmltools.convert_xgboost(boosted, initial_types=initial))
    for name, zipmap in (("lightgbm", True), ("lightgbm_tensor", False)):
        converted = onnxmltools.convert_lightgbm(light, initial_types=initial, zipmap=zipmap)
        # onnxmltools 1.16 declares the label output as shape [1] though it has one label per row (ONNX
        # Runtime warns about it); without a dynamic first dimension no model can batch. The fix a user makes:
        label = converted.graph.output[0].type.tensor_type.shape.dim[0]
        label.Clear()
        label.dim_param = "N"
        _save(repository, name, converted)
    sequence = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("SequenceConstruct", ["x"], ["rows"])],
            "sequence",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
            [onnx.helper.make_tensor_sequence_value_info("rows", onnx.TensorProto.FLOAT, ["N", 4])],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 13)],
    )
    sequence.ir_version = 8
    _save(repository, "sequence_output", sequence)
    return {
        "forest": Served(forest, True),
        "forest_tensor": Served(forest, False),
        "pipeline": Served(pipeline, True),
        "pipeline_tensor": Served(pipeline, False),
        "xgboost": Served(boosted, False),
        "lightgbm": Served(light, True),
        "lightgbm_tensor": Served(light, False),
    }


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    features, _ = load_iris(return_X_y=True)
    return features.astype(np.float32)


@pytest.fixture(scope="module")
def grpc():
    with grpcclient.InferenceServerClient(_env("FERRY_GRPC_URL")) as client:
        yield client


@pytest.fixture(scope="module")
def http():
    with httpclient.InferenceServerClient(_env("FERRY_HTTP_URL")) as client:
        yield client


@pytest.fixture(scope="module")
def served(grpc, data) -> dict[str, Served]:
    repository = Path(_env("FERRY_CLASSICAL_REPOSITORY"))
    assert repository.is_dir() and not any(repository.iterdir()), f"{repository} must be an empty folder"
    _, species = load_iris(return_X_y=True)
    models = _build(repository, data, species)
    for name, model in models.items():
        grpc.load_model(name)
        # Every converter names the label output first and the probabilities second.
        metadata = grpc.get_model_metadata(name, as_json=True)
        model.input = metadata["inputs"][0]["name"]
        model.label, model.probabilities = (o["name"] for o in metadata["outputs"])
    return models


def _infer(client, module, name: str, served: Served, rows: np.ndarray):
    tensor = module.InferInput(served.input, list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    outputs = [module.InferRequestedOutput(served.label), module.InferRequestedOutput(served.probabilities)]
    result = client.infer(name, [tensor], outputs=outputs)
    return result.as_numpy(served.label), result.as_numpy(served.probabilities)


def _labels(array: np.ndarray) -> list:
    return [v.decode() if isinstance(v, bytes) else str(v) if isinstance(v, str) else int(v)
            for v in array.reshape(-1)]


MODELS = ["forest", "forest_tensor", "pipeline", "pipeline_tensor", "xgboost", "lightgbm", "lightgbm_tensor"]


@pytest.mark.parametrize("name", MODELS)
def test_config_is_completed_with_the_flag_and_the_class_labels(grpc, served, name):
    model = served[name]
    config = grpc.get_model_config(name, as_json=True)["config"]
    assert config["max_batch_size"] == MAX_BATCH, "--backend-config default-max-batch-size sets it"
    probabilities = next(o for o in config["output"] if o["name"] == model.probabilities)
    assert probabilities["data_type"] == "TYPE_FP32"
    assert [int(d) for d in probabilities["dims"]] == [3]
    key = f"ferry.class_labels.{model.probabilities}"
    if model.zipmap:
        labels = json.loads(config["parameters"][key]["string_value"])
        assert labels == _labels(np.asarray(model.model.classes_)), "the columns are the classes_ order"
    else:
        assert key not in config.get("parameters", {}), "a tensor output has no ZipMap labels to report"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("name", MODELS)
def test_answers_match_predict_proba_and_predict(grpc, http, served, data, name, protocol):
    client, module = (grpc, grpcclient) if protocol == "grpc" else (http, httpclient)
    model = served[name]
    expected_probabilities = model.model.predict_proba(data)
    expected_labels = _labels(model.model.predict(data))
    # Batches as large as the flag allows, then the rest.
    for start, stop in ((0, MAX_BATCH), (MAX_BATCH, 2 * MAX_BATCH), (2 * MAX_BATCH, len(data))):
        labels, probabilities = _infer(client, module, name, model, data[start:stop])
        assert probabilities.dtype == np.float32 and probabilities.shape == (stop - start, 3)
        np.testing.assert_allclose(probabilities, expected_probabilities[start:stop], atol=ATOL)
        assert _labels(labels) == expected_labels[start:stop]
    # Row by row: a batch of one.
    for row in (0, 60, 149):
        labels, probabilities = _infer(client, module, name, model, data[row:row + 1])
        assert probabilities.shape == (1, 3)
        np.testing.assert_allclose(probabilities[0], expected_probabilities[row], atol=ATOL)
        assert _labels(labels) == [expected_labels[row]]


@pytest.mark.parametrize("name", ["forest", "pipeline", "lightgbm"])
def test_zipmap_and_tensor_conversions_agree(grpc, served, data, name):
    _, zipped = _infer(grpc, grpcclient, name, served[name], data[:MAX_BATCH])
    _, plain = _infer(grpc, grpcclient, f"{name}_tensor", served[f"{name}_tensor"], data[:MAX_BATCH])
    np.testing.assert_array_equal(zipped, plain)


def test_a_batch_over_the_default_max_batch_size_is_refused(grpc, served, data):
    rows = np.concatenate([data, data])[: MAX_BATCH + 1]
    with pytest.raises(InferenceServerException) as error:
        _infer(grpc, grpcclient, "forest", served["forest"], rows)
    assert "StatusCode.INVALID_ARGUMENT" in str(error.value.status())


@pytest.mark.parametrize("name", ["forest", "pipeline"])
def test_classification_names_the_zipmap_classes(grpc, served, data, name):
    model = served[name]
    rows = data[[0, 60, 149]]
    tensor = grpcclient.InferInput(model.input, list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    output = grpcclient.InferRequestedOutput(model.probabilities, class_count=2)
    answer = grpc.infer(name, [tensor], outputs=[output]).as_numpy(model.probabilities)
    assert answer.shape == (3, 2)
    classes = _labels(np.asarray(model.model.classes_))
    for row, expected in zip(answer, model.model.predict_proba(rows)):
        top = np.argsort(-expected, kind="stable")[:2]
        fields = [entry.decode().split(":") for entry in row]
        assert [int(f[1]) for f in fields] == list(top)
        assert [f[2] for f in fields] == [str(classes[i]) for i in top], "labels come from the ZipMap"


def test_other_sequence_outputs_fail_the_load_naming_the_output_and_the_option(grpc, served):
    with pytest.raises(InferenceServerException) as error:
        grpc.load_model("sequence_output")
    message = error.value.message()
    assert "'rows'" in message, message
    assert "zipmap" in message, message
    assert "Triton's protocol cannot carry" in message, message


def test_an_mlflow_model_folder_is_served_with_its_signature(grpc, http, served, data):
    """A version folder written by `mlflow.onnx.save_model`: Ferry reads the ONNX file its MLmodel names, and
    the signature (`[-1, 4]` for the input) completes the dimension the ONNX model leaves open."""
    repository = Path(_env("FERRY_CLASSICAL_REPOSITORY"))
    targets = np.stack([data[:, 0] + data[:, 1], data[:, 2] * 2, data[:, 3] - 1], axis=1)
    ridge = Ridge().fit(data, targets)
    # The feature count is left open in the ONNX model: [None, None].
    converted = to_onnx(ridge, initial_types=[("x", SklFloatTensorType([None, None]))])
    folder = repository / "mlflow_ridge"
    folder.mkdir()
    version = folder / "1"
    signature = infer_signature(data, ridge.predict(data).astype(np.float32))
    mlflow.onnx.save_model(converted, str(version), signature=signature)
    # The flavour's `data` is followed: move the file and say so in the MLmodel.
    (version / "model.onnx").rename(version / "ridge.onnx")
    mlmodel = (version / "MLmodel").read_text()
    assert "data: model.onnx" in mlmodel
    (version / "MLmodel").write_text(mlmodel.replace("data: model.onnx", "data: ridge.onnx"))
    grpc.load_model("mlflow_ridge")
    config = grpc.get_model_config("mlflow_ridge", as_json=True)["config"]
    assert config["max_batch_size"] == MAX_BATCH
    assert [int(d) for d in config["input"][0]["dims"]] == [4], "the signature fixes the open dimension"
    assert [int(d) for d in config["output"][0]["dims"]] == [3]
    expected = ridge.predict(data[:MAX_BATCH])
    for client, module in ((grpc, grpcclient), (http, httpclient)):
        tensor = module.InferInput("x", [MAX_BATCH, 4], "FP32")
        tensor.set_data_from_numpy(data[:MAX_BATCH])
        answer = client.infer("mlflow_ridge", [tensor]).as_numpy("variable")
        np.testing.assert_allclose(answer, expected, atol=1e-4)
    # The signature is checked against the model: an output shape the ONNX model contradicts ([-1, 3] there)
    # fails the load, naming both. (PyYAML may fold the JSON string across lines.)
    text = re.sub(r"\[-1,\s+3\]", "[-1, 5]", (version / "MLmodel").read_text())
    (version / "MLmodel").write_text(text)
    with pytest.raises(InferenceServerException) as error:
        grpc.load_model("mlflow_ridge")
    assert "gives output 'variable' shape [-1, 5] but the ONNX model declares [-1, 3]" in error.value.message()
