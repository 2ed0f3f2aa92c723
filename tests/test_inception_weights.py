"""Inception V3 weights from a user's file, and the TensorFlow graphdef export served for real."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf

from builders import dali, inception
from builders import ensemble_dali_inception as ensemble
from builders.declaration import BuildOptions
from builders.repository import build_repository
from clients.classify import classify_scores
from clients.protocols import Route
from local_server import TritonServer
from builders.in_process import InProcessEnsemble


def run_graph(graph_def, images: np.ndarray) -> np.ndarray:
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run(f"{inception.OUTPUT.name}:0", {f"{inception.INPUT.name}:0": images})


@pytest.fixture(scope="module")
def keras_imagenet_weights(tmp_path_factory):
    """A Keras ImageNet-layout (1000-class) weights file, and the model that wrote it."""
    import keras

    keras.utils.set_random_seed(7)
    model = keras.applications.InceptionV3(weights=None, classes=1000)
    path = tmp_path_factory.mktemp("weights") / "inception_v3_imagenet.weights.h5"
    model.save_weights(str(path))
    return path, model


def test_keras_imagenet_weights_map_onto_1001_classes_with_zero_background(keras_imagenet_weights):
    path, model = keras_imagenet_weights
    images = np.random.default_rng(0).uniform(-1, 1, (2, 299, 299, 3)).astype(np.float32)
    scores = run_graph(inception.graph_def(BuildOptions(inception_weights=path)), images)
    assert scores.shape == (2, 1001)
    assert np.all(scores[:, 0] == 0)
    np.testing.assert_allclose(scores[:, 1:], model(images, training=False).numpy(), rtol=1e-4, atol=1e-7)
    assert inception.weights_description(BuildOptions(inception_weights=path)).startswith("Keras ImageNet weights")


def test_official_style_frozen_graph_is_used_as_is(keras_imagenet_weights, tmp_path):
    frozen = inception.graph_def(BuildOptions(inception_weights=keras_imagenet_weights[0]))
    path = tmp_path / "inception_v3_2016_08_28_frozen.pb"
    path.write_bytes(frozen.SerializeToString())
    assert inception.graph_def(BuildOptions(inception_weights=path)) == frozen
    model = inception.declare(BuildOptions(inception_weights=path))
    assert model.parameters["weights"] == "official frozen graph inception_v3_2016_08_28_frozen.pb"


def test_a_frozen_graph_that_is_not_inception_v3_is_refused_naming_the_missing_nodes(tmp_path):
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.placeholder(tf.float32, [None, 4], name="features")
    path = tmp_path / "other.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(inception.WeightsError, match="no node named input, InceptionV3/Predictions/Softmax"):
        inception.graph_def(BuildOptions(inception_weights=path))
    path.write_bytes(b"\xff\x00 not a protobuf at all")
    with pytest.raises(inception.WeightsError, match="is not a TensorFlow frozen graph"):
        inception.graph_def(BuildOptions(inception_weights=path))


def test_graphdef_export_is_served_and_agrees_with_the_onnx_export(cpu_repository, tmp_path, photos):
    repository = tmp_path / "graphdef"
    graphdef = BuildOptions(target="cpu", inception_format="graphdef")
    classification = (ensemble.GUARD.name, dali.NAME, inception.model_name(graphdef), ensemble.NAME)
    build_repository(repository, replace(graphdef, models=classification))  # the classification pipeline only
    assert (repository / "inception_graphdef" / "1" / "model.graphdef").is_file()
    images = [photos["chelsea"], photos["rocket"]]
    with TritonServer(repository) as server:
        served = classify_scores(Route("http-binary", server.http_url), images)
    np.testing.assert_allclose(served, InProcessEnsemble(cpu_repository).classify(images), rtol=1e-4, atol=1e-7)
