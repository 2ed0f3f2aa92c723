"""Runs ``model.dali`` (a serialized DALI pipeline) on the CPU inside Triton's python backend."""
import numpy as np
from batching import BadInput, BatchedModel
from nvidia.dali import Pipeline


class TritonPythonModel(BatchedModel):
    def setup(self):
        self.pipeline = self._load()

    def _load(self):
        pipeline = Pipeline.deserialize(filename=str(self.version_dir / self.parameters["artifact"]),
                                        batch_size=self.config["max_batch_size"],
                                        num_threads=int(self.parameters["num_threads"]), device_id=None)
        pipeline.build()
        return pipeline

    def run(self, inputs):
        for name, samples in inputs.items():
            for index, sample in enumerate(samples):
                if not np.any(sample):
                    raise BadInput(f"input {name}: image {index} of the batch is empty (no bytes, or only zero padding)")
            self.pipeline.feed_input(name, samples)
        try:
            outputs = self.pipeline.run()
        except RuntimeError as error:
            self.pipeline = self._load()  # a DALI pipeline is unusable after a failed run
            sizes = "; ".join(f"{name}: {', '.join(str(len(s)) for s in samples)} bytes"
                              for name, samples in inputs.items())
            reason = str(error).strip().splitlines()[-2] if "\n" in str(error) else str(error)
            raise BadInput(f"could not decode the image data ({sizes}): corrupt, truncated, or not an "
                           f"encoded image (JPEG, PNG, BMP, TIFF, WebP). DALI said: {reason}") from None
        # Samples may differ in shape (images decoded at their own size): keep them apart.
        return {name: [np.array(output[i]) for i in range(len(output))]
                for name, output in zip(self.output_names, outputs)}

    def finalize(self):
        self.pipeline = None
