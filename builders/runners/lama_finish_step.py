"""``lama_finish``: crop the padding away and convert to uint8 HWC."""
from batching import BatchedModel, per_row
from lama_processing import finish


class TritonPythonModel(BatchedModel):
    def run(self, inputs):
        images, sizes = (inputs[name] for name in self.input_names)
        return {self.output_names[0]: per_row(finish, images, sizes)}
