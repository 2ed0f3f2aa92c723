"""Runs ``model.dali`` (a serialized DALI pipeline) on the CPU inside Triton's python backend."""
import numpy as np
from batching import BadInput, execute_batched, model_settings
from nvidia.dali import Pipeline


class TritonPythonModel:
    def initialize(self, args):
        config, parameters, version_dir = model_settings(args)
        self.pipeline_file = str(version_dir / "model.dali")
        self.max_batch_size = config["max_batch_size"]
        self.num_threads = int(parameters["num_threads"])
        self.input_name = config["input"][0]["name"]
        self.output_names = [output["name"] for output in config["output"]]
        self.pipeline = self._load()

    def _load(self):
        pipeline = Pipeline.deserialize(filename=self.pipeline_file, batch_size=self.max_batch_size,
                                        num_threads=self.num_threads, device_id=None)
        pipeline.build()
        return pipeline

    def execute(self, requests):
        return execute_batched(requests, [self.input_name], self.output_names, self._run)

    def _run(self, inputs):
        samples = inputs[self.input_name]
        for index, sample in enumerate(samples):
            if not np.any(sample):
                raise BadInput(f"image {index} of the batch is empty (no bytes, or only zero padding)")
        self.pipeline.feed_input(self.input_name, samples)
        try:
            outputs = self.pipeline.run()
        except RuntimeError as error:
            self.pipeline = self._load()  # a DALI pipeline is unusable after a failed run
            sizes = ", ".join(str(len(sample)) for sample in samples)
            reason = str(error).strip().splitlines()[-2] if "\n" in str(error) else str(error)
            raise BadInput(f"could not decode the image data ({len(samples)} image(s) of {sizes} bytes): "
                           f"corrupt, truncated, or not an encoded image (JPEG, PNG, BMP, TIFF, WebP). "
                           f"DALI said: {reason}") from None
        return {name: output.as_array() for name, output in zip(self.output_names, outputs)}

    def finalize(self):
        self.pipeline = None
