"""``lama_prepare``: size checks, binarised mask, symmetric padding to a multiple of 8."""
from batching import BatchedModel
from lama_processing import prepare


class TritonPythonModel(BatchedModel):
    def run(self, inputs):
        images, masks = (inputs[name] for name in self.input_names)
        prepared = [prepare(image, mask) for image, mask in zip(images, masks)]
        return {name: [sample[i] for sample in prepared] for i, name in enumerate(self.output_names)}
