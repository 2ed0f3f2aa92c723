"""Runs ``model.graphdef`` (a frozen TensorFlow graph) on the CPU inside Triton's python backend."""
import tensorflow as tf
from batching import BatchedModel


class TritonPythonModel(BatchedModel):
    def setup(self):
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString((self.version_dir / self.parameters["artifact"]).read_bytes())
        graph = tf.Graph()
        with graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        self.session = tf.compat.v1.Session(graph=graph)

    def run(self, inputs):
        feeds = {f"{name}:0": rows for name, rows in inputs.items()}
        results = self.session.run([f"{name}:0" for name in self.output_names], feeds)
        return dict(zip(self.output_names, results))

    def finalize(self):
        self.session.close()
