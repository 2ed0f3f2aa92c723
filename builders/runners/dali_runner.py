"""Runs ``model.dali`` (a serialized DALI pipeline) on the CPU inside Triton's python backend."""
import re

import numpy as np
from batching import BadInput, BadRow, BatchedModel
from nvidia.dali import Pipeline

FAILED_SAMPLE = re.compile(r"Failed to decode sample #(\d+)")  # how DALI names the row it could not decode


class TritonPythonModel(BatchedModel):
    def setup(self):
        self.pipeline = self._load()

    def _load(self):
        pipeline = Pipeline.deserialize(filename=str(self.version_dir / self.parameters["artifact"]),
                                        batch_size=self.config["max_batch_size"],
                                        num_threads=int(self.parameters["num_threads"]), device_id=None)
        pipeline.build()
        return pipeline

    def check(self, inputs):
        # Per request, before anything is fed: a half-fed pipeline would pair one request's inputs with another's.
        for name, samples in inputs.items():
            for index, sample in enumerate(samples):
                if not np.any(sample):
                    raise BadInput(f"input {name}: image {index} of the batch is empty (no bytes, or only zero padding)")

    def run(self, inputs):
        try:
            for name, samples in inputs.items():
                self.pipeline.feed_input(name, samples)
            outputs = self.pipeline.run()
        except Exception as error:
            self.pipeline = self._load()  # a DALI pipeline is unusable after a failed feed or run
            if not isinstance(error, RuntimeError):
                raise
            raise decode_failure(inputs, error) from None
        # Samples may differ in shape (images decoded at their own size): keep them apart.
        return {name: [np.array(output[i]) for i in range(len(output))]
                for name, output in zip(self.output_names, outputs)}

    def finalize(self):
        self.pipeline = None


def decode_failure(inputs, error):
    """DALI's RuntimeError as a bad input; a ``BadRow`` when DALI names the sample, so only its request fails."""
    sizes = "; ".join(f"{name}: {', '.join(str(len(s)) for s in samples)} bytes" for name, samples in inputs.items())
    reason = str(error).strip().splitlines()[-2] if "\n" in str(error) else str(error)
    message = (f"could not decode the image data ({sizes}): corrupt, truncated, or not an encoded image "
               f"(JPEG, PNG, BMP, TIFF, WebP). DALI said: {reason}")
    failed = FAILED_SAMPLE.search(str(error))
    return BadRow(message, int(failed.group(1))) if failed else BadInput(message)
