"""``lama_prepare``: size checks, binarised mask, symmetric padding to a multiple of 8."""
from batching import BatchedModel, per_row
from lama_processing import prepare


class TritonPythonModel(BatchedModel):
    def run(self, inputs):
        images, masks = (inputs[name] for name in self.input_names)
        prepared = per_row(prepare, images, masks)  # a bad pair fails its own request
        return {name: [sample[i] for sample in prepared] for i, name in enumerate(self.output_names)}
